//! `SandboxTransport`: the `sandbox` driver with provider `bubblewrap` (SPEC §4).
//!
//! Berth's own steps (sync, the launcher's bookkeeping, cleanup) run on the control-plane host
//! exactly as with [`LocalTransport`], confined to the environment's root. Only the *agent*
//! runs inside `bwrap`: [`Transport::confine`] turns its command into one that starts the
//! sandbox, so the launcher, streaming, cancel and re-attach are unchanged.
//!
//! Inside the sandbox (see `docs/security.md`):
//! - an empty tmpfs root; `/usr` (and the `/bin`, `/lib*`, `/sbin` links or directories) and a
//!   short list of `/etc` files read-only; the operator's `readOnlyPaths` read-only; nothing
//!   else of the host — no `$HOME`, no `BERTH_HOME`, no other workspace;
//! - read-write only: the working directory (the lease's workspace copy or the run's scratch,
//!   which must lie under the environment root), the environment's asset directory and its
//!   `HOME` (`<root>/.berth/home`);
//! - a private `/tmp`, a fresh `/proc` and a minimal `/dev` (`/dev/null` writable);
//! - new user, PID, IPC and UTS namespaces, every capability dropped, `--die-with-parent`;
//! - network `none`: a network namespace of its own (loopback only). Berth's API is still
//!   reachable at the same `BERTH_API_URL`: a `socat` inside listens on that loopback port and
//!   forwards to a Unix socket in `<root>/.berth/api/`, which Berth serves and forwards to its
//!   API. Network `open`: the host's network.
//!
//! The sandbox deliberately stays in the run's process group (no `--new-session`): the
//! launcher already gives the run a session of its own without a controlling terminal (so
//! there is no terminal to inject input into), and staying in the group lets cancel and
//! timeout signal and verify every process of the run, inside the sandbox too. One
//! difference to `local`: the TERM of a cancel also reaches `bwrap` itself, whose death takes
//! the whole PID namespace with it (`--die-with-parent`), so a sandboxed agent gets no grace
//! period before it is killed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_core::config::SandboxNetwork;

use crate::egress::{AllowList, EgressProxy, EgressRefusal};
use crate::error::ExecError;
use crate::local::LocalTransport;
use crate::shell::quote;
use crate::transport::{ExecHandle, ExecRequest, RemoteIdentity, Transport};

const DESCRIBE: &str = "sandbox environment";
/// Where the egress proxy listens on the sandbox's own loopback (network `allowlist`).
const EGRESS_PORT: u16 = 3128;

/// The `/etc` entries a sandbox sees (name resolution, users, TLS roots, the dynamic linker,
/// Debian's alternatives links). Everything else in `/etc` (host keys, shadow, …) stays out.
const ETC_ENTRIES: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "crypto-policies",
    "gai.conf",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "pki",
    "profile",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
];

/// Top-level directories that are either links into `/usr` (merged-usr) or system
/// directories bound read-only.
const SYSTEM_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// `/usr` read-only, and the top-level system directories as the host has them: links into
/// `/usr` (merged-usr) recreated as links, real directories bound read-only.
fn system_args() -> Vec<String> {
    let mut args: Vec<String> = vec!["--ro-bind".into(), "/usr".into(), "/usr".into()];
    for dir in SYSTEM_DIRS {
        match std::fs::read_link(dir) {
            Ok(target) => args.extend([
                "--symlink".into(),
                target.display().to_string(),
                (*dir).to_string(),
            ]),
            Err(_) if Path::new(dir).is_dir() => {
                args.extend(["--ro-bind".into(), (*dir).to_string(), (*dir).to_string()]);
            }
            Err(_) => {}
        }
    }
    args
}

/// How a sandbox is built, from the environment's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// The environment's Berth root on this host (`<root>/.berth/…`), absolute.
    pub root: PathBuf,
    pub network: SandboxNetwork,
    /// `host:port` entries the egress proxy admits when `network` is `allowlist`.
    pub allow_hosts: Vec<String>,
    /// Extra host paths visible read-only (e.g. where agent CLIs are installed).
    pub read_only_paths: Vec<String>,
    /// Address-space limit of every process in the sandbox (`ulimit -v`).
    pub memory_limit_mb: Option<u64>,
}

