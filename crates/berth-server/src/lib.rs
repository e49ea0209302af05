//! Berth's HTTP API (axum): routes, auth, secrets at rest, OpenAPI, metrics and the web UI.
//!
//! The entry point takes a listener and a shutdown signal ([`launch_with_listener`]) so tests
//! start the real server on port 0 and drive it with the real client. Background loops (the
//! reaper, run workers) do not live here.

pub mod activity;
pub mod auth;
pub mod boundary;
/// Secrets at rest live in the engine, which also needs them to reach environments.
pub use berth_engine::secrets as crypto;
pub mod error;
pub mod extract;
pub mod guards;
pub mod json;
pub mod metrics;
pub mod probing;
pub mod routes;
pub mod state;
mod ui;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use berth_store::Store;
use tracing::Instrument as _;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::crypto::SecretBox;
use crate::state::{AppState, SharedState};

/// Everything the server needs, already layered (defaults < file < env < flags) by the binary.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// `$BERTH_HOME`: holds `master.key` (created 0600 on first start) and `lab/`.
    pub berth_home: PathBuf,
    /// `BERTH_MASTER_KEY` (64 hex chars); when set, `master.key` is not read or created.
    pub master_key_hex: Option<String>,
    /// Directories under which execution workspaces may live. Empty = `/` in local_trusted
    /// mode; must be configured when bound elsewhere.
    pub workspace_roots: Vec<PathBuf>,
    /// Extra names (`name` or `name:port`) the server answers to besides loopback names for
    /// its own port (`server.allowedHosts`; see [`boundary`]).
    pub allowed_hosts: Vec<String>,
    /// Extra origins allowed to change state (`server.allowedOrigins`).
    pub allowed_origins: Vec<String>,
    /// Where local runs keep scratch and asset directories (`runsRoot`); `None` =
    /// `<BERTH_HOME>-runs`. Never inside or above `BERTH_HOME`.
    pub runs_root: Option<PathBuf>,
    /// How long a run's lease lives without a renewal; `None` = the default (10 min). Also
    /// how soon another PostgreSQL instance adopts the runs of one that died.
    pub lease_ttl_secs: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to open the database: {0}")]
    Database(String),
    #[error("failed to load the master key: {0}")]
    MasterKey(String),
    #[error("failed to serve HTTP: {0}")]
    Serve(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "another Berth server is already using the SQLite database {}; stop it first, or give \
         this one its own BERTH_HOME or --database-url (several servers share work only through \
         PostgreSQL)",
        .0.display()
    )]
    AlreadyServed(PathBuf),
}

#[derive(OpenApi)]
#[openapi(info(
    title = "Berth API",
    description = "Execution environments, leases and runs for AI coding agents."
))]
struct ApiDoc;

/// Open the store named by a database URL (`sqlite://…`, a plain path, or `postgres://…`).
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, ServerError> {
    let store: Arc<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(
                berth_store::postgres::PgStore::connect(url)
                    .await
                    .map_err(|e| ServerError::Database(e.to_string()))?,
            )
        } else {
            Arc::new(
                berth_store::sqlite::SqliteStore::open(url)
                    .await
                    .map_err(|e| ServerError::Database(e.to_string()))?,
            )
        };
    Ok(store)
}

/// `$BERTH_HOME` holds the database and the master key: only its owner may read it. SQLite
/// creates its WAL and shared-memory files with the database file's mode.
fn restrict_home(config: &ServerConfig) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let home = &config.berth_home;
    if !home.exists() {
        std::fs::create_dir_all(home).map_err(|e| {
            ServerError::Config(format!("cannot create BERTH_HOME {}: {e}", home.display()))
        })?;
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            ServerError::Config(format!(
                "cannot restrict BERTH_HOME {}: {e}",
                home.display()
            ))
        })?;
    }
    Ok(())
}

/// The file behind a SQLite database URL; `None` for PostgreSQL and in-memory databases.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if url.starts_with("postgres") {
        return None;
    }
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(':') {
        return None;
    }
    Some(PathBuf::from(path))
}

fn restrict_sqlite_files(url: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = sqlite_file(url) else {
        return;
    };
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let file = PathBuf::from(file);
        if file.exists()
            && let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(file = %file.display(), error = %e, "could not restrict the database file to its owner");
        }
    }
}

