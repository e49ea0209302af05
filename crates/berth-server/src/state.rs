//! Shared state of the HTTP server.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_engine::run::Worker;
use berth_exec::SshPool;
use berth_store::Store;

use crate::crypto::SecretBox;
use crate::metrics::Metrics;

pub type SharedState = Arc<AppState>;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<SecretBox>,
    /// Bound to a loopback address only.
    pub loopback: bool,
    /// Unrevoked API tokens. With none, a loopback server runs in `local_trusted` mode.
    pub active_tokens: Arc<AtomicU64>,
    /// Canonical directories under which execution workspaces may live.
    pub workspace_roots: Vec<PathBuf>,
    /// Host, Origin and Content-Type rules every request must pass.
    pub boundary: crate::boundary::Boundary,
    pub metrics: Metrics,
    /// `$BERTH_HOME`: the database and `master.key`; no run works in it or above it.
    pub berth_home: PathBuf,
    /// Where local runs keep scratch and assets (`runsRoot`).
    pub local_root: PathBuf,
    /// One pooled SSH connection per environment, shared by probes (and later runs).
    pub ssh_pool: SshPool,
    /// Claims and executes queued runs; the API wakes it and cancels through it.
    pub worker: Arc<Worker>,
    /// Held while this server uses a SQLite file (one server per file).
    pub instance_lock: Option<std::fs::File>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("backend", &self.store.backend())
            .field("loopback", &self.loopback)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// What cleans an environment's side of a lease (the reaper's, and environment delete's).
    pub fn cleaner(&self) -> berth_engine::reaper::EnvironmentCleaner {
        berth_engine::reaper::EnvironmentCleaner {
            store: self.store.clone(),
            secrets: self.secrets.clone(),
            pool: self.ssh_pool.clone(),
            local_root: self.local_root.clone(),
            grace: std::time::Duration::from_secs(5),
        }
    }

    /// `local_trusted`: bound to loopback with no tokens configured (SPEC §11).
    pub fn local_trusted(&self) -> bool {
        self.loopback && self.active_tokens.load(Ordering::SeqCst) == 0
    }

    pub fn auth_mode(&self) -> &'static str {
        if self.local_trusted() {
            "local_trusted"
        } else {
            "token"
        }
    }
}