impl SandboxPolicy {
    /// `<root>/.berth/home`: the sandbox's `HOME`, kept across runs of the environment (CLI
    /// sessions and settings live there).
    pub fn home(&self) -> PathBuf {
        self.root.join(".berth/home")
    }

    /// `<root>/.berth/api`: the directory of the API socket, bound read-only into sandboxes.
    pub fn api_dir(&self) -> PathBuf {
        self.root.join(".berth/api")
    }

    fn api_socket(&self) -> PathBuf {
        self.api_dir().join("api.sock")
    }
}

/// Runs Berth's steps on this host and the agent inside `bwrap`.
pub struct SandboxTransport {
    inner: LocalTransport,
    policy: SandboxPolicy,
    /// The API bridge for network `none`, once exposed, and the port the agent dials.
    bridge: Mutex<Option<(Arc<ApiBridge>, u16)>>,
    /// The egress proxy of network `allowlist`, once started, and its socket.
    egress: Mutex<Option<(Arc<EgressProxy>, PathBuf)>>,
}

impl std::fmt::Debug for SandboxTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxTransport")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SandboxTransport {
    pub fn new(policy: SandboxPolicy) -> Self {
        Self {
            inner: LocalTransport::new(),
            policy,
            bridge: Mutex::new(None),
            egress: Mutex::new(None),
        }
    }

    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    fn bridge_port(&self) -> Option<u16> {
        self.bridge
            .lock()
            .ok()
            .and_then(|b| b.as_ref().map(|(_, port)| *port))
    }

    /// The `bwrap` command line (as `sh` text) that runs `$1` as a shell command in the
    /// sandbox, in the current directory `$PWD` (which must lie under the root).
    fn bwrap_script(&self) -> String {
        let p = &self.policy;
        let root = p.root.display().to_string();
        let mut args: Vec<String> = vec![
            "--die-with-parent".into(),
            "--unshare-user".into(),
            "--unshare-pid".into(),
            "--unshare-ipc".into(),
            "--unshare-uts".into(),
            "--hostname".into(),
            "berth-sandbox".into(),
            "--cap-drop".into(),
            "ALL".into(),
        ];
        if p.network != SandboxNetwork::Open {
            args.push("--unshare-net".into());
        }
        args.extend(system_args());
        for entry in ETC_ENTRIES {
            let path = format!("/etc/{entry}");
            args.extend(["--ro-bind-try".into(), path.clone(), path]);
        }
        args.extend([
            "--proc".into(),
            "/proc".into(),
            "--dev".into(),
            "/dev".into(),
            "--tmpfs".into(),
            "/tmp".into(),
            "--tmpfs".into(),
            "/run".into(),
        ]);
        // After the tmpfs mounts, so a root under /tmp is bound on top of the private /tmp.
        for path in &p.read_only_paths {
            args.extend(["--ro-bind-try".into(), path.clone(), path.clone()]);
        }
        let home = p.home().display().to_string();
        let assets = p.root.join(".berth/assets").display().to_string();
        for dir in [&home, &assets] {
            args.extend(["--bind".into(), dir.clone(), dir.clone()]);
        }
        let mut script = String::new();
        script.push_str(&format!(
            "mkdir -p -- {home} {assets}\n",
            home = quote(&home),
            assets = quote(&assets)
        ));
        // The working directory is the only other writable place: a workspace copy or a
        // run's scratch under the root, never the root itself or anything else.
        script.push_str(&format!(
            "case $PWD/ in {ws}/?*|{scratch}/?*) ;; *) echo \"berth: the sandbox working directory $PWD is not a workspace or scratch directory of the environment\" >&2; exit 126;; esac\n",
            ws = quote(&format!("{root}/.berth/ws")),
            scratch = quote(&format!("{root}/.berth/scratch")),
        ));
        let mut inner = String::new();
        if let Some(mb) = p.memory_limit_mb {
            inner.push_str(&format!(
                "ulimit -v {} || {{ echo 'berth: cannot set the memory limit' >&2; exit 126; }}\n",
                mb.saturating_mul(1024)
            ));
        }
        let api = match (p.network, self.bridge_port()) {
            (SandboxNetwork::Open, _) | (_, None) => None,
            (_, Some(port)) => Some(port),
        };
        let egress = self
            .egress
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(|(_, path)| path.clone()));
        if api.is_some() || egress.is_some() {
            args.extend([
                "--ro-bind".into(),
                p.api_dir().display().to_string(),
                p.api_dir().display().to_string(),
            ]);
        }
        if let Some(sock) = egress {
            // Any port of the sandbox's own loopback; not the API's.
            let port = if api == Some(EGRESS_PORT) {
                EGRESS_PORT + 1
            } else {
                EGRESS_PORT
            };
            inner.push_str(&format!(
                "socat TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:{sock} </dev/null >/dev/null 2>&1 &\n\
                 i=0; while ! grep -q ':{hex:04X} 00000000:0000 0A' /proc/net/tcp 2>/dev/null && [ \"$i\" -lt 200 ]; do i=$((i+1)); sleep 0.01; done\n\
                 p=http://127.0.0.1:{port}\n\
                 export HTTPS_PROXY=$p HTTP_PROXY=$p https_proxy=$p http_proxy=$p ALL_PROXY=$p all_proxy=$p\n\
                 export NO_PROXY=127.0.0.1,localhost,::1 no_proxy=127.0.0.1,localhost,::1\n",
                sock = quote(&sock.display().to_string()),
                hex = port,
            ));
        }
        if let Some(port) = api {
            let sock = p.api_socket().display().to_string();
            // Listen on the loopback of the sandbox at BERTH_API_URL's port, forward to the
            // socket Berth serves; wait (≤ 2 s) until it listens so the agent's first call
            // cannot race it.
            inner.push_str(&format!(
                "socat TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:{sock} </dev/null >/dev/null 2>&1 &\n\
                 i=0; while ! grep -q ':{hex:04X} 00000000:0000 0A' /proc/net/tcp 2>/dev/null && [ \"$i\" -lt 200 ]; do i=$((i+1)); sleep 0.01; done\n",
                sock = quote(&sock),
                hex = port,
            ));
        }
        inner.push_str("exec /bin/sh -c \"$1\"\n");

        // The working directory is bound last but one; last, the tmpfs root (and the
        // directories bwrap made in it for the mounts) becomes read-only, so the only writable
        // places are the binds and the private /tmp.
        let quoted: Vec<String> = args.iter().map(|a| quote(a)).collect();
        script.push_str(&format!(
            "exec bwrap {} --bind \"$PWD\" \"$PWD\" --remount-ro / --chdir \"$PWD\" --setenv HOME {home} -- /bin/sh -c {inner} berth-sandbox \"$1\"\n",
            quoted.join(" "),
            home = quote(&home),
            inner = quote(&inner),
        ));
        script
    }
}

