//! The execution seam: every driver reduces to "run this `sh` script with this stdin, stream its
//! stdout and stderr as they arrive, give me its exit status".

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};

use crate::error::ExecError;

/// Largest chunk a transport forwards at once.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// How many chunks may wait between a transport and its reader before the command is paused.
pub const OUTPUT_QUEUE: usize = 16;
/// Output kept per stream by [`Transport::run`].
pub const RUN_OUTPUT_CAP: usize = 32 * 1024 * 1024;
/// Deadline of a [`Transport::run`] step: every remote step is bounded.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the command's stdin comes from.
#[derive(Default)]
pub enum Stdin {
    /// Closed at once (`/dev/null`-like).
    #[default]
    Null,
    Bytes(Bytes),
    /// Streamed with backpressure; closed at EOF.
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Stdin may carry secrets (the launcher's env file): print only its size.
        match self {
            Self::Null => f.write_str("Null"),
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Self::Reader(_) => f.write_str("Reader"),
        }
    }
}

/// One command to run: a POSIX `sh` script, its stdin and an optional deadline.
#[derive(Debug, Default)]
pub struct ExecRequest {
    pub script: String,
    pub stdin: Stdin,
    /// On expiry the command is terminated and the outcome says `timed_out`.
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    pub fn new(script: impl Into<String>) -> Self {
        Self {
            script: script.into(),
            ..Self::default()
        }
    }

    pub fn stdin_bytes(mut self, bytes: impl Into<Bytes>) -> Self {
        self.stdin = Stdin::Bytes(bytes.into());
        self
    }

    pub fn stdin_reader(mut self, reader: impl AsyncRead + Send + Unpin + 'static) -> Self {
        self.stdin = Stdin::Reader(Box::new(reader));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A chunk of output, in the order it arrived on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// How a command ended, as data.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ExitOutcome {
    /// Exit code when it exited normally.
    pub code: Option<i32>,
    /// Signal name without `SIG` (e.g. `TERM`) when a signal ended it.
    pub signal: Option<String>,
    /// The request's deadline expired and Berth terminated it.
    pub timed_out: bool,
}

impl ExitOutcome {
    pub fn exited(code: i32) -> Self {
        Self {
            code: Some(code),
            ..Self::default()
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none() && !self.timed_out
    }
}

impl fmt::Display for ExitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.timed_out {
            f.write_str("timed out")
        } else if let Some(sig) = &self.signal {
            write!(f, "killed by signal {sig}")
        } else if let Some(code) = self.code {
            write!(f, "exit code {code}")
        } else {
            f.write_str("no exit status")
        }
    }
}

/// A running command: its output as it arrives, then its outcome.
///
/// Output is bounded: a reader that does not keep up pauses the command (backpressure). Dropping
/// the handle terminates the command where the transport can (local: the whole process group).
pub struct ExecHandle {
    output: mpsc::Receiver<Output>,
    exit: oneshot::Receiver<Result<ExitOutcome, ExecError>>,
    env: String,
}

impl fmt::Debug for ExecHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecHandle")
            .field("env", &self.env)
            .finish()
    }
}

/// The sending side a transport implementation fills.
pub struct ExecSink {
    pub output: mpsc::Sender<Output>,
    pub exit: oneshot::Sender<Result<ExitOutcome, ExecError>>,
}

impl ExecHandle {
    /// A connected handle/sink pair for a transport implementation.
    pub fn channel(env: impl Into<String>) -> (ExecHandle, ExecSink) {
        let (otx, orx) = mpsc::channel(OUTPUT_QUEUE);
        let (etx, erx) = oneshot::channel();
        (
            ExecHandle {
                output: orx,
                exit: erx,
                env: env.into(),
            },
            ExecSink {
                output: otx,
                exit: etx,
            },
        )
    }

    /// The next chunk of output; `None` once both streams have ended.
    pub async fn next_output(&mut self) -> Option<Output> {
        self.output.recv().await
    }

    /// Wait for the outcome, discarding any output not read yet.
    pub async fn wait(mut self) -> Result<ExitOutcome, ExecError> {
        while self.output.recv().await.is_some() {}
        self.outcome().await
    }

    /// Read all output (keeping at most `cap` bytes per stream) and the outcome.
    pub async fn collect(mut self, cap: usize) -> Result<Completed, ExecError> {
        let mut stdout = BytesMut::new();
        let mut stderr = BytesMut::new();
        let (mut out_trunc, mut err_trunc) = (false, false);
        while let Some(chunk) = self.output.recv().await {
            let (buf, trunc, data) = match &chunk {
                Output::Stdout(d) => (&mut stdout, &mut out_trunc, d),
                Output::Stderr(d) => (&mut stderr, &mut err_trunc, d),
            };
            let room = cap.saturating_sub(buf.len());
            if data.len() > room {
                *trunc = true;
            }
            buf.extend_from_slice(&data[..data.len().min(room)]);
        }
        let outcome = self.outcome().await?;
        Ok(Completed {
            stdout: stdout.freeze(),
            stderr: stderr.freeze(),
            outcome,
            stdout_truncated: out_trunc,
            stderr_truncated: err_trunc,
        })
    }

