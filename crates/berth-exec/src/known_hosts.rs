//! OpenSSH known_hosts as data: parse the text, then ask for a [`HostKeyVerdict`].
//!
//! Supported syntax: plain host patterns (comma lists, `*`/`?` wildcards, `!negation`),
//! `[host]:port`, hashed `|1|salt|hash` names (HMAC-SHA1), the `@revoked` marker and comments.
//! `@cert-authority` lines are skipped (Berth does not accept host certificates yet) and counted
//! in [`KnownHosts::ignored_cert_authorities`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// A known_hosts line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse known_hosts line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

/// The answer for a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// An entry for this host holds exactly this key.
    Trusted,
    /// The key is marked `@revoked` for this host.
    Revoked,
    /// The host is known, but with other keys.
    Mismatch {
        presented_type: String,
        presented_fingerprint_sha256: String,
        /// SHA-256 fingerprints of the keys known for this host.
        known: Vec<String>,
    },
    /// No entry names this host.
    Unknown,
}

#[derive(Debug, Clone)]
enum HostPattern {
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    Patterns(Vec<(bool, String)>),
}

#[derive(Debug, Clone)]
struct Entry {
    revoked: bool,
    hosts: HostPattern,
    key: PublicKey,
}

/// Parsed known_hosts text.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// `@cert-authority` lines seen and skipped.
    pub ignored_cert_authorities: usize,
}

/// The name known_hosts stores for `host:port`: `host` for port 22, else `[host]:port`.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// OpenSSH's SHA-256 fingerprint, `SHA256:` + base64 without padding.
pub fn fingerprint_sha256(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `ssh-ed25519 AAAA…` without a comment.
pub fn public_key_openssh(key: &PublicKey) -> String {
    let mut k = key.clone();
    k.set_comment("");
    k.to_openssh()
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| key.algorithm().to_string())
}

