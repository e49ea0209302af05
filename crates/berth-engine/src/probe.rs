//! Probing an environment: can we connect, is the host key right, can we authenticate, what
//! OS is it, can we write the workspace path, which tools and agent CLIs are there, how much
//! disk is free. A probe never fails as a whole: every problem is a check with a level, a
//! message and a hint, and the whole probe is bounded by a deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::Driver;
use berth_core::config::SandboxNetwork;
use berth_exec::error::HostKeyRejection;
use berth_exec::shell::quote;
use berth_exec::ssh::SshTimeouts;
use berth_exec::{
    ExecError, LocalTransport, RemoteLayout, SandboxPolicy, SandboxTransport, SshPool, SshTarget,
    SshTransport, Transport,
};
use serde::Serialize;
use serde_json::{Value, json};

/// Default bound on a whole probe (SPEC §10).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub code: String,
    pub level: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn new(code: &str, level: Level, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            level,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub ok: bool,
    pub driver: Driver,
    pub summary: String,
    pub details: Value,
    pub checks: Vec<Check>,
    pub duration_ms: u64,
}

/// What to probe.
#[derive(Debug, Clone)]
pub enum ProbeTarget {
    /// The control-plane host itself; `workspace_root` is where per-run scratch lives.
    Local { workspace_root: PathBuf },
    /// An SSH host; the key (if any) is in memory only.
    Ssh {
        target: SshTarget,
        remote_workspace_path: String,
    },
    /// A bubblewrap sandbox on the control-plane host.
    Sandbox { policy: SandboxPolicy },
    /// A driver whose probe is not available in this build.
    Unsupported(Driver),
}

/// Probe `target`, bounded by `deadline`. `agent_commands` are the agent CLIs configured for
/// the company (looked up on the environment's login PATH).
pub async fn probe(
    pool: &SshPool,
    target: ProbeTarget,
    agent_commands: &[String],
    deadline: Duration,
) -> ProbeResult {
    let started = Instant::now();
    let driver = match &target {
        ProbeTarget::Local { .. } => Driver::Local,
        ProbeTarget::Ssh { .. } => Driver::Ssh,
        ProbeTarget::Sandbox { .. } => Driver::Sandbox,
        ProbeTarget::Unsupported(d) => *d,
    };
    let (mut checks, mut details, describe) =
        match tokio::time::timeout(deadline, run_checks(pool, &target, agent_commands)).await {
            Ok(result) => result,
            Err(_) => (
                vec![
                    Check::new(
                        "probe_timeout",
                        Level::Error,
                        format!("The probe did not finish within {} s.", deadline.as_secs()),
                    )
                    .hint("Check that the host is reachable and not overloaded, then probe again."),
                ],
                json!({}),
                describe_target(&target),
            ),
        };
    let ok = !checks.iter().any(|c| c.level == Level::Error);
    if checks.is_empty() {
        checks.push(Check::new(
            "probe",
            Level::Error,
            "Nothing could be checked.",
        ));
    }
    let first_error = checks.iter().find(|c| c.level == Level::Error);
    let summary = paperclip_summary(&target, ok).unwrap_or_else(|| {
        if ok {
            let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
            if warns == 0 {
                format!("{describe} is ready.")
            } else {
                format!("{describe} is usable, with {warns} warning(s).")
            }
        } else {
            let first = first_error.map(|c| c.message.clone()).unwrap_or_default();
            format!("Probe failed for {describe}: {first}")
        }
    });
    if let Value::Object(map) = &mut details {
        map.insert("target".into(), json!(describe));
        paperclip_details(map, &target, ok, first_error);
    }
    ProbeResult {
        ok,
        driver,
        summary,
        details,
        checks,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Paperclip's probe summaries (reference §8), which its clients show and its tests assert.
fn paperclip_summary(target: &ProbeTarget, ok: bool) -> Option<String> {
    match (target, ok) {
        (ProbeTarget::Local { .. }, true) => {
            Some("Local environment is available on this Paperclip host.".to_string())
        }
        (ProbeTarget::Ssh { target, .. }, true) => Some(format!(
            "Connected to {}@{} and verified the remote workspace path.",
            target.username, target.host
        )),
        (ProbeTarget::Ssh { target, .. }, false) => Some(format!(
            "SSH probe failed for {}@{}.",
            target.username, target.host
        )),
        _ => None,
    }
}

/// Paperclip's probe `details` fields beside Berth's: local `hostname` and `cwd`; SSH
/// `remoteCwd` on success, `error` and `code` on failure. `code` is 255 when the connection
/// itself failed (what OpenSSH exits with; Berth speaks SSH in-process, so there is no exit
/// status) and null when a check on the connected host failed.
fn paperclip_details(
    map: &mut serde_json::Map<String, Value>,
    target: &ProbeTarget,
    ok: bool,
    first_error: Option<&Check>,
) {
    match target {
        ProbeTarget::Local { .. } => {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string());
            let cwd = std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string());
            map.insert("hostname".into(), json!(hostname));
            map.insert("cwd".into(), json!(cwd));
        }
        ProbeTarget::Ssh {
            remote_workspace_path,
            ..
        } => {
            if ok {
                let resolved = map
                    .get("remote")
                    .and_then(|r| r.get("workspacePath"))
                    .cloned()
                    .unwrap_or_else(|| json!(remote_workspace_path));
                map.insert("remoteCwd".into(), resolved);
            } else {
                let error = first_error.map(|c| {
                    c.detail
                        .as_deref()
                        .filter(|d| !d.trim().is_empty())
                        .map_or_else(|| c.message.clone(), |d| d.trim().to_string())
                });
                let connection = first_error.is_some_and(|c| {
                    matches!(
                        c.code.as_str(),
                        "connect" | "host_key" | "auth" | "probe_timeout"
                    )
                });
                map.insert("error".into(), json!(error));
                map.insert(
                    "code".into(),
                    if connection { json!(255) } else { Value::Null },
                );
            }
        }
        // Paperclip has no bubblewrap sandbox probe to match; Berth's checks say it all.
        ProbeTarget::Sandbox { .. } | ProbeTarget::Unsupported(_) => {}
    }
}

