//! The remote launcher, written once over any [`Transport`]. Needs only POSIX `sh`, coreutils
//! and `setsid` on the environment.
//!
//! Layout per run: `<root>/.berth/runs/<runId>/` with `cmd`, `stdin`, `stdout`, `stderr`, `pid`
//! (the launcher shell), `pgid` (the command's session = process group), `stop` (why Berth
//! stopped it) and `status` (written atomically via `status.tmp` when the command ends). The env
//! file `env` (0600, under `umask 077`) travels over the launch channel's stdin, is sourced by
//! the launcher shell and deleted before the command starts: env values never appear in any
//! argv or script text.
//!
//! The command runs in its own session (`setsid`), separate from the launcher shell, so that
//! cancel can TERM/KILL the whole group while the launcher survives to record the status.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::error::ExecError;
use crate::shell::{check_no_nul, is_valid_env_key, quote};
use crate::transport::{ExecRequest, RUN_OUTPUT_CAP, RUN_TIMEOUT, Transport};
use berth_core::Secret;

/// Most bytes per stream fetched by one poll.
const POLL_CAP: u64 = 4 * 1024 * 1024;
/// Pause between polls that found nothing new: short while output is fresh (interactive
/// latency), longer once the run has been quiet for a while, so fifty quiet runs on one host
/// do not keep its CPU busy answering polls. Latency stays ≤ 250 ms plus one poll.
const POLL_IDLE: Duration = Duration::from_millis(100);
const POLL_IDLE_QUIET: Duration = Duration::from_millis(250);
/// Empty polls after which a run counts as quiet.
const POLL_QUIET_AFTER: u32 = 5;
/// Consecutive failed polls tolerated (with backoff) before attach gives up. Few: a caller
/// that streams for long (the engine) re-attaches on its own schedule and knows how long the
/// environment may stay silent; this only bridges a dropped connection.
const POLL_RETRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("failed to launch run {run_id}: invalid run id (use [A-Za-z0-9_-], at most 128)")]
    InvalidRunId { run_id: String },
    #[error("failed to launch run {run_id}: invalid environment variable name {key:?}")]
    InvalidEnvKey { run_id: String, key: String },
    #[error("failed to launch run {run_id}: environment variable {key} contains a NUL byte")]
    InvalidEnvValue { run_id: String, key: String },
    #[error("failed to launch run {run_id}: {source}")]
    Nul {
        run_id: String,
        #[source]
        source: crate::shell::NulByte,
    },
    #[error("failed to launch run {run_id} on {env}: the root {root:?} is not an absolute path")]
    InvalidRoot {
        run_id: String,
        env: String,
        root: String,
    },
    #[error(transparent)]
    Transport(#[from] ExecError),
    #[error("failed to {action} run {run_id} on {env}: {detail}")]
    Remote {
        action: &'static str,
        run_id: String,
        env: String,
        detail: String,
    },
    /// `kill -TERM -0` is the stopping shell's own group and `kill -TERM -1` every process the
    /// user may signal: a run record with such a process group is refused, never signalled.
    #[error("failed to stop run {run_id}: process group {pgid} is not a run's group")]
    InvalidPgid { run_id: String, pgid: u32 },
    #[error(
        "failed to stop run {run_id} on {env}: processes {pids:?} of its group survived SIGKILL"
    )]
    Survivors {
        run_id: String,
        env: String,
        pids: Vec<u32>,
    },
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct LaunchSpec {
    /// `[A-Za-z0-9_-]{1,128}`.
    pub run_id: String,
    /// A POSIX `sh` script (the agent command line). Not secret; secrets go in `env`.
    pub command: String,
    /// Working directory on the environment; must exist.
    pub cwd: String,
    pub env: BTreeMap<String, Secret<String>>,
    pub stdin: Bytes,
    /// Source `/etc/profile` and `~/.profile` first (quietly), so CLIs installed on the
    /// environment's login PATH are found. `env` is applied after them and wins.
    pub login_profile: bool,
}

