//! Phase 6, stream: the agent's output into the event log exactly once (also across
//! re-attaches), timeout, cancel, lingering and lost-lease stops, verified and retried.

use std::time::Duration;

use berth_agents::{Event, RunSummary, Stream};
use berth_core::Secret;
use berth_exec::launcher::{
    AttachEvent, Launcher, LauncherError, Offsets, RemoteRun, StopReason, StreamKind,
};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::execute::Orchestrator;
use super::launch::{run_timeout, stop_grace};

/// Where streaming starts: at the beginning, or where a previous process left off.
#[derive(Debug, Default)]
pub(crate) struct StreamStart {
    pub(crate) offsets: Offsets,
    /// The stdout and stderr already recorded for this attempt.
    pub(crate) replay: [Vec<u8>; 2],
    /// How long the agent has been running already (counts against its timeout).
    pub(crate) elapsed: Duration,
}

/// How often a failed stop is tried again, and the pause before each retry: a short
/// disconnect must not leave a cancelled agent running.
pub(crate) const STOP_RETRIES: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Retry a failed stop until the group is confirmed gone (survivors are retried with KILL
/// too); the error of the last try when it never is.
pub(crate) async fn confirm_stopped(
    launcher: &Launcher,
    remote: &RemoteRun,
    mut result: Result<berth_exec::launcher::RunOutcome, LauncherError>,
    log: &EventLog,
) -> Result<(), LauncherError> {
    for pause in STOP_RETRIES {
        let Err(e) = result else {
            return Ok(());
        };
        log.step(
            "stop_failed",
            format!(
                "Stopping the agent failed: {e}; retrying in {} s.",
                pause.as_secs()
            ),
            json!({}),
        )
        .await;
        tokio::time::sleep(pause).await;
        result = launcher
            .stop(remote, Duration::from_secs(1), StopReason::Cancel)
            .await;
    }
    result.map(|_| ())
}

/// The last `max` bytes of `text` (cut at a character boundary).
pub(crate) fn tail_of(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let cut = text.len() - max;
    let cut = (cut..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[cut..].to_string()
}

/// Why Berth stopped an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    Cancelled,
    TimedOut,
    LeaseLost,
    /// The CLI printed its final result and then did not exit.
    Lingering,
}

/// What one attempt produced.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) outcome: berth_exec::launcher::RunOutcome,
    pub(crate) stopped: Option<Stopped>,
    pub(crate) summary: RunSummary,
    pub(crate) unknown_session: bool,
    /// The CLI started a new session instead of the one it was asked to resume.
    pub(crate) resume_ignored: bool,
    pub(crate) stderr_tail: String,
    /// Why stopping the agent's group failed or could not be confirmed.
    pub(crate) survivors: Option<String>,
    /// The output stream could not be re-established (the environment stayed unreachable).
    pub(crate) lost_stream: Option<String>,
}