    async fn outcome(self) -> Result<ExitOutcome, ExecError> {
        match self.exit.await {
            Ok(r) => r,
            // The transport's task ended without an answer: treat as a lost connection, never
            // as success.
            Err(_) => Err(ExecError::Disconnected { env: self.env }),
        }
    }
}

/// A finished command with its captured output.
#[derive(Debug, Clone)]
pub struct Completed {
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub outcome: ExitOutcome,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl Completed {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `Ok(self)` when the command succeeded, else a [`ExecError::CommandFailed`] naming `what`.
    pub fn check(self, env: &str, what: &str) -> Result<Self, ExecError> {
        if self.outcome.success() {
            Ok(self)
        } else {
            let stderr = self.stderr_text();
            let tail: String = {
                let chars: Vec<char> = stderr.chars().collect();
                chars[chars.len().saturating_sub(2000)..].iter().collect()
            };
            Err(ExecError::CommandFailed {
                env: env.to_owned(),
                what: what.to_owned(),
                outcome: self.outcome,
                stderr: tail,
            })
        }
    }
}

/// Who and where a transport executes, for session-resume identity and logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteIdentity {
    /// `local`, `ssh` or `sandbox`.
    pub transport: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
}

/// The one execution seam every driver reduces to. Object safe: use `Arc<dyn Transport>`.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Human name used in every error, e.g. `local environment` or
    /// `SSH environment user@host:22`.
    fn describe(&self) -> String;

    fn identity(&self) -> RemoteIdentity;

    /// Start `req.script` under POSIX `sh`. Stdin is written while output is read, so neither
    /// side can deadlock the other.
    async fn exec(&self, req: ExecRequest) -> Result<ExecHandle, ExecError>;

    /// Run a short step to completion (bounded by [`RUN_TIMEOUT`], output capped at
    /// [`RUN_OUTPUT_CAP`] per stream). Transports may route it through a cheaper path (the SSH
    /// control shell). A non-zero exit is returned as data in [`Completed::outcome`].
    /// Run a short step whose script text must not appear in any process argv, local or
    /// remote (it may embed secrets): only through a channel that carries the script as data,
    /// such as the SSH control shell. `Ok(None)` when this transport has no such channel; the
    /// caller then uses its stdin-based path.
    async fn run_confidential(&self, _script: &str) -> Result<Option<Completed>, ExecError> {
        Ok(None)
    }

    /// The agent command as this transport runs it: unchanged by default; the sandbox
    /// transport wraps it so that it starts inside `bwrap`. The result is `sh` text that the
    /// launcher runs in the agent's working directory.
    fn confine(&self, command: &str) -> Result<String, ExecError> {
        Ok(command.to_owned())
    }

    /// Make a TCP service listening at `local` (on the control plane) reachable from commands
    /// this transport runs; returns the address they should connect to. `Ok(None)`: this
    /// transport cannot (the default).
    async fn expose_local_port(
        &self,
        _local: std::net::SocketAddr,
    ) -> Result<Option<std::net::SocketAddr>, ExecError> {
        Ok(None)
    }

    /// Like [`Transport::expose_local_port`], at the address commands were given before
    /// (`remote_port` of an earlier answer), so a command started by a previous control-plane
    /// process reaches `local` through the URL it already holds. Default: a fresh exposure.
    async fn expose_local_port_at(
        &self,
        local: std::net::SocketAddr,
        _remote_port: u16,
    ) -> Result<Option<std::net::SocketAddr>, ExecError> {
        self.expose_local_port(local).await
    }

    /// Start what lets run `key`'s agent leave its environment under an egress policy (the
    /// sandbox's allowlist proxy), before its launch or after a re-attach; the receiver yields
    /// every refused attempt. `Ok(None)`: no egress policy on this transport (the default).
    async fn egress(
        &self,
        _key: &str,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<crate::egress::EgressRefusal>>, ExecError> {
        Ok(None)
    }

    async fn run(&self, script: &str, stdin: Bytes) -> Result<Completed, ExecError> {
        let req = ExecRequest::new(script)
            .stdin_bytes(stdin)
            .timeout(RUN_TIMEOUT);
        self.exec(req).await?.collect(RUN_OUTPUT_CAP).await
    }
}
