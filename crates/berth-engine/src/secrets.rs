//! Secrets at rest: XChaCha20-Poly1305 under a master key that lives outside the database
//! (`$BERTH_HOME/master.key`, mode 0600, created on first start; or `BERTH_MASTER_KEY`).
//!
//! Each ciphertext is bound to its company and secret id as associated data, so a ciphertext
//! copied onto another row does not decrypt.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use berth_core::{CompanyId, RunId, Secret, SecretId};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("failed to read the master key at {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("failed to create the master key at {path}: {reason}")]
    Create { path: String, reason: String },
    #[error(
        "the master key must be 64 hex characters (32 bytes); check BERTH_MASTER_KEY or master.key"
    )]
    Malformed,
    #[error(
        "master key file {path} has mode {mode:o}; it must not be readable by others (chmod 600)"
    )]
    Permissions { path: String, mode: u32 },
    #[error("failed to encrypt a secret")]
    Encrypt,
    #[error("failed to decrypt secret {0}: wrong master key or corrupted ciphertext")]
    Decrypt(SecretId),
}

/// `N` bytes from the operating system's CSPRNG (API tokens, nonces).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Encrypts and decrypts secret values. Its `Debug` never shows the key.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    pub fn from_hex(hex_key: &str) -> Result<Self, CryptoError> {
        let bytes =
            Zeroizing::new(hex::decode(hex_key.trim()).map_err(|_| CryptoError::Malformed)?);
        if bytes.len() != 32 {
            return Err(CryptoError::Malformed);
        }
        Ok(Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// Load `master.key` from `home`, creating it (0600, 32 random bytes as hex) on first
    /// start; `env_key` (`BERTH_MASTER_KEY`) wins when given.
    pub fn load_or_create(home: &Path, env_key: Option<&str>) -> Result<Self, CryptoError> {
        if let Some(key) = env_key {
            return Self::from_hex(key);
        }
        let path = home.join("master.key");
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path)
                    .map_err(|e| CryptoError::Read {
                        path: shown.clone(),
                        reason: e.to_string(),
                    })?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o077 != 0 {
                    return Err(CryptoError::Permissions { path: shown, mode });
                }
                Self::from_hex(&Zeroizing::new(text))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let create = |reason: String| CryptoError::Create {
                    path: shown.clone(),
                    reason,
                };
                std::fs::create_dir_all(home).map_err(|e| create(e.to_string()))?;
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                let encoded = Zeroizing::new(hex::encode(key));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| create(e.to_string()))?;
                file.write_all(encoded.as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(|e| create(e.to_string()))?;
                Self::from_hex(&encoded)
            }
            Err(e) => Err(CryptoError::Read {
                path: shown,
                reason: e.to_string(),
            }),
        }
    }

    fn aad(company_id: CompanyId, secret_id: SecretId) -> String {
        format!("berth-secret:v1:{company_id}:{secret_id}")
    }

    /// Returns `(ciphertext, nonce)`.
    pub fn encrypt(
        &self,
        company_id: CompanyId,
        secret_id: SecretId,
        plaintext: &Secret<String>,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Self::aad(company_id, secret_id);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.expose().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        Ok((ciphertext, nonce.to_vec()))
    }

    pub fn decrypt(
        &self,
        company_id: CompanyId,
        secret_id: SecretId,
        ciphertext: &[u8],
        nonce: &[u8],
    ) -> Result<Secret<String>, CryptoError> {
        if nonce.len() != 24 {
            return Err(CryptoError::Decrypt(secret_id));
        }
        let aad = Self::aad(company_id, secret_id);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| CryptoError::Decrypt(secret_id))?,
        );
        String::from_utf8(plain.to_vec())
            .map(Secret::new)
            .map_err(|_| CryptoError::Decrypt(secret_id))
    }
}

/// The prefix of run-scoped API tokens (`BERTH_API_TOKEN`).
pub const RUN_TOKEN_PREFIX: &str = "berthrun_";