fn describe_target(target: &ProbeTarget) -> String {
    match target {
        ProbeTarget::Local { .. } => "The local environment".to_string(),
        ProbeTarget::Ssh { target, .. } => format!(
            "SSH environment {}@{}:{}",
            target.username, target.host, target.port
        ),
        ProbeTarget::Sandbox { .. } => "The sandbox environment".to_string(),
        ProbeTarget::Unsupported(d) => format!("The {d} environment"),
    }
}

async fn run_checks(
    pool: &SshPool,
    target: &ProbeTarget,
    agent_commands: &[String],
) -> (Vec<Check>, Value, String) {
    let describe = describe_target(target);
    match target {
        ProbeTarget::Unsupported(d) => (
            vec![Check::new(
                "driver_unsupported",
                Level::Error,
                format!("Probing {d} environments is not available in this build yet."),
            )],
            json!({}),
            describe,
        ),
        ProbeTarget::Sandbox { policy } => {
            let (checks, facts) = sandbox_checks(policy, agent_commands).await;
            (checks, facts, describe)
        }
        ProbeTarget::Local { workspace_root } => {
            let transport: Arc<dyn Transport> = Arc::new(LocalTransport::new());
            let mut checks = vec![Check::new(
                "connect",
                Level::Info,
                "Runs on the control-plane host itself.",
            )];
            let root = workspace_root.display().to_string();
            let (more, facts) = host_checks(transport.as_ref(), &root, agent_commands).await;
            checks.extend(more);
            (
                checks,
                json!({"workspaceRoot": root, "host": facts}),
                describe,
            )
        }
        ProbeTarget::Ssh {
            target,
            remote_workspace_path,
        } => {
            let mut checks = Vec::new();
            let mut details = json!({
                "host": target.host,
                "port": target.port,
                "username": target.username,
                "remoteWorkspacePath": remote_workspace_path,
            });
            let transport = SshTransport::new(pool.clone(), target.clone());
            let connected = Instant::now();
            match transport.connection_info().await {
                Ok(info) => {
                    checks.push(
                        Check::new(
                            "connect",
                            Level::Info,
                            format!(
                                "Connected to {}:{} in {} ms.",
                                target.host,
                                target.port,
                                info.tcp_connect.as_millis()
                            ),
                        )
                        .detail(format!(
                            "tcp {} ms, handshake {} ms, auth {} ms",
                            info.tcp_connect.as_millis(),
                            info.handshake.as_millis(),
                            info.auth.as_millis()
                        )),
                    );
                    let hk = &info.host_key;
                    details["hostKey"] = json!({
                        "keyType": hk.presented.key_type,
                        "fingerprint": hk.presented.fingerprint_sha256,
                        "knownHostsLine": hk.presented.known_hosts_line,
                        "pinned": hk.pinned,
                    });
                    if hk.pinned {
                        checks.push(
                            Check::new(
                                "host_key",
                                Level::Info,
                                format!(
                                    "Host key {} {} matches the pinned key.",
                                    hk.presented.key_type, hk.presented.fingerprint_sha256
                                ),
                            )
                            .detail(hk.presented.fingerprint_sha256.clone()),
                        );
                    } else {
                        checks.push(
                            Check::new(
                                "host_key",
                                Level::Warn,
                                format!(
                                    "Host key {} {} was accepted without verification (strictHostKeyChecking is off).",
                                    hk.presented.key_type, hk.presented.fingerprint_sha256
                                ),
                            )
                            .detail(hk.presented.fingerprint_sha256.clone())
                            .hint(format!(
                                "Pin it: add this line to knownHosts and turn strictHostKeyChecking on: {}",
                                hk.presented.known_hosts_line
                            )),
                        );
                    }
                    checks.push(Check::new(
                        "auth",
                        Level::Info,
                        format!(
                            "Authenticated as {} with {}.",
                            target.username,
                            info.auth_method.replace('_', " ")
                        ),
                    ));
                }
                Err(err) => {
                    checks.push(connection_failure(&err, target, connected.elapsed()));
                    if let ExecError::HostKey { presented, .. } = &err {
                        details["hostKey"] = json!({
                            "keyType": presented.key_type,
                            "fingerprint": presented.fingerprint_sha256,
                            "knownHostsLine": presented.known_hosts_line,
                            "pinned": false,
                        });
                    }
                    return (checks, details, describe);
                }
            }
            let (more, facts) =
                host_checks(&transport, remote_workspace_path, agent_commands).await;
            checks.extend(more);
            details["remote"] = facts;
            (checks, details, describe)
        }
    }
}

