//! `LocalTransport`: `sh -c <script>` on the control-plane host, in its own process group, with a
//! minimal environment.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::error::ExecError;
use crate::transport::{
    CHUNK_SIZE, ExecHandle, ExecRequest, ExitOutcome, Output, RemoteIdentity, Stdin, Transport,
};

/// Time between TERM and KILL when a local command's deadline expires.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);
const DESCRIBE: &str = "local environment";

/// Runs scripts with `/bin/sh` on this host.
#[derive(Debug, Clone)]
pub struct LocalTransport {
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
}

impl Default for LocalTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalTransport {
    /// A transport whose commands see only `PATH`, `HOME` and `LANG` of this process (the
    /// control plane's identity must not leak into agent runs beyond what `sh` needs).
    pub fn new() -> Self {
        let mut env = BTreeMap::new();
        for key in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(key) {
                env.insert(key.to_owned(), v);
            }
        }
        env.entry("PATH".to_owned())
            .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
        Self { env, cwd: None }
    }

    /// A transport whose commands see exactly `env` (nothing of this process).
    pub fn with_env(env: BTreeMap<String, String>) -> Self {
        Self { env, cwd: None }
    }

    /// Run commands in `cwd` instead of the control plane's own directory.
    pub fn in_dir(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }
}

fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().trim_start_matches("SIG").to_owned(),
        Err(_) => sig.to_string(),
    }
}

fn kill_group(pgid: Option<u32>, sig: Signal) {
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH (group already gone) is the expected race here, not an error.
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}

async fn pump(
    mut reader: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Output>,
    wrap: fn(Bytes) -> Output,
) {
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send(wrap(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Transport for LocalTransport {
    fn describe(&self) -> String {
        DESCRIBE.to_owned()
    }

    fn identity(&self) -> RemoteIdentity {
        RemoteIdentity {
            transport: "local".to_owned(),
            host: None,
            port: None,
            username: None,
        }
    }

    /// Same machine: the address itself.
    async fn expose_local_port(
        &self,
        local: std::net::SocketAddr,
    ) -> Result<Option<std::net::SocketAddr>, ExecError> {
        Ok(Some(local))
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecHandle, ExecError> {
        ExecError::check_script(DESCRIBE, &req.script)?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&req.script)
            .env_clear()
            .envs(&self.env)
            .process_group(0)
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(match req.stdin {
                Stdin::Null => Stdio::null(),
                _ => Stdio::piped(),
            });
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            env: DESCRIBE.to_owned(),
            source,
        })?;
        let pgid = child.id();
        let (handle, sink) = ExecHandle::channel(DESCRIBE);

        let stdin_task = child.stdin.take().map(|mut pipe| {
            tokio::spawn(async move {
                // A command may exit without reading all of its stdin; the broken pipe that
                // follows is its business, not a transport failure.
                match req.stdin {
                    Stdin::Bytes(b) => {
                        let _ = pipe.write_all(&b).await;
                    }
                    Stdin::Reader(mut r) => {
                        let _ = tokio::io::copy(&mut r, &mut pipe).await;
                    }
                    Stdin::Null => {}
                }
                let _ = pipe.shutdown().await;
            })
        });
        let out_task = child
            .stdout
            .take()
            .map(|r| tokio::spawn(pump(r, sink.output.clone(), Output::Stdout)));
        let err_task = child
            .stderr
            .take()
            .map(|r| tokio::spawn(pump(r, sink.output.clone(), Output::Stderr)));
        let timeout = req.timeout;
        let crate::transport::ExecSink { output, mut exit } = sink;
        drop(output);

        tokio::spawn(async move {
            let deadline = async {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            let mut timed_out = false;
            let status = tokio::select! {
                s = child.wait() => s,
                () = deadline => {
                    timed_out = true;
                    kill_group(pgid, Signal::SIGTERM);
                    match tokio::time::timeout(TIMEOUT_GRACE, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            kill_group(pgid, Signal::SIGKILL);
                            child.wait().await
                        }
                    }
                }
                () = exit.closed() => {
                    // The handle was dropped: nobody wants this command any more.
                    kill_group(pgid, Signal::SIGKILL);
                    let _ = child.wait().await;
                    return;
                }
            };
            if timed_out {
                // Grandchildren may still hold the pipes open.
                kill_group(pgid, Signal::SIGKILL);
            }
            for t in [out_task, err_task, stdin_task].into_iter().flatten() {
                let _ = t.await;
            }
            let result = match status {
                Ok(st) => Ok(ExitOutcome {
                    code: st.code(),
                    signal: st.signal().map(signal_name),
                    timed_out,
                }),
                Err(source) => Err(ExecError::Wait {
                    env: DESCRIBE.to_owned(),
                    source,
                }),
            };
            let _ = exit.send(result);
        });
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_captures_output_and_exit_code() {
        let t = LocalTransport::new();
        let c = t
            .run("echo out; echo err >&2; exit 3", Bytes::new())
            .await
            .unwrap();
        assert_eq!(c.stdout_text(), "out\n");
        assert_eq!(c.stderr_text(), "err\n");
        assert_eq!(c.outcome, ExitOutcome::exited(3));
        assert!(c.check("local environment", "the step").is_err());
    }

    #[tokio::test]
    async fn environment_is_minimal() {
        let t = LocalTransport::new();
        let c = t.run("env", Bytes::new()).await.unwrap();
        let keys: Vec<String> = c
            .stdout_text()
            .lines()
            .filter_map(|l| l.split('=').next().map(str::to_owned))
            .collect();
        for k in &keys {
            assert!(
                ["PATH", "HOME", "LANG", "PWD", "SHLVL", "_"].contains(&k.as_str()),
                "unexpected env key {k}"
            );
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_group_and_says_so() {
        let t = LocalTransport::new();
        let start = std::time::Instant::now();
        let h = t
            .exec(ExecRequest::new("sleep 30 & sleep 30").timeout(Duration::from_millis(200)))
            .await
            .unwrap();
        let outcome = h.wait().await.unwrap();
        assert!(outcome.timed_out);
        assert!(!outcome.success());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn dropping_the_handle_kills_the_process_group() {
        let t = LocalTransport::new();
        let mut h = t
            .exec(ExecRequest::new("sleep 1000 & echo $!; wait"))
            .await
            .unwrap();
        let Some(Output::Stdout(line)) = h.next_output().await else {
            panic!("no pid printed");
        };
        let pid: i32 = String::from_utf8_lossy(&line).trim().parse().unwrap();
        drop(h);
        let start = std::time::Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let dead =
                stat.is_empty() || stat.rsplit_once(") ").is_some_and(|x| x.1.starts_with('Z'));
            if dead {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "grandchild {pid} survived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn signal_is_reported_by_name() {
        let t = LocalTransport::new();
        let c = t.run("kill -TERM $$", Bytes::new()).await.unwrap();
        assert_eq!(c.outcome.signal.as_deref(), Some("TERM"));
    }
}
