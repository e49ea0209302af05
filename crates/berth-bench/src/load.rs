//! The `load` suite: 50 concurrent runs across 4 SSH hosts, each a real OpenSSH `sshd` in its own
//! network namespace (reached over a veth pair), through the real server with SQLite. Each run is
//! an agent printing a line a second for 5 s on its own new 5-file git workspace. Measured
//! against a lone run of the same agent on the same hosts (the named baseline): run duration
//! p50/p99, the delay from a line's write on the host to its event, throughput, and the bench
//! process's peak RSS (server and client together). Needs root (`ip netns`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_testkit::sshd::Sshd;
use serde_json::{Value, json};

use crate::api::{Api, Served};
use crate::ms;

/// The spans between the marks [`Api::one_run`] records.
const PHASES: [&str; 5] = [
    "queued → claimed",
    "claimed → workspace realized (lease, sync out)",
    "realized → agent started (launch)",
    "agent started → last output (the agent's 4 s)",
    "last output → finished (exit seen, restore, release)",
];

fn make_repo(repo: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(repo)?;
    for i in 0..5 {
        std::fs::write(repo.join(format!("f{i}.txt")), format!("file {i}\n"))?;
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@example.invalid",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    ] {
        let out = Command::new("git").args(args).current_dir(repo).output()?;
        if !out.status.success() {
            bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

impl Api {
    /// Start a run of `agent` on a new 5-file workspace; wait for its end. Returns its wall
    /// time, the write-to-event delays of its lines (ms) and how long each of its phases took
    /// (ms, in [`PHASES`] order).
    pub(crate) async fn one_run(
        &self,
        company: &str,
        agent: &str,
        repo: &Path,
    ) -> anyhow::Result<(Duration, Vec<f64>, Vec<f64>)> {
        make_repo(repo)?;
        let ws = self
            .post(
                &format!("/api/companies/{company}/execution-workspaces"),
                json!({"localPath": repo}),
            )
            .await?;
        let start = Instant::now();
        let run = self
            .post(
                &format!("/api/companies/{company}/runs"),
                json!({"agentId": agent, "prompt": "load", "executionWorkspaceId": ws["id"]}),
            )
            .await?;
        let id = run["id"].as_str().context("run id")?.to_string();
        let r = loop {
            let r = self.get(&format!("/api/runs/{id}")).await?;
            if !matches!(r["status"].as_str(), Some("queued" | "running")) {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = start.elapsed();
        if r["status"] != "succeeded" {
            bail!("run {id} ended {}: {}", r["status"], r["errorMessage"]);
        }
        // Each stdout line carries the host's clock at its write; the event its record time.
        let events = self.text(&format!("/api/runs/{id}/events")).await?;
        let mut delays = Vec::new();
        let mut lines = 0;
        let time = |v: &Value| {
            v.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .context("event time")
        };
        // Marks: queued, claimed, realized, started, last output, finished.
        let mut marks = [None; 6];
        marks[0] = Some(time(&r["queuedAt"])?);
        marks[5] = Some(time(&r["finishedAt"])?);
        for data in events.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let Ok(e) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            let Ok(at) = time(&e["at"]) else {
                continue;
            };
            match e["payload"]["step"].as_str() {
                Some("claimed") => marks[1] = Some(at),
                Some("workspace_realized") => marks[2] = Some(at),
                Some("agent_started") => marks[3] = Some(at),
                _ => {}
            }
            if e["stream"] != "stdout" {
                continue;
            }
            marks[4] = Some(at);
            for line in e["payload"]["text"].as_str().unwrap_or_default().lines() {
                let Some(ns) = line
                    .strip_prefix("tick ")
                    .and_then(|t| t.parse::<i64>().ok())
                else {
                    continue;
                };
                lines += 1;
                let written = chrono::DateTime::from_timestamp_nanos(ns);
                delays.push((at - written).as_seconds_f64() * 1e3);
            }
        }
        if lines != 5 {
            bail!("run {id} recorded {lines} of 5 lines");
        }
        let mut phases = Vec::new();
        for w in marks.windows(2) {
            let (Some(a), Some(b)) = (w[0], w[1]) else {
                bail!("run {id} lacks a phase mark: {marks:?}");
            };
            phases.push((b - a).as_seconds_f64() * 1e3);
        }
        Ok((took, delays, phases))
    }
}

pub async fn run() -> anyhow::Result<()> {
    let concurrent: usize = std::env::var("BERTH_BENCH_LOAD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir()?;
    let hosts: Vec<Sshd> = (0..4)
        .map(|_| Sshd::start_in_netns()?.context("not available"))
        .collect::<anyhow::Result<_>>()
        .context("failed to start the 4 namespaced sshds (root and `ip netns` needed)")?;
    let home = dir.path().join("home");
    let config = berth_server::ServerConfig {
        runs_root: Some(dir.path().join("runs")),
        ..Served::sqlite_config(&home)
    };
    let served = Served::start(config).await?;
    let (api, company) = (served.api.clone(), served.company.clone());
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let env = api
            .post(
                &format!("/api/companies/{company}/environments"),
                json!({"name": format!("ns{i}"), "driver": "ssh", "config": {
                    "host": h.host, "port": h.port, "username": h.username,
                    "remoteWorkspacePath": h.workspace,
                    "privateKey": h.client_private_key,
                    "knownHosts": h.known_hosts}}),
            )
            .await?;
        let agent = api
            .post(
                &format!("/api/companies/{company}/agents"),
                json!({"name": format!("ticker{i}"), "adapterType": "process",
                    "defaultEnvironmentId": env["id"],
                    "adapterConfig": {"command": "sh", "args": ["-c",
                        "for i in 1 2 3 4 5; do echo \"tick $(date +%s%N)\"; sleep 1; done"]}}),
            )
            .await?;
        agents.push(agent["id"].as_str().context("agent")?.to_string());
    }

    // Baseline: lone runs, one per host, one after another.
    let mut lone = Vec::new();
    let mut lone_phases: Vec<Vec<f64>> = vec![Vec::new(); PHASES.len()];
    for (i, agent) in agents.iter().enumerate() {
        let (took, _, phases) = api
            .one_run(&company, agent, &dir.path().join(format!("lone{i}")))
            .await?;
        lone.push(ms(took));
        for (all, p) in lone_phases.iter_mut().zip(phases) {
            all.push(p);
        }
    }
    let lone_p50 = percentile(lone.clone(), 0.5);

    // The load: `concurrent` runs at once, spread over the 4 hosts.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrent {
        let api = api.clone();
        let company = company.clone();
        let agent = agents[i % agents.len()].clone();
        let repo = dir.path().join(format!("load{i}"));
        tasks.push(tokio::spawn(async move {
            api.one_run(&company, &agent, &repo).await
        }));
    }
    let mut durations = Vec::new();
    let mut delays = Vec::new();
    let mut load_phases: Vec<Vec<f64>> = vec![Vec::new(); PHASES.len()];
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Ok((took, d, phases)) => {
                durations.push(ms(took));
                delays.extend(d);
                for (all, p) in load_phases.iter_mut().zip(phases) {
                    all.push(p);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e:#}");
            }
        }
    }
    let wall = start.elapsed();
    served.stop().await;
    drop(hosts);
    if durations.is_empty() {
        bail!("no run succeeded");
    }
    let (p50, p99) = (
        percentile(durations.clone(), 0.5),
        percentile(durations.clone(), 0.99),
    );
    println!("| Measure | Value | Baseline / target |");
    println!("|---|---|---|");
    println!(
        "| runs succeeded | {}/{concurrent} | all |",
        concurrent - failed
    );
    println!(
        "| run duration p50 / p99 under load | {:.0} / {:.0} ms | lone run p50 {:.0} ms; p99 ≤ 1.5× lone ({:.0} ms) {} |",
        p50,
        p99,
        lone_p50,
        1.5 * lone_p50,
        if p99 <= 1.5 * lone_p50 { "✓" } else { "✗" }
    );
    println!(
        "| line written on the host → its event, p50 / p99 / max | {:.0} / {:.0} / {:.0} ms | p99 ≤ 500 ms {} |",
        percentile(delays.clone(), 0.5),
        percentile(delays.clone(), 0.99),
        percentile(delays.clone(), 1.0),
        if percentile(delays.clone(), 0.99) <= 500.0 {
            "✓"
        } else {
            "✗"
        }
    );
    println!(
        "| throughput | {:.1} runs/min ({concurrent} runs in {:.1} s) | — |",
        concurrent as f64 / wall.as_secs_f64() * 60.0,
        wall.as_secs_f64()
    );
    let rss = peak_rss_kb() as f64 / 1024.0;
    println!(
        "| peak RSS of the bench process (server + client) | {rss:.0} MB | ≤ 150 MB {} |",
        if rss <= 150.0 { "✓" } else { "✗" }
    );
    println!();
    println!("| Phase (ms) | lone p50 | under load p50 / p99 |");
    println!("|---|---|---|");
    for ((name, lone), load) in PHASES.iter().zip(lone_phases).zip(load_phases) {
        println!(
            "| {name} | {:.0} | {:.0} / {:.0} |",
            percentile(lone, 0.5),
            percentile(load.clone(), 0.5),
            percentile(load, 0.99)
        );
    }
    Ok(())
}