/// Turn a failed connection into one error check with a hint on what to do.
fn connection_failure(err: &ExecError, target: &SshTarget, waited: Duration) -> Check {
    match err {
        ExecError::Connect { detail, .. } => Check::new(
            "connect",
            Level::Error,
            format!("Cannot connect to {}:{}: {detail}.", target.host, target.port),
        )
        .hint("Check the host and port, that sshd is running, and that no firewall blocks the port."),
        ExecError::ConnectTimeout { secs, .. } => Check::new(
            "connect",
            Level::Error,
            format!(
                "No answer from {}:{} within {secs} s.",
                target.host, target.port
            ),
        )
        .hint("Check the host address and that the port is open from this machine."),
        ExecError::HostKey {
            presented, reason, ..
        } => {
            let message = match reason {
                HostKeyRejection::Unknown => format!(
                    "Host key {} {} is not trusted: the host is not in known_hosts.",
                    presented.key_type, presented.fingerprint_sha256
                ),
                HostKeyRejection::Revoked => format!(
                    "Host key {} {} is revoked.",
                    presented.key_type, presented.fingerprint_sha256
                ),
                HostKeyRejection::Mismatch { known_fingerprints } => format!(
                    "Host key mismatch: the host presented {} {}, but the pinned key is {}. Nothing was sent to the host.",
                    presented.key_type,
                    presented.fingerprint_sha256,
                    known_fingerprints.join(", ")
                ),
            };
            let hint = match reason {
                HostKeyRejection::Mismatch { .. } | HostKeyRejection::Revoked => {
                    "If the host was reinstalled, confirm the new fingerprint out of band, then run `berth env trust <id>`. Otherwise someone may be intercepting the connection.".to_string()
                }
                HostKeyRejection::Unknown => format!(
                    "Confirm the fingerprint with the host's owner, then run `berth env trust <id>` (or add this line to knownHosts: {}).",
                    presented.known_hosts_line
                ),
            };
            Check::new("host_key", Level::Error, message)
                .detail(presented.fingerprint_sha256.clone())
                .hint(hint)
        }
        ExecError::PrivateKey { detail, .. } => Check::new(
            "auth",
            Level::Error,
            format!("The private key cannot be used: {detail}."),
        )
        .hint("Paste the whole OpenSSH private key (and its passphrase if it has one)."),
        ExecError::Auth { user, detail, .. } => Check::new(
            "auth",
            Level::Error,
            format!("Authentication as {user} failed: {detail}."),
        )
        .hint(format!(
            "Add the public key to ~{user}/.ssh/authorized_keys on the host, or configure the matching private key."
        )),
        other => Check::new(
            "connect",
            Level::Error,
            format!("Cannot reach {}:{}: {other}", target.host, target.port),
        )
        .detail(format!("after {} ms", waited.as_millis())),
    }
}

