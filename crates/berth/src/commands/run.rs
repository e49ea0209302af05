//! `berth run` and `berth runs list|show|logs|cancel`. Following a run reads its event stream
//! (Server-Sent Events) and prints the agent's output as it arrives; the exit code reflects the
//! run (0 succeeded, 9 failed / timed out / cancelled).

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use berth_core::CompanyId;
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::cli::{RunArgs, RunsCommand};
use crate::client::{Client, with_query};
use crate::commands::shared::parse_id;
use crate::context::Ctx;
use crate::exit::{Exit, Failed};
use crate::output::{cell, pretty};

async fn resolve_agent(
    client: &Client,
    company: CompanyId,
    reference: &str,
) -> anyhow::Result<String> {
    if reference.parse::<berth_core::AgentId>().is_ok() {
        return Ok(reference.to_string());
    }
    let agents = client
        .list_all(&format!("/api/companies/{company}/agents"))
        .await
        .context("failed to list agents")?;
    agents
        .iter()
        .find(|a| a["name"] == reference)
        .and_then(|a| a["id"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Failed::new(Exit::NotFound, format!("no agent named {reference:?}"))
                .with_hint("`berth agent list` shows the company's agents")
                .into()
        })
}

/// The execution workspace for a local directory: found by its canonical path, else created.
async fn workspace_for(client: &Client, company: CompanyId, path: &Path) -> anyhow::Result<String> {
    let canonical = std::fs::canonicalize(path)
        .with_context(|| format!("failed to resolve the workspace path {}", path.display()))?;
    let shown = canonical.display().to_string();
    let existing = client
        .list_all(&format!("/api/companies/{company}/execution-workspaces"))
        .await
        .context("failed to list execution workspaces")?;
    if let Some(id) = existing
        .iter()
        .find(|w| w["localPath"] == shown.as_str())
        .and_then(|w| w["id"].as_str())
    {
        return Ok(id.to_string());
    }
    let created = client
        .post(
            &format!("/api/companies/{company}/execution-workspaces"),
            &json!({"localPath": shown}),
        )
        .await
        .context("failed to create an execution workspace")?;
    created["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the server returned no workspace id"))
}

pub async fn start(ctx: &Ctx, args: RunArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let company = ctx.company(&client).await?;
    let agent = resolve_agent(&client, company, &args.agent).await?;
    let prompt = if args.prompt == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("failed to read the prompt from stdin")?;
        text
    } else {
        args.prompt
    };
    let mut body = json!({"agentId": agent, "prompt": prompt});
    if let Some(path) = &args.workspace {
        body["executionWorkspaceId"] = json!(workspace_for(&client, company, path).await?);
    }
    if let Some(issue) = &args.issue {
        let _: berth_core::IssueId = parse_id("issue", issue)?;
        body["issueId"] = json!(issue);
    }
    let run = client
        .post(&format!("/api/companies/{company}/runs"), &body)
        .await
        .context("failed to start the run")?;
    let id = run["id"].as_str().unwrap_or_default().to_string();
    if !args.follow {
        if ctx.out.json {
            return ctx.out.print_json(&run);
        }
        return ctx.out.done(format!(
            "run {id} queued; follow it with `berth runs logs -f {id}`"
        ));
    }
    if !ctx.out.json {
        eprintln!("run {id} queued");
    }
    follow(ctx, &client, &id, None).await
}