/// A launched run, enough to attach, cancel and clean up later (also after a restart).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteRun {
    pub run_id: String,
    /// The run directory on the environment.
    pub dir: String,
    /// Process group (= session) id of the command on the environment.
    pub pgid: u32,
}

/// Why and how a run ended, as data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunOutcome {
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal name without `SIG` when a signal ended it. (`sh` reports a signal death as
    /// 128+n; an explicit `exit 128+n` reads the same.)
    pub signal: Option<String>,
    pub timed_out: bool,
    pub cancelled: bool,
    /// The launcher shell died before it wrote the status (killed from outside, or the disk
    /// filled): how the command ended is unknown, and its group may still run.
    #[serde(default)]
    pub launcher_lost: bool,
}

impl RunOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
            && self.signal.is_none()
            && !self.timed_out
            && !self.cancelled
            && !self.launcher_lost
    }
}

/// Byte offsets already consumed per stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offsets {
    pub stdout: u64,
    pub stderr: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// Bytes `[offset, offset + data.len())` of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub stream: StreamKind,
    pub offset: u64,
    pub data: Bytes,
}

impl Chunk {
    /// The offset after this chunk (what a caller persists).
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachEvent {
    Output(Chunk),
    /// All output up to the end has been yielded; the run is over.
    Exited(RunOutcome),
}

/// When an environment last answered a poll (see [`Launcher::attach_watched`]). Cheap to
/// clone; clones share the mark.
#[derive(Debug, Clone)]
pub struct Liveness {
    origin: std::time::Instant,
    /// Milliseconds after `origin` of the last answer.
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    /// Marked as answering now.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
            last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    pub fn mark(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the environment last answered.
    pub fn last(&self) -> std::time::Instant {
        self.origin + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Why Berth stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancel,
    Timeout,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Timeout => "timeout",
        }
    }
}

/// Starts, streams, stops and cleans runs on one environment.
#[derive(Clone)]
pub struct Launcher {
    transport: Arc<dyn Transport>,
    root: String,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("env", &self.transport.describe())
            .field("root", &self.root)
            .finish()
    }
}

/// The detached launcher shell: `$1` = run dir, `$2` = cwd, `$3` = `1` to source the login
/// profiles. It is its own session leader; the command gets another session so a group kill
/// never takes the launcher with it. The command's shell writes `pgid` itself, after
/// `setsid`, so a cancel can never race ahead of the new process group, and `pgid.start`
/// (its start time from `/proc`, where there is one) so a stop can tell its group from a
/// later process that got the same number.
const LAUNCHER: &str = r#"d=$1
echo $$ > "$d/pid"
if [ "$3" = 1 ]; then
  for f in /etc/profile "$HOME/.profile"; do
    if [ -r "$f" ]; then . "$f" </dev/null >/dev/null 2>&1; fi
  done
fi
. "$d/env"
rm -f "$d/env"
if ! cd -- "$2"; then
  printf '%s\n' 126 > "$d/status.tmp"; mv "$d/status.tmp" "$d/status"; echo 0 > "$d/pgid"; exit 1
fi
setsid sh -c 'd=$1; if read -r l < /proc/$$/stat 2>/dev/null; then set -- ${l##*) }; printf "%s\n" "${20}" > "$d/pgid.start"; fi; echo $$ > "$d/pgid.tmp" && mv "$d/pgid.tmp" "$d/pgid" && exec sh "$d/cmd"' berth-run "$d" \
  < "$d/stdin" >> "$d/stdout" 2>> "$d/stderr" &
c=$!
wait "$c"
rc=$?
printf '%s\n' "$rc" > "$d/status.tmp" && mv "$d/status.tmp" "$d/status"
"#;

/// Lists live (non-zombie) processes whose process group or session is `$g`.
const ALIVE_FN: &str = r#"alive() {
  if [ -r /proc/self/stat ]; then
    for f in /proc/[0-9]*/stat; do
      read -r l 2>/dev/null < "$f" || continue
      set -- ${l##*) }
      [ "$1" = Z ] && continue
      if [ "$3" = "$g" ] || [ "$4" = "$g" ]; then p=${f#/proc/}; printf '%s ' "${p%/stat}"; fi
    done
  else
    ps -e -o pid= -o pgid= -o sid= -o stat= | while read -r p pg s st; do
      case $st in Z*) continue;; esac
      if [ "$pg" = "$g" ] || [ "$s" = "$g" ]; then printf '%s ' "$p"; fi
    done
  fi
}
"#;

