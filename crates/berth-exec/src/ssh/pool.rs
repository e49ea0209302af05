//! One pooled connection per (host, port, user, credentials, host-key policy); many channels on
//! it, bounded by `max_sessions`; idle close; reconnect with backoff after a dead connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use russh::client::{Handle, Msg};
use russh::{Channel, Disconnect};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::error::ExecError;
use crate::ssh::client::{self, ClientHandler, ConnectionInfo};
use crate::ssh::config::{SshTarget, SshTimeouts};
use crate::ssh::control::{ControlFailure, ControlShell};
use crate::transport::Completed;

/// Delays before reconnect attempts after a pooled connection died.
const RECONNECT_BACKOFF: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(250),
    Duration::from_secs(1),
];

/// One authenticated SSH connection.
pub struct SshConnection {
    handle: Handle<ClientHandler>,
    /// Ports the server forwards to us (remote port → local address).
    forwards: client::Forwards,
    env: String,
    info: ConnectionInfo,
    sessions: Arc<Semaphore>,
    max_sessions: u32,
    timeouts: SshTimeouts,
    active: AtomicUsize,
    last_used: std::sync::Mutex<Instant>,
    control: Mutex<Option<ControlShell>>,
}

/// Holds one session slot; dropping it frees the slot and marks the connection used.
pub struct ChannelGuard {
    _permit: OwnedSemaphorePermit,
    conn: Arc<SshConnection>,
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        self.conn.active.fetch_sub(1, Ordering::SeqCst);
        self.conn.touch();
    }
}

/// Result of trying the control shell.
pub(crate) enum ControlResult {
    Done(Result<Completed, ExecError>),
    /// Busy, disabled or not startable: use an exec channel instead.
    Unavailable,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("env", &self.env)
            .field("active", &self.active_channels())
            .finish()
    }
}

impl SshConnection {
    /// Host key, latencies and warnings of this connection (for probes).
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Make `local` reachable from the remote host: the server listens on a free port of its
    /// loopback interface and relays each connection over this SSH connection (`ssh -R`).
    /// One port per local address per connection; returns the remote port.
    /// Have the server forward its loopback port `remote_port` to `local` (re-pointing it
    /// when this connection already forwards that port): an agent keeps the URL it was given
    /// across reconnects and control-plane restarts.
    pub async fn forward_to_local_at(
        &self,
        local: SocketAddr,
        remote_port: u16,
    ) -> Result<u16, ExecError> {
        let port = u32::from(remote_port);
        if let Ok(mut f) = self.forwards.lock()
            && let Some(at) = f.get_mut(&port)
        {
            *at = local;
            return Ok(remote_port);
        }
        let got = tokio::time::timeout(
            self.timeouts.channel_open,
            self.handle.tcpip_forward("127.0.0.1", port),
        )
        .await
        .map_err(|_| self.forward_error("no answer to the forwarding request"))?
        .map_err(|e| {
            self.forward_error(&format!(
                "the server refused to forward port {remote_port} again ({e}); another process \
                 may have taken it"
            ))
        })?;
        // Servers answer 0 (or nothing) when the requested port was granted as asked.
        let granted = if got == 0 { port } else { got };
        if let Ok(mut f) = self.forwards.lock() {
            f.insert(granted, local);
        }
        u16::try_from(granted).map_err(|_| self.forward_error("bad port"))
    }

    /// The ports this connection forwards (remote port → local address).
    fn forwarded(&self) -> Vec<(u32, SocketAddr)> {
        self.forwards
            .lock()
            .map(|f| f.iter().map(|(p, a)| (*p, *a)).collect())
            .unwrap_or_default()
    }

    pub async fn forward_to_local(&self, local: SocketAddr) -> Result<u16, ExecError> {
        let known = self.forwards.lock().ok().and_then(|f| {
            f.iter()
                .find(|(_, addr)| **addr == local)
                .map(|(port, _)| *port)
        });
        if let Some(port) = known {
            return u16::try_from(port).map_err(|_| self.forward_error("bad port"));
        }
        let port = tokio::time::timeout(
            self.timeouts.channel_open,
            self.handle.tcpip_forward("127.0.0.1", 0),
        )
        .await
        .map_err(|_| self.forward_error("no answer to the forwarding request"))?
        .map_err(|e| {
            self.forward_error(&format!(
                "the server refused to forward a port ({e}); allow it with \
                 AllowTcpForwarding yes (or remote) in sshd_config"
            ))
        })?;
        if let Ok(mut f) = self.forwards.lock() {
            f.insert(port, local);
        }
        u16::try_from(port).map_err(|_| self.forward_error("bad port"))
    }

