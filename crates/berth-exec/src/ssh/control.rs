//! The per-connection control shell: one long-lived `/bin/sh` on one channel, fed framed
//! commands. sshd starts every exec channel through the user's login shell (≈140 ms on hosts
//! with a heavy `~/.bashrc`); a command on this shell answers in about a millisecond (SPEC §7).
//!
//! Framing: each command runs as `( eval '<script>' ) </dev/null` followed by a random end
//! marker and the exit status on stdout and the same marker on stderr. Markers are fresh random
//! strings per command, so no output can forge them.
//!
//! A step must not leave background processes writing to its stdout: their late output would
//! land in the next step's answer. Long-lived work goes through the launcher instead.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::ChannelMsg;
use russh::client::Msg;
use russh::{ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ExecError;
use crate::shell::quote;
use crate::transport::{Completed, ExitOutcome};

pub(crate) struct ControlShell {
    write: ChannelWriteHalf<Msg>,
    read: ChannelReadHalf,
    _permit: OwnedSemaphorePermit,
}

/// Why a control-shell command did not complete.
pub(crate) enum ControlFailure {
    /// Nothing was sent: the caller may use another path.
    NotSent(ExecError),
    /// The command may have run; the shell is unusable.
    Broken(ExecError),
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(needle.len());
    hay.get(start..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + start)
}

impl ControlShell {
    /// Start `/bin/sh` on `channel` and wait until it answers.
    pub(crate) async fn start(
        channel: russh::Channel<Msg>,
        permit: OwnedSemaphorePermit,
        env: &str,
        timeout: Duration,
    ) -> Result<Self, ExecError> {
        channel
            .exec(true, "exec /bin/sh")
            .await
            .map_err(|e| ExecError::ControlShell {
                env: env.to_owned(),
                detail: format!("failed to start /bin/sh: {e}"),
            })?;
        let (read, write) = channel.split();
        let mut shell = Self {
            write,
            read,
            _permit: permit,
        };
        // Anything a login script printed before our first command is discarded here.
        match shell.run(env, ":", timeout, usize::MAX).await {
            Ok(_) => Ok(shell),
            Err(ControlFailure::NotSent(e) | ControlFailure::Broken(e)) => Err(e),
        }
    }

    pub(crate) async fn close(self) {
        let _ = self.write.close().await;
    }

    /// Run one command; output beyond `cap` bytes per stream is dropped (and flagged).
    pub(crate) async fn run(
        &mut self,
        env: &str,
        script: &str,
        timeout: Duration,
        cap: usize,
    ) -> Result<Completed, ControlFailure> {
        let marker = format!("__berth_end_{}", uuid::Uuid::new_v4().simple());
        let framed = format!(
            "( eval {} ) </dev/null; printf '%s %s\\n' {m} \"$?\"; printf '%s\\n' {m} >&2\n",
            quote(script),
            m = marker
        );
        let broken = |detail: String| {
            ControlFailure::Broken(ExecError::ControlShell {
                env: env.to_owned(),
                detail,
            })
        };
        if let Err(e) = self.write.data(framed.as_bytes()).await {
            return Err(ControlFailure::NotSent(ExecError::ControlShell {
                env: env.to_owned(),
                detail: format!("failed to send a command: {e}"),
            }));
        }
        let fut = async {
            let mut out = BytesMut::new();
            let mut err = BytesMut::new();
            let mut out_done: Option<(usize, i32)> = None;
            let mut err_done: Option<usize> = None;
            let out_marker = format!("{marker} ");
            let err_marker = format!("{marker}\n");
            while out_done.is_none() || err_done.is_none() {
                match self.read.wait().await {
                    Some(ChannelMsg::Data { data }) if out_done.is_none() => {
                        let from = out.len();
                        out.extend_from_slice(&data);
                        if let Some(pos) = find(&out, out_marker.as_bytes(), from) {
                            let rest = &out[pos + out_marker.len()..];
                            if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                                let code = std::str::from_utf8(&rest[..nl])
                                    .ok()
                                    .and_then(|s| s.trim().parse::<i32>().ok())
                                    .ok_or_else(|| broken("unreadable exit status".to_owned()))?;
                                out_done = Some((pos, code));
                            }
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) if err_done.is_none() => {
                        let from = err.len();
                        err.extend_from_slice(&data);
                        if let Some(pos) = find(&err, err_marker.as_bytes(), from) {
                            err_done = Some(pos);
                        }
                    }
                    Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. }) => {
                        return Err(broken("unexpected output after the end marker".to_owned()));
                    }
                    Some(
                        ChannelMsg::Eof
                        | ChannelMsg::Close
                        | ChannelMsg::ExitStatus { .. }
                        | ChannelMsg::ExitSignal { .. },
                    )
                    | None => {
                        return Err(ControlFailure::Broken(ExecError::Disconnected {
                            env: env.to_owned(),
                        }));
                    }
                    Some(_) => {}
                }
            }
            let (out_len, code) = out_done.unwrap_or((0, -1));
            let err_len = err_done.unwrap_or(0);
            let cut = |b: &BytesMut, len: usize| -> (Bytes, bool) {
                (Bytes::copy_from_slice(&b[..len.min(cap)]), len > cap)
            };
            let (stdout, stdout_truncated) = cut(&out, out_len);
            let (stderr, stderr_truncated) = cut(&err, err_len);
            Ok(Completed {
                stdout,
                stderr,
                outcome: ExitOutcome::exited(code),
                stdout_truncated,
                stderr_truncated,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(broken(format!("no answer within {} s", timeout.as_secs()))),
        }
    }
}
