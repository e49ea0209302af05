//! `SshTransport`: exec channels on a pooled connection; short steps on the control shell.
//!
//! Backpressure caveat: russh widens a channel's window as soon as data arrives and then waits
//! for room in that channel's queue on the connection's single session task. A reader that
//! stops consuming one exec stream therefore pauses every channel of the same connection (the
//! remote side is paused by TCP), not only its own. Consumers must keep reading; agent output
//! is not affected because the launcher writes it to files that are polled.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::client::Msg;
use russh::{Channel, ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;

use crate::error::ExecError;
use crate::ssh::client::ConnectionInfo;
use crate::ssh::config::SshTarget;
use crate::ssh::pool::{ChannelGuard, ControlResult, SshConnection, SshPool};
use crate::transport::{
    Completed, ExecHandle, ExecRequest, ExecSink, ExitOutcome, Output, RUN_OUTPUT_CAP, RUN_TIMEOUT,
    RemoteIdentity, Stdin, Transport,
};

/// After TERM on timeout, how long before the channel is closed.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);
/// Scripts up to this size may go through the control shell.
const CONTROL_SCRIPT_MAX: usize = 256 * 1024;

/// A [`Transport`] over SSH.
#[derive(Debug, Clone)]
pub struct SshTransport {
    pool: SshPool,
    target: SshTarget,
}

fn sig_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

impl SshTransport {
    pub fn new(pool: SshPool, target: SshTarget) -> Self {
        Self { pool, target }
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The pooled connection (connecting if needed), e.g. for a probe.
    pub async fn connection(&self) -> Result<Arc<SshConnection>, ExecError> {
        self.pool.get(&self.target).await
    }

    /// Connect (or reuse) and report host key, latencies and warnings.
    pub async fn connection_info(&self) -> Result<ConnectionInfo, ExecError> {
        Ok(self.connection().await?.info().clone())
    }

    /// Open a channel; when the pooled connection turns out to be dead, reconnect and retry
    /// once, transparently.
    async fn open(&self) -> Result<(Channel<Msg>, ChannelGuard), ExecError> {
        let conn = self.pool.get(&self.target).await?;
        match conn.open_session().await {
            Ok(x) => Ok(x),
            Err(e) if conn.is_closed() || matches!(e, ExecError::Disconnected { .. }) => {
                self.pool.invalidate(&self.target, &conn).await;
                let conn = self.pool.get(&self.target).await?;
                conn.open_session().await
            }
            Err(e) => Err(e),
        }
    }
}

/// How much of a stdin stream is read at once before it is cut into SSH packets.
const STDIN_CHUNK: usize = 256 * 1024;

async fn drive(
    channel: Channel<Msg>,
    guard: ChannelGuard,
    stdin: Stdin,
    timeout: Option<Duration>,
    env: String,
    sink: ExecSink,
) {
    let ExecSink { output, mut exit } = sink;
    let (mut read, write) = channel.split();
    let mut writer = write.make_writer();
    let stdin_task = tokio::spawn(async move {
        // A command may exit without reading its stdin: write errors are not its failure.
        match stdin {
            Stdin::Null => {}
            Stdin::Bytes(b) => {
                let _ = writer.write_all(&b).await;
            }
            Stdin::Reader(r) => {
                // Large reads: `copy`'s 8 KiB chunks would each become an SSH packet of a
                // quarter of the maximum size (4x the packets, wake-ups and MACs).
                let mut r = tokio::io::BufReader::with_capacity(STDIN_CHUNK, r);
                let _ = tokio::io::copy_buf(&mut r, &mut writer).await;
            }
        }
        let _ = writer.shutdown().await;
    });
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut code = None;
    let mut signal = None;
    let mut abandoned = false;
    loop {
        tokio::select! {
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if output.send(Output::Stdout(data)).await.is_err() {
                        abandoned = true;
                        break;
                    }
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    if output.send(Output::Stderr(data)).await.is_err() {
                        abandoned = true;
                        break;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    code = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    signal = Some(sig_name(&signal_name));
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            () = &mut deadline => {
                if timed_out {
                    // The remote ignored TERM: closing the channel hangs up its pipes.
                    let _ = write.close().await;
                    break;
                }
                timed_out = true;
                let _ = write.signal(Sig::TERM).await;
                deadline.as_mut().reset(tokio::time::Instant::now() + TIMEOUT_GRACE);
            }
            () = exit.closed() => {
                abandoned = true;
                break;
            }
        }
    }
    if abandoned {
        let _ = write.signal(Sig::TERM).await;
        let _ = write.close().await;
    }
    stdin_task.abort();
    drop(guard);
    drop(output);
    let result = if code.is_some() || signal.is_some() || timed_out {
        Ok(ExitOutcome {
            code,
            signal,
            timed_out,
        })
    } else {
        Err(ExecError::Disconnected { env })
    };
    let _ = exit.send(result);
}

#[async_trait::async_trait]
impl Transport for SshTransport {
    fn describe(&self) -> String {
        self.target.describe()
    }

    fn identity(&self) -> RemoteIdentity {
        RemoteIdentity {
            transport: "ssh".to_owned(),
            host: Some(self.target.host.clone()),
            port: Some(self.target.port),
            username: Some(self.target.username.clone()),
        }
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecHandle, ExecError> {
        let env = self.describe();
        ExecError::check_script(&env, &req.script)?;
        let (channel, guard) = self.open().await?;
        channel
            .exec(true, req.script.as_bytes())
            .await
            .map_err(|e| ExecError::Channel {
                env: env.clone(),
                detail: format!("failed to request exec: {e}"),
            })?;
        let (handle, sink) = ExecHandle::channel(env.clone());
        tokio::spawn(drive(channel, guard, req.stdin, req.timeout, env, sink));
        Ok(handle)
    }

    /// A remote forward (`ssh -R`) on the pooled connection, to the remote's loopback.
    async fn expose_local_port(
        &self,
        local: std::net::SocketAddr,
    ) -> Result<Option<std::net::SocketAddr>, ExecError> {
        let conn = self.pool.get(&self.target).await?;
        let port = conn.forward_to_local(local).await?;
        Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))))
    }

    async fn expose_local_port_at(
        &self,
        local: std::net::SocketAddr,
        remote_port: u16,
    ) -> Result<Option<std::net::SocketAddr>, ExecError> {
        let conn = self.pool.get(&self.target).await?;
        let port = conn.forward_to_local_at(local, remote_port).await?;
        Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))))
    }

    async fn run_confidential(&self, script: &str) -> Result<Option<Completed>, ExecError> {
        ExecError::check_script(&self.describe(), script)?;
        if script.len() > CONTROL_SCRIPT_MAX {
            return Ok(None);
        }
        let conn = self.pool.get(&self.target).await?;
        match conn.run_control(script, RUN_TIMEOUT, RUN_OUTPUT_CAP).await {
            ControlResult::Done(r) => r.map(Some),
            ControlResult::Unavailable => Ok(None),
        }
    }

    async fn run(&self, script: &str, stdin: Bytes) -> Result<Completed, ExecError> {
        ExecError::check_script(&self.describe(), script)?;
        if stdin.is_empty() && script.len() <= CONTROL_SCRIPT_MAX {
            let conn = self.pool.get(&self.target).await?;
            match conn.run_control(script, RUN_TIMEOUT, RUN_OUTPUT_CAP).await {
                ControlResult::Done(r) => return r,
                ControlResult::Unavailable => {}
            }
        }
        let req = ExecRequest::new(script)
            .stdin_bytes(stdin)
            .timeout(RUN_TIMEOUT);
        self.exec(req).await?.collect(RUN_OUTPUT_CAP).await
    }
}
