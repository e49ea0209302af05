//! The phases of a run, in order, as stored on the run (`runs.phase`) while it advances. What a
//! process that picks a run up (after a restart, or another instance) does depends on it: a run
//! that never launched its agent is queued again; one whose agent runs is re-attached.

use std::sync::Arc;

use berth_core::RunId;
use berth_store::Store;

/// Where a running run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Select,
    Lease,
    Realize,
    Launch,
    Stream,
    Restore,
    Finish,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Select,
        Phase::Lease,
        Phase::Realize,
        Phase::Launch,
        Phase::Stream,
        Phase::Restore,
        Phase::Finish,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Select => "select",
            Phase::Lease => "lease",
            Phase::Realize => "realize",
            Phase::Launch => "launch",
            Phase::Stream => "stream",
            Phase::Restore => "restore",
            Phase::Finish => "finish",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Nothing of the run exists on its environment yet except, perhaps, a workspace copy
    /// being synced: running it again from the start is safe. (`Launch` is not: the agent
    /// may have started before its session was recorded.)
    pub fn before_launch(self) -> bool {
        self < Phase::Launch
    }

    /// How a picked-up run continues, from its stored phase (`None`: claimed, not started)
    /// and whether its remote session was recorded.
    pub fn resumption(stored: Option<&str>, has_session: bool) -> Resumption {
        if has_session {
            return Resumption::Reattach;
        }
        match stored.map(Phase::parse) {
            None => Resumption::Requeue,
            Some(Some(p)) if p.before_launch() => Resumption::Requeue,
            _ => Resumption::Fail,
        }
    }
}

/// What to do with a run whose executor stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumption {
    /// Its agent was launched: re-attach to it.
    Reattach,
    /// It never launched anything: queue it again.
    Requeue,
    /// It may have launched an agent nobody can find: fail it (the lease cleanup stops what
    /// is left).
    Fail,
}

/// Record `phase` on the run (a failure to do so is logged, never fatal).
pub(crate) async fn enter(store: &Arc<dyn Store>, run_id: RunId, phase: Phase) {
    if let Err(e) = store.set_run_phase(run_id, phase.as_str()).await {
        tracing::warn!(run_id = %run_id, phase = phase.as_str(), error = %e, "cannot record the run's phase");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_ordered_and_round_trip() {
        for w in Phase::ALL.windows(2) {
            assert!(w[0] < w[1]);
        }
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::parse("nonsense"), None);
    }

    #[test]
    fn only_runs_that_never_launched_are_requeued() {
        use Resumption::*;
        assert_eq!(Phase::resumption(None, false), Requeue);
        assert_eq!(Phase::resumption(Some("select"), false), Requeue);
        assert_eq!(Phase::resumption(Some("lease"), false), Requeue);
        assert_eq!(Phase::resumption(Some("realize"), false), Requeue);
        assert_eq!(Phase::resumption(Some("launch"), false), Fail);
        assert_eq!(Phase::resumption(Some("stream"), false), Fail);
        assert_eq!(Phase::resumption(Some("garbage"), false), Fail);
        for p in Phase::ALL {
            assert_eq!(Phase::resumption(Some(p.as_str()), true), Reattach);
        }
    }
}
