//! `GET /api/companies/:cid/environments` with 1,000 rows, over loopback HTTP against the real
//! server, on SQLite and (when reachable) PostgreSQL. Prints p50/p99/max latencies.
//!
//! Run: `cargo bench -p berth-server --bench api_list` (`BERTH_BENCH_REQUESTS`, default 500).

use std::time::{Duration, Instant};

use berth_server::{ServerConfig, launch_with_listener};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow_free::Result {
    let requests: usize = std::env::var("BERTH_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sqlite = format!("sqlite://{}", home.path().join("bench.db").display());
    run("sqlite", sqlite, home.path().to_path_buf(), requests).await?;
    match berth_testkit::pg::TestDatabase::create().await {
        Ok(db) => {
            let pg_home = tempfile::tempdir().map_err(|e| e.to_string())?;
            run(
                "postgres",
                db.url().to_string(),
                pg_home.path().to_path_buf(),
                requests,
            )
            .await?;
            db.cleanup().await.map_err(|e| e.to_string())?;
        }
        Err(e) => println!("postgres: skipped ({e})"),
    }
    Ok(())
}

async fn run(
    backend: &str,
    database_url: String,
    home: std::path::PathBuf,
    requests: usize,
) -> anyhow_free::Result {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let config = ServerConfig {
        database_url,
        berth_home: home,
        master_key_hex: None,
        workspace_roots: Vec::new(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(launch_with_listener(config, listener, async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let companies: Value = client
        .get(format!("{base}/api/companies"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let cid = companies[0]["id"].as_str().ok_or("no company")?.to_string();
    for i in 0..999 {
        let r = client
            .post(format!("{base}/api/companies/{cid}/environments"))
            .json(&json!({"name": format!("env-{i:04}"), "driver": "ssh",
                "config": {"host": "127.0.0.1", "username": "u", "remoteWorkspacePath": "/w"}}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("create failed: {}", r.status()));
        }
    }
    // Paperclip's request: no `limit`, every row in `updatedAt` desc order.
    let url = format!("{base}/api/companies/{cid}/environments");
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..(requests / 10) {
        client.get(&url).send().await.map_err(|e| e.to_string())?;
    }
    for _ in 0..requests {
        let start = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
        if body.len() < 100_000 {
            return Err("short response".into());
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{backend}: GET environments (1000 rows) x{requests}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
    let _ = tx.send(());
    let _ = server.await;
    Ok(())
}

mod anyhow_free {
    pub type Result<T = ()> = std::result::Result<T, String>;
}
