//! Picking a run up again after the control plane stopped (SIGKILL, a crash, a graceful
//! shutdown). The agent never depended on this process: the launcher runs it detached and
//! keeps its output and exit status in files on the environment. What this process needs to
//! find it again is recorded at launch ([`RemoteSession`]); what the run already streamed is
//! in its event log, each output event carrying the raw offset it ends at, so the rest is
//! streamed exactly once. Restore and release then run as on any other path.

use std::time::Duration;

use berth_agents::SessionParams;
use berth_core::LeaseStatus;
use berth_core::model::Run;
use berth_exec::RemoteLayout;
use berth_exec::launcher::{Launcher, Offsets, RemoteRun};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::error::{ErrorCode, RunError};
use super::events::EventLog;
use super::execute::Orchestrator;
use super::finish::Finish;
use super::realize::Plan;
use super::select::load_context;
use super::stream::StreamStart;
use crate::holder::HeldLease;

/// Where a launched agent runs, recorded with its run at launch. Holds no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RemoteSession {
    pub(crate) attempt: u32,
    pub(crate) cwd: String,
    /// The session the launch resumed: the invocation (and its parser) is built the same way.
    pub(crate) resume: Option<SessionParams>,
    /// The launcher's run key (`<runId>` or `<runId>-<attempt>`) and directory.
    pub(crate) run_key: String,
    pub(crate) dir: String,
    pub(crate) pgid: u32,
    pub(crate) launched_at: DateTime<Utc>,
    /// The port in the agent's `BERTH_API_URL` on its environment (a remote forward over SSH),
    /// forwarded again to this process's API after a restart.
    #[serde(default)]
    pub(crate) api_port: Option<u16>,
}

impl RemoteSession {
    /// Before launch: what the attempt will be.
    pub(crate) fn draft(attempt: u32, cwd: &str, resume: Option<SessionParams>) -> Self {
        Self {
            attempt,
            cwd: cwd.to_string(),
            resume,
            run_key: String::new(),
            dir: String::new(),
            pgid: 0,
            launched_at: Utc::now(),
            api_port: None,
        }
    }

    /// The agent reaches the API at `url` (its port is kept for a restart).
    pub(crate) fn with_api_url(mut self, url: Option<&str>) -> Self {
        self.api_port = url
            .and_then(|u| u.rsplit_once(':'))
            .and_then(|(_, port)| port.trim_end_matches('/').parse().ok());
        self
    }

    /// The launcher started it.
    pub(crate) fn launched(&mut self, remote: &RemoteRun) {
        self.run_key = remote.run_id.clone();
        self.dir = remote.dir.clone();
        self.pgid = remote.pgid;
        self.launched_at = Utc::now();
    }

    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn remote_run(&self) -> RemoteRun {
        RemoteRun {
            run_id: self.run_key.clone(),
            dir: self.dir.clone(),
            pgid: self.pgid,
        }
    }
}

/// The output an attempt already recorded: where to resume reading, and the bytes to replay
/// through the parser. `events` are the run's events in order.
fn recorded_output(events: &[(String, Value)], attempt: u32) -> (Offsets, [Vec<u8>; 2]) {
    let started = events.iter().rposition(|(stream, p)| {
        stream == "lifecycle"
            && p["step"] == "agent_started"
            && p["attempt"].as_u64() == Some(u64::from(attempt))
    });
    let mut offsets = Offsets::default();
    let mut replay: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (stream, p) in events.iter().skip(started.map_or(events.len(), |i| i + 1)) {
        let idx = match stream.as_str() {
            "stdout" => 0,
            "stderr" => 1,
            _ => continue,
        };
        let text = p["text"].as_str().unwrap_or_default();
        replay[idx].extend_from_slice(text.as_bytes());
        // Events written before `end` existed: the chunk's start plus its (unredacted) text.
        let end = p["end"]
            .as_u64()
            .or_else(|| p["offset"].as_u64().map(|o| o + text.len() as u64))
            .unwrap_or(0);
        let at = if idx == 0 {
            &mut offsets.stdout
        } else {
            &mut offsets.stderr
        };
        *at = (*at).max(end);
    }
    (offsets, replay)
}

