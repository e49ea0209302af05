//! Connecting: TCP with `TCP_NODELAY`, the handshake with host-key verification (before anything
//! is sent), then public-key authentication with an in-memory key or the SSH agent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

use crate::error::{ExecError, HostKeyRejection, PresentedHostKey};
use crate::known_hosts::{self, HostKeyVerdict, KnownHosts};
use crate::ssh::config::{SshTarget, SshTimeouts};

/// The outcome of the host-key check of one connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostKeyCheck {
    pub presented: PresentedHostKey,
    /// The key matched a pinned/known entry (false when accepted with `strict=false`).
    pub pinned: bool,
    /// Set when the key was accepted without verification.
    pub warning: Option<String>,
}

/// What a probe reports about a connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionInfo {
    pub host_key: HostKeyCheck,
    pub tcp_connect: Duration,
    pub handshake: Duration,
    pub auth: Duration,
    /// `private_key` or `agent`.
    pub auth_method: String,
    /// Warnings to surface (e.g. host key not verified).
    pub warnings: Vec<String>,
}

enum Policy {
    Known(KnownHosts),
    AcceptAny,
}

enum Seen {
    Accepted(HostKeyCheck),
    Rejected(Box<PresentedHostKey>, HostKeyRejection),
}

/// Remote-forwarded ports of one connection: the port the server listens on → the local
/// address its connections are relayed to.
pub(crate) type Forwards = Arc<Mutex<HashMap<u32, SocketAddr>>>;

/// The russh handler: decides on the host key, records what it saw, and relays connections
/// to ports this client asked the server to forward.
pub struct ClientHandler {
    host: String,
    port: u16,
    policy: Policy,
    seen: Arc<Mutex<Option<Seen>>>,
    forwards: Forwards,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    /// A connection to a port we forwarded: relay it to the local address registered for
    /// that port; anything else (a port we never asked for) is refused.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let target = self
            .forwards
            .lock()
            .ok()
            .and_then(|f| f.get(&connected_port).copied());
        let Some(target) = target else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(target).await {
                Ok(mut tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
                }
                Err(e) => {
                    tracing::warn!(%target, error = %e, "cannot relay a forwarded connection");
                }
            }
        });
        Ok(())
    }

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: PublicKey = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => PublicKey::new(c.public_key().clone(), ""),
        };
        let presented = PresentedHostKey {
            key_type: key.algorithm().to_string(),
            fingerprint_sha256: known_hosts::fingerprint_sha256(&key),
            known_hosts_line: known_hosts::known_hosts_line(&self.host, self.port, &key),
        };
        let (accept, seen) = match &self.policy {
            Policy::AcceptAny => {
                let warning = format!(
                    "host key {} {} was not verified (strictHostKeyChecking is off)",
                    presented.key_type, presented.fingerprint_sha256
                );
                tracing::warn!(host = %self.host, port = self.port, "{warning}");
                (
                    true,
                    Seen::Accepted(HostKeyCheck {
                        presented,
                        pinned: false,
                        warning: Some(warning),
                    }),
                )
            }
            Policy::Known(kh) => match kh.verify(&self.host, self.port, &key) {
                HostKeyVerdict::Trusted => (
                    true,
                    Seen::Accepted(HostKeyCheck {
                        presented,
                        pinned: true,
                        warning: None,
                    }),
                ),
                HostKeyVerdict::Revoked => (
                    false,
                    Seen::Rejected(Box::new(presented), HostKeyRejection::Revoked),
                ),
                HostKeyVerdict::Unknown => (
                    false,
                    Seen::Rejected(Box::new(presented), HostKeyRejection::Unknown),
                ),
                HostKeyVerdict::Mismatch { known, .. } => (
                    false,
                    Seen::Rejected(
                        Box::new(presented),
                        HostKeyRejection::Mismatch {
                            known_fingerprints: known,
                        },
                    ),
                ),
            },
        };
        if let Ok(mut slot) = self.seen.lock() {
            *slot = Some(seen);
        }
        Ok(accept)
    }
}