const TOOLS: &[&str] = &["sh", "tar", "git", "setsid", "sha256sum"];

/// The checks that run on the host itself, in one round trip: OS/arch, workspace path
/// (create, write, delete), tools with versions, free disk, agent CLIs on the login PATH.
/// An agent CLI's `--version` runs with the CLI's own directory first on PATH, so a Node CLI
/// installed beside its own `node` (nvm, a tarball, `scripts/install-agent-clis`) reports the
/// version it runs with rather than failing under an older system Node. The CLIs are asked in
/// parallel (a Node CLI takes a second or more to print its version). The agent command and
/// its directory reach the login shells as positional parameters, never as script text: an
/// agent's `adapterConfig.command` is user input and must not be able to run anything.
async fn host_checks(
    transport: &dyn Transport,
    workspace: &str,
    agent_commands: &[String],
) -> (Vec<Check>, Value) {
    let agents: Vec<String> = agent_commands
        .iter()
        .filter(|c| !c.is_empty() && !c.contains(['\n', '\0']))
        .map(|c| quote(c))
        .collect();
    let tools = TOOLS.join(" ");
    let script = format!(
        r#"P={ws}
printf '@@os\n'; uname -sm 2>&1
printf '@@ws\n'; ( mkdir -p "$P" && cd "$P" && pwd -P && f=".berth-probe-$$" && printf ok > "$f" && rm -f "$f" && echo BERTH_WRITE_OK ) 2>&1
printf '@@tools\n'; for t in {tools}; do p=$(command -v "$t" 2>/dev/null); if [ -n "$p" ]; then v=$("$t" --version 2>/dev/null | head -n 1); printf '%s\t%s\t%s\n' "$t" "$p" "$v"; else printf '%s\t\t\n' "$t"; fi; done
printf '@@disk\n'; df -Pk "$P" 2>/dev/null | tail -n 1
printf '@@agents\n'
agent() {{ c=$1; p=$(sh -lc 'command -v -- "$1"' sh "$c" 2>/dev/null </dev/null); if [ -n "$p" ]; then d=$(dirname -- "$p"); v=$(sh -lc 'PATH="$1:$PATH"; "$2" --version' sh "$d" "$c" 2>/dev/null </dev/null | head -n 1); printf '%s\t%s\t%s\n' "$c" "$p" "$v"; else printf '%s\t\t\n' "$c"; fi; }}
t=$(mktemp -d 2>/dev/null) || t=
i=0; for c in {agents}; do i=$((i+1)); if [ -n "$t" ]; then agent "$c" > "$t/$i" & else agent "$c"; fi; done; wait
if [ -n "$t" ]; then i=0; for c in {agents}; do i=$((i+1)); cat "$t/$i" 2>/dev/null; done; rm -rf "$t"; fi
printf '@@end\n'
"#,
        ws = quote(workspace),
        agents = if agents.is_empty() {
            "''".to_string()
        } else {
            agents.join(" ")
        },
    );
    let completed = match transport.run(&script, bytes::Bytes::new()).await {
        Ok(c) => c,
        Err(e) => {
            return (
                vec![
                    Check::new(
                        "remote_command",
                        Level::Error,
                        format!("Cannot run commands on {}: {e}", transport.describe()),
                    )
                    .hint("Check that the user has a working POSIX shell."),
                ],
                json!({}),
            );
        }
    };
    let out = completed.stdout_text();
    let section = |name: &str| -> Vec<String> {
        let start = format!("@@{name}");
        out.lines()
            .skip_while(|l| *l != start)
            .skip(1)
            .take_while(|l| !l.starts_with("@@"))
            .map(str::to_string)
            .collect()
    };
    let mut checks = Vec::new();
    let mut facts = json!({});

    let os = section("os").join(" ");
    if os.is_empty() {
        checks.push(Check::new(
            "os",
            Level::Warn,
            "Could not read the OS and architecture (uname -sm).",
        ));
    } else {
        checks.push(Check::new("os", Level::Info, format!("OS/arch: {os}.")));
        facts["os"] = json!(os);
    }

    let ws = section("ws");
    if ws.iter().any(|l| l == "BERTH_WRITE_OK") {
        let resolved = ws.first().cloned().unwrap_or_default();
        checks.push(Check::new(
            "workspace_path",
            Level::Info,
            format!("Workspace path {resolved} is writable (created, wrote and deleted a file)."),
        ));
        facts["workspacePath"] = json!(resolved);
    } else {
        checks.push(
            Check::new(
                "workspace_path",
                Level::Error,
                format!("Workspace path {workspace} is not writable."),
            )
            .detail(ws.join("\n"))
            .hint("Create the directory and give the user write permission, or choose another remoteWorkspacePath."),
        );
    }

    let mut tools = serde_json::Map::new();
    for line in section("tools") {
        let mut parts = line.splitn(3, '\t');
        let (name, path, version) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if path.is_empty() {
            let level = if name == "git" {
                Level::Warn
            } else {
                Level::Error
            };
            checks.push(
                Check::new(
                    &format!("tool_{name}"),
                    level,
                    format!("`{name}` is not installed."),
                )
                .hint(format!(
                    "Install {name} on the environment (Debian: apt-get install {}).",
                    debian_package(name)
                )),
            );
        } else {
            let v = if version.is_empty() {
                "version unknown".to_string()
            } else {
                version.to_string()
            };
            checks.push(Check::new(
                &format!("tool_{name}"),
                Level::Info,
                format!("`{name}` found at {path} ({v})."),
            ));
            tools.insert(name.to_string(), json!({"path": path, "version": version}));
        }
    }
    facts["tools"] = Value::Object(tools);

    let disk = section("disk");
    let free_kb = disk
        .first()
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    match free_kb {
        Some(kb) => {
            let gib = kb as f64 / 1024.0 / 1024.0;
            let level = if kb < 1024 * 1024 {
                Level::Warn
            } else {
                Level::Info
            };
            let mut check = Check::new(
                "disk",
                level,
                format!("{gib:.1} GiB free at the workspace path."),
            );
            if level == Level::Warn {
                check = check.hint("Free some disk space: workspaces are copied there.");
            }
            checks.push(check);
            facts["freeDiskKb"] = json!(kb);
        }
        None => checks.push(Check::new(
            "disk",
            Level::Warn,
            "Could not read the free disk space (df -Pk).",
        )),
    }

    let mut agents = serde_json::Map::new();
    for line in section("agents") {
        let mut parts = line.splitn(3, '\t');
        let (name, path, version) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if name.is_empty() {
            continue;
        }
        if path.is_empty() {
            checks.push(
                Check::new("agent_cli", Level::Warn, format!("Agent CLI `{name}` is not on the login PATH."))
                    .hint(format!("Install `{name}` for this user, or set the agent's adapterConfig.command to its absolute path.")),
            );
        } else {
            let v = if version.is_empty() {
                "version unknown".to_string()
            } else {
                version.to_string()
            };
            checks.push(Check::new(
                "agent_cli",
                Level::Info,
                format!("Agent CLI `{name}` found at {path} ({v})."),
            ));
            agents.insert(name.to_string(), json!({"path": path, "version": version}));
        }
    }
    facts["agentClis"] = Value::Object(agents);
    (checks, facts)
}