/// Succeeds when the launcher shell of run directory `$d` is gone (or a zombie nobody reaped
/// yet): then no status will ever be written.
const LAUNCHER_GONE_FN: &str = r#"launcher_gone() {
  [ -s "$d/pid" ] || return 1
  read -r p < "$d/pid"
  if [ -d /proc/self ]; then
    if read -r l < "/proc/$p/stat" 2>/dev/null; then set -- ${l##*) }; [ "$1" = Z ]; return; fi
    return 0
  fi
  ! kill -0 "$p" 2>/dev/null
}"#;

/// Longest wait between TERM and KILL that [`Launcher::stop`] honours; a longer grace is cut to
/// this. An agent's `graceSec` is validated to the same bound.
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(3600);

/// Launch payloads (env file + command + stdin) up to this size take the control-shell path.
const CONTROL_PAYLOAD_MAX: usize = 128 * 1024;

fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_status(raw: &str, stop: &str) -> RunOutcome {
    let rc: Option<i32> = raw.trim().parse().ok();
    let mut out = RunOutcome {
        cancelled: stop == "cancel",
        timed_out: stop == "timeout",
        ..RunOutcome::default()
    };
    match rc {
        Some(rc) if rc > 128 && rc <= 128 + 64 => {
            out.signal = Some(
                nix::sys::signal::Signal::try_from(rc - 128)
                    .map(|s| s.as_str().trim_start_matches("SIG").to_owned())
                    .unwrap_or_else(|_| (rc - 128).to_string()),
            );
        }
        Some(rc) => out.exit_code = Some(rc),
        None => {}
    }
    out
}

struct PollResult {
    status: Option<RunOutcome>,
    stdout: Bytes,
    stderr: Bytes,
    capped: bool,
}