impl SecretBox {
    /// A bearer token for the agent of one run: `berthrun_<run id>_<nonce+tag>`, the tag an
    /// XChaCha20-Poly1305 seal of nothing, bound to the run id. Nothing is stored: the server
    /// accepts it while that run is active, so it dies with the run, and every instance sharing
    /// the master key accepts it.
    pub fn run_token(&self, run_id: RunId) -> Result<Secret<String>, CryptoError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Self::run_aad(run_id);
        let tag = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &[],
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(Secret::new(format!(
            "{RUN_TOKEN_PREFIX}{}_{}{}",
            run_id.0.simple(),
            hex::encode(nonce),
            hex::encode(tag)
        )))
    }

    /// The run a token from [`SecretBox::run_token`] belongs to, if it is authentic.
    pub fn verify_run_token(&self, token: &str) -> Option<RunId> {
        let rest = token.strip_prefix(RUN_TOKEN_PREFIX)?;
        let (id, mac) = rest.split_once('_')?;
        let run_id = RunId(uuid::Uuid::try_parse(id).ok()?);
        let mac = hex::decode(mac).ok()?;
        if mac.len() != 24 + 16 {
            return None;
        }
        let (nonce, tag) = mac.split_at(24);
        let aad = Self::run_aad(run_id);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: tag,
                    aad: aad.as_bytes(),
                },
            )
            .ok()
            .filter(Vec::is_empty)
            .map(|_| run_id)
    }

    fn run_aad(run_id: RunId) -> String {
        format!("berth-run-token:v1:{run_id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(dir.path(), None).unwrap();
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = SecretBox::load_or_create(dir.path(), None).unwrap();
        let (c, s) = (CompanyId::new(), SecretId::new());
        let (ct, nonce) = a.encrypt(c, s, &Secret::new("value".into())).unwrap();
        assert_eq!(b.decrypt(c, s, &ct, &nonce).unwrap().expose(), "value");
    }

    #[test]
    fn ciphertext_is_bound_to_its_row_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(dir.path(), None).unwrap();
        let (c, s) = (CompanyId::new(), SecretId::new());
        let (ct, nonce) = a.encrypt(c, s, &Secret::new("value".into())).unwrap();
        assert!(a.decrypt(c, SecretId::new(), &ct, &nonce).is_err());
        assert!(a.decrypt(CompanyId::new(), s, &ct, &nonce).is_err());
        let other = SecretBox::from_hex(&"ab".repeat(32)).unwrap();
        assert!(other.decrypt(c, s, &ct, &nonce).is_err());
        assert!(SecretBox::from_hex("short").is_err());
    }

    #[test]
    fn world_readable_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        SecretBox::load_or_create(dir.path(), None).unwrap();
        let path = dir.path().join("master.key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretBox::load_or_create(dir.path(), None),
            Err(CryptoError::Permissions { .. })
        ));
    }

    #[test]
    fn run_tokens_verify_only_for_their_run_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::load_or_create(dir.path(), None).unwrap();
        let run = RunId::new();
        let token = sb.run_token(run).unwrap();
        assert!(token.expose().starts_with(RUN_TOKEN_PREFIX));
        assert_eq!(sb.verify_run_token(token.expose()), Some(run));
        // Another run's id with this tag, a flipped bit, another key: all refused.
        let other = token.expose().replace(
            &run.0.simple().to_string(),
            &RunId::new().0.simple().to_string(),
        );
        assert_eq!(sb.verify_run_token(&other), None);
        let mut flipped = token.expose().clone();
        let last = if flipped.ends_with('0') { "1" } else { "0" };
        flipped.replace_range(flipped.len() - 1.., last);
        assert_eq!(sb.verify_run_token(&flipped), None);
        let stranger = SecretBox::from_hex(&"cd".repeat(32)).unwrap();
        assert_eq!(stranger.verify_run_token(token.expose()), None);
        assert_eq!(sb.verify_run_token("berthrun_nonsense"), None);
    }
}