    fn forward_error(&self, detail: &str) -> ExecError {
        ExecError::Channel {
            env: self.env.clone(),
            detail: format!("cannot forward the Berth API to the environment: {detail}"),
        }
    }

    /// Exec channels currently open (the control shell not counted).
    pub fn active_channels(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::ZERO)
    }

    async fn open_raw(&self) -> Result<(Channel<Msg>, OwnedSemaphorePermit), ExecError> {
        let permit = tokio::time::timeout(
            self.timeouts.channel_open,
            self.sessions.clone().acquire_owned(),
        )
        .await
        .map_err(|_| ExecError::Channel {
            env: self.env.clone(),
            detail: format!(
                "all {} sessions stayed busy for {} s",
                self.max_sessions,
                self.timeouts.channel_open.as_secs()
            ),
        })?
        .map_err(|_| ExecError::Disconnected {
            env: self.env.clone(),
        })?;
        let ch = tokio::time::timeout(
            self.timeouts.channel_open,
            self.handle.channel_open_session(),
        )
        .await
        .map_err(|_| ExecError::Channel {
            env: self.env.clone(),
            detail: format!(
                "no answer within {} s",
                self.timeouts.channel_open.as_secs()
            ),
        })?
        .map_err(|e| {
            if self.handle.is_closed() {
                ExecError::Disconnected {
                    env: self.env.clone(),
                }
            } else {
                ExecError::Channel {
                    env: self.env.clone(),
                    detail: e.to_string(),
                }
            }
        })?;
        Ok((ch, permit))
    }

    /// Open a session channel, waiting (bounded) for a free slot of `max_sessions`.
    pub async fn open_session(self: &Arc<Self>) -> Result<(Channel<Msg>, ChannelGuard), ExecError> {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.touch();
        // The guard exists before any await so that `active` is always balanced.
        let result = self.open_raw().await;
        match result {
            Ok((ch, permit)) => Ok((
                ch,
                ChannelGuard {
                    _permit: permit,
                    conn: self.clone(),
                },
            )),
            Err(e) => {
                self.active.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Run `script` (no stdin) on the control shell, starting it if needed.
    pub(crate) async fn run_control(
        &self,
        script: &str,
        timeout: Duration,
        cap: usize,
    ) -> ControlResult {
        // One slot stays for exec channels; with a single session there is no control shell.
        if self.max_sessions < 2 {
            return ControlResult::Unavailable;
        }
        let Ok(mut slot) = self.control.try_lock() else {
            return ControlResult::Unavailable;
        };
        self.touch();
        if slot.is_none() {
            let Ok((ch, permit)) = self.open_raw().await else {
                return ControlResult::Unavailable;
            };
            match ControlShell::start(ch, permit, &self.env, self.timeouts.channel_open).await {
                Ok(s) => *slot = Some(s),
                Err(_) => return ControlResult::Unavailable,
            }
        }
        let Some(shell) = slot.as_mut() else {
            return ControlResult::Unavailable;
        };
        let result = shell.run(&self.env, script, timeout, cap).await;
        self.touch();
        match result {
            Ok(c) => ControlResult::Done(Ok(c)),
            Err(failure) => {
                if let Some(s) = slot.take() {
                    s.close().await;
                }
                match failure {
                    ControlFailure::NotSent(_) => ControlResult::Unavailable,
                    ControlFailure::Broken(e) => ControlResult::Done(Err(e)),
                }
            }
        }
    }

    async fn close(&self) {
        if let Some(s) = self.control.lock().await.take() {
            s.close().await;
        }
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "idle", "en")
            .await;
    }
}

#[derive(Default)]
struct Slot {
    conn: Option<Arc<SshConnection>>,
    had_connection: bool,
    /// Forwards of the connection that died, asked for again on the next one (agents hold
    /// URLs with these ports).
    carried: Vec<(u32, SocketAddr)>,
}

#[derive(Default)]
struct PoolInner {
    slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
    timeouts: SshTimeouts,
}

/// The SSH connection pool. Cheap to clone; clones share connections.
#[derive(Clone, Default)]
pub struct SshPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for SshPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool").finish_non_exhaustive()
    }
}

fn retryable(e: &ExecError) -> bool {
    matches!(
        e,
        ExecError::Connect { .. }
            | ExecError::ConnectTimeout { .. }
            | ExecError::Disconnected { .. }
    )
}

