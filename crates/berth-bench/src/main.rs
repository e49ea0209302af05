//! `berth-bench <suite>`: benchmarks against a named baseline measured in the same run, on the
//! same machine, against the same sshd. Results are printed as Markdown table rows for
//! BENCHMARKS.md.
//!
//! Suites:
//! - `ssh`: 50 sequential `true` commands through the pooled connection vs 50 fresh OpenSSH
//!   `ssh host true`; 50 exec channels; 50 concurrent channels on one connection; launcher
//!   start latency and exit-to-outcome latency.
//!
//! - `sync`: cold push of a generated 10,000-file / ~100 MB tree with `berth_sync::push` vs a
//!   `tar | ssh tar` pipe and `rsync -a`; incremental push of 20 changed files vs `rsync -a`;
//!   pull-back of 20 remotely changed files with `berth_sync::restore` vs `rsync -a`; peak RSS
//!   of the push process for 1,000 vs 10,000 files. Median of 3 each.
//!
//! - `runs`: end-to-end overhead of a `process` run of `true` on the lab SSH environment with
//!   a small git workspace, through the real server, vs a script doing Paperclip's per-run
//!   sequence of fresh `ssh` calls; and first output line → `--follow` SSE client latency.
//!   Median of `min(BERTH_BENCH_N, 20)`.
//!
//! - `load`: 50 concurrent runs (`BERTH_BENCH_LOAD_RUNS`) across 4 SSH hosts, each an sshd in
//!   its own network namespace, vs lone runs of the same agent: run duration p50/p99, line
//!   write → event delay, throughput, peak RSS. Needs root (`ip netns`).
//!
//! - `sandbox`: end-to-end overhead of a `process` run of `true` on a bubblewrap sandbox
//!   environment vs the managed local environment, same small git workspace, through the real
//!   server. Median of `min(BERTH_BENCH_N, 20)`.
//!
//! Run: `cargo run --release -p berth-bench -- ssh` (`BERTH_BENCH_N` overrides 50),
//! `cargo run --release -p berth-bench -- sync` (`BERTH_BENCH_FILES` overrides 10,000).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use berth_core::Secret;
use berth_exec::launcher::{LaunchSpec, Launcher};
use berth_exec::{ExecRequest, SshPool, SshTarget, SshTransport, Transport};

mod api;
mod load;
mod runs;
mod sandbox;
mod sync;