fn load_policy(target: &SshTarget, env: &str) -> Result<Policy, ExecError> {
    if !target.strict_host_key_checking {
        return Ok(Policy::AcceptAny);
    }
    if let Some(text) = &target.known_hosts {
        let kh = KnownHosts::parse(text).map_err(|e| ExecError::KnownHosts {
            env: env.to_owned(),
            detail: e.to_string(),
        })?;
        return Ok(Policy::Known(kh));
    }
    // Strict without pinned keys: the server user's own file; a missing file knows nothing.
    let path = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .map(|h| h.join(".ssh/known_hosts"));
    let text = match path {
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ExecError::KnownHosts {
                    env: env.to_owned(),
                    detail: format!("failed to read {}: {e}", p.display()),
                });
            }
        },
        None => String::new(),
    };
    Ok(Policy::Known(KnownHosts::parse_lenient(&text)))
}

fn russh_config(t: &SshTimeouts) -> client::Config {
    client::Config {
        // Without TCP_NODELAY every channel open waits ≈40 ms on Nagle (SPEC §7).
        nodelay: true,
        keepalive_interval: Some(t.keepalive_interval),
        keepalive_max: 3,
        inactivity_timeout: None,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(cipher_order()),
            ..russh::Preferred::default()
        },
        ..client::Config::default()
    }
}

/// Ciphers, fastest first on this CPU. With AES and carry-less multiply instructions,
/// AES-GCM runs several times faster than the software ChaCha20-Poly1305 russh prefers;
/// workspace streams are bulk data, so that is what they use. Both are AEAD ciphers that
/// OpenSSH offers by default.
fn cipher_order() -> &'static [russh::cipher::Name] {
    use russh::cipher::{AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    #[cfg(target_arch = "x86_64")]
    let hardware_aes = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let hardware_aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let hardware_aes = false;
    if hardware_aes {
        &[AES_256_GCM, CHACHA20_POLY1305, AES_256_CTR]
    } else {
        &[CHACHA20_POLY1305, AES_256_GCM, AES_256_CTR]
    }
}

/// Connect, verify the host key and authenticate. Nothing is sent to a host whose key is
/// refused: the handshake stops before authentication.
pub async fn connect(
    target: &SshTarget,
    timeouts: &SshTimeouts,
) -> Result<(Handle<ClientHandler>, ConnectionInfo), ExecError> {
    connect_with_forwards(target, timeouts, Forwards::default()).await
}

/// [`connect`], relaying forwarded ports through `forwards`.
pub(crate) async fn connect_with_forwards(
    target: &SshTarget,
    timeouts: &SshTimeouts,
    forwards: Forwards,
) -> Result<(Handle<ClientHandler>, ConnectionInfo), ExecError> {
    let env = target.describe();
    // Decode the key first: a bad key or passphrase fails before any network traffic.
    let key = match &target.private_key {
        Some(k) => Some(
            russh::keys::decode_secret_key(
                k.expose(),
                target.passphrase.as_ref().map(|p| p.expose().as_str()),
            )
            .map_err(|e| ExecError::PrivateKey {
                env: env.clone(),
                detail: e.to_string(),
            })?,
        ),
        None => None,
    };
    let policy = load_policy(target, &env)?;

    let t0 = Instant::now();
    let tcp = match tokio::time::timeout(
        timeouts.connect,
        tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ExecError::Connect {
                env,
                detail: e.to_string(),
            });
        }
        Err(_) => {
            return Err(ExecError::ConnectTimeout {
                env,
                secs: timeouts.connect.as_secs(),
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    let tcp_connect = t0.elapsed();

    let seen = Arc::new(Mutex::new(None));
    let handler = ClientHandler {
        host: target.host.clone(),
        port: target.port,
        policy,
        seen: seen.clone(),
        forwards,
    };
    let t1 = Instant::now();
    let remaining = timeouts.connect.saturating_sub(tcp_connect);
    let result = tokio::time::timeout(
        remaining,
        client::connect_stream(Arc::new(russh_config(timeouts)), tcp, handler),
    )
    .await;
    let seen_now = seen.lock().ok().and_then(|mut s| s.take());
    let host_key = match seen_now {
        Some(Seen::Rejected(presented, reason)) => {
            return Err(ExecError::HostKey {
                env,
                presented,
                reason,
            });
        }
        Some(Seen::Accepted(c)) => Some(c),
        None => None,
    };
    let mut handle = match result {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            return Err(ExecError::Connect {
                env,
                detail: format!("SSH handshake failed: {e}"),
            });
        }
        Err(_) => {
            return Err(ExecError::ConnectTimeout {
                env,
                secs: timeouts.connect.as_secs(),
            });
        }
    };
    let handshake = t1.elapsed();
    let Some(host_key) = host_key else {
        return Err(ExecError::Connect {
            env,
            detail: "the server completed the handshake without a host key".to_owned(),
        });
    };

    let t2 = Instant::now();
    let auth_method = if key.is_some() {
        "private_key"
    } else {
        "agent"
    };
    let auth =
        tokio::time::timeout(timeouts.auth, authenticate(&mut handle, target, key, &env)).await;
    match auth {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(ExecError::Auth {
                env,
                user: target.username.clone(),
                detail: format!("no answer within {} s", timeouts.auth.as_secs()),
            });
        }
    }
    let mut warnings = Vec::new();
    if let Some(w) = &host_key.warning {
        warnings.push(w.clone());
    }
    Ok((
        handle,
        ConnectionInfo {
            host_key,
            tcp_connect,
            handshake,
            auth: t2.elapsed(),
            auth_method: auth_method.to_owned(),
            warnings,
        },
    ))
}