/// One server per SQLite file: a second one would take the first one's running runs for a
/// dead server's and fail them. The lock (`<db>.lock`, `flock`) lives as long as the returned
/// file, and the kernel drops it with the process, however that ends.
fn lock_sqlite(url: &str) -> Result<Option<std::fs::File>, ServerError> {
    let Some(path) = sqlite_file(url) else {
        return Ok(None);
    };
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| ServerError::Database(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| {
                ServerError::Database(format!("cannot open {}: {e}", lock_path.display()))
            })?
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::AlreadyServed(path)),
        Err(std::fs::TryLockError::Error(e)) => Err(ServerError::Database(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

/// The root of local runs' scratch and assets: created 0700, never inside or above
/// `BERTH_HOME`.
fn runs_root(config: &ServerConfig) -> Result<PathBuf, ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let root = config
        .runs_root
        .clone()
        .unwrap_or_else(|| berth_engine::host::default_local_root(&config.berth_home));
    if berth_engine::host::overlaps_home(&root, &config.berth_home) {
        return Err(ServerError::Config(format!(
            "runsRoot: {}",
            berth_engine::host::home_overlap_message(&root, &config.berth_home)
        )));
    }
    if !root.exists() {
        std::fs::create_dir_all(&root).map_err(|e| {
            ServerError::Config(format!("cannot create runsRoot {}: {e}", root.display()))
        })?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            ServerError::Config(format!("cannot restrict runsRoot {}: {e}", root.display()))
        })?;
    }
    Ok(root)
}

/// Build the application state: store, master key, auth mode inputs.
pub async fn build_state(
    config: &ServerConfig,
    addr: std::net::SocketAddr,
    agent_api: std::net::SocketAddr,
) -> Result<SharedState, ServerError> {
    let loopback = addr.ip().is_loopback();
    restrict_home(config)?;
    let instance_lock = lock_sqlite(&config.database_url)?;
    let store = open_store(&config.database_url).await?;
    restrict_sqlite_files(&config.database_url);
    store
        .ensure_default_company()
        .await
        .map_err(|e| ServerError::Database(e.to_string()))?;
    let secrets = SecretBox::load_or_create(&config.berth_home, config.master_key_hex.as_deref())
        .map_err(|e| ServerError::MasterKey(e.to_string()))?;
    let tokens = store
        .count_active_tokens()
        .await
        .map_err(|e| ServerError::Database(e.to_string()))?;
    let roots = if config.workspace_roots.is_empty() {
        if !loopback {
            return Err(ServerError::Config(
                "workspaceRoots must be configured when the server is not bound to loopback".into(),
            ));
        }
        vec![PathBuf::from("/")]
    } else {
        config
            .workspace_roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r).map_err(|e| {
                    ServerError::Config(format!(
                        "workspace root {} cannot be resolved: {e}",
                        r.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let local_root = runs_root(config)?;
    let secrets = Arc::new(secrets);
    let pool = berth_exec::SshPool::new();
    let active_tokens = Arc::new(AtomicU64::new(tokens));
    let mut orchestrator = berth_engine::run::Orchestrator::new(
        store.clone(),
        secrets.clone(),
        pool.clone(),
        config.berth_home.clone(),
    );
    orchestrator.local_root = local_root.clone();
    // Token mode (SPEC §11): running on this host needs the company's `hostExecution` grant.
    let counted = active_tokens.clone();
    orchestrator.host_grant_required =
        Arc::new(move || !loopback || counted.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // Agents reach the API through its agent listener (locally, or through an SSH remote
    // forward), where only tokens count.
    orchestrator.api_addr = Some(agent_api);
    if let Some(ttl) = config.lease_ttl_secs {
        orchestrator.lease_ttl_secs = ttl.max(3);
    }
    let worker = berth_engine::run::Worker::new(orchestrator, 32);
    Ok(Arc::new(AppState {
        store,
        secrets,
        loopback,
        active_tokens,
        workspace_roots: roots,
        boundary: boundary::Boundary::new(addr, &config.allowed_hosts, &config.allowed_origins),
        metrics: metrics::Metrics::default(),
        berth_home: config.berth_home.clone(),
        local_root,
        ssh_pool: pool,
        worker,
        instance_lock,
    }))
}

/// The full router: `/api/*`, `/api/openapi.json`, `/metrics`, and the UI at `/`.
pub fn router(state: SharedState) -> Router {
    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::system::router())
        .merge(routes::companies::router())
        .merge(routes::environments::router())
        .merge(routes::leases::router())
        .merge(routes::secrets::router())
        .merge(routes::agents::router())
        .merge(routes::projects::router())
        .merge(routes::issues::router())
        .merge(routes::workspaces::router())
        .merge(routes::settings::router())
        .merge(routes::activity::router())
        .merge(routes::tokens::router())
        .merge(routes::runs::router())
        .split_for_parts();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_string();
    let openapi = Arc::new(openapi);
    api.route(
        "/api/openapi.json",
        axum::routing::get(move || {
            let doc = openapi.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .route("/metrics", axum::routing::get(routes::system::metrics))
    .merge(ui::router())
    .fallback(|| async { error::ApiError::NotFound("Not found".into()) })
    .layer(middleware::from_fn_with_state(
        state.clone(),
        boundary::enforce,
    ))
    .layer(middleware::from_fn_with_state(state.clone(), observe))
    .with_state(state)
}

/// Per-request span, access log and metrics (the matched route, never the raw path, so ids do
/// not explode label cardinality).
async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!("request", %method, route = %route);
    // The handler runs inside the span, so everything it logs carries the request.
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    state.metrics.inc(
        "berth_http_requests_total",
        &[
            ("method", method.as_str()),
            ("route", &route),
            ("status", &status),
        ],
        1,
    );
    state.metrics.observe(
        "berth_http_request_duration_seconds",
        &[("route", &route)],
        elapsed.as_secs_f64(),
    );
    tracing::info!(parent: &span, status = %status, elapsed_ms = elapsed.as_millis() as u64, "request");
    response
}

/// Knobs of a running server that are not user configuration.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// How often the lease reaper sweeps (SPEC §5); `None` disables it.
    pub reaper_interval: Option<std::time::Duration>,
    /// Claim and execute queued runs in this process.
    pub run_worker: bool,
    /// How long a graceful shutdown waits for runs to detach or finish restoring.
    pub shutdown_grace: std::time::Duration,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            reaper_interval: Some(std::time::Duration::from_secs(5)),
            run_worker: true,
            shutdown_grace: std::time::Duration::from_secs(60),
        }
    }
}

/// Where the agents' listener's port is kept, so a restarted server listens where running
/// local agents' `BERTH_API_URL` points.
const AGENTS_PORT_FILE: &str = "agents.port";

/// The agents' listener on loopback: on the port of the previous start when it is free (local
/// agents that outlived that process keep reaching the API), else on a new one, recorded.
fn bind_agents_listener(home: &std::path::Path) -> std::io::Result<tokio::net::TcpListener> {
    let file = home.join(AGENTS_PORT_FILE);
    let bind = |port: u16| -> std::io::Result<tokio::net::TcpListener> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        // The previous process's connections may linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind((std::net::Ipv4Addr::LOCALHOST, port).into())?;
        socket.listen(1024)
    };
    let previous = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse::<u16>().ok())
        .filter(|p| *p != 0);
    let listener = match previous.map(bind) {
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            tracing::warn!(port = previous, error = %e,
                "the agents' previous port is taken; local agents started before the restart lose their API URL");
            bind(0)?
        }
        None => bind(0)?,
    };
    Ok(listener)
}