impl SshPool {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_timeouts(timeouts: SshTimeouts) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                slots: std::sync::Mutex::default(),
                timeouts,
            }),
        }
    }

    fn cell(&self, key: &str) -> Arc<Mutex<Slot>> {
        match self.inner.slots.lock() {
            Ok(mut map) => map.entry(key.to_owned()).or_default().clone(),
            // A poisoned map only means another thread panicked mid-insert; a fresh cell is safe.
            Err(_) => Arc::default(),
        }
    }

    /// The live connection for `target`, connecting (single-flight per key) if needed. After a
    /// pooled connection died, reconnects with backoff; a first connect is tried once so a bad
    /// address fails fast.
    pub async fn get(&self, target: &SshTarget) -> Result<Arc<SshConnection>, ExecError> {
        let cell = self.cell(&target.pool_key());
        let mut slot = cell.lock().await;
        if let Some(c) = &slot.conn {
            if !c.is_closed() {
                c.touch();
                return Ok(c.clone());
            }
            tracing::info!(env = %target.describe(), "pooled SSH connection is closed; reconnecting");
        }
        if let Some(old) = slot.conn.take() {
            slot.carried = old.forwarded();
        }
        let attempts: &[Duration] = if slot.had_connection {
            &RECONNECT_BACKOFF
        } else {
            &RECONNECT_BACKOFF[..1]
        };
        let mut last = None;
        for delay in attempts {
            tokio::time::sleep(*delay).await;
            let forwards = client::Forwards::default();
            match client::connect_with_forwards(target, &self.inner.timeouts, forwards.clone())
                .await
            {
                Ok((handle, info)) => {
                    let conn = Arc::new(SshConnection {
                        handle,
                        forwards,
                        env: target.describe(),
                        info,
                        sessions: Arc::new(Semaphore::new(target.max_sessions.max(1) as usize)),
                        max_sessions: target.max_sessions.max(1),
                        timeouts: self.inner.timeouts,
                        active: AtomicUsize::new(0),
                        last_used: std::sync::Mutex::new(Instant::now()),
                        control: Mutex::new(None),
                    });
                    for (port, local) in std::mem::take(&mut slot.carried) {
                        let Ok(port) = u16::try_from(port) else {
                            continue;
                        };
                        match conn.forward_to_local_at(local, port).await {
                            Ok(_) => {
                                tracing::info!(env = %target.describe(), port, "remote forward re-established")
                            }
                            Err(e) => {
                                tracing::warn!(env = %target.describe(), port, error = %e, "remote forward lost with the old connection")
                            }
                        }
                    }
                    slot.conn = Some(conn.clone());
                    slot.had_connection = true;
                    spawn_idle_watch(
                        Arc::downgrade(&conn),
                        cell.clone(),
                        self.inner.timeouts.idle,
                    );
                    return Ok(conn);
                }
                Err(e) if retryable(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ExecError::Disconnected {
            env: target.describe(),
        }))
    }

    /// Forget `conn` for `target` (after it failed) so the next [`get`](Self::get) reconnects.
    pub async fn invalidate(&self, target: &SshTarget, conn: &Arc<SshConnection>) {
        let cell = self.cell(&target.pool_key());
        let mut slot = cell.lock().await;
        if slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            slot.carried = conn.forwarded();
            slot.conn = None;
        }
    }

    /// Live pooled connections.
    pub async fn connection_count(&self) -> usize {
        let cells: Vec<Arc<Mutex<Slot>>> = match self.inner.slots.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let mut n = 0;
        for c in cells {
            if c.lock().await.conn.as_ref().is_some_and(|c| !c.is_closed()) {
                n += 1;
            }
        }
        n
    }
}

fn spawn_idle_watch(conn: Weak<SshConnection>, cell: Arc<Mutex<Slot>>, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(c) = conn.upgrade() else { return };
            if c.is_closed() {
                return;
            }
            if c.active_channels() > 0 || c.idle_for() < idle || c.control.try_lock().is_err() {
                continue;
            }
            let mut slot = cell.lock().await;
            // Re-check under the slot lock: `get` hands out connections under it.
            if c.active_channels() == 0 && c.idle_for() >= idle {
                if slot.conn.as_ref().is_some_and(|s| Arc::ptr_eq(s, &c)) {
                    slot.conn = None;
                }
                drop(slot);
                tracing::debug!(env = %c.env, "closing idle SSH connection");
                c.close().await;
                return;
            }
        }
    });
}