impl Launcher {
    /// A launcher whose runs live under `<root>/.berth/runs/` on `transport`'s environment.
    pub fn new(transport: Arc<dyn Transport>, root: impl Into<String>) -> Self {
        Self {
            transport,
            root: root.into(),
        }
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    fn env(&self) -> String {
        self.transport.describe()
    }

    fn run_dir(&self, run_id: &str) -> String {
        crate::RemoteLayout::new(&self.root).run_dir(run_id)
    }

    fn remote_err(&self, action: &'static str, run_id: &str, detail: String) -> LauncherError {
        LauncherError::Remote {
            action,
            run_id: run_id.to_owned(),
            env: self.env(),
            detail,
        }
    }

    /// Start the command detached. Returns once its process group exists.
    pub async fn launch(&self, spec: LaunchSpec) -> Result<RemoteRun, LauncherError> {
        if !valid_run_id(&spec.run_id) {
            return Err(LauncherError::InvalidRunId {
                run_id: spec.run_id,
            });
        }
        if !self.root.starts_with('/') {
            return Err(LauncherError::InvalidRoot {
                run_id: spec.run_id,
                env: self.env(),
                root: self.root.clone(),
            });
        }
        for (what, value) in [
            ("the command", &spec.command),
            ("the working directory", &spec.cwd),
        ] {
            if let Err(source) = check_no_nul(what, value) {
                return Err(LauncherError::Nul {
                    run_id: spec.run_id,
                    source,
                });
            }
        }
        // `cd -- -` still means "the previous directory": a relative cwd that starts with `-`
        // is spelled `./-…` so it always names the directory itself.
        let cwd = if spec.cwd.starts_with('-') {
            format!("./{}", spec.cwd)
        } else {
            spec.cwd.clone()
        };
        let mut env_file = String::new();
        for (k, v) in &spec.env {
            if !is_valid_env_key(k) {
                return Err(LauncherError::InvalidEnvKey {
                    run_id: spec.run_id,
                    key: k.clone(),
                });
            }
            if v.expose().contains('\0') {
                return Err(LauncherError::InvalidEnvValue {
                    run_id: spec.run_id,
                    key: k.clone(),
                });
            }
            env_file.push_str(&format!("export {k}={}\n", quote(v.expose())));
        }
        // The sandbox transport wraps the command so it starts inside `bwrap`.
        let command = self.transport.confine(&spec.command)?;
        let dir = self.run_dir(&spec.run_id);
        // Framed stdin: "<env bytes> <cmd bytes>\n", the env file, the command, then stdin.
        let mut payload =
            Vec::with_capacity(env_file.len() + command.len() + spec.stdin.len() + 32);
        payload.extend_from_slice(format!("{} {}\n", env_file.len(), command.len()).as_bytes());
        payload.extend_from_slice(env_file.as_bytes());
        payload.extend_from_slice(command.as_bytes());
        payload.extend_from_slice(&spec.stdin);
        let script = format!(
            r#"set -e
umask 077
d={dir}
mkdir -p {runs}
mkdir "$d"
IFS=' ' read -r n m
head -c "$n" > "$d/env"
head -c "$m" > "$d/cmd"
cat > "$d/stdin"
: > "$d/stdout"
: > "$d/stderr"
[ -d {cwd} ] || {{ printf 'working directory %s does not exist\n' {cwd} >&2; exit 3; }}
setsid sh -c {launcher} berth-launcher "$d" {cwd} {profile} </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s "$d/pgid" ]; do
  i=$((i+1))
  if [ "$i" -gt 1000 ]; then echo "the launcher did not start within 10 s" >&2; exit 4; fi
  sleep 0.01
done
cat "$d/pgid"
"#,
            dir = quote(&dir),
            runs = quote(&crate::RemoteLayout::new(&self.root).runs_dir()),
            cwd = quote(&cwd),
            launcher = quote(LAUNCHER),
            profile = u8::from(spec.login_profile),
        );
        // Warm path: through the SSH control shell, which carries the script as channel data
        // (no new channel, no login shell: milliseconds instead of hundreds). The payload goes
        // base64-encoded through `printf`, a shell builtin, so it is never in an argv either.
        // Elsewhere (or for a large stdin) the payload travels on an exec channel's stdin.
        let confidential = if payload.len() <= CONTROL_PAYLOAD_MAX {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
            let wrapped = format!(
                "printf '%s' '{encoded}' | base64 -d | sh -c {}",
                quote(&script)
            );
            self.transport.run_confidential(&wrapped).await?
        } else {
            None
        };
        let done = match confidential {
            Some(done) => done,
            None => {
                self.transport
                    .exec(
                        ExecRequest::new(script)
                            .stdin_bytes(payload)
                            .timeout(RUN_TIMEOUT),
                    )
                    .await?
                    .collect(64 * 1024)
                    .await?
            }
        };
        if !done.outcome.success() {
            return Err(self.remote_err(
                "launch",
                &spec.run_id,
                format!("{}: {}", done.outcome, done.stderr_text().trim()),
            ));
        }
        let pgid: u32 = done.stdout_text().trim().parse().map_err(|_| {
            self.remote_err(
                "launch",
                &spec.run_id,
                format!("unexpected launcher answer {:?}", done.stdout_text()),
            )
        })?;
        if pgid == 0 {
            return Err(self.remote_err(
                "launch",
                &spec.run_id,
                format!("failed to enter working directory {}", spec.cwd),
            ));
        }
        Ok(RemoteRun {
            run_id: spec.run_id,
            dir,
            pgid,
        })
    }