/// The line that pins `key` for `host:port`, e.g. `[h]:2222 ssh-ed25519 AAAA…`.
pub fn known_hosts_line(host: &str, port: u16, key: &PublicKey) -> String {
    format!("{} {}", host_name(host, port), public_key_openssh(key))
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl HostPattern {
    fn parse(field: &str) -> Result<Self, String> {
        if let Some(rest) = field.strip_prefix("|1|") {
            let (salt, hash) = rest
                .split_once('|')
                .ok_or_else(|| "hashed host name needs |1|salt|hash".to_owned())?;
            let salt = STANDARD
                .decode(salt)
                .map_err(|e| format!("bad salt in hashed host name: {e}"))?;
            let hash = STANDARD
                .decode(hash)
                .map_err(|e| format!("bad hash in hashed host name: {e}"))?;
            return Ok(Self::Hashed { salt, hash });
        }
        let pats: Vec<(bool, String)> = field
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| match p.strip_prefix('!') {
                Some(neg) => (true, neg.to_ascii_lowercase()),
                None => (false, p.to_ascii_lowercase()),
            })
            .collect();
        if pats.is_empty() {
            return Err("empty host pattern".to_owned());
        }
        Ok(Self::Patterns(pats))
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Hashed { salt, hash } => {
                let Ok(mut mac) = HmacSha1::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Self::Patterns(pats) => {
                let name = name.to_ascii_lowercase();
                let mut positive = false;
                for (negated, pat) in pats {
                    if glob_match(pat.as_bytes(), name.as_bytes()) {
                        if *negated {
                            return false;
                        }
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

impl KnownHosts {
    /// Parse known_hosts text; any malformed line is an error naming its line number.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Self::parse_inner(text, true)
    }

    /// Parse, skipping malformed lines (as OpenSSH does for the user's own file).
    pub fn parse_lenient(text: &str) -> Self {
        Self::parse_inner(text, false).unwrap_or_default()
    }

    fn parse_inner(text: &str, strict: bool) -> Result<Self, ParseError> {
        let mut out = KnownHosts::default();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match Self::parse_line(line) {
                Ok(Some(e)) => out.entries.push(e),
                Ok(None) => out.ignored_cert_authorities += 1,
                Err(message) if strict => {
                    return Err(ParseError {
                        line: idx + 1,
                        message,
                    });
                }
                Err(_) => {}
            }
        }
        Ok(out)
    }

    fn parse_line(line: &str) -> Result<Option<Entry>, String> {
        let mut fields = line.split_whitespace();
        let mut first = fields.next().ok_or_else(|| "empty line".to_owned())?;
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                "cert-authority" => return Ok(None),
                other => return Err(format!("unknown marker @{other}")),
            }
            first = fields
                .next()
                .ok_or_else(|| "missing host pattern after marker".to_owned())?;
        }
        let hosts = HostPattern::parse(first)?;
        let key_type = fields.next().ok_or_else(|| "missing key type".to_owned())?;
        let key_b64 = fields.next().ok_or_else(|| "missing key".to_owned())?;
        let key = PublicKey::from_openssh(&format!("{key_type} {key_b64}"))
            .map_err(|e| format!("invalid {key_type} key: {e}"))?;
        Ok(Some(Entry {
            revoked,
            hosts,
            key,
        }))
    }

    /// Number of usable entries (revoked ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verdict for `key` presented by `host:port`.
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyVerdict {
        let name = host_name(host, port);
        let matching: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.hosts.matches(&name))
            .collect();
        let same = |e: &&&Entry| e.key.key_data() == key.key_data();
        if matching.iter().filter(|e| e.revoked).any(|e| same(&e)) {
            return HostKeyVerdict::Revoked;
        }
        let valid: Vec<&&Entry> = matching.iter().filter(|e| !e.revoked).collect();
        if valid.iter().any(same) {
            return HostKeyVerdict::Trusted;
        }
        if valid.is_empty() {
            return HostKeyVerdict::Unknown;
        }
        HostKeyVerdict::Mismatch {
            presented_type: key.algorithm().to_string(),
            presented_fingerprint_sha256: fingerprint_sha256(key),
            known: valid.iter().map(|e| fingerprint_sha256(&e.key)).collect(),
        }
    }

    /// A stable digest of the pinned entries (for the SSH pool key).
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for e in &self.entries {
            h.update(format!("{:?}{}", e.revoked, public_key_openssh(&e.key)));
            match &e.hosts {
                HostPattern::Hashed { salt, hash } => {
                    h.update(salt);
                    h.update(hash);
                }
                HostPattern::Patterns(p) => h.update(format!("{p:?}")),
            }
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOkLlPqyTxELk78XWWLaghBDo0Ely3vsS3K5tiFwGM1C";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGo+VdoeTGUqhFa7+u/BP/XjdqGvjKX5Oglvt1QYMyDK";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn plain_host_on_port_22_is_trusted() {
        let kh = KnownHosts::parse(&format!("# comment\n\nexample.com {K1} me@x\n")).unwrap();
        assert_eq!(
            kh.verify("example.com", 22, &key(K1)),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            kh.verify("EXAMPLE.com", 22, &key(K1)),
            HostKeyVerdict::Trusted
        );
        // The same host on another port is another name.
        assert_eq!(
            kh.verify("example.com", 2222, &key(K1)),
            HostKeyVerdict::Unknown
        );
    }

    #[test]
    fn bracketed_port_entries_match_only_that_port() {
        let kh = KnownHosts::parse(&format!("[127.0.0.1]:2222 {K1}")).unwrap();
        assert_eq!(
            kh.verify("127.0.0.1", 2222, &key(K1)),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            kh.verify("127.0.0.1", 22, &key(K1)),
            HostKeyVerdict::Unknown
        );
    }

    #[test]
    fn comma_lists_wildcards_and_negation() {
        let kh = KnownHosts::parse(&format!("a.example,*.corp,!bad.corp,h?st {K1}")).unwrap();
        assert_eq!(
            kh.verify("a.example", 22, &key(K1)),
            HostKeyVerdict::Trusted
        );
        assert_eq!(kh.verify("x.y.corp", 22, &key(K1)), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("host", 22, &key(K1)), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("hoost", 22, &key(K1)), HostKeyVerdict::Unknown);
        assert_eq!(kh.verify("bad.corp", 22, &key(K1)), HostKeyVerdict::Unknown);
    }

    #[test]
    fn other_key_for_known_host_is_a_mismatch_naming_both() {
        let kh = KnownHosts::parse(&format!("h {K1}")).unwrap();
        match kh.verify("h", 22, &key(K2)) {
            HostKeyVerdict::Mismatch {
                presented_type,
                presented_fingerprint_sha256,
                known,
            } => {
                assert_eq!(presented_type, "ssh-ed25519");
                assert_eq!(presented_fingerprint_sha256, fingerprint_sha256(&key(K2)));
                assert_eq!(known, vec![fingerprint_sha256(&key(K1))]);
            }
            v => panic!("expected mismatch, got {v:?}"),
        }
    }

    #[test]
    fn revoked_marker_wins_over_a_trusting_line() {
        let kh = KnownHosts::parse(&format!("@revoked * {K1}\nh {K1}\nh {K2}")).unwrap();
        assert_eq!(kh.verify("h", 22, &key(K1)), HostKeyVerdict::Revoked);
        assert_eq!(kh.verify("h", 22, &key(K2)), HostKeyVerdict::Trusted);
    }

    #[test]
    fn cert_authority_lines_are_skipped_and_counted() {
        let kh = KnownHosts::parse(&format!("@cert-authority *.corp {K1}\n")).unwrap();
        assert!(kh.is_empty());
        assert_eq!(kh.ignored_cert_authorities, 1);
        assert_eq!(kh.verify("a.corp", 22, &key(K1)), HostKeyVerdict::Unknown);
    }

    #[test]
    fn malformed_lines_are_named_by_number() {
        let err = KnownHosts::parse(&format!("h {K1}\nh ssh-ed25519 notbase64!\n")).unwrap_err();
        assert_eq!(err.line, 2);
        let err = KnownHosts::parse("@weird h ssh-ed25519 AAAA").unwrap_err();
        assert_eq!(err.line, 1);
        assert_eq!(KnownHosts::parse_lenient(&format!("junk\nh {K1}")).len(), 1);
    }

    #[test]
    fn hashed_entries_made_by_ssh_keygen_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, format!("[10.1.2.3]:2200 {K1}\nplain.example {K2}\n")).unwrap();
        let st = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().all(|l| l.starts_with("|1|")), "{text}");
        let kh = KnownHosts::parse(&text).unwrap();
        assert_eq!(
            kh.verify("10.1.2.3", 2200, &key(K1)),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            kh.verify("plain.example", 22, &key(K2)),
            HostKeyVerdict::Trusted
        );
        assert_eq!(kh.verify("10.1.2.3", 22, &key(K1)), HostKeyVerdict::Unknown);
        assert!(matches!(
            kh.verify("plain.example", 22, &key(K1)),
            HostKeyVerdict::Mismatch { .. }
        ));
    }

    #[test]
    fn lines_and_fingerprints_use_openssh_formats() {
        let k = key(&format!("{K1} comment"));
        assert_eq!(known_hosts_line("h", 22, &k), format!("h {K1}"));
        assert_eq!(known_hosts_line("h", 2222, &k), format!("[h]:2222 {K1}"));
        let fp = fingerprint_sha256(&k);
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='), "{fp}");
        // Cross-check with ssh-keygen -lf.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        std::fs::write(&path, format!("{K1}\n")).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(&fp));
    }
}