/// Record the agents' port for the next start (after `BERTH_HOME` exists).
fn record_agents_port(home: &std::path::Path, port: u16) {
    let file = home.join(AGENTS_PORT_FILE);
    let recorded = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse::<u16>().ok());
    if recorded != Some(port)
        && let Err(e) = std::fs::write(&file, format!("{port}\n"))
    {
        tracing::warn!(file = %file.display(), error = %e, "cannot record the agents' port");
    }
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn launch_with_listener(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    launch_with_options(config, listener, shutdown, LaunchOptions::default()).await
}

/// [`launch_with_listener`] with explicit [`LaunchOptions`].
pub async fn launch_with_options(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: LaunchOptions,
) -> Result<(), ServerError> {
    let addr = listener.local_addr()?;
    // Agents get their own listener on loopback: what arrives there (possibly relayed from
    // another host's loopback by an SSH remote forward) never counts as the local user, so
    // `local_trusted` never applies to it; it needs a token.
    let agent_listener = bind_agents_listener(&config.berth_home)?;
    let agent_addr = agent_listener.local_addr()?;
    let state = build_state(&config, addr, agent_addr).await?;
    record_agents_port(&config.berth_home, agent_addr.port());
    // The reaper's loop lives in the engine; the server only owns its lifetime.
    let reaper = options.reaper_interval.map(|interval| {
        let cleaner = state.cleaner();
        Arc::new(berth_engine::reaper::Reaper::new(
            state.store.clone(),
            Arc::new(cleaner),
        ))
        .spawn(interval)
    });
    let worker = options.run_worker.then(|| state.worker.clone().spawn());
    tracing::info!(%addr, %agent_addr, auth_mode = state.auth_mode(), "berth server listening");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let agents = tokio::spawn(
        axum::serve(
            agent_listener,
            router(state.clone()).layer(axum::Extension(auth::AgentChannel)),
        )
        .with_graceful_shutdown(until_stop(stopping.clone()))
        .into_future(),
    );
    let run_worker = state.worker.clone();
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(until_stop(stopping))
        .await;
    // Runs detach from their agents (which keep running) and restores in progress finish;
    // the next start re-attaches (docs/operations.md).
    if worker.is_some() {
        let left = run_worker.shutdown(options.shutdown_grace).await;
        if left > 0 {
            tracing::warn!(runs = left, "stopping with runs still in progress");
        }
    }
    agents.abort();
    if let Some(r) = reaper {
        r.abort();
    }
    if let Some(w) = worker {
        w.abort();
    }
    served?;
    Ok(())
}