impl Orchestrator {
    /// Finish a `running` run whose previous executor stopped: re-attach to its agent when
    /// the lease it held is still valid, else fail it (`lease_lost`; the reaper cleans up
    /// once the lease expires). Never leaves the run `running` unless this process detaches.
    pub async fn reattach(&self, run: Run, cancel: CancellationToken) -> Run {
        let log = EventLog::new(self.store.clone(), run.id);
        let finish = match self.reattach_and_finish(&run, &log, cancel).await {
            Ok(finish) => finish,
            Err(error) => Finish::failed(error),
        };
        self.conclude(run, finish, &log).await
    }

    async fn reattach_and_finish(
        &self,
        run: &Run,
        log: &EventLog,
        cancel: CancellationToken,
    ) -> Result<Finish, RunError> {
        let gone = |why: &str| {
            RunError::new(
                ErrorCode::LeaseLost,
                format!(
                    "the control plane stopped while this run was executing and {why}; its \
                     lease expires at its TTL and the reaper then stops what is left of the \
                     agent on the environment"
                ),
            )
        };
        let session = self
            .store
            .get_remote_session(run.id)
            .await?
            .and_then(|v| serde_json::from_value::<RemoteSession>(v).ok())
            .ok_or_else(|| gone("no launch of its agent was recorded"))?;
        let lease_id = run.lease_id.ok_or_else(|| gone("it held no lease"))?;
        let lease = self
            .store
            .get_lease(lease_id)
            .await?
            .ok_or_else(|| gone("its lease is gone"))?;
        if lease.status != LeaseStatus::Active || lease.expires_at <= Utc::now() {
            return Err(gone("its lease expired before the restart"));
        }
        // Renew at once (it may be close to expiry), with the fence it was granted: a newer
        // holder of the scope makes this fail and nothing is touched.
        let lease = self
            .store
            .renew_lease(lease.id, lease.fence, self.lease_ttl_secs)
            .await
            .map_err(|e| gone(&format!("its lease could not be renewed ({e})")))?;
        let held = HeldLease::hold(self.store.clone(), lease.clone(), self.lease_ttl_secs);
        let env_id = run
            .environment_id
            .ok_or_else(|| gone("it has no environment"))?;
        let env = self
            .store
            .get_environment(env_id)
            .await?
            .ok_or_else(|| gone("its environment was deleted"))?;
        tracing::Span::current()
            .record("environment_id", tracing::field::display(env.id))
            .record("lease_id", tracing::field::display(lease.id))
            .record("fence", lease.fence);
        log.step(
            "reattaching",
            format!(
                "The control plane restarted: re-attaching to the agent (attempt {}, process group {}) on \"{}\".",
                session.attempt, session.pgid, env.name
            ),
            json!({"attempt": session.attempt, "pgid": session.pgid, "leaseId": lease.id, "fence": lease.fence}),
        )
        .await;
        let ctx = load_context(
            self.store.as_ref(),
            run.company_id,
            run.agent_id,
            run.issue_id,
            run.execution_workspace_id,
        )
        .await?;
        let outcome = match self.plan(run, &ctx, &env, &lease.scope_key, log).await {
            Ok(plan) => {
                let outcome = self
                    .reattach_agent(run, &ctx, &plan, &session, log, &cancel, &held.lost())
                    .await;
                if matches!(&outcome, Err(e) if e.is_detached()) {
                    return outcome;
                }
                self.restore(run, &plan, outcome, log, &held.lost()).await
            }
            Err(e) => Finish::failed(e),
        };
        self.release(held, outcome, log).await
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the stream needs the whole run context"
    )]
    async fn reattach_agent(
        &self,
        run: &Run,
        ctx: &super::select::RunContext,
        plan: &Plan,
        session: &RemoteSession,
        log: &EventLog,
        cancel: &CancellationToken,
        lost: &CancellationToken,
    ) -> Result<Finish, RunError> {
        let (agent, adapter, adapter_config, mut secrets) =
            self.agent_for(run, ctx, ErrorCode::AgentFailed).await?;
        if let Ok(token) = self.secrets.run_token(run.id) {
            secrets.push(token);
        }
        // The same invocation as at launch (minus what only the launch needed), for its
        // parser and limits.
        let mut bctx = berth_agents::BuildContext::new(adapter_config, &run.prompt, &plan.cwd);
        bctx.run_id = run.id;
        bctx.resume = session.resume.clone();
        bctx.assets_dir_on_environment =
            Some(RemoteLayout::new(&plan.root).assets_dir(&agent.adapter_type));
        let invocation = adapter
            .build(&bctx)
            .map_err(|e| RunError::new(ErrorCode::AgentFailed, e.to_string()))?;
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.list_run_events(run.id, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            events.extend(page.into_iter().map(|e| (e.stream, e.payload)));
        }
        let (offsets, replay) = recorded_output(&events, session.attempt);
        let start = StreamStart {
            offsets,
            replay,
            elapsed: (Utc::now() - session.launched_at)
                .to_std()
                .unwrap_or(Duration::ZERO),
        };
        // The egress proxy died with the previous process: serve it again on the socket the
        // sandbox already binds.
        let _egress = self
            .watch_egress(run, plan.transport.as_ref(), log)
            .await
            .map_err(|e| RunError::new(ErrorCode::AgentFailed, e))?;
        // The agent's BERTH_API_URL pointed at the previous process: point its port at this
        // one (the run token is derived from the run id, so the agent's token stays valid).
        if let (Some(port), Some(api)) = (session.api_port, self.api_addr) {
            match plan.transport.expose_local_port_at(api, port).await {
                Ok(_) => {}
                Err(e) => {
                    log.step(
                        "api_unreachable",
                        format!("The agent's BERTH_API_URL could not be restored after the restart: {e}."),
                        json!({}),
                    )
                    .await;
                }
            }
        }
        let launcher = Launcher::new(plan.transport.clone(), plan.root.clone());
        let remote = session.remote_run();
        let run_work = RemoteLayout::new(&plan.root).scratch_dir(&run.id.to_string());
        let attempt = self
            .stream(
                &launcher,
                &remote,
                adapter,
                &invocation,
                &secrets,
                log,
                cancel,
                lost,
                start,
            )
            .await;
        if let Err(e) = &attempt
            && e.is_detached()
        {
            return Err(e.clone());
        }
        let attempt = attempt?;
        if attempt.survivors.is_none() {
            self.remove_run_dirs(
                run,
                plan.transport.as_ref(),
                &plan.root,
                &plan.cwd,
                &run_work,
                session.attempt,
                log,
            )
            .await;
        }
        Ok(self
            .finish_from(attempt, &plan.cwd, plan.identity.clone(), log)
            .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(stream: &str, payload: Value) -> (String, Value) {
        (stream.to_string(), payload)
    }

    #[test]
    fn output_after_the_attempts_start_is_replayed_and_reading_resumes_at_its_end() {
        let events = vec![
            ev("lifecycle", json!({"step": "agent_started", "attempt": 1})),
            ev("stdout", json!({"text": "old\n", "offset": 0, "end": 4})),
            ev("lifecycle", json!({"step": "agent_started", "attempt": 2})),
            ev("stdout", json!({"text": "one\ntw", "offset": 0, "end": 6})),
            ev("stderr", json!({"text": "warn\n", "offset": 0, "end": 5})),
            // The redactor held 3 bytes back: `end` is not offset + text.
            ev("stdout", json!({"text": "o\n", "offset": 6, "end": 8})),
            ev("lifecycle", json!({"step": "reattach"})),
        ];
        let (offsets, replay) = recorded_output(&events, 2);
        assert_eq!(
            offsets,
            Offsets {
                stdout: 8,
                stderr: 5
            }
        );
        assert_eq!(replay[0], b"one\ntwo\n");
        assert_eq!(replay[1], b"warn\n");
    }

    #[test]
    fn events_without_end_fall_back_to_offset_and_length_and_nothing_means_zero() {
        let events = vec![
            ev("lifecycle", json!({"step": "agent_started", "attempt": 1})),
            ev("stdout", json!({"text": "abc", "offset": 10})),
        ];
        let (offsets, _) = recorded_output(&events, 1);
        assert_eq!(offsets.stdout, 13);
        let (offsets, replay) = recorded_output(&events, 2);
        assert_eq!(offsets, Offsets::default());
        assert!(replay[0].is_empty());
    }

    #[test]
    fn a_session_round_trips_through_json() {
        let mut s = RemoteSession::draft(2, "/w", None);
        s.launched(&RemoteRun {
            run_id: "r-2".into(),
            dir: "/w/.berth/runs/r-2".into(),
            pgid: 77,
        });
        let back: RemoteSession = serde_json::from_value(s.to_json()).unwrap();
        assert_eq!(back, s);
    }
}
