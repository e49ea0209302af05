//! Lease throughput: 32 concurrent clients doing acquire + release pairs (each client its own
//! scope key, capacity unlimited) for `BERTH_BENCH_SECS` seconds (default 5), on SQLite (a temp
//! file) and on PostgreSQL (a fresh test database). Prints pairs/s per backend and fails if any
//! scope was ever granted twice at once (holders are tracked in memory).
//!
//! `cargo bench -p berth-store --bench lease_throughput`
//! (`BERTH_BENCH_BACKENDS=sqlite` or `=postgres` runs one; `BERTH_BENCH_PG_POOL` sets the
//! PostgreSQL pool size, default 16).

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_core::LeasePolicy;
use berth_core::lease::RunOutcome;
use berth_store::postgres::PgStore;
use berth_store::sqlite::SqliteStore;
use berth_store::{AcquireLease, Store};
use berth_testkit::pg::TestDatabase;

type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const CLIENTS: usize = 32;

struct Outcome {
    pairs: u64,
    elapsed: Duration,
    double_grants: u64,
}

async fn run(store: Arc<dyn Store>, secs: u64) -> BoxResult<Outcome> {
    let company = store.create_company("bench").await?;
    let env = store
        .create_environment(
            berth_core::model::NewEnvironment {
                company_id: company.id,
                name: "bench".into(),
                description: None,
                driver: berth_core::Driver::Ssh,
                status: berth_core::EnvironmentStatus::Active,
                config: serde_json::json!({}),
                metadata: None,
                capacity: None,
                lease_policy: LeasePolicy::Ephemeral,
            },
            vec![],
        )
        .await?;
    let holders: Arc<HashMap<String, AtomicBool>> = Arc::new(
        (0..CLIENTS)
            .map(|i| (format!("client:{i}"), AtomicBool::new(false)))
            .collect(),
    );
    let pairs = Arc::new(AtomicU64::new(0));
    let doubles = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let store = store.clone();
        let holders = holders.clone();
        let pairs = pairs.clone();
        let doubles = doubles.clone();
        let scope = format!("client:{i}");
        tasks.push(tokio::spawn(async move {
            let flag = holders.get(&scope).ok_or("unknown scope")?;
            while Instant::now() < deadline {
                let lease = store
                    .acquire_lease(AcquireLease {
                        company_id: company.id,
                        environment_id: env.id,
                        scope_key: scope.clone(),
                        policy: LeasePolicy::Ephemeral,
                        ttl_secs: 60,
                        execution_workspace_id: None,
                        issue_id: None,
                        run_id: None,
                        agent_id: None,
                        provider: None,
                        provider_lease_id: None,
                        metadata: None,
                        wait: Some(Duration::from_secs(30)),
                    })
                    .await?;
                if flag.swap(true, Ordering::SeqCst) {
                    doubles.fetch_add(1, Ordering::SeqCst);
                }
                flag.store(false, Ordering::SeqCst);
                store
                    .release_lease(lease.id, lease.fence, RunOutcome::Succeeded, None)
                    .await?;
                pairs.fetch_add(1, Ordering::Relaxed);
            }
            BoxResult::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(Outcome {
        pairs: pairs.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
        double_grants: doubles.load(Ordering::SeqCst),
    })
}

fn report(name: &str, o: &Outcome) -> BoxResult<()> {
    let rate = o.pairs as f64 / o.elapsed.as_secs_f64();
    println!(
        "{name:<10} {CLIENTS} clients  {:>8} pairs in {:>5.2} s  = {rate:>8.0} pairs/s  double grants: {}",
        o.pairs,
        o.elapsed.as_secs_f64(),
        o.double_grants
    );
    if o.double_grants > 0 {
        return Err(format!("{name}: {} double grants", o.double_grants).into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> BoxResult<()> {
    let secs = std::env::var("BERTH_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let sqlite = SqliteStore::open(&path.to_string_lossy()).await?;
    let o = run(Arc::new(sqlite), secs).await?;
    report("sqlite", &o)?;

    match TestDatabase::create_or_skip()
        .await
        .map_err(|e| e.to_string())?
    {
        Some(db) => {
            let pg = PgStore::connect_with(db.url(), CLIENTS as u32).await?;
            let o = run(Arc::new(pg), secs).await?;
            report("postgres", &o)?;
            db.cleanup().await.map_err(|e| e.to_string())?;
        }
        None => println!("postgres   skipped (PostgreSQL unavailable)"),
    }
    Ok(())
}