    async fn poll(&self, run: &RemoteRun, from: Offsets) -> Result<PollResult, LauncherError> {
        // Polls run often for every live run: builtins where they do (`read`), and one `wc`
        // for both sizes, so an idle poll costs two forks on the host.
        let script = format!(
            r#"d={dir}
cd "$d" 2>/dev/null || {{ echo "run directory is missing" >&2; exit 3; }}
d=$PWD
st=-; [ -f status ] && read -r st < status
{gone_fn}
if [ "$st" = - ] && launcher_gone; then
  if [ -f status ]; then read -r st < status; else st=lost; fi
fi
stop=-; [ -f stop ] && read -r stop < stop
set -- $(wc -c stdout stderr)
so=$1; se=$3
no=$((so - {oo})); [ "$no" -gt {cap} ] && no={cap}; [ "$no" -lt 0 ] && no=0
ne=$((se - {eo})); [ "$ne" -gt {cap} ] && ne={cap}; [ "$ne" -lt 0 ] && ne=0
printf 'BERTH %s %s %s %s\n' "$st" "$stop" "$no" "$ne"
if [ "$no" -gt 0 ]; then tail -c +{oo1} stdout | head -c "$no"; fi
if [ "$ne" -gt 0 ]; then tail -c +{eo1} stderr | head -c "$ne"; fi
"#,
            dir = quote(&run.dir),
            gone_fn = LAUNCHER_GONE_FN,
            oo = from.stdout,
            eo = from.stderr,
            oo1 = from.stdout + 1,
            eo1 = from.stderr + 1,
            cap = POLL_CAP,
        );
        let c = self.transport.run(&script, Bytes::new()).await?;
        if !c.outcome.success() || c.stdout_truncated {
            return Err(self.remote_err(
                "read the output of",
                &run.run_id,
                format!("{}: {}", c.outcome, c.stderr_text().trim()),
            ));
        }
        let bad = |what: &str| self.remote_err("read the output of", &run.run_id, what.to_owned());
        let nl = c
            .stdout
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header in the poll answer"))?;
        let header = String::from_utf8_lossy(&c.stdout[..nl]).into_owned();
        let parts: Vec<&str> = header.split(' ').collect();
        let [tag, st, stop, no, ne] = parts.as_slice() else {
            return Err(bad("malformed poll header"));
        };
        if *tag != "BERTH" {
            return Err(bad("malformed poll header"));
        }
        let no: usize = no.parse().map_err(|_| bad("bad stdout size"))?;
        let ne: usize = ne.parse().map_err(|_| bad("bad stderr size"))?;
        let body = c.stdout.slice(nl + 1..);
        if body.len() != no + ne {
            return Err(bad(&format!(
                "expected {} bytes of output, got {}",
                no + ne,
                body.len()
            )));
        }
        let status = match *st {
            "-" => None,
            "lost" => Some(RunOutcome {
                launcher_lost: true,
                ..parse_status("", stop)
            }),
            st => Some(parse_status(st, stop)),
        };
        Ok(PollResult {
            status,
            stdout: body.slice(..no),
            stderr: body.slice(no..),
            capped: no as u64 == POLL_CAP || ne as u64 == POLL_CAP,
        })
    }