pub async fn runs(ctx: &Ctx, command: RunsCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        RunsCommand::List { status, page } => {
            let company = ctx.company(&client).await?;
            let path = with_query(
                &format!("/api/companies/{company}/runs"),
                &[
                    ("status", status.as_deref()),
                    ("limit", page.limit.map(|l| l.to_string()).as_deref()),
                    ("cursor", page.cursor.as_deref()),
                ],
            );
            let runs = if page.limit.is_some() {
                match client.get(&path).await.context("failed to list runs")? {
                    Value::Array(items) => items,
                    _ => Vec::new(),
                }
            } else {
                client
                    .list_all(&path)
                    .await
                    .context("failed to list runs")?
            };
            if ctx.out.json {
                return ctx.out.print_json(&runs);
            }
            // Names instead of ids: one listing each of agents and environments.
            let names = |items: Vec<Value>| -> std::collections::HashMap<String, String> {
                items
                    .into_iter()
                    .filter_map(|v| {
                        Some((v["id"].as_str()?.to_owned(), v["name"].as_str()?.to_owned()))
                    })
                    .collect()
            };
            let agents = names(
                client
                    .list_all(&format!("/api/companies/{company}/agents"))
                    .await
                    .unwrap_or_default(),
            );
            let environments = names(
                client
                    .list_all(&format!("/api/companies/{company}/environments"))
                    .await
                    .unwrap_or_default(),
            );
            let name_of = |map: &std::collections::HashMap<String, String>, id: &Value| {
                id.as_str()
                    .map(|id| map.get(id).cloned().unwrap_or_else(|| id.to_owned()))
                    .unwrap_or_else(|| "-".to_owned())
            };
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    let env = match r["environmentSource"].as_str() {
                        Some(source) => {
                            format!("{} ({source})", name_of(&environments, &r["environmentId"]))
                        }
                        None => name_of(&environments, &r["environmentId"]),
                    };
                    vec![
                        cell(r.get("id")),
                        name_of(&agents, &r["agentId"]),
                        env,
                        cell(r.get("status")),
                        duration(r),
                        cell(r.get("errorCode")),
                        cell(r.get("queuedAt")),
                    ]
                })
                .collect();
            ctx.out.table(
                &[
                    "ID",
                    "AGENT",
                    "ENVIRONMENT (CHOSEN BY)",
                    "STATUS",
                    "DURATION",
                    "ERROR",
                    "QUEUED",
                ],
                rows,
                "No runs.",
            )
        }
        RunsCommand::Show { id } => {
            let _: berth_core::RunId = parse_id("run", &id)?;
            let run = client
                .get(&format!("/api/runs/{id}"))
                .await
                .context("failed to get the run")?;
            if ctx.out.json {
                return ctx.out.print_json(&run);
            }
            ctx.out.fields(&[
                ("id", cell(run.get("id"))),
                ("status", cell(run.get("status"))),
                ("error", cell(run.get("errorCode"))),
                ("message", cell(run.get("errorMessage"))),
                ("exit code", cell(run.get("exitCode"))),
                ("environment", cell(run.get("environmentId"))),
                ("chosen by", cell(run.get("environmentSource"))),
                ("lease", cell(run.get("leaseId"))),
                (
                    "session",
                    pretty(run.get("sessionParams").unwrap_or(&Value::Null)),
                ),
                ("result", pretty(run.get("result").unwrap_or(&Value::Null))),
            ])
        }
        RunsCommand::Logs {
            id,
            follow: live,
            after,
        } => {
            let _: berth_core::RunId = parse_id("run", &id)?;
            if live {
                return follow(ctx, &client, &id, after).await;
            }
            print_events(ctx, &client, &id, after).await
        }
        RunsCommand::Cancel { id } => {
            let _: berth_core::RunId = parse_id("run", &id)?;
            let run = client
                .post(&format!("/api/runs/{id}/cancel"), &json!({}))
                .await
                .context("failed to cancel the run")?;
            if ctx.out.json {
                return ctx.out.print_json(&run);
            }
            ctx.out.done(format!(
                "cancel requested for run {id} (status {})",
                cell(run.get("status"))
            ))
        }
    }
}

