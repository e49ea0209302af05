//! The lease state machine (SPEC §5) as pure transitions, plus the policy rules that decide a
//! lease's scope and its status at release.
//!
//! Stores apply these transitions with guarded SQL (`UPDATE … WHERE status = $from AND fence =
//! $f`); this module decides which transitions exist at all, so an illegal one is an error in
//! both places and never a silent overwrite.

use crate::enums::{LeasePolicy, LeaseStatus};
use crate::ids::{AgentId, ExecutionWorkspaceId, RunId};

/// How the run holding a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

/// Something that happens to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// The holder releases the lease because its run ended this way.
    Release(RunOutcome),
    /// The reaper found the lease past `expires_at` (or a forced delete expired it).
    Expire,
    /// A later run of the same scope resumed this retained lease as a new active lease.
    Resume,
    /// The reaper destroys a retained lease idle past its retention.
    Destroy,
    /// Cleaning the environment side failed; it will be retried.
    CleanupFailed,
    /// A pending cleanup finally succeeded.
    CleanupSucceeded,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal lease transition: {event:?} from status {from}")]
pub struct IllegalTransition {
    pub from: LeaseStatus,
    pub event: LeaseEvent,
}

/// The result of applying an event: the next status and the failure reason to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub to: LeaseStatus,
    pub failure_reason: Option<&'static str>,
}

/// The status (and failure reason) a lease of `policy` gets when its run ends with `outcome`.
pub fn release_target(policy: LeasePolicy, outcome: RunOutcome) -> Transition {
    use LeasePolicy::*;
    use RunOutcome::*;
    match (outcome, policy) {
        (Succeeded, ReuseByEnvironment | ReuseByExecutionWorkspace) => Transition {
            to: LeaseStatus::Retained,
            failure_reason: None,
        },
        (Succeeded, Ephemeral | RetainOnFailure) => Transition {
            to: LeaseStatus::Released,
            failure_reason: None,
        },
        (Failed, RetainOnFailure) => Transition {
            to: LeaseStatus::Retained,
            failure_reason: Some("run_failed"),
        },
        (TimedOut, RetainOnFailure) => Transition {
            to: LeaseStatus::Retained,
            failure_reason: Some("timed_out"),
        },
        (Failed, _) => Transition {
            to: LeaseStatus::Failed,
            failure_reason: Some("run_failed"),
        },
        (TimedOut, _) => Transition {
            to: LeaseStatus::Failed,
            failure_reason: Some("timed_out"),
        },
        (Cancelled, _) => Transition {
            to: LeaseStatus::Released,
            failure_reason: Some("cancelled"),
        },
    }
}

/// Apply `event` to a lease in status `from` under `policy`.
pub fn transition(
    from: LeaseStatus,
    policy: LeasePolicy,
    event: LeaseEvent,
) -> Result<Transition, IllegalTransition> {
    use LeaseEvent::*;
    use LeaseStatus::*;
    let illegal = Err(IllegalTransition { from, event });
    match (from, event) {
        (Active, Release(outcome)) => Ok(release_target(policy, outcome)),
        (Active, Expire) => Ok(Transition {
            to: Expired,
            failure_reason: Some("expired"),
        }),
        (Retained, Resume) => Ok(Transition {
            to: Released,
            failure_reason: None,
        }),
        (Retained, Destroy) => Ok(Transition {
            to: Expired,
            failure_reason: Some("retention_elapsed"),
        }),
        // Cleanup happens after a lease left `active`; a failed one parks it for the reaper.
        (Released | Expired | Failed | Retained, CleanupFailed) => Ok(Transition {
            to: PendingCleanup,
            failure_reason: None,
        }),
        (PendingCleanup, CleanupFailed) => Ok(Transition {
            to: PendingCleanup,
            failure_reason: None,
        }),
        (PendingCleanup, CleanupSucceeded) => Ok(Transition {
            to: Expired,
            failure_reason: None,
        }),
        // A first cleanup that succeeds leaves the terminal status as it is (the caller records
        // `cleanup_status = success`).
        (s @ (Released | Expired | Failed), CleanupSucceeded) => Ok(Transition {
            to: s,
            failure_reason: None,
        }),
        _ => illegal,
    }
}

/// The single-flight scope of a lease (SPEC §5): at most one active lease per
/// `(environment, scope_key)`.
pub fn scope_key(
    policy: LeasePolicy,
    execution_workspace_id: Option<ExecutionWorkspaceId>,
    run_id: Option<RunId>,
    agent_id: Option<AgentId>,
) -> Option<String> {
    match policy {
        LeasePolicy::ReuseByEnvironment => agent_id.map(|a| format!("agent:{a}")),
        LeasePolicy::Ephemeral
        | LeasePolicy::RetainOnFailure
        | LeasePolicy::ReuseByExecutionWorkspace => execution_workspace_id
            .map(|w| format!("workspace:{w}"))
            .or_else(|| run_id.map(|r| format!("run:{r}"))),
    }
}

