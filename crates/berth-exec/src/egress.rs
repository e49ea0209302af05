//! The egress proxy of a sandbox with `network: "allowlist"` (SPEC §4): one per run, on a Unix
//! socket that a `socat` inside the sandbox exposes as `http://127.0.0.1:<port>` (the agent
//! CLIs' usual `HTTPS_PROXY`/`HTTP_PROXY` variables point there). It admits only the
//! configured `host:port` entries — `CONNECT host:port` tunnels (HTTPS, git over HTTPS) and
//! absolute-URI plain HTTP requests — and reports every refusal, which the engine records as a
//! run event. Names are resolved on the host, never inside the sandbox (it has no DNS).
//!
//! Hand-written rather than a proxy library: it only reads one request head, checks one name,
//! and splices two sockets; the well-kept proxy crates are MITM frameworks (TLS interception,
//! certificate authorities) that this must not be.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Longest request head read before a decision.
const MAX_HEAD: usize = 16 * 1024;
/// Deadline for the request head and for connecting upstream.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Refusals queued for the engine; more are dropped (and counted in the next one).
const REFUSAL_QUEUE: usize = 256;

/// `host:port` entries a sandbox may reach; `*.example.com:443` admits every subdomain of
/// `example.com` (not the name itself).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    entries: Vec<(String, u16)>,
}

impl AllowList {
    /// Entries as validated by the config (`host:port`); malformed ones admit nothing.
    pub fn new(entries: &[String]) -> Self {
        Self {
            entries: entries
                .iter()
                .filter_map(|e| {
                    let (host, port) = e.rsplit_once(':')?;
                    Some((host.to_ascii_lowercase(), port.parse().ok()?))
                })
                .collect(),
        }
    }

    pub fn admits(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|(pattern, p)| {
            *p == port
                && match pattern.strip_prefix("*.") {
                    Some(suffix) => host
                        .strip_suffix(suffix)
                        .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
                    None => *pattern == host,
                }
        })
    }
}

/// One refused connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EgressRefusal {
    /// What the agent asked for (`host:port`), or the malformed request line's start.
    pub target: String,
    pub reason: String,
}

/// A running proxy; dropping it stops it and removes its socket.
pub(crate) struct EgressProxy {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl EgressProxy {
    /// Serve the proxy on `path` (replacing a socket a previous process left there).
    pub(crate) fn serve(
        path: &Path,
        allow: AllowList,
    ) -> std::io::Result<(Arc<EgressProxy>, mpsc::Receiver<EgressRefusal>)> {
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let (tx, rx) = mpsc::channel(REFUSAL_QUEUE);
        let allow = Arc::new(allow);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (allow, tx) = (allow.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Err(refusal) = handle(inbound, &allow).await {
                        let _ = tx.try_send(refusal);
                    }
                });
            }
        });
        Ok((
            Arc::new(EgressProxy {
                path: path.to_path_buf(),
                task,
            }),
            rx,
        ))
    }
}

/// `host:port` (IPv6 in brackets) → (host, port).
fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port?,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port?)),
    }
}

async fn read_head(inbound: &mut UnixStream) -> Option<(Vec<u8>, usize)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some((buf, end + 4));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = inbound.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn refuse(
    inbound: &mut UnixStream,
    status: &str,
    target: &str,
    reason: &str,
) -> EgressRefusal {
    let body = format!("berth: egress to {target} refused: {reason}\n");
    let _ = inbound
        .write_all(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    let _ = inbound.shutdown().await;
    EgressRefusal {
        target: target.to_string(),
        reason: reason.to_string(),
    }
}

/// Serve one client connection; `Err` is a refusal to report.
async fn handle(mut inbound: UnixStream, allow: &AllowList) -> Result<(), EgressRefusal> {
    let Ok(Some((head, end))) = tokio::time::timeout(STEP_TIMEOUT, read_head(&mut inbound)).await
    else {
        return Err(refuse(
            &mut inbound,
            "400 Bad Request",
            "?",
            "no complete request head",
        )
        .await);
    };
    let line_end = head[..end]
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(end);
    let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
    let mut parts = line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let shown: String = line.chars().take(80).collect();
    let (host, port, upstream_head) = if method.eq_ignore_ascii_case("CONNECT") {
        let Some((host, port)) = split_authority(target, None) else {
            return Err(refuse(
                &mut inbound,
                "400 Bad Request",
                &shown,
                "malformed CONNECT target",
            )
            .await);
        };
        (host, port, None)
    } else if let Some(rest) = target.strip_prefix("http://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let Some((host, port)) = split_authority(authority, Some(80)) else {
            return Err(refuse(&mut inbound, "400 Bad Request", &shown, "malformed URL").await);
        };
        // The request as the origin expects it: origin-form target, the rest unchanged.
        let mut forwarded = line.replacen(target, path, 1).into_bytes();
        forwarded.extend_from_slice(&head[line_end..end]);
        (host, port, Some(forwarded))
    } else {
        return Err(refuse(
            &mut inbound,
            "400 Bad Request",
            &shown,
            "only CONNECT and absolute http:// requests pass the egress proxy",
        )
        .await);
    };
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if !allow.admits(&host, port) {
        return Err(refuse(&mut inbound, "403 Forbidden", &target, "not in allowHosts").await);
    }
    let upstream = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            refuse(&mut inbound, "502 Bad Gateway", &target, &e.to_string()).await;
            return Ok(());
        }
        Err(_) => {
            refuse(
                &mut inbound,
                "504 Gateway Timeout",
                &target,
                "connect timed out",
            )
            .await;
            return Ok(());
        }
    };
    match upstream_head {
        None => {
            if inbound
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_err()
            {
                return Ok(());
            }
            // Bytes the client sent after the head (a TLS hello, eagerly) go on.
            if upstream.write_all(&head[end..]).await.is_err() {
                return Ok(());
            }
        }
        Some(forwarded) => {
            let mut all = forwarded;
            all.extend_from_slice(&head[end..]);
            if upstream.write_all(&all).await.is_err() {
                return Ok(());
            }
        }
    }
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_wildcards_with_their_ports() {
        let allow = AllowList::new(&[
            "api.anthropic.com:443".to_string(),
            "*.github.com:443".to_string(),
        ]);
        assert!(allow.admits("api.anthropic.com", 443));
        assert!(allow.admits("API.Anthropic.com.", 443));
        assert!(!allow.admits("api.anthropic.com", 80));
        assert!(!allow.admits("evil-api.anthropic.com", 443));
        assert!(allow.admits("codeload.github.com", 443));
        assert!(!allow.admits("github.com", 443));
        assert!(!allow.admits("notgithub.com", 443));
        assert!(!allow.admits("x.github.com.evil.example", 443));
    }

    #[test]
    fn authorities_split_with_and_without_ports() {
        assert_eq!(
            split_authority("example.com:8443", None),
            Some(("example.com".into(), 8443))
        );
        assert_eq!(split_authority("example.com", None), None);
        assert_eq!(
            split_authority("example.com", Some(80)),
            Some(("example.com".into(), 80))
        );
        assert_eq!(
            split_authority("[::1]:443", None),
            Some(("::1".into(), 443))
        );
    }
}
