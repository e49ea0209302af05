//! The error type of the sync layer. Messages read as "failed to …" fragments.

use std::path::PathBuf;

use berth_exec::ExecError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("failed to {what} at {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("failed to {what} on {env}: {detail}")]
    Remote {
        env: String,
        what: String,
        detail: String,
    },
    #[error("failed to run git to {what}: {detail}")]
    Git { what: String, detail: String },
    /// A path, tar member or symlink that would land outside the workspace or is not a
    /// regular file, directory or symlink.
    #[error("refused unsafe entry {path:?}: {reason}")]
    Unsafe { path: String, reason: String },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: String,
        value: String,
        reason: String,
    },
    #[error(
        "failed to stage {needed} bytes in {}: only {available} bytes free",
        path.display()
    )]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("failed to restore: no sync-out baseline recorded for scope {scope}")]
    NoBaseline { scope: String },
    #[error("failed to read the sync state {}: {detail}", path.display())]
    State { path: PathBuf, detail: String },
    #[error("failed to {what}: background task failed: {detail}")]
    Task { what: String, detail: String },
}

impl SyncError {
    pub(crate) fn io(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn unsafe_entry(path: &[u8], reason: impl Into<String>) -> Self {
        Self::Unsafe {
            path: String::from_utf8_lossy(path).into_owned(),
            reason: reason.into(),
        }
    }
}

/// Run `f` on a blocking thread (file system work, hashing, stream building).
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Task {
            what: what.to_owned(),
            detail: e.to_string(),
        })?
}