/// `bwrap` and user namespaces on this host, the host-side tools sync needs (in the sandbox
/// root), then the agent CLIs and `socat` as the agent sees them: looked up *inside* a sandbox
/// built like a run's.
async fn sandbox_checks(policy: &SandboxPolicy, agent_commands: &[String]) -> (Vec<Check>, Value) {
    let mut checks = Vec::new();
    let root = policy.root.display().to_string();
    if let Err(why) = tokio::task::spawn_blocking(berth_exec::sandbox::host_support)
        .await
        .unwrap_or_else(|e| {
            Err(berth_exec::sandbox::SandboxUnavailable {
                reason: format!("the check did not finish: {e}"),
                hint: String::new(),
            })
        })
    {
        checks.push(Check::new("bwrap", Level::Error, why.reason).hint(why.hint));
        return (checks, json!({"root": root}));
    }
    checks.push(Check::new(
        "bwrap",
        Level::Info,
        "bwrap creates user, PID, IPC, UTS and network namespaces on this host.",
    ));
    let transport = SandboxTransport::new(policy.clone());
    let (more, mut facts) = host_checks(&transport, &root, &[]).await;
    checks.extend(more);
    // The API bridge and the egress proxy are Unix sockets: their paths must fit SUN_LEN.
    let longest = policy.api_dir().join("e-000000000000.sock");
    if policy.network != SandboxNetwork::Open && longest.as_os_str().len() >= 108 {
        checks.push(
            Check::new(
                "api_socket",
                Level::Warn,
                format!(
                    "The sandbox's socket directory {} is too deep for Unix sockets (108 bytes): \
                     agents would get no BERTH_API_URL and no egress proxy.",
                    policy.api_dir().display()
                ),
            )
            .hint("Set runsRoot (BERTH_RUNS_ROOT) to a shorter directory."),
        );
    }

    // Inside: a scratch directory of the root is a valid sandbox working directory.
    let dir = RemoteLayout::new(&root).scratch_dir(&format!("probe-{}", uuid::Uuid::new_v4()));
    let mut lookups: Vec<String> = agent_commands
        .iter()
        .filter(|c| !c.is_empty() && !c.contains(['\n', '\0']))
        .cloned()
        .collect();
    let needs_socat = policy.network != SandboxNetwork::Open;
    if needs_socat {
        lookups.push("socat".to_string());
    }
    let inner = format!(
        "for c in {}; do p=$(command -v -- \"$c\" 2>/dev/null); printf '%s\\t%s\\n' \"$c\" \"$p\"; done",
        if lookups.is_empty() {
            "''".to_string()
        } else {
            lookups
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    let confined = match transport.confine(&inner) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::new("sandbox", Level::Error, e.to_string()));
            return (checks, facts);
        }
    };
    let script = format!(
        "mkdir -p -- {d} && cd -- {d} || exit 125\n( {confined} )\nrc=$?\ncd / && rm -rf -- {d}\nexit $rc",
        d = quote(&dir),
    );
    let done = match transport.run(&script, bytes::Bytes::new()).await {
        Ok(done) => done,
        Err(e) => {
            checks.push(Check::new(
                "sandbox",
                Level::Error,
                format!("Cannot start a sandbox: {e}"),
            ));
            return (checks, facts);
        }
    };
    if !done.outcome.success() {
        checks.push(
            Check::new(
                "sandbox",
                Level::Error,
                format!("A sandbox like a run's did not start ({}).", done.outcome),
            )
            .detail(done.stderr_text())
            .hint("Check readOnlyPaths and that the sandbox root is writable."),
        );
        return (checks, facts);
    }
    checks.push(Check::new(
        "sandbox",
        Level::Info,
        "A sandbox like a run's starts (empty root, read-only system, private /tmp).",
    ));
    let mut agents = serde_json::Map::new();
    for line in done.stdout_text().lines() {
        let (name, path) = line.split_once('\t').unwrap_or((line, ""));
        if name.is_empty() {
            continue;
        }
        if name == "socat" && needs_socat {
            if path.is_empty() {
                checks.push(
                    Check::new(
                        "tool_socat",
                        Level::Warn,
                        "`socat` is not available inside the sandbox: with network \"none\" agents get no BERTH_API_URL.",
                    )
                    .hint("Install socat on the host (Debian: apt-get install socat)."),
                );
            } else {
                checks.push(Check::new(
                    "tool_socat",
                    Level::Info,
                    format!("`socat` found inside the sandbox at {path}: agents reach Berth's API with network \"none\"."),
                ));
            }
            continue;
        }
        if path.is_empty() {
            checks.push(
                Check::new(
                    "agent_cli",
                    Level::Warn,
                    format!("Agent CLI `{name}` is not visible inside the sandbox."),
                )
                .hint(format!(
                    "Install `{name}` under /usr, or add the directory it lives in to readOnlyPaths."
                )),
            );
        } else {
            checks.push(Check::new(
                "agent_cli",
                Level::Info,
                format!("Agent CLI `{name}` found inside the sandbox at {path}."),
            ));
            agents.insert(name.to_string(), json!({"path": path}));
        }
    }
    facts["agentClis"] = Value::Object(agents);
    facts["network"] = json!(policy.network);
    (checks, json!({"root": root, "host": facts}))
}

fn debian_package(tool: &str) -> &'static str {
    match tool {
        "setsid" => "util-linux",
        "sha256sum" => "coreutils",
        "tar" => "tar",
        "git" => "git",
        _ => "dash",
    }
}

/// Timeouts used by probes: the SPEC's connect and auth deadlines.
pub fn probe_timeouts() -> SshTimeouts {
    SshTimeouts::default()
}
