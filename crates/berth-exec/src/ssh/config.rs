//! What to connect to and under which policies.

use std::time::Duration;

use sha2::Digest as _;

use berth_core::Secret;

/// One SSH environment as the transport sees it (secrets already resolved, in memory only).
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// OpenSSH/PEM private key text; `None` → the SSH agent at `SSH_AUTH_SOCK`.
    pub private_key: Option<Secret<String>>,
    pub passphrase: Option<Secret<String>>,
    /// Pinned known_hosts text.
    pub known_hosts: Option<String>,
    /// Strict with `known_hosts`: only those keys; strict without: the server user's
    /// `~/.ssh/known_hosts`; `false`: accept any key with a warning.
    pub strict_host_key_checking: bool,
    /// Channels per pooled connection (sshd's `MaxSessions` defaults to 10).
    pub max_sessions: u32,
    /// SSH agent socket used when `private_key` is `None`; `None` → `$SSH_AUTH_SOCK`.
    pub agent_socket: Option<std::path::PathBuf>,
    /// Whether the SSH agent may be used at all. Off unless the environment is marked
    /// `useAgentAuth` by an instance admin: the agent holds the operator's identities.
    pub use_agent: bool,
}

impl SshTarget {
    pub fn new(host: impl Into<String>, port: u16, username: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            username: username.into(),
            private_key: None,
            passphrase: None,
            known_hosts: None,
            strict_host_key_checking: true,
            max_sessions: 8,
            agent_socket: None,
            use_agent: false,
        }
    }

    /// `SSH environment user@host:port`, used in every error.
    pub fn describe(&self) -> String {
        format!(
            "SSH environment {}@{}:{}",
            self.username, self.host, self.port
        )
    }

    /// The pool key: host, port, user, a digest of the credentials and of the host-key policy.
    /// Digests, not values, so the key can be logged.
    pub(crate) fn pool_key(&self) -> String {
        let mut h = sha2::Sha256::new();
        match &self.private_key {
            Some(k) => {
                h.update(b"key\0");
                h.update(k.expose().as_bytes());
                h.update(b"\0");
                if let Some(p) = &self.passphrase {
                    h.update(p.expose().as_bytes());
                }
            }
            None => {
                h.update(b"agent\0");
                if let Some(p) = &self.agent_socket {
                    h.update(p.as_os_str().as_encoded_bytes());
                }
            }
        }
        h.update(b"\0hosts\0");
        h.update([u8::from(self.strict_host_key_checking)]);
        if let Some(kh) = &self.known_hosts {
            h.update(kh.as_bytes());
        }
        h.update(self.max_sessions.to_le_bytes());
        format!(
            "{}@{}:{}#{}",
            self.username,
            self.host,
            self.port,
            &hex::encode(h.finalize())[..16]
        )
    }
}

/// Every network wait is bounded.
#[derive(Debug, Clone, Copy)]
pub struct SshTimeouts {
    /// TCP connect plus handshake.
    pub connect: Duration,
    pub auth: Duration,
    /// A keepalive goes out after this long without traffic; a connection that misses three in
    /// a row is closed, so a silently cut link is noticed within about four intervals.
    pub keepalive_interval: Duration,
    /// Close a pooled connection after this long without channels.
    pub idle: Duration,
    /// Opening one channel (and waiting for a free session slot).
    pub channel_open: Duration,
}

impl Default for SshTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            auth: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            idle: Duration::from_secs(60),
            channel_open: Duration::from_secs(60),
        }
    }
}