    /// Stream the run's output from `from`, then its outcome. Polls through the transport
    /// (the SSH control shell), retrying transient failures with backoff, so a dropped
    /// connection is bridged without losing or repeating a byte. A caller that persists each
    /// chunk's [`Chunk::end`] can also re-attach later with those offsets.
    pub fn attach(
        &self,
        run: &RemoteRun,
        from: Offsets,
    ) -> impl Stream<Item = Result<AttachEvent, LauncherError>> + Send + 'static {
        self.attach_inner(run, from, POLL_RETRIES, None)
    }

    /// [`attach`](Self::attach) for a caller with its own re-attach schedule: the first failed
    /// poll ends the stream with its error, and every poll that got an answer marks `alive`,
    /// so the caller can time how long the environment stays unreachable — also while the
    /// agent prints nothing.
    pub fn attach_watched(
        &self,
        run: &RemoteRun,
        from: Offsets,
        alive: &Liveness,
    ) -> impl Stream<Item = Result<AttachEvent, LauncherError>> + Send + 'static {
        self.attach_inner(run, from, 0, Some(alive.clone()))
    }

    fn attach_inner(
        &self,
        run: &RemoteRun,
        from: Offsets,
        retries: u32,
        alive: Option<Liveness>,
    ) -> impl Stream<Item = Result<AttachEvent, LauncherError>> + Send + 'static {
        struct State {
            launcher: Launcher,
            run: RemoteRun,
            offsets: Offsets,
            pending: VecDeque<AttachEvent>,
            done: bool,
            /// Consecutive polls that found nothing.
            empty: u32,
            alive: Option<Liveness>,
        }
        let state = State {
            launcher: self.clone(),
            run: run.clone(),
            offsets: from,
            pending: VecDeque::new(),
            done: false,
            empty: 0,
            alive,
        };
        futures::stream::unfold(state, move |mut s| async move {
            loop {
                if let Some(ev) = s.pending.pop_front() {
                    return Some((Ok(ev), s));
                }
                if s.done {
                    return None;
                }
                let mut failures = 0;
                let polled = loop {
                    match s.launcher.poll(&s.run, s.offsets).await {
                        Ok(p) => {
                            if let Some(alive) = &s.alive {
                                alive.mark();
                            }
                            break p;
                        }
                        Err(e) => {
                            failures += 1;
                            if failures > retries {
                                s.done = true;
                                return Some((Err(e), s));
                            }
                            tracing::warn!(run = %s.run.run_id, "poll failed, retrying: {e}");
                            let backoff = Duration::from_millis(100 * (1 << failures.min(5)));
                            tokio::time::sleep(backoff).await;
                        }
                    }
                };
                let got_data = !polled.stdout.is_empty() || !polled.stderr.is_empty();
                for (stream, data) in [
                    (StreamKind::Stdout, polled.stdout),
                    (StreamKind::Stderr, polled.stderr),
                ] {
                    if data.is_empty() {
                        continue;
                    }
                    let off = match stream {
                        StreamKind::Stdout => &mut s.offsets.stdout,
                        StreamKind::Stderr => &mut s.offsets.stderr,
                    };
                    let chunk = Chunk {
                        stream,
                        offset: *off,
                        data,
                    };
                    *off = chunk.end();
                    s.pending.push_back(AttachEvent::Output(chunk));
                }
                match polled.status {
                    // The status was read before the sizes, so this poll saw every byte
                    // written before the command ended, unless it was capped.
                    Some(outcome) if !polled.capped => {
                        s.pending.push_back(AttachEvent::Exited(outcome));
                        s.done = true;
                    }
                    _ if got_data => s.empty = 0,
                    _ => {
                        s.empty = s.empty.saturating_add(1);
                        let pause = if s.empty > POLL_QUIET_AFTER {
                            POLL_IDLE_QUIET
                        } else {
                            POLL_IDLE
                        };
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        })
    }

    /// Attach from `from` and collect everything until the run ends.
    pub async fn wait(
        &self,
        run: &RemoteRun,
        from: Offsets,
    ) -> Result<(Vec<u8>, Vec<u8>, RunOutcome), LauncherError> {
        use futures::StreamExt as _;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let stream = self.attach(run, from);
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev? {
                AttachEvent::Output(c) => match c.stream {
                    StreamKind::Stdout => out.extend_from_slice(&c.data),
                    StreamKind::Stderr => err.extend_from_slice(&c.data),
                },
                AttachEvent::Exited(o) => return Ok((out, err, o)),
            }
        }
        Err(self.remote_err(
            "wait for",
            &run.run_id,
            "the output stream ended without a status".to_owned(),
        ))
    }

    /// The outcome if the run has ended.
    pub async fn status(&self, run: &RemoteRun) -> Result<Option<RunOutcome>, LauncherError> {
        Ok(self
            .poll(
                run,
                Offsets {
                    stdout: u64::MAX / 2,
                    stderr: u64::MAX / 2,
                },
            )
            .await?
            .status)
    }

    /// Cancel: TERM to the whole process group, `grace`, KILL, then verify via `/proc` (or
    /// `ps`) that no process of the group or its session survives.
    pub async fn cancel(
        &self,
        run: &RemoteRun,
        grace: Duration,
    ) -> Result<RunOutcome, LauncherError> {
        self.stop(run, grace, StopReason::Cancel).await
    }

    /// Like [`cancel`](Self::cancel), recording `reason` in the outcome.
    pub async fn stop(
        &self,
        run: &RemoteRun,
        grace: Duration,
        reason: StopReason,
    ) -> Result<RunOutcome, LauncherError> {
        if run.pgid <= 1 {
            return Err(LauncherError::InvalidPgid {
                run_id: run.run_id.clone(),
                pgid: run.pgid,
            });
        }
        let grace = grace.min(MAX_STOP_GRACE);
        let ticks = grace.as_millis().div_ceil(100).max(1);
        let script = format!(
            r#"d={dir}
g={pgid}
{alive}
{gone_fn}
# Is process group $g still the one this run started? Where its leader's start time was
# recorded, a live process $g with another start time is someone else's group (the number was
# reused): never signal it. Without the record, a run whose status exists is left alone.
want=; [ -s "$d/pgid.start" ] && want=$(cat "$d/pgid.start")
ours=1
if [ -n "$want" ]; then
  if [ -r "/proc/$g/stat" ] && read -r l < "/proc/$g/stat"; then
    set -- ${{l##*) }}
    [ "${{20}}" = "$want" ] || ours=0
  fi
elif [ -f "$d/status" ]; then
  ours=0
fi
if [ "$ours" = 0 ]; then printf 'BERTH \n'; exit 0; fi
[ -f "$d/status" ] || printf '%s\n' {reason} > "$d/stop"
kill -TERM -"$g" 2>/dev/null || true
i=0
while [ -n "$(alive)" ] && [ "$i" -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done
s=$(alive)
if [ -n "$s" ]; then
  kill -KILL -"$g" 2>/dev/null || true
  for p in $s; do kill -KILL "$p" 2>/dev/null || true; done
  i=0
  while [ -n "$(alive)" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
fi
i=0
while [ ! -f "$d/status" ] && [ "$i" -lt 50 ] && ! launcher_gone; do sleep 0.1; i=$((i+1)); done
printf 'BERTH %s\n' "$(alive)"
"#,
            dir = quote(&run.dir),
            pgid = run.pgid,
            alive = ALIVE_FN,
            gone_fn = LAUNCHER_GONE_FN,
            reason = reason.as_str(),
        );
        let deadline = grace.saturating_add(Duration::from_secs(30));
        let c = if deadline < RUN_TIMEOUT {
            self.transport.run(&script, Bytes::new()).await?
        } else {
            self.transport
                .exec(ExecRequest::new(script).timeout(deadline))
                .await?
                .collect(RUN_OUTPUT_CAP)
                .await?
        };
        if !c.outcome.success() {
            return Err(self.remote_err(
                "stop",
                &run.run_id,
                format!("{}: {}", c.outcome, c.stderr_text().trim()),
            ));
        }
        let text = c.stdout_text();
        let survivors: Vec<u32> = text
            .lines()
            .find_map(|l| l.strip_prefix("BERTH"))
            .ok_or_else(|| self.remote_err("stop", &run.run_id, "no answer".to_owned()))?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if !survivors.is_empty() {
            return Err(LauncherError::Survivors {
                run_id: run.run_id.clone(),
                env: self.env(),
                pids: survivors,
            });
        }
        match self.status(run).await? {
            Some(o) => Ok(o),
            // The launcher shell itself was gone (killed from outside): the group is verified
            // dead, so the run ended by our signal.
            None => Ok(RunOutcome {
                exit_code: None,
                signal: Some("KILL".to_owned()),
                timed_out: reason == StopReason::Timeout,
                cancelled: reason == StopReason::Cancel,
                launcher_lost: false,
            }),
        }
    }

    /// Remove the run directory.
    pub async fn cleanup(&self, run: &RemoteRun) -> Result<(), LauncherError> {
        let c = self
            .transport
            .run(&format!("rm -rf -- {}", quote(&run.dir)), Bytes::new())
            .await?;
        if !c.outcome.success() {
            return Err(self.remote_err(
                "clean up",
                &run.run_id,
                format!("{}: {}", c.outcome, c.stderr_text().trim()),
            ));
        }
        Ok(())
    }
}