#[async_trait::async_trait]
impl Transport for SandboxTransport {
    fn describe(&self) -> String {
        DESCRIBE.to_owned()
    }

    fn identity(&self) -> RemoteIdentity {
        RemoteIdentity {
            transport: "sandbox".to_owned(),
            host: None,
            port: None,
            username: None,
        }
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecHandle, ExecError> {
        self.inner.exec(req).await
    }

    fn confine(&self, command: &str) -> Result<String, ExecError> {
        Ok(format!(
            "set -- {}\n{}",
            quote(command),
            self.bwrap_script()
        ))
    }

    /// Network `allowlist`: a proxy for this run on `<root>/.berth/api/e-<key end>.sock`,
    /// which admits only `allowHosts`; the agent's proxy variables point at it.
    async fn egress(
        &self,
        key: &str,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<EgressRefusal>>, ExecError> {
        if self.policy.network != SandboxNetwork::Allowlist {
            return Ok(None);
        }
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ExecError::Spawn {
                env: DESCRIBE.to_owned(),
                source: std::io::Error::other(format!("invalid egress key {key:?}")),
            });
        }
        // Socket paths are short (SUN_LEN, 108 bytes): the key's last 12 characters (the
        // random end of a run id) name it.
        let short = &key[key.len().saturating_sub(12)..];
        let path = self.policy.api_dir().join(format!("e-{short}.sock"));
        let (proxy, refusals) = EgressProxy::serve(&path, AllowList::new(&self.policy.allow_hosts))
            .map_err(|source| ExecError::Spawn {
                env: DESCRIBE.to_owned(),
                source,
            })?;
        if let Ok(mut slot) = self.egress.lock() {
            *slot = Some((proxy, path));
        }
        Ok(Some(refusals))
    }

