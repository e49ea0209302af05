//! Why a run failed, as data: the SPEC §7 error codes as an enum, and the failure the engine
//! carries from the step that failed to the run row.

use berth_store::StoreError;

/// A run's `error_code` (SPEC §7), plus the engine's own: `host_execution_forbidden` and
/// `internal_error`, and `detached`, which is never written (the run stays `running`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    EnvironmentNotFound,
    EnvironmentInactive,
    UnsupportedAdapterEnvironment,
    LeaseAcquireFailed,
    LeaseLost,
    ProbeFailed,
    WorkspaceRealizationFailed,
    AssetSyncFailed,
    AgentStartFailed,
    AgentFailed,
    TimedOut,
    Cancelled,
    WorkspaceRestoreConflict,
    WorkspaceRestoreFailed,
    HostExecutionForbidden,
    InternalError,
    Detached,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::EnvironmentNotFound,
        ErrorCode::EnvironmentInactive,
        ErrorCode::UnsupportedAdapterEnvironment,
        ErrorCode::LeaseAcquireFailed,
        ErrorCode::LeaseLost,
        ErrorCode::ProbeFailed,
        ErrorCode::WorkspaceRealizationFailed,
        ErrorCode::AssetSyncFailed,
        ErrorCode::AgentStartFailed,
        ErrorCode::AgentFailed,
        ErrorCode::TimedOut,
        ErrorCode::Cancelled,
        ErrorCode::WorkspaceRestoreConflict,
        ErrorCode::WorkspaceRestoreFailed,
        ErrorCode::HostExecutionForbidden,
        ErrorCode::InternalError,
        ErrorCode::Detached,
    ];

    /// The code as stored on the run and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EnvironmentNotFound => "environment_not_found",
            ErrorCode::EnvironmentInactive => "environment_inactive",
            ErrorCode::UnsupportedAdapterEnvironment => "unsupported_adapter_environment",
            ErrorCode::LeaseAcquireFailed => "lease_acquire_failed",
            ErrorCode::LeaseLost => "lease_lost",
            ErrorCode::ProbeFailed => "probe_failed",
            ErrorCode::WorkspaceRealizationFailed => "workspace_realization_failed",
            ErrorCode::AssetSyncFailed => "asset_sync_failed",
            ErrorCode::AgentStartFailed => "agent_start_failed",
            ErrorCode::AgentFailed => "agent_failed",
            ErrorCode::TimedOut => "timed_out",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::WorkspaceRestoreConflict => "workspace_restore_conflict",
            ErrorCode::WorkspaceRestoreFailed => "workspace_restore_failed",
            ErrorCode::HostExecutionForbidden => "host_execution_forbidden",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Detached => "detached",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run failure with its error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RunError {
    pub code: ErrorCode,
    pub message: String,
}

impl RunError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// This process let go of the run (graceful shutdown) while its agent keeps running: the
    /// run stays `running`, its lease active until its TTL, for the next start to re-attach.
    pub(crate) fn detached() -> Self {
        Self::new(
            ErrorCode::Detached,
            "the control plane is shutting down; the agent keeps running and is re-attached \
             at the next start",
        )
    }

    pub(crate) fn is_detached(&self) -> bool {
        self.code == ErrorCode::Detached
    }
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        RunError::new(ErrorCode::InternalError, format!("the store failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_and_cover_spec_section_7() {
        let names: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for spec in [
            "environment_not_found",
            "environment_inactive",
            "unsupported_adapter_environment",
            "lease_acquire_failed",
            "lease_lost",
            "probe_failed",
            "workspace_realization_failed",
            "asset_sync_failed",
            "agent_start_failed",
            "agent_failed",
            "timed_out",
            "cancelled",
            "workspace_restore_conflict",
            "workspace_restore_failed",
        ] {
            assert!(names.contains(spec), "{spec}");
        }
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }
}