fn n() -> usize {
    std::env::var("BERTH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let suite = std::env::args().nth(1).unwrap_or_else(|| "ssh".to_string());
    match suite.as_str() {
        "ssh" => ssh().await,
        "sync" => sync::run().await,
        "runs" => runs::run().await,
        "load" => load::run().await,
        "sandbox" => sandbox::run().await,
        // Internal: one berth push in its own process, for the `sync` suite's RSS figures.
        "sync-child" => sync::child(&std::env::args().skip(2).collect::<Vec<_>>()).await,
        other => bail!("unknown suite {other:?}; known: ssh, sync, runs, load, sandbox"),
    }
}

async fn ssh() -> anyhow::Result<()> {
    let n = n();
    let dir = tempfile::tempdir()?;
    let lab_dir = dir.path().join("lab");
    let (lab, _) = berth_lab::up(&lab_dir).context("failed to start the lab sshd")?;
    let result = ssh_inner(&lab, n).await;
    berth_lab::down(&lab_dir)?;
    result
}

async fn ssh_inner(lab: &berth_lab::LabState, n: usize) -> anyhow::Result<()> {
    let key = std::fs::read_to_string(&lab.client_key_path)?;
    let known = std::fs::read_to_string(&lab.known_hosts_path)?;

    // Baseline: a fresh OpenSSH client per command, same sshd, same key, same pinned host key.
    let mut fresh = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let status = tokio::process::Command::new("ssh")
            .args([
                "-q",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                lab.known_hosts_path.display()
            ))
            .arg("-i")
            .arg(&lab.client_key_path)
            .arg("-p")
            .arg(lab.port.to_string())
            .arg(format!("{}@{}", lab.username, lab.host))
            .arg("true")
            .status()
            .await?;
        if !status.success() {
            bail!("the OpenSSH baseline failed: {status}");
        }
        fresh.push(start.elapsed());
    }

    let mut target = SshTarget::new(lab.host.clone(), lab.port, lab.username.clone());
    target.private_key = Some(Secret::new(key));
    target.known_hosts = Some(known);
    target.max_sessions = 64;
    let pool = SshPool::new();
    let transport = Arc::new(SshTransport::new(pool.clone(), target));
    // Warm: the first command pays connect + auth once.
    let start = Instant::now();
    transport.run("true", bytes::Bytes::new()).await?;
    let first = start.elapsed();

    let mut pooled = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let done = transport.run("true", bytes::Bytes::new()).await?;
        if !done.outcome.success() {
            bail!("pooled `true` failed: {}", done.outcome);
        }
        pooled.push(start.elapsed());
    }

    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let out = transport
            .exec(ExecRequest::new("true"))
            .await?
            .wait()
            .await?;
        if !out.success() {
            bail!("exec-channel `true` failed: {out}");
        }
        channels.push(start.elapsed());
    }

    // 50 concurrent channels on one pooled connection.
    let start = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let t = transport.clone();
            tokio::spawn(async move {
                let c = t
                    .exec(ExecRequest::new(format!("sleep 0.2; echo {i}")))
                    .await?
                    .collect(1 << 16)
                    .await?;
                anyhow::Ok(c.stdout_text().trim() == i.to_string())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await?? {
            ok += 1;
        }
    }
    let concurrent = start.elapsed();
    let connections = pool.connection_count().await;

    // Launcher: start → remote process running, and remote exit → outcome known.
    let launcher = Launcher::new(
        transport.clone() as Arc<dyn Transport>,
        lab.workspace.display().to_string(),
    );
    let mut starts = Vec::new();
    let mut exits = Vec::new();
    for i in 0..10 {
        let run_id = format!("bench-{i}-{}", std::process::id());
        let start = Instant::now();
        let run = launcher
            .launch(LaunchSpec {
                run_id,
                command: "sleep 0.3; date +%s%N".into(),
                cwd: lab.workspace.display().to_string(),
                ..Default::default()
            })
            .await?;
        starts.push(start.elapsed());
        let (stdout, _, outcome) = launcher.wait(&run, Default::default()).await?;
        let known_at = SystemTime::now().duration_since(UNIX_EPOCH)?;
        if !outcome.success() {
            bail!("launcher run failed: {outcome:?}");
        }
        let ended_ns: u128 = String::from_utf8_lossy(&stdout).trim().parse()?;
        exits.push(Duration::from_nanos(
            (known_at.as_nanos().saturating_sub(ended_ns)) as u64,
        ));
        launcher.cleanup(&run).await?;
    }

    let fresh_mean = fresh.iter().sum::<Duration>() / n as u32;
    let pooled_mean = pooled.iter().sum::<Duration>() / n as u32;
    let channel_mean = channels.iter().sum::<Duration>() / n as u32;
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| fresh OpenSSH `ssh host true`, mean of {n} | {:.1} ms |",
        ms(fresh_mean)
    );
    println!(
        "| first pooled command (connect + auth + control shell) | {:.1} ms |",
        ms(first)
    );
    println!(
        "| pooled `true` via the control shell, mean of {n} | {:.2} ms |",
        ms(pooled_mean)
    );
    println!(
        "| pooled `true` on a new exec channel, mean of {n} | {:.2} ms |",
        ms(channel_mean)
    );
    println!(
        "| ratio pooled (control shell) / fresh OpenSSH | {:.4} |",
        pooled_mean.as_secs_f64() / fresh_mean.as_secs_f64()
    );
    println!(
        "| ratio pooled (exec channel) / fresh OpenSSH | {:.4} |",
        channel_mean.as_secs_f64() / fresh_mean.as_secs_f64()
    );
    println!(
        "| 50 concurrent channels on one connection (`sleep 0.2`) | {ok}/50 ok in {:.0} ms, {connections} connection(s) |",
        ms(concurrent)
    );
    println!(
        "| launcher start → remote process running, median of 10 (warm) | {:.1} ms |",
        ms(median(starts))
    );
    println!(
        "| remote exit → outcome known, median of 10 | {:.1} ms |",
        ms(median(exits))
    );
    if ok != 50 {
        bail!("only {ok}/50 concurrent channels succeeded");
    }
    Ok(())
}