impl Orchestrator {
    #[allow(
        clippy::too_many_arguments,
        reason = "the stream loop watches every stop signal"
    )]
    pub(crate) async fn stream(
        &self,
        launcher: &Launcher,
        remote: &RemoteRun,
        adapter: &dyn berth_agents::Adapter,
        invocation: &berth_agents::Invocation,
        secrets: &[Secret<String>],
        log: &EventLog,
        cancel: &CancellationToken,
        lost: &CancellationToken,
        start: StreamStart,
    ) -> Result<Attempt, RunError> {
        let mut parser = adapter.parser(invocation);
        let mut redactors = [
            crate::redact::Redactor::new(secrets.iter()),
            crate::redact::Redactor::new(secrets.iter()),
        ];
        let mut decoders = [
            super::utf8::Utf8Stream::default(),
            super::utf8::Utf8Stream::default(),
        ];
        let mut summary = RunSummary::default();
        let mut offsets = start.offsets;
        let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut stderr_tail = String::new();
        // Output recorded before a restart: the parser reads it again (its events are already
        // in the log), so the summary and a line cut by the restart come out whole.
        for (idx, kind) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let replay = &start.replay[idx];
            if idx == 1 {
                stderr_tail = tail_of(&String::from_utf8_lossy(replay), 4096);
            }
            partial[idx].extend_from_slice(replay);
            while let Some(pos) = partial[idx].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial[idx].drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
                for event in parser.parse_line(kind, &line) {
                    summary.apply(&event);
                }
            }
        }
        let mut stopped: Option<Stopped> = None;
        let mut stop_task: Option<
            tokio::task::JoinHandle<Result<berth_exec::launcher::RunOutcome, LauncherError>>,
        > = None;
        let timeout = async {
            match run_timeout(invocation.timeout_sec) {
                Some(limit) => tokio::time::sleep(limit.saturating_sub(start.elapsed)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(timeout);
        let mut linger: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let grace = stop_grace(invocation.grace_sec);
        let mut reattaches = 0u32;
        let mut lost_stream: Option<String> = None;
        // Since when the environment has not answered; an environment unreachable for longer
        // than the lease TTL ends the run (`lease_lost`), its agent left to the lease cleanup.
        let mut unreachable_since: Option<std::time::Instant> = None;
        let reach_budget = Duration::from_secs(self.lease_ttl_secs.max(3) as u64);
        // Every failed poll comes back at once (this loop re-attaches on its own schedule), so
        // the time the environment stays unreachable is measured from the first failure.
        let alive = berth_exec::launcher::Liveness::new();
        let mut stream = Box::pin(launcher.attach_watched(remote, offsets, &alive));
        let outcome = loop {
            let mut trigger: Option<Stopped> = None;
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(AttachEvent::Output(chunk))) => {
                        unreachable_since = None;
                        reattaches = 0;
                        let (idx, name, kind) = match chunk.stream {
                            StreamKind::Stdout => (0, "stdout", Stream::Stdout),
                            StreamKind::Stderr => (1, "stderr", Stream::Stderr),
                        };
                        match chunk.stream {
                            StreamKind::Stdout => offsets.stdout = chunk.end(),
                            StreamKind::Stderr => offsets.stderr = chunk.end(),
                        }
                        let data = redactors[idx].push(&chunk.data);
                        let text = decoders[idx].push(&data);
                        // Bytes the redactor or the decoder hold back (a possible start of a
                        // secret, half a character) are not recorded yet: a re-attach reads
                        // them again from `end`.
                        let held = redactors[idx].held_back() + decoders[idx].held_back();
                        let end = chunk.end().saturating_sub(held as u64);
                        if idx == 1 {
                            stderr_tail.push_str(&text);
                            stderr_tail = tail_of(&stderr_tail, 4096);
                        }
                        if !text.is_empty() {
                            log.append(name, json!({"text": text, "offset": chunk.offset, "end": end})).await;
                        }
                        partial[idx].extend_from_slice(&data);
                        while let Some(pos) = partial[idx].iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = partial[idx].drain(..=pos).collect();
                            let line = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
                            self.record(parser.parse_line(kind, &line), &mut summary, log).await;
                        }
                        if parser.is_terminal_result() && linger.is_none() && stopped.is_none() {
                            linger = Some(Box::pin(tokio::time::sleep(self.linger)));
                        }
                    }
                    Some(Ok(AttachEvent::Exited(outcome))) => {
                        if outcome.launcher_lost && stop_task.is_none() {
                            log.step("launcher_lost", "The launcher shell on the environment died before recording the agent's exit status; stopping the agent's process group.", json!({})).await;
                            let launcher = launcher.clone();
                            let remote = remote.clone();
                            stop_task = Some(tokio::spawn(async move {
                                launcher.stop(&remote, Duration::from_secs(1), StopReason::Cancel).await
                            }));
                        }
                        break outcome;
                    }
                    Some(Err(e)) => {
                        // A dropped connection: re-attach from the offsets already recorded, so
                        // no byte is lost or duplicated.
                        // An answer since the last failure (a quiet agent yields no output)
                        // starts a new count.
                        if unreachable_since.is_some_and(|since| alive.last() > since) {
                            unreachable_since = None;
                            reattaches = 0;
                        }
                        reattaches += 1;
                        let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() >= reach_budget {
                            // Never leave the agent running unowned: stop its group (retried),
                            // and if that cannot be confirmed either, the lease's cleanup will.
                            log.step("stream_lost", format!("The environment did not answer for {} s, longer than the lease TTL ({e}); stopping the agent's process group.", since.elapsed().as_secs()), json!({})).await;
                            lost_stream = Some(e.to_string());
                            if stop_task.is_none() {
                                let launcher = launcher.clone();
                                let remote = remote.clone();
                                stop_task = Some(tokio::spawn(async move {
                                    launcher.stop(&remote, Duration::from_secs(1), StopReason::Cancel).await
                                }));
                            }
                            break berth_exec::launcher::RunOutcome::default();
                        }
                        if reattaches == 1 {
                            log.step("reattach", format!("Output stream interrupted ({e}); re-attaching."), json!({"offsets": {"stdout": offsets.stdout, "stderr": offsets.stderr}})).await;
                        } else {
                            tracing::warn!(run = %remote.run_id, attempt = reattaches, error = %e, "re-attach failed; retrying");
                        }
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(reattaches.min(8)))).await;
                        stream = Box::pin(launcher.attach_watched(remote, offsets, &alive));
                    }
                    None => return Err(RunError::new(ErrorCode::AgentFailed, "the agent's output stream ended without an exit status")),
                },
                _ = self.detach.cancelled(), if stopped.is_none() => return Err(RunError::detached()),
                _ = cancel.cancelled(), if stopped.is_none() => trigger = Some(Stopped::Cancelled),
                _ = lost.cancelled(), if stopped.is_none() => trigger = Some(Stopped::LeaseLost),
                _ = &mut timeout, if stopped.is_none() => trigger = Some(Stopped::TimedOut),
                _ = async { match linger.as_mut() { Some(l) => l.await, None => std::future::pending().await } }, if stopped.is_none() => trigger = Some(Stopped::Lingering),
            }
            if let Some(reason) = trigger {
                stopped = Some(reason);
                let why = match reason {
                    Stopped::Cancelled => "Cancel requested: stopping the agent's process group.",
                    Stopped::TimedOut => "Timed out: stopping the agent's process group.",
                    Stopped::LeaseLost => "The lease was lost: stopping the agent at once.",
                    Stopped::Lingering => {
                        "The CLI printed its final result but did not exit: stopping it."
                    }
                };
                log.step("stopping", why, json!({})).await;
                let launcher = launcher.clone();
                let remote = remote.clone();
                let (reason, grace) = match reason {
                    Stopped::TimedOut => (StopReason::Timeout, grace),
                    Stopped::LeaseLost => (StopReason::Cancel, Duration::from_secs(1)),
                    _ => (StopReason::Cancel, grace),
                };
                stop_task = Some(tokio::spawn(async move {
                    launcher.stop(&remote, grace, reason).await
                }));
            }
        };
        // What the redactors held back (a possible start of a secret) is output too.
        for (idx, name, end) in [(0, "stdout", offsets.stdout), (1, "stderr", offsets.stderr)] {
            let rest = redactors[idx].finish();
            let mut text = decoders[idx].push(&rest);
            text.push_str(&decoders[idx].finish());
            if idx == 1 {
                stderr_tail.push_str(&text);
            }
            if !text.is_empty() {
                log.append(name, json!({"text": text, "offset": end})).await;
                partial[idx].extend_from_slice(&rest);
            }
        }
        for (idx, kind) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            while let Some(pos) = partial[idx].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial[idx].drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
                self.record(parser.parse_line(kind, &line), &mut summary, log)
                    .await;
            }
            if !partial[idx].is_empty() {
                let line = String::from_utf8_lossy(&partial[idx]).to_string();
                self.record(parser.parse_line(kind, &line), &mut summary, log)
                    .await;
            }
        }
        let mut survivors = None;
        if let Some(task) = stop_task {
            let first = task.await.unwrap_or_else(|e| {
                Err(LauncherError::Remote {
                    action: "stop",
                    run_id: remote.run_id.clone(),
                    env: launcher.transport().describe(),
                    detail: e.to_string(),
                })
            });
            // After the environment stayed unreachable past the lease TTL one try is enough:
            // the lease's cleanup keeps trying until the host answers.
            let confirmed = if lost_stream.is_some() {
                first.map(|_| ())
            } else {
                confirm_stopped(launcher, remote, first, log).await
            };
            if let Err(e) = confirmed {
                survivors = Some(e.to_string());
            }
        }
        Ok(Attempt {
            outcome,
            stopped,
            summary,
            unknown_session: parser.unknown_session(),
            resume_ignored: parser.resume_ignored(),
            stderr_tail,
            survivors,
            lost_stream,
        })
    }

    pub(crate) async fn record(
        &self,
        events: Vec<Event>,
        summary: &mut RunSummary,
        log: &EventLog,
    ) {
        for event in events {
            summary.apply(&event);
            // Raw output is already in the log as stdout/stderr chunks.
            if matches!(event, Event::Output { .. }) {
                continue;
            }
            log.append("agent", serde_json::to_value(&event).unwrap_or(Value::Null))
                .await;
        }
    }
}
