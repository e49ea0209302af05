//! Relative workspace paths as raw bytes, so non-UTF-8 names survive every round trip.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SyncError;

/// Raw bytes that serialize as a JSON string when they are UTF-8 and as `{"hex": "…"}`
/// otherwise, so persisted manifests stay readable without losing any name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RawBytes(pub Vec<u8>);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawRepr {
    Text(String),
    Hex { hex: String },
}

impl Serialize for RawBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => RawRepr::Text(t.to_owned()).serialize(s),
            Err(_) => RawRepr::Hex {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawRepr::deserialize(d)? {
            RawRepr::Text(t) => Ok(Self(t.into_bytes())),
            RawRepr::Hex { hex } => hex::decode(hex).map(Self).map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Debug for RawBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// A validated path relative to a workspace root: non-empty, `/`-separated, no empty, `.` or
/// `..` component, no NUL, not absolute. Ordered bytewise, so a parent sorts before its
/// children. Shared, immutable bytes: a manifest's key and its entry's path are one
/// allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawBytes", into = "RawBytes")]
pub struct RelPath(std::sync::Arc<[u8]>);

/// Lookups by raw bytes (ordering and equality are those of the bytes).
impl std::borrow::Borrow<[u8]> for RelPath {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<RawBytes> for RelPath {
    type Error = SyncError;
    fn try_from(r: RawBytes) -> Result<Self, SyncError> {
        Self::new(r.0)
    }
}

impl From<RelPath> for RawBytes {
    fn from(p: RelPath) -> Self {
        RawBytes(p.0.to_vec())
    }
}

impl RelPath {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SyncError> {
        let bytes = bytes.into();
        let bad = |reason: &str| Err(SyncError::unsafe_entry(&bytes, reason));
        if bytes.is_empty() {
            return bad("empty path");
        }
        if bytes[0] == b'/' {
            return bad("absolute path");
        }
        if bytes.contains(&0) {
            return bad("NUL byte in path");
        }
        for comp in bytes.split(|b| *b == b'/') {
            match comp {
                b"" => return bad("empty path component"),
                b"." => return bad("`.` component"),
                b".." => return bad("`..` component"),
                _ => {}
            }
        }
        Ok(Self(bytes.into()))
    }

    /// Parse a `./`-prefixed name as printed by `find .` or `tar`.
    pub fn from_dot_slash(bytes: &[u8]) -> Result<Self, SyncError> {
        let rest = bytes.strip_prefix(b"./").unwrap_or(bytes);
        Self::new(rest.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// `root/self`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(self.as_path())
    }

    /// `./self` as bytes: safe to hand to commands even when the name starts with `-`.
    pub fn dot_slash(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.0.len() + 2);
        v.extend_from_slice(b"./");
        v.extend_from_slice(&self.0);
        v
    }

    pub fn parent(&self) -> Option<RelPath> {
        let i = self.0.iter().rposition(|b| *b == b'/')?;
        Some(Self(self.0[..i].into()))
    }

    /// Every proper ancestor, nearest first.
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> {
        std::iter::successors(self.parent(), RelPath::parent)
    }

    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// `self` with `suffix` appended to its last component.
    pub fn with_suffix(&self, suffix: &str) -> RelPath {
        let mut v = self.0.to_vec();
        v.extend_from_slice(suffix.as_bytes());
        Self(v.into())
    }

    pub fn join(&self, name: &[u8]) -> Result<RelPath, SyncError> {
        let mut v = self.0.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        Self::new(v)
    }

    /// Whether `self` lies strictly below `dir`.
    pub fn is_under(&self, dir: &RelPath) -> bool {
        self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0[dir.0.len()] == b'/'
    }

    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/')
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Whether a symlink at `link` with `target` resolves (lexically) inside the workspace.
/// Absolute targets never do.
pub fn symlink_stays_inside(link: &RelPath, target: &[u8]) -> bool {
    if target.is_empty() || target[0] == b'/' {
        return false;
    }
    let mut depth = link.parent().map_or(0usize, |p| p.components().count());
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

/// Most symlinks followed while resolving one link (Linux's own limit, `MAXSYMLINKS`, is 40).
pub const SYMLINK_HOPS_MAX: usize = 40;

/// How a symlink resolves within a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The resolution never leaves the root (nor runs into an absolute target or a loop).
    pub inside: bool,
    /// The other symlinks followed on the way, in order.
    pub via: Vec<RelPath>,
}

/// Resolve a symlink at `link` with `target` in a tree where `target_of(p)` is the target of
/// the symlink at `p` (`None`: `p` is no symlink), following every link met on the way (at
/// most [`SYMLINK_HOPS_MAX`] hops). A name that is not a link counts as a directory, whether
/// or not it exists: a path missing today may be created tomorrow, and then its `..` steps are
/// taken literally. So `inside` holds for every later shape of the non-link entries; an
/// absolute or empty target, or too many hops, is never inside. Judging a target lexically
/// instead lets `s -> .` plus `x -> s/s/s/../../..` climb three levels above the root.
pub fn resolve_symlink(
    link: &RelPath,
    target: &[u8],
    mut target_of: impl FnMut(&RelPath) -> Option<Vec<u8>>,
) -> Resolution {
    let mut via = Vec::new();
    let escape = |via| Resolution { inside: false, via };
    // The directory the resolution is in, as components below the root.
    let mut cur: Vec<Vec<u8>> = match link.parent() {
        Some(p) => p.components().map(<[u8]>::to_vec).collect(),
        None => Vec::new(),
    };
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    if !push_target(&mut pending, target) {
        return escape(via);
    }
    while let Some(comp) = pending.pop_front() {
        match comp.as_slice() {
            b"" | b"." => {}
            b".." => {
                if cur.pop().is_none() {
                    return escape(via);
                }
            }
            _ => {
                cur.push(comp);
                let Ok(here) = RelPath::new(cur.join(&b'/')) else {
                    return escape(via);
                };
                if let Some(t) = target_of(&here) {
                    cur.pop();
                    via.push(here);
                    if via.len() >= SYMLINK_HOPS_MAX || !push_target(&mut pending, &t) {
                        return escape(via);
                    }
                }
            }
        }
    }
    Resolution { inside: true, via }
}

/// Queue `target`'s components ahead of the rest; `false` for a target that is absolute or
/// empty (never inside).
fn push_target(pending: &mut VecDeque<Vec<u8>>, target: &[u8]) -> bool {
    if target.is_empty() || target[0] == b'/' {
        return false;
    }
    for comp in target.rsplit(|b| *b == b'/') {
        pending.push_front(comp.to_vec());
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn rejects_escaping_and_malformed_paths() {
        for bad in [
            &b""[..],
            b"/etc",
            b"a/../b",
            b"..",
            b"a//b",
            b"./a",
            b"a/",
            b"a\0b",
        ] {
            assert!(RelPath::new(bad.to_vec()).is_err(), "{bad:?}");
        }
        for good in [
            &b"a"[..],
            b"a b/c",
            b"-x",
            b"\xff\xfe",
            b"a\nb",
            b"..a",
            b"a..",
        ] {
            assert!(RelPath::new(good.to_vec()).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn non_utf8_names_survive_json() {
        let p = RelPath::new(b"d/\xff-\n'q".to_vec()).unwrap();
        let j = serde_json::to_string(&p).unwrap();
        let back: RelPath = serde_json::from_str(&j).unwrap();
        assert_eq!(p, back);
        let q = RelPath::new(b"plain/name".to_vec()).unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"plain/name\"");
    }

    #[test]
    fn symlink_escape_is_detected_lexically() {
        let l = RelPath::new(b"a/b/link".to_vec()).unwrap();
        assert!(symlink_stays_inside(&l, b"../x"));
        assert!(symlink_stays_inside(&l, b"../../x"));
        assert!(!symlink_stays_inside(&l, b"../../../x"));
        assert!(!symlink_stays_inside(&l, b"/etc/passwd"));
        assert!(symlink_stays_inside(&l, b"./c/../d"));
        let top = RelPath::new(b"link".to_vec()).unwrap();
        assert!(!symlink_stays_inside(&top, b".."));
    }

    fn links(pairs: &[(&str, &str)]) -> BTreeMap<RelPath, Vec<u8>> {
        pairs
            .iter()
            .map(|(l, t)| {
                (
                    RelPath::new(l.as_bytes().to_vec()).unwrap(),
                    t.as_bytes().to_vec(),
                )
            })
            .collect()
    }

    fn resolve(t: &BTreeMap<RelPath, Vec<u8>>, link: &RelPath) -> Resolution {
        resolve_symlink(link, &t[link], |p| t.get(p).cloned())
    }

    #[test]
    fn resolution_follows_other_links() {
        let rp = |s: &str| RelPath::new(s.as_bytes().to_vec()).unwrap();
        let t = links(&[("s", "."), ("x", "s/s/s/../../..")]);
        assert!(resolve(&t, &rp("s")).inside);
        let x = resolve(&t, &rp("x"));
        assert!(!x.inside);
        assert_eq!(x.via, vec![rp("s"), rp("s"), rp("s")]);
        // Without `s` the same target stays inside (taken literally).
        assert!(resolve(&links(&[("x", "s/s/s/../../..")]), &rp("x")).inside);
        let t = links(&[("d/up", ".."), ("d/y", "up/d/up/../..")]);
        assert!(!resolve(&t, &rp("d/y")).inside);
        let t = links(&[("a", "b"), ("b", "a")]);
        assert!(!resolve(&t, &rp("a")).inside, "a loop is refused");
        let t = links(&[("a", "/etc"), ("b", "a/..")]);
        assert!(!resolve(&t, &rp("b")).inside);
        assert!(resolve(&links(&[("d/e/l", "../../f")]), &rp("d/e/l")).inside);
    }
}
