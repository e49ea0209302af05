//! The SSH lab (SPEC §11 `berth lab up|status|down|doctor`): a real OpenSSH `sshd` on a random
//! loopback port, with fresh ed25519 host and client keys, run as the current user (root
//! included), that survives the command that started it and prints a ready SSH environment
//! config. Its state lives in `<dir>/state.json` (0600) next to the keys.
//!
//! The sshd configuration written here is the one the test fixture uses too
//! ([`sshd_config`]), so what operators try by hand is what the tests prove.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the SSH lab is unavailable: {0}")]
    Unavailable(String),
    #[error("failed to {what}: {detail}")]
    Io { what: String, detail: String },
    #[error("sshd did not become ready within {secs} s; its log says:\n{log}")]
    NotReady { secs: u64, log: String },
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |e| LabError::Io {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// Everything about a running lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub pid: u32,
    pub root: PathBuf,
    pub workspace: PathBuf,
    pub client_key_path: PathBuf,
    pub known_hosts_path: PathBuf,
    pub sshd_config_path: PathBuf,
    pub log_path: PathBuf,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Where `sshd` is (`BERTH_SSHD` overrides).
pub fn sshd_binary() -> PathBuf {
    std::env::var_os("BERTH_SSHD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/sshd"))
}

/// The sshd configuration of a lab or test fixture rooted at `root`.
pub fn sshd_config(root: &Path, host: &str, port: u16, username: &str) -> String {
    format!(
        "Port {port}\n\
         ListenAddress {host}\n\
         HostKey {root}/host_key\n\
         PidFile {root}/sshd.pid\n\
         AuthorizedKeysFile {root}/authorized_keys\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         AllowUsers {username}\n\
         MaxSessions 64\n\
         MaxStartups 64:30:128\n\
         AllowTcpForwarding yes\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         UseDNS no\n\
         LogLevel VERBOSE\n\
         Subsystem sftp internal-sftp\n",
        root = root.display()
    )
}

/// Prerequisites, as `(name, found, detail)`.
pub fn doctor() -> Vec<(String, bool, String)> {
    let sshd = sshd_binary();
    let mut out = vec![(
        "sshd".to_string(),
        sshd.exists(),
        if sshd.exists() {
            sshd.display().to_string()
        } else {
            format!(
                "{} missing: install the openssh-server package",
                sshd.display()
            )
        },
    )];
    for tool in ["ssh-keygen", "ssh"] {
        let found = which(tool);
        out.push((
            tool.to_string(),
            found.is_some(),
            found.unwrap_or_else(|| format!("{tool} missing: install the openssh-client package")),
        ));
    }
    out
}

fn which(tool: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then_some(path)
}

