//! The error type of the execution layer. Messages read "failed to …" and name the
//! environment; none of them ever contains a secret (keys, passphrases, env values).

use std::fmt;

use crate::transport::ExitOutcome;

/// What the server presented as its host key, with what an operator needs to pin it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PresentedHostKey {
    /// Key algorithm, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// OpenSSH SHA-256 fingerprint, e.g. `SHA256:abc…` (base64 without padding).
    pub fingerprint_sha256: String,
    /// The known_hosts line that would pin this key for this host and port.
    pub known_hosts_line: String,
}

/// Why a presented host key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyRejection {
    /// No known_hosts entry names this host.
    Unknown,
    /// The key is marked `@revoked`.
    Revoked,
    /// The host is known with other keys (their SHA-256 fingerprints).
    Mismatch { known_fingerprints: Vec<String> },
}

impl fmt::Display for HostKeyRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => f.write_str("is not in known_hosts"),
            Self::Revoked => f.write_str("is revoked in known_hosts"),
            Self::Mismatch { known_fingerprints } => write!(
                f,
                "does not match the pinned key(s) {}",
                known_fingerprints.join(", ")
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("failed to start `sh` on {env}: {source}")]
    Spawn {
        env: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to wait for the command on {env}: {source}")]
    Wait {
        env: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to connect to {env}: {detail}")]
    Connect { env: String, detail: String },
    #[error("failed to connect to {env}: no answer within {secs} s")]
    ConnectTimeout { env: String, secs: u64 },
    #[error(
        "failed to verify the host key of {env}: presented {} {} {reason}; \
         to trust it, pin this known_hosts line: {}",
        presented.key_type, presented.fingerprint_sha256, presented.known_hosts_line
    )]
    HostKey {
        env: String,
        presented: Box<PresentedHostKey>,
        reason: HostKeyRejection,
    },
    #[error("failed to read known_hosts for {env}: {detail}")]
    KnownHosts { env: String, detail: String },
    #[error("failed to decode the private key for {env}: {detail}")]
    PrivateKey { env: String, detail: String },
    #[error("failed to authenticate to {env} as {user}: {detail}")]
    Auth {
        env: String,
        user: String,
        detail: String,
    },
    #[error("failed to open a channel on {env}: {detail}")]
    Channel { env: String, detail: String },
    #[error("failed to run the command on {env}: the connection was lost")]
    Disconnected { env: String },
    #[error("failed to talk to the control shell on {env}: {detail}")]
    ControlShell { env: String, detail: String },
    /// The script contains a NUL byte: `sh` cannot be given it faithfully, so it is not run.
    #[error("failed to run a command on {env}: {source}")]
    Nul {
        env: String,
        #[source]
        source: crate::shell::NulByte,
    },
    #[error("failed to run {what} on {env}: {outcome}{}", stderr_suffix(stderr))]
    CommandFailed {
        env: String,
        what: String,
        outcome: ExitOutcome,
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

impl ExecError {
    /// `Err(Nul)` when `script` contains a NUL byte; every transport checks before running.
    pub(crate) fn check_script(env: &str, script: &str) -> Result<(), Self> {
        crate::shell::check_no_nul("the script", script).map_err(|source| Self::Nul {
            env: env.to_owned(),
            source,
        })
    }

    /// Whether this error means the connection died (a fresh connection may succeed).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::Disconnected { .. } | Self::Channel { .. })
    }
}
