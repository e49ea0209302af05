//! The `runs` suite: the end-to-end overhead of a `process` run of `true` on an SSH
//! environment with a small git workspace, through the real server (select → lease → sync out →
//! launch → exit → sync back → release), against a shell script doing Paperclip's sequence of
//! fresh `ssh` calls for one run; and how long an agent's first output line takes to reach a
//! `--follow` client (the SSE stream the CLI reads).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::api::{Api, Served};
use crate::{median, ms, n};

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lab_dir = dir.path().join("lab");
    let (lab, _) = berth_lab::up(&lab_dir).context("failed to start the lab sshd")?;
    let result = inner(&lab, dir.path()).await;
    berth_lab::down(&lab_dir)?;
    result
}

/// A small repository: 40 files in a few directories, three commits.
pub(crate) fn make_repo(repo: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(repo)?;
    git(repo, &["init", "-q", "-b", "main"])?;
    for commit in 0..3 {
        for i in 0..40 {
            let p = repo.join(format!("src/mod{}/file{i}.rs", i % 4));
            std::fs::create_dir_all(p.parent().unwrap_or(repo))?;
            std::fs::write(
                &p,
                format!("// commit {commit}\npub fn f{i}() -> u32 {{ {i} }}\n"),
            )?;
        }
        git(repo, &["add", "."])?;
        git(repo, &["commit", "-q", "-m", &format!("commit {commit}")])?;
    }
    // An uncommitted edit, as a working tree usually has.
    std::fs::write(repo.join("NOTES.md"), "work in progress\n")?;
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Api {
    /// Queue a run and wait for its end; returns the run and the wall time.
    pub(crate) async fn run(
        &self,
        company: &str,
        body: Value,
    ) -> anyhow::Result<(Value, Duration)> {
        let start = Instant::now();
        let run = self
            .post(&format!("/api/companies/{company}/runs"), body)
            .await?;
        let id = run["id"].as_str().context("run id")?.to_string();
        loop {
            let r = self.get(&format!("/api/runs/{id}")).await?;
            if !matches!(r["status"].as_str(), Some("queued" | "running")) {
                return Ok((r, start.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn inner(lab: &berth_lab::LabState, dir: &Path) -> anyhow::Result<()> {
    let runs = n().min(20);
    let home = dir.join("home");
    let config = Served::sqlite_config(&home);
    let served = Served::start(config).await?;
    let (api, company) = (served.api.clone(), served.company.clone());
    let env = api
        .post(
            &format!("/api/companies/{company}/environments"),
            json!({"name": "lab", "driver": "ssh", "config": {
                "host": lab.host, "port": lab.port, "username": lab.username,
                "remoteWorkspacePath": lab.workspace,
                "privateKey": std::fs::read_to_string(&lab.client_key_path)?,
                "knownHosts": std::fs::read_to_string(&lab.known_hosts_path)?}}),
        )
        .await?;
    let env = env["id"].as_str().context("environment id")?.to_string();
    let repo = dir.join("repo");
    make_repo(&repo)?;
    let ws = api
        .post(
            &format!("/api/companies/{company}/execution-workspaces"),
            json!({"localPath": repo}),
        )
        .await?;
    let agent = api
        .post(
            &format!("/api/companies/{company}/agents"),
            json!({"name": "true", "adapterType": "process", "defaultEnvironmentId": env,
                   "adapterConfig": {"command": "true"}}),
        )
        .await?;
    let body = json!({"agentId": agent["id"], "prompt": "bench", "executionWorkspaceId": ws["id"]});

    // First run: a new lease, the full push (git bundle + overlay).
    let (first, cold) = api.run(&company, body.clone()).await?;
    if first["status"] != "succeeded" {
        bail!("the first run did not succeed: {first}");
    }
    // Then the steady state: the retained lease is resumed, only differences move.
    let mut warm = Vec::with_capacity(runs);
    for i in 0..runs {
        std::fs::write(repo.join("NOTES.md"), format!("edit {i}\n"))?;
        let (r, took) = api.run(&company, body.clone()).await?;
        if r["status"] != "succeeded" {
            bail!("run {i} did not succeed: {r}");
        }
        warm.push(took);
    }

    // Baseline: Paperclip's per-run sequence, one fresh `ssh` per step.
    let script = dir.join("paperclip-run.sh");
    std::fs::write(&script, BASELINE)?;
    let back = dir.join("back");
    let mut baseline = Vec::with_capacity(runs);
    for i in 0..runs {
        std::fs::write(repo.join("NOTES.md"), format!("edit {i}\n"))?;
        let _ = std::fs::remove_dir_all(&back);
        std::fs::create_dir_all(&back)?;
        let start = Instant::now();
        let out = tokio::process::Command::new("bash")
            .arg(&script)
            .env("REPO", &repo)
            .env("BACK", &back)
            .env("KEY", &lab.client_key_path)
            .env("KNOWN", &lab.known_hosts_path)
            .env("PORT", lab.port.to_string())
            .env("DEST", format!("{}@{}", lab.username, lab.host))
            .env("DIR", lab.workspace.join("paperclip-bench"))
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "the baseline script failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        baseline.push(start.elapsed());
    }

    // First output line: stamped remotely, timed when the SSE client receives it.
    let talker = api
        .post(
            &format!("/api/companies/{company}/agents"),
            json!({"name": "talker", "adapterType": "process", "defaultEnvironmentId": env,
                   "adapterConfig": {"command": "sh", "args": ["-c", "echo \"stamp $(date +%s%N)\"; sleep 0.3"]}}),
        )
        .await?;
    let talk =
        json!({"agentId": talker["id"], "prompt": "bench", "executionWorkspaceId": ws["id"]});
    let mut first_event = Vec::with_capacity(runs);
    for _ in 0..runs {
        first_event.push(first_event_latency(&api, &company, talk.clone()).await?);
    }

    served.stop().await;

    let warm_m = median(warm.clone());
    let base_m = median(baseline);
    let fe_m = median(first_event.clone());
    let fe_max = first_event.iter().max().copied().unwrap_or_default();
    println!("| Measure | Berth | Baseline (fresh `ssh` per step) | Ratio | Target |");
    println!("|---|---|---|---|---|");
    println!(
        "| `process` run of `true`, small git workspace, steady state (median of {runs}) | {:.0} ms | {:.0} ms | {:.2}× | ≤ 0.2× {} |",
        ms(warm_m),
        ms(base_m),
        warm_m.as_secs_f64() / base_m.as_secs_f64(),
        if warm_m.as_secs_f64() <= 0.2 * base_m.as_secs_f64() {
            "✓"
        } else {
            "✗"
        }
    );
    println!(
        "| first run (new lease, full push) | {:.0} ms | {:.0} ms | {:.2}× | — |",
        ms(cold),
        ms(base_m),
        cold.as_secs_f64() / base_m.as_secs_f64()
    );
    println!(
        "| first output line: printed remotely → received by the `--follow` SSE client (median / max of {runs}) | {:.0} / {:.0} ms | — | — | ≤ 300 ms {} |",
        ms(fe_m),
        ms(fe_max),
        if fe_max <= Duration::from_millis(300) {
            "✓"
        } else {
            "✗"
        }
    );
    Ok(())
}

/// Queue a run, follow its SSE stream, and return the time from the remote `date` stamp in
/// its first stdout line to the moment the line arrived here.
async fn first_event_latency(api: &Api, company: &str, body: Value) -> anyhow::Result<Duration> {
    let run = api
        .post(&format!("/api/companies/{company}/runs"), body)
        .await?;
    let id = run["id"].as_str().context("run id")?.to_string();
    let resp = api
        .client
        .get(format!("{}/api/runs/{id}/events", api.base))
        .header("accept", "text/event-stream")
        .send()
        .await?;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(chunk) = tokio::time::timeout_at(deadline.into(), stream.next())
        .await
        .context("no stdout event within 60 s")?
    {
        let arrived = SystemTime::now().duration_since(UNIX_EPOCH)?;
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(pos) = buf.find('\n') {
            let line: String = buf.drain(..=pos).collect();
            let Some(data) = line.trim_end().strip_prefix("data: ") else {
                continue;
            };
            let Ok(ev) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if ev["stream"] != "stdout" {
                continue;
            }
            let text = ev["payload"]["text"].as_str().unwrap_or_default();
            if let Some(ns) = text
                .split_whitespace()
                .skip_while(|w| *w != "stamp")
                .nth(1)
                .and_then(|n| n.parse::<u128>().ok())
            {
                let sent = Duration::from_nanos(u64::try_from(ns)?);
                // Let the run finish before the next one, so runs do not queue behind it.
                wait_done(api, &id).await?;
                return Ok(arrived.saturating_sub(sent));
            }
        }
    }
    bail!("the run's stream ended without its stamp line")
}

async fn wait_done(api: &Api, id: &str) -> anyhow::Result<()> {
    loop {
        let r = api.get(&format!("/api/runs/{id}")).await?;
        if !matches!(r["status"].as_str(), Some("queued" | "running")) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Paperclip's per-run SSH sequence (reference/paperclip-ssh-runtime-spec.md): workspace mkdir
/// and pwd, git bundle import, tar overlay of the working tree, spawn, bundle export, tar back.
/// Each step is a fresh `ssh` (no multiplexing), as Paperclip runs them.
const BASELINE: &str = r#"set -euo pipefail
S=(ssh -q -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$KNOWN" -i "$KEY" -p "$PORT" "$DEST")
"${S[@]}" "mkdir -p '$DIR' && cd '$DIR' && pwd" >/dev/null
(cd "$REPO" && git bundle create - --all 2>/dev/null) | "${S[@]}" "cd '$DIR' && cat > in.bundle && rm -rf repo && git clone -q in.bundle repo 2>/dev/null"
(cd "$REPO" && tar -cf - --exclude=.git .) | "${S[@]}" "tar -xf - -C '$DIR/repo'"
"${S[@]}" "cd '$DIR/repo' && true"
"${S[@]}" "cd '$DIR/repo' && git bundle create - --all 2>/dev/null" > "$BACK/out.bundle"
"${S[@]}" "cd '$DIR/repo' && tar -cf - --exclude=.git ." | tar -xf - -C "$BACK"
"#;