fn keygen(path: &Path) -> Result<(), LabError> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "berth-lab", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(io("run ssh-keygen"))?;
    if !out.status.success() {
        return Err(LabError::Io {
            what: "generate a key with ssh-keygen".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn public_key(path: &Path) -> Result<String, LabError> {
    let text = std::fs::read_to_string(path).map_err(io("read a public key"))?;
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

fn current_user() -> Result<String, LabError> {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .map_err(io("run `id -un`"))?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if name.is_empty() {
        return Err(LabError::Unavailable("cannot tell the current user".into()));
    }
    Ok(name)
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Whether `pid` is alive *and* is the sshd of this lab (guards against pid reuse).
fn is_lab_sshd(pid: u32, config: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| {
            let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
            text.contains(&config.display().to_string())
        })
        .unwrap_or(false)
}

/// The running lab in `dir`, if any. Stale state (dead or reused pid) is reported as `None`.
pub fn status(dir: &Path) -> Result<Option<LabState>, LabError> {
    let path = state_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read the lab state")(e)),
    };
    let state: LabState = serde_json::from_str(&text).map_err(|e| LabError::Io {
        what: format!("parse {}", path.display()),
        detail: e.to_string(),
    })?;
    Ok(is_lab_sshd(state.pid, &state.sshd_config_path).then_some(state))
}

/// Start the lab in `dir` (or return the running one: `reused = true`).
pub fn up(dir: &Path) -> Result<(LabState, bool), LabError> {
    up_as(dir, None)
}

/// [`up`], logging in as `user` (an existing account; needs root) instead of the current user:
/// benchmarks use it to compare tools on an account whose shell startup is not this machine's
/// own. The lab directory then lets that user traverse it and read `authorized_keys`, and the
/// workspace belongs to that user.
pub fn up_as(dir: &Path, user: Option<&str>) -> Result<(LabState, bool), LabError> {
    if let Some(state) = status(dir)? {
        return Ok((state, true));
    }
    let sshd = sshd_binary();
    if !sshd.exists() {
        return Err(LabError::Unavailable(format!(
            "{} does not exist; install the openssh-server package",
            sshd.display()
        )));
    }
    // Stale leftovers of a previous lab go first.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("remove a stale lab directory"))?;
    }
    std::fs::create_dir_all(dir).map_err(io("create the lab directory"))?;
    let me = current_user()?;
    let username = user.map_or_else(|| me.clone(), str::to_owned);
    let other_user = username != me;
    let dir_mode = if other_user { 0o711 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))
        .map_err(io("restrict the lab directory"))?;
    let root = std::fs::canonicalize(dir).map_err(io("resolve the lab directory"))?;
    keygen(&root.join("host_key"))?;
    keygen(&root.join("client_key"))?;
    let client_pub = public_key(&root.join("client_key.pub"))?;
    let host_pub = public_key(&root.join("host_key.pub"))?;
    std::fs::write(root.join("authorized_keys"), format!("{client_pub}\n"))
        .map_err(io("write authorized_keys"))?;
    let workspace = root.join("workspace");
    std::fs::create_dir_all(&workspace).map_err(io("create the lab workspace"))?;
    if other_user {
        // sshd reads authorized_keys as the user; the workspace is the user's.
        std::fs::set_permissions(
            root.join("authorized_keys"),
            std::fs::Permissions::from_mode(0o644),
        )
        .map_err(io("open authorized_keys to the lab user"))?;
        let out = Command::new("chown")
            .arg(format!("{username}:"))
            .arg(&workspace)
            .output()
            .map_err(io("run chown"))?;
        if !out.status.success() {
            return Err(LabError::Unavailable(format!(
                "cannot give the lab workspace to {username}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let host = "127.0.0.1".to_string();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("find a free loopback port"))?
        .port();
    let config_path = root.join("sshd_config");
    std::fs::write(&config_path, sshd_config(&root, &host, port, &username))
        .map_err(io("write sshd_config"))?;
    let known_hosts_path = root.join("known_hosts");
    std::fs::write(&known_hosts_path, format!("[{host}]:{port} {host_pub}\n"))
        .map_err(io("write known_hosts"))?;
    if me == "root" {
        std::fs::create_dir_all("/run/sshd").map_err(io("create /run/sshd"))?;
    }
    let log_path = root.join("sshd.log");
    // Without -D sshd daemonizes: the lab outlives this command; its pid goes to sshd.pid.
    let status = Command::new(&sshd)
        .arg("-f")
        .arg(&config_path)
        .arg("-E")
        .arg(&log_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(io("start sshd"))?;
    if !status.status.success() {
        return Err(LabError::Io {
            what: "start sshd".into(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&status.stderr).trim(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        });
    }
    let started = Instant::now();
    let timeout = Duration::from_secs(10);
    let pid = loop {
        let pid = std::fs::read_to_string(root.join("sshd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let listening = std::net::TcpStream::connect((host.as_str(), port)).is_ok();
        if let (Some(pid), true) = (pid, listening) {
            break pid;
        }
        if started.elapsed() > timeout {
            return Err(LabError::NotReady {
                secs: timeout.as_secs(),
                log: std::fs::read_to_string(&log_path).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let state = LabState {
        host,
        port,
        username,
        pid,
        root: root.clone(),
        workspace,
        client_key_path: root.join("client_key"),
        known_hosts_path,
        sshd_config_path: config_path,
        log_path,
        created_at: chrono::Utc::now(),
    };
    let json = serde_json::to_string_pretty(&state).map_err(|e| LabError::Io {
        what: "encode the lab state".into(),
        detail: e.to_string(),
    })?;
    let path = state_path(&root);
    std::fs::write(&path, json).map_err(io("write the lab state"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restrict the lab state"))?;
    Ok((state, false))
}

/// Stop the lab in `dir` and remove its directory. `false` when none was running.
pub fn down(dir: &Path) -> Result<bool, LabError> {
    let running = status(dir)?;
    if let Some(state) = &running {
        // sshd leaves established sessions running when its listener stops: end them too, so
        // nothing of the lab survives `down`.
        for child in children_of(state.pid) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.to_string()])
                .status();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &state.pid.to_string()])
            .status();
        let started = Instant::now();
        while is_lab_sshd(state.pid, &state.sshd_config_path)
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if is_lab_sshd(state.pid, &state.sshd_config_path) {
            let _ = Command::new("kill")
                .args(["-KILL", &state.pid.to_string()])
                .status();
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("remove the lab directory"))?;
    }
    Ok(running.is_some())
}

/// Processes whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// A ready SSH environment config for the lab (includes the throwaway client key, which the
/// API moves into a secret on create).
pub fn environment_config(state: &LabState) -> Result<Value, LabError> {
    let key = std::fs::read_to_string(&state.client_key_path).map_err(io("read the lab key"))?;
    let known =
        std::fs::read_to_string(&state.known_hosts_path).map_err(io("read the lab known_hosts"))?;
    Ok(json!({
        "host": state.host,
        "port": state.port,
        "username": state.username,
        "remoteWorkspacePath": state.workspace,
        "privateKey": key,
        "knownHosts": known,
        "strictHostKeyChecking": true,
    }))
}

/// Prove the lab works end to end: connect with the lab key, verify the pinned host key, and
/// run a command in the workspace.
pub async fn verify(state: &LabState) -> Result<String, LabError> {
    let key = std::fs::read_to_string(&state.client_key_path).map_err(io("read the lab key"))?;
    let known =
        std::fs::read_to_string(&state.known_hosts_path).map_err(io("read the lab known_hosts"))?;
    let mut target =
        berth_exec::SshTarget::new(state.host.clone(), state.port, state.username.clone());
    target.private_key = Some(berth_core::Secret::new(key));
    target.known_hosts = Some(known);
    let transport = berth_exec::SshTransport::new(berth_exec::SshPool::new(), target);
    let script = format!(
        "cd {} && pwd",
        berth_exec::shell::quote(&state.workspace.display().to_string())
    );
    let done = berth_exec::Transport::run(&transport, &script, Default::default())
        .await
        .map_err(|e| LabError::Unavailable(e.to_string()))?;
    if !done.outcome.success() {
        return Err(LabError::Unavailable(format!(
            "the lab answered {}: {}",
            done.outcome,
            done.stderr_text().trim()
        )));
    }
    Ok(done.stdout_text().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lab_up_is_reused_verified_and_torn_down() {
        if !sshd_binary().exists() {
            assert!(
                std::env::var("CI").map(|v| v != "true").unwrap_or(true),
                "sshd is required under CI=true"
            );
            eprintln!("SKIPPING: no sshd");
            return;
        }
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("lab");
        let (state, reused) = up(&dir).unwrap();
        assert!(!reused);
        let (again, reused) = up(&dir).unwrap();
        assert!(reused);
        assert_eq!(again, state);
        assert_eq!(
            verify(&state).await.unwrap(),
            state.workspace.display().to_string()
        );
        let config = environment_config(&state).unwrap();
        let parsed = berth_core::config::parse_config(
            berth_core::Driver::Ssh,
            &config,
            berth_core::config::ParseMode::Persist,
        )
        .unwrap();
        assert!(parsed.private_key.is_some());
        let mode = std::fs::metadata(dir.join("state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(down(&dir).unwrap());
        assert!(status(&dir).unwrap().is_none());
        assert!(
            !is_lab_sshd(state.pid, &state.sshd_config_path),
            "sshd stopped"
        );
        assert!(!dir.exists());
        assert!(!down(&dir).unwrap());
    }
}