    /// Network `open`: the address itself (the sandbox shares the host's network). Otherwise
    /// the same address on the sandbox's own loopback, bridged through a Unix socket.
    async fn expose_local_port(&self, local: SocketAddr) -> Result<Option<SocketAddr>, ExecError> {
        if self.policy.network == SandboxNetwork::Open {
            return Ok(Some(local));
        }
        let bridge = ApiBridge::serve(&self.policy.api_socket(), local).map_err(|source| {
            ExecError::Spawn {
                env: DESCRIBE.to_owned(),
                source,
            }
        })?;
        if let Ok(mut slot) = self.bridge.lock() {
            *slot = Some((bridge, local.port()));
        }
        Ok(Some(SocketAddr::from(([127, 0, 0, 1], local.port()))))
    }
}

/// A Unix socket that forwards every connection to a TCP address (Berth's API). One per
/// socket path in this process, shared by the transports of concurrent runs and closed (the
/// file removed) when the last of them is dropped.
struct ApiBridge {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

type Bridges = Mutex<HashMap<PathBuf, Weak<ApiBridge>>>;

fn bridges() -> &'static Bridges {
    static BRIDGES: std::sync::OnceLock<Bridges> = std::sync::OnceLock::new();
    BRIDGES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl ApiBridge {
    fn serve(path: &Path, target: SocketAddr) -> std::io::Result<Arc<ApiBridge>> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut map = bridges()
            .lock()
            .map_err(|_| std::io::Error::other("the API bridge registry is poisoned"))?;
        if let Some(live) = map.get(path).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let dir = path
            .parent()
            .ok_or_else(|| std::io::Error::other("the API socket has no directory"))?;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        // A socket left by a previous control-plane process: sandboxes bind the directory, so
        // a new socket at the same path reaches the runs it started.
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        let bridge = Arc::new(ApiBridge {
            path: path.to_path_buf(),
            task,
        });
        map.insert(path.to_path_buf(), Arc::downgrade(&bridge));
        Ok(bridge)
    }
}

impl Drop for ApiBridge {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut map) = bridges().lock() {
            // A newer bridge may already serve this path: leave its socket alone.
            if map.get(&self.path).and_then(Weak::upgrade).is_none() {
                map.remove(&self.path);
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Why this host cannot run sandboxes, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SandboxUnavailable {
    pub reason: String,
    pub hint: String,
}

/// Whether `bwrap` runs here and can create user, PID and network namespaces: runs `true` in
/// the same kind of sandbox the agents get. Successes are remembered for the process.
pub fn host_support() -> Result<(), SandboxUnavailable> {
    static OK: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if OK.get().is_some() {
        return Ok(());
    }
    let output = std::process::Command::new("bwrap")
        .args([
            "--die-with-parent",
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--cap-drop",
            "ALL",
        ])
        .args(system_args())
        .args([
            "--proc", "/proc", "--dev", "/dev", "--", "/bin/sh", "-c", ":",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SandboxUnavailable {
            reason: "bwrap (bubblewrap) is not installed on the control-plane host".into(),
            hint: "Install bubblewrap (apt-get install bubblewrap, dnf install bubblewrap) and \
                   make sure bwrap is on the server's PATH."
                .into(),
        }),
        Err(e) => Err(SandboxUnavailable {
            reason: format!("bwrap cannot be started: {e}"),
            hint: "Check that bwrap is executable by the user the server runs as.".into(),
        }),
        Ok(out) if out.status.success() => {
            let _ = OK.set(());
            Ok(())
        }
        Ok(out) => Err(SandboxUnavailable {
            reason: format!(
                "bwrap cannot create a sandbox on this host: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            hint: "Unprivileged user namespaces are needed: sysctl kernel.unprivileged_userns_clone=1 \
                   (Debian), user.max_user_namespaces > 0, or on Ubuntu 24.04+ an AppArmor profile \
                   for bwrap (kernel.apparmor_restrict_unprivileged_userns); in a container, \
                   allow unshare (e.g. a seccomp profile that permits it)."
                .into(),
        }),
    }
}
