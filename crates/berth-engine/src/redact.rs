//! Secret values out of run output (SPEC §12: no secret value in any run event). The agent may
//! print its own environment; every known secret value is replaced by `***` before output is
//! persisted, including a value split across two chunks.

use std::collections::BTreeMap;

use berth_core::config::SecretRef;
use berth_core::{CompanyId, Secret};
use berth_store::Store;
use serde_json::Value;

use crate::resolve::{ResolveError, resolve_secret};
use crate::secrets::SecretBox;

/// Replaces secret values in a byte stream. Holds back the last `longest - 1` bytes of each
/// chunk until the next one (or [`Redactor::finish`]) so a value cut in two is still caught.
#[derive(Default)]
pub struct Redactor {
    needles: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.needles.len())
            .finish()
    }
}

/// Values this short would redact ordinary output (`1`, `yes`); they are not secrets worth the
/// name and are left alone.
const MIN_SECRET_LEN: usize = 6;

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret<String>>) -> Self {
        let mut needles: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.expose().as_bytes().to_vec())
            .filter(|n| n.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self {
            needles,
            pending: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    fn keep_back(&self) -> usize {
        self.needles.first().map(|n| n.len() - 1).unwrap_or(0)
    }

    /// Redact `chunk`; returns the bytes that are safe to emit now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.needles.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let replaced = self.replace_all(&self.pending);
        // Never emit a tail that could be the start of a secret continuing in the next chunk;
        // hold back only such a tail, so ordinary output streams at once.
        let max = self.keep_back().min(replaced.len());
        let keep = (1..=max)
            .rev()
            .find(|k| {
                let tail = &replaced[replaced.len() - k..];
                self.needles.iter().any(|n| n.starts_with(tail))
            })
            .unwrap_or(0);
        let split = replaced.len() - keep;
        let (out, rest) = replaced.split_at(split);
        let out = out.to_vec();
        self.pending = rest.to_vec();
        out
    }

    /// How many bytes of input [`Redactor::push`] has held back so far (a possible start of
    /// a secret; raw bytes, since a replaced value is never held back).
    pub fn held_back(&self) -> usize {
        self.pending.len()
    }

    /// Everything still held back, redacted.
    pub fn finish(&mut self) -> Vec<u8> {
        let out = self.replace_all(&self.pending);
        self.pending.clear();
        out
    }

    fn replace_all(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        'outer: while i < data.len() {
            for n in &self.needles {
                if data[i..].starts_with(n) {
                    out.extend_from_slice(b"***");
                    i += n.len();
                    continue 'outer;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        out
    }
}

/// Resolve secret references in `adapterConfig.env` (`{"KEY": {"type": "secret_ref", …}}`)
/// into memory. Returns the config with plain strings for the adapter and the secret values for
/// the redactor.
pub async fn resolve_env_secrets(
    store: &dyn Store,
    secrets: &SecretBox,
    company_id: CompanyId,
    adapter_config: &Value,
) -> Result<(Value, Vec<Secret<String>>), ResolveError> {
    let mut config = adapter_config.clone();
    let mut values = Vec::new();
    if let Some(env) = config.get_mut("env").and_then(Value::as_object_mut) {
        let mut resolved: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in env.iter() {
            if value.is_object() {
                let reference: SecretRef = serde_json::from_value(value.clone())
                    .map_err(|_| ResolveError::MissingSecret(format!("env {key}")))?;
                let secret = resolve_secret(store, secrets, company_id, &reference).await?;
                resolved.insert(key.clone(), secret.expose().clone());
                values.push(secret);
            }
        }
        for (key, value) in resolved {
            env.insert(key, Value::String(value));
        }
    }
    Ok((config, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        let secrets = [
            Secret::new("sk-SENTINEL-1234".to_string()),
            Secret::new("x".to_string()),
        ];
        Redactor::new(secrets.iter())
    }

    #[test]
    fn a_secret_is_replaced_even_across_chunks() {
        let mut r = redactor();
        let mut out = Vec::new();
        for chunk in [&b"key=sk-SENT"[..], b"INEL-12", b"34 done\n"] {
            out.extend(r.push(chunk));
        }
        out.extend(r.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "key=*** done\n");
    }

    #[test]
    fn output_without_secrets_passes_unchanged_and_short_values_are_ignored() {
        let mut r = redactor();
        let mut out = r.push(b"x marks the spot, ");
        out.extend(r.push(b"sk-SENTINEL-123 is not it"));
        out.extend(r.finish());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x marks the spot, sk-SENTINEL-123 is not it"
        );
        let mut none = Redactor::new([].iter());
        assert_eq!(none.push(b"abc"), b"abc");
    }

    #[test]
    fn only_a_possible_start_of_a_secret_is_held_back() {
        let mut r = redactor();
        // Nothing here can begin the secret: it streams at once.
        assert_eq!(r.push(b"progress 10%\n"), b"progress 10%\n");
        // A tail that could: held until the next chunk decides.
        assert_eq!(r.push(b"token sk-SE"), b"token ");
        assert_eq!(r.push(b"NTINEL-1234!"), b"***!");
        assert!(r.finish().is_empty());
    }
}