/// Default lease TTL (SPEC §5).
pub const DEFAULT_TTL_SECS: i64 = 600;
/// Retained leases of reuse policies idle this long are destroyed by the reaper.
pub const REUSE_RETENTION_SECS: i64 = 7 * 24 * 3600;
/// Leases retained for inspection after a failure (`retain_on_failure`).
pub const FAILURE_RETENTION_SECS: i64 = 24 * 3600;

#[cfg(test)]
mod tests {
    use super::*;
    use LeaseStatus::*;

    #[test]
    fn release_by_outcome_follows_the_policy_table() {
        use LeasePolicy::*;
        use RunOutcome::*;
        let cases = [
            (Ephemeral, Succeeded, Released, None),
            (Ephemeral, Failed, LeaseStatus::Failed, Some("run_failed")),
            (Ephemeral, TimedOut, LeaseStatus::Failed, Some("timed_out")),
            (Ephemeral, Cancelled, Released, Some("cancelled")),
            (ReuseByExecutionWorkspace, Succeeded, Retained, None),
            (
                ReuseByExecutionWorkspace,
                Failed,
                LeaseStatus::Failed,
                Some("run_failed"),
            ),
            (
                ReuseByExecutionWorkspace,
                Cancelled,
                Released,
                Some("cancelled"),
            ),
            (ReuseByEnvironment, Succeeded, Retained, None),
            (
                ReuseByEnvironment,
                TimedOut,
                LeaseStatus::Failed,
                Some("timed_out"),
            ),
            (RetainOnFailure, Succeeded, Released, None),
            (RetainOnFailure, Failed, Retained, Some("run_failed")),
            (RetainOnFailure, TimedOut, Retained, Some("timed_out")),
            (RetainOnFailure, Cancelled, Released, Some("cancelled")),
        ];
        for (policy, outcome, to, reason) in cases {
            let t = release_target(policy, outcome);
            assert_eq!(
                (t.to, t.failure_reason),
                (to, reason),
                "{policy} {outcome:?}"
            );
        }
    }

    #[test]
    fn only_active_leases_can_be_released_or_expired() {
        for from in LeaseStatus::ALL {
            let release = transition(
                *from,
                LeasePolicy::Ephemeral,
                LeaseEvent::Release(RunOutcome::Succeeded),
            );
            let expire = transition(*from, LeasePolicy::Ephemeral, LeaseEvent::Expire);
            if *from == Active {
                assert!(release.is_ok() && expire.is_ok());
            } else {
                assert_eq!(
                    release.unwrap_err(),
                    IllegalTransition {
                        from: *from,
                        event: LeaseEvent::Release(RunOutcome::Succeeded)
                    }
                );
                assert!(expire.is_err());
            }
        }
    }

    #[test]
    fn only_retained_leases_can_be_resumed_or_destroyed() {
        for from in LeaseStatus::ALL {
            let p = LeasePolicy::ReuseByExecutionWorkspace;
            assert_eq!(
                transition(*from, p, LeaseEvent::Resume).is_ok(),
                *from == Retained
            );
            assert_eq!(
                transition(*from, p, LeaseEvent::Destroy).is_ok(),
                *from == Retained
            );
        }
    }

    #[test]
    fn cleanup_failure_parks_and_success_finishes() {
        let p = LeasePolicy::Ephemeral;
        assert_eq!(
            transition(Expired, p, LeaseEvent::CleanupFailed)
                .unwrap()
                .to,
            PendingCleanup
        );
        assert_eq!(
            transition(PendingCleanup, p, LeaseEvent::CleanupSucceeded)
                .unwrap()
                .to,
            Expired
        );
        assert!(transition(Active, p, LeaseEvent::CleanupSucceeded).is_err());
        assert!(transition(Retained, p, LeaseEvent::CleanupSucceeded).is_err());
        assert_eq!(
            transition(Failed, p, LeaseEvent::CleanupSucceeded)
                .unwrap()
                .to,
            Failed
        );
        assert!(transition(Active, p, LeaseEvent::CleanupFailed).is_err());
    }

    #[test]
    fn scope_key_is_workspace_then_run_or_agent_for_environment_reuse() {
        let w = ExecutionWorkspaceId::new();
        let r = RunId::new();
        let a = AgentId::new();
        assert_eq!(
            scope_key(LeasePolicy::Ephemeral, Some(w), Some(r), Some(a)),
            Some(format!("workspace:{w}"))
        );
        assert_eq!(
            scope_key(LeasePolicy::RetainOnFailure, None, Some(r), Some(a)),
            Some(format!("run:{r}"))
        );
        assert_eq!(
            scope_key(LeasePolicy::ReuseByEnvironment, Some(w), Some(r), Some(a)),
            Some(format!("agent:{a}"))
        );
        assert_eq!(
            scope_key(LeasePolicy::ReuseByEnvironment, Some(w), Some(r), None),
            None
        );
    }
}
