//! A real OpenSSH `sshd` on a random loopback port, with fresh ed25519 host and client keys, run
//! as the current user (root included), torn down on `Drop`.
//!
//! Needs `/usr/sbin/sshd` and `ssh-keygen` (Debian package `openssh-server`); `BERTH_SSHD`
//! overrides the sshd path. Under `CI=true` a missing sshd is an error, never a skip.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running sshd fixture. Every field a test needs to build an SSH environment config.
pub struct Sshd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    sshd_path: PathBuf,
    /// `127.0.0.1`.
    pub host: String,
    pub port: u16,
    /// The current OS user (may be `root`).
    pub username: String,
    /// OpenSSH private key text of the authorized client key (unencrypted).
    pub client_private_key: String,
    /// `ssh-ed25519 AAAA…` of the client key.
    pub client_public_key: String,
    /// `ssh-ed25519 AAAA…` of the host key.
    pub host_public_key: String,
    /// `[127.0.0.1]:<port> ssh-ed25519 AAAA…` plus a newline.
    pub known_hosts: String,
    /// An empty directory the tests may use as the remote workspace root.
    pub workspace: PathBuf,
    /// The network namespace sshd runs in ([`Sshd::start_in_netns`]); `None` on loopback.
    netns: Option<crate::netns::Netns>,
}

impl std::fmt::Debug for Sshd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of test output even though it is a throwaway.
        f.debug_struct("Sshd")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

fn sshd_binary() -> PathBuf {
    berth_lab::sshd_binary()
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("failed to run ssh-keygen")?;
    if !out.status.success() {
        bail!(
            "failed to generate a key with ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn public_key_text(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    // Keep `type base64`, drop the comment.
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

fn current_user() -> anyhow::Result<String> {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .context("failed to run `id -un`")?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if name.is_empty() {
        bail!("failed to determine the current user name");
    }
    Ok(name)
}

fn free_port() -> anyhow::Result<u16> {
    // Small race between closing and sshd binding; acceptable for tests.
    let l = TcpListener::bind("127.0.0.1:0").context("failed to bind a free port")?;
    Ok(l.local_addr()?.port())
}

impl Sshd {
    /// Whether an sshd binary exists. Under `CI=true` a missing one is an error.
    pub fn available() -> anyhow::Result<bool> {
        crate::require(
            &format!("OpenSSH sshd at {}", sshd_binary().display()),
            sshd_binary().exists(),
        )
    }

    /// Start a fixture, or `Ok(None)` (with a loud message) when sshd is missing outside CI.
    pub fn start_unless_unavailable() -> anyhow::Result<Option<Sshd>> {
        if !Self::available()? {
            return Ok(None);
        }
        Self::start().map(Some)
    }

    /// Start a fixture; a missing sshd is an error.
    pub fn start() -> anyhow::Result<Sshd> {
        Self::start_at(None)
    }

    /// Start a fixture on port 22 of its own network namespace (a second "host" whose link
    /// [`Sshd::netns`] can cut), or `Ok(None)` when namespaces are unavailable outside CI.
    pub fn start_in_netns() -> anyhow::Result<Option<Sshd>> {
        if !Self::available()? || !crate::netns::Netns::available()? {
            return Ok(None);
        }
        let ns = crate::netns::Netns::create()?;
        Self::start_at(Some(ns)).map(Some)
    }

    /// The namespace sshd runs in, when started with [`Sshd::start_in_netns`].
    pub fn netns(&self) -> Option<&crate::netns::Netns> {
        self.netns.as_ref()
    }

    fn start_at(netns: Option<crate::netns::Netns>) -> anyhow::Result<Sshd> {
        let sshd_path = sshd_binary();
        if !sshd_path.exists() {
            bail!(
                "failed to start the sshd fixture: {} does not exist (install openssh-server)",
                sshd_path.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-sshd-")
            .tempdir()
            .context("failed to create the sshd fixture directory")?;
        let root = dir.path().to_path_buf();
        keygen(&root.join("host_key"))?;
        keygen(&root.join("client_key"))?;
        let host_public_key = public_key_text(&root.join("host_key.pub"))?;
        let client_public_key = public_key_text(&root.join("client_key.pub"))?;
        let client_private_key = std::fs::read_to_string(root.join("client_key"))
            .context("failed to read the client key")?;
        std::fs::write(
            root.join("authorized_keys"),
            format!("{client_public_key}\n"),
        )?;
        let workspace = root.join("workspace");
        std::fs::create_dir(&workspace)?;
        let username = current_user()?;
        let (host, port) = match &netns {
            Some(ns) => (ns.ip.clone(), 22),
            None => ("127.0.0.1".to_owned(), free_port()?),
        };
        // The same configuration operators get from `berth lab`.
        let config = berth_lab::sshd_config(&root, &host, port, &username);
        std::fs::write(root.join("sshd_config"), config)?;
        let known_hosts = if port == 22 {
            format!("{host} {host_public_key}\n")
        } else {
            format!("[{host}]:{port} {host_public_key}\n")
        };
        let mut me = Sshd {
            dir,
            child: None,
            sshd_path,
            host,
            port,
            username,
            client_private_key,
            client_public_key,
            host_public_key,
            known_hosts,
            workspace,
            netns,
        };
        me.spawn()?;
        Ok(me)
    }

    /// Another fixture with its own (different) host key, for wrong-pinned-key tests.
    pub fn start_with_different_host_key(&self) -> anyhow::Result<Sshd> {
        Self::start()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let root = self.dir.path();
        if current_user()? == "root" {
            // sshd refuses to start as root without its privilege separation directory.
            std::fs::create_dir_all("/run/sshd").context("failed to create /run/sshd")?;
        }
        let log = root.join("sshd.log");
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(ns.exec_prefix()).arg(&self.sshd_path);
                c
            }
            None => Command::new(&self.sshd_path),
        };
        let child = command
            .arg("-D")
            .arg("-f")
            .arg(root.join("sshd_config"))
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {}", self.sshd_path.display()))?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                self.child = None;
                bail!("failed to start sshd ({status}): {err}\n{}", self.log());
            }
            let listening = self.log().contains("Server listening on");
            if listening && TcpStream::connect((self.host.as_str(), self.port)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                self.stop();
                bail!(
                    "failed to start sshd: not listening on port {} within {:?}\n{}",
                    self.port,
                    READY_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The listening sshd's pid (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Pids of the per-connection sshd children of the listener (`pgrep -P <pid>`).
    pub fn connection_pids(&self) -> Vec<u32> {
        let pid = self.pid();
        if pid == 0 {
            return Vec::new();
        }
        let out = Command::new("pgrep")
            .arg("-P")
            .arg(pid.to_string())
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Kill every per-connection sshd child (drops all client connections mid-flight).
    pub fn kill_connections(&self) -> usize {
        let pids = self.connection_pids();
        for p in &pids {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(p.to_string())
                .status();
        }
        pids.len()
    }

    /// The sshd log (`-E sshd.log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The fixture's private directory (keys, config, log, workspace).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stop sshd and its connections; the directory stays until `Drop`.
    pub fn stop(&mut self) {
        self.kill_connections();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop and start again on the same port with the same keys.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        // A restart must wait for fresh readiness, not see the old log line.
        let _ = std::fs::remove_file(self.dir.path().join("sshd.log"));
        self.spawn()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