async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    target: &SshTarget,
    key: Option<russh::keys::PrivateKey>,
    env: &str,
) -> Result<(), ExecError> {
    let auth_err = |detail: String| ExecError::Auth {
        env: env.to_owned(),
        user: target.username.clone(),
        detail,
    };
    if let Some(key) = key {
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let res = handle
            .authenticate_publickey(
                target.username.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(|e| auth_err(e.to_string()))?;
        return if res.success() {
            Ok(())
        } else {
            Err(auth_err("the server refused the private key".to_owned()))
        };
    }
    if !target.use_agent {
        return Err(auth_err(
            "no private key is configured for this environment; set privateKey (or ask an \
             instance admin to mark the environment useAgentAuth to use the server's SSH agent)"
                .to_owned(),
        ));
    }
    let connected = match &target.agent_socket {
        Some(path) => AgentClient::connect_uds(path).await,
        None => AgentClient::connect_env().await,
    };
    let mut agent = connected.map_err(|e| {
        let at = target
            .agent_socket
            .as_ref()
            .map_or_else(|| "SSH_AUTH_SOCK".to_owned(), |p| p.display().to_string());
        auth_err(format!(
            "no private key is configured and the SSH agent at {at} is unusable: {e}"
        ))
    })?;
    let identities = agent
        .request_identities()
        .await
        .map_err(|e| auth_err(format!("failed to list SSH agent keys: {e}")))?;
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let mut tried = 0;
    for identity in identities {
        let AgentIdentity::PublicKey { key, .. } = identity else {
            continue;
        };
        tried += 1;
        let res = handle
            .authenticate_publickey_with(target.username.clone(), key, hash, &mut agent)
            .await;
        if let Ok(r) = res
            && r.success()
        {
            return Ok(());
        }
    }
    Err(auth_err(format!(
        "the server refused all {tried} key(s) offered by the SSH agent"
    )))
}

/// The host key `host:port` presents, without authenticating (for "trust this host" flows: the
/// operator confirms the fingerprint, then pins the line). Nothing but the handshake is sent.
pub async fn fetch_host_key(
    host: &str,
    port: u16,
    timeouts: &SshTimeouts,
) -> Result<PresentedHostKey, ExecError> {
    let env = format!("SSH host {host}:{port}");
    let tcp = match tokio::time::timeout(
        timeouts.connect,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ExecError::Connect {
                env,
                detail: e.to_string(),
            });
        }
        Err(_) => {
            return Err(ExecError::ConnectTimeout {
                env,
                secs: timeouts.connect.as_secs(),
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    let seen = Arc::new(Mutex::new(None));
    // Reject every key: the handshake stops right after the host key is seen.
    let handler = ClientHandler {
        host: host.to_owned(),
        port,
        policy: Policy::Known(KnownHosts::default()),
        seen: seen.clone(),
        forwards: Forwards::default(),
    };
    let _ = tokio::time::timeout(
        timeouts.connect,
        client::connect_stream(Arc::new(russh_config(timeouts)), tcp, handler),
    )
    .await;
    match seen.lock().ok().and_then(|mut s| s.take()) {
        Some(Seen::Rejected(presented, _)) => Ok(*presented),
        Some(Seen::Accepted(c)) => Ok(c.presented),
        None => Err(ExecError::Connect {
            env,
            detail: "the server presented no host key".to_owned(),
        }),
    }
}