/// How long a run has run (so far, when it is still running): `1m 05s`; `-` before it starts.
fn duration(run: &Value) -> String {
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let Some(start) = time(&run["startedAt"]) else {
        return "-".to_owned();
    };
    let end = time(&run["finishedAt"]).unwrap_or_else(chrono::Utc::now);
    let secs = (end - start).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Stream the run's events until it ends; the exit code reflects its final status.
async fn follow(ctx: &Ctx, client: &Client, id: &str, after: Option<i64>) -> anyhow::Result<()> {
    // The streaming request has no overall timeout: a run may take hours.
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .context("failed to build the HTTP client")?;
    let mut last = after.unwrap_or(0);
    let mut final_status: Option<String> = None;
    let mut attempts = 0;
    while final_status.is_none() {
        let mut req = http
            .get(format!("{}/api/runs/{id}/events", client.base_url()))
            .header("Last-Event-ID", last.to_string())
            .header("Accept", "text/event-stream");
        if let Some(token) = &ctx.settings.token {
            req = req.bearer_auth(token.expose());
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) if attempts < 5 => {
                attempts += 1;
                eprintln!("event stream interrupted ({e}); reconnecting from event {last}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("failed to follow the run")),
        };
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let exit = Exit::for_status(status.as_u16());
            return Err(
                Failed::new(exit, format!("failed to follow run {id}: {status} {text}")).into(),
            );
        }
        // SSE framing (and UTF-8 across chunk boundaries) by a maintained parser.
        let mut events = response.bytes_stream().eventsource();
        while let Some(frame) = events.next().await {
            let Ok(frame) = frame else { break };
            if let Ok(s) = frame.id.trim().parse::<i64>() {
                last = s;
            }
            let value: Value = serde_json::from_str(&frame.data).unwrap_or(Value::Null);
            if frame.event == "end" {
                final_status = value["status"].as_str().map(str::to_string);
                if ctx.out.json {
                    ctx.out
                        .print_json(&json!({"event": "end", "data": value}))?;
                }
                break;
            }
            show_event(ctx, &frame.event, &value)?;
        }
    }
    let status = final_status.unwrap_or_default();
    if status == "succeeded" {
        Ok(())
    } else {
        let run = client
            .get(&format!("/api/runs/{id}"))
            .await
            .unwrap_or(Value::Null);
        Err(Failed::new(
            Exit::RunFailed,
            format!(
                "run {id} ended {status}: {}",
                run["errorMessage"].as_str().unwrap_or("no message")
            ),
        )
        .with_hint(format!("`berth runs show {id}` has the details"))
        .into())
    }
}

/// Whether a progress line is open on stderr (to end it before the next message).
static PROGRESS_OPEN: AtomicBool = AtomicBool::new(false);

fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn show_event(ctx: &Ctx, stream: &str, value: &Value) -> anyhow::Result<()> {
    if ctx.out.json {
        return ctx.out.print_json(value);
    }
    let payload = &value["payload"];
    if stream != "progress" && PROGRESS_OPEN.swap(false, Ordering::Relaxed) {
        eprintln!();
    }
    match stream {
        "stdout" => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(payload["text"].as_str().unwrap_or_default().as_bytes());
            let _ = out.flush();
        }
        "stderr" => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(payload["text"].as_str().unwrap_or_default().as_bytes());
            let _ = err.flush();
        }
        "lifecycle" => {
            eprintln!(
                "{}",
                ctx.out.dim(&format!(
                    "[berth] {}",
                    payload["message"].as_str().unwrap_or_default()
                ))
            );
        }
        "progress" => {
            let line = format!(
                "[berth] {}: {} file(s), {}, {}/s",
                payload["phase"]
                    .as_str()
                    .unwrap_or("transfer")
                    .to_lowercase(),
                payload["files"].as_u64().unwrap_or(0),
                human_bytes(payload["bytes"].as_f64().unwrap_or(0.0)),
                human_bytes(payload["bytesPerSec"].as_f64().unwrap_or(0.0)),
            );
            if std::io::stderr().is_terminal() {
                // One line updated in place, like a progress bar.
                eprint!("\r\x1b[2K{}", ctx.out.dim(&line));
                PROGRESS_OPEN.store(true, Ordering::Relaxed);
            } else {
                eprintln!("{line}");
            }
            return Ok(());
        }
        _ => {}
    }
    Ok(())
}

async fn print_events(
    ctx: &Ctx,
    client: &Client,
    id: &str,
    after: Option<i64>,
) -> anyhow::Result<()> {
    // A finished run's stream ends by itself; a live one is read up to now via a short follow.
    let run = client
        .get(&format!("/api/runs/{id}"))
        .await
        .context("failed to get the run")?;
    let terminal = !matches!(run["status"].as_str(), Some("queued" | "running"));
    if !terminal {
        return Err(Failed::new(
            Exit::Usage,
            format!("run {id} is still {}", cell(run.get("status"))),
        )
        .with_hint(format!("follow it live with `berth runs logs -f {id}`"))
        .into());
    }
    match follow(ctx, client, id, after).await {
        Err(e)
            if e.downcast_ref::<Failed>()
                .is_some_and(|f| f.exit == Exit::RunFailed) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(100.0 * 1024.0 * 1024.0), "100.0 MiB");
    }
}
