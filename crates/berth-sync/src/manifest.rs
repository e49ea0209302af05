//! Manifests: what a workspace holds (path, kind, mode, size, mtime, SHA-256), which paths are
//! in scope (`.berthignore`, configured excludes, git-ignored paths) and the walk that builds
//! one, hashing lazily.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::SyncError;
use crate::path::{RawBytes, RelPath};
use crate::spool::{Scratch, SortedFile, SortedWriter, Spool, zip_sorted};

/// Name of the per-workspace ignore file (gitignore syntax, at the workspace root).
pub const BERTHIGNORE: &str = ".berthignore";

/// A file whose mtime is this close to the moment its hash was taken may have been modified
/// again within the same timestamp tick; its hash is never reused (git's "racily clean" rule).
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// A file's SHA-256, held as its 32 bytes (a manifest keeps one per file) and written as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The hash a hasher has accumulated.
    pub fn finish(h: Sha256) -> Self {
        Self(h.finalize().into())
    }

    /// Parse 64 hex digits.
    pub fn from_hex(hex_digits: &[u8]) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(s.as_bytes())
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits of a SHA-256"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One path of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelPath,
    pub kind: EntryKind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    /// SHA-256 of a file's content; `None` when unknown (never for a scanned file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<ContentHash>,
    /// A symlink's target, as raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RawBytes>,
}

impl Entry {
    /// Same content as far as sync is concerned: kind, permission bits (not for symlinks),
    /// content hash or link target. An unknown hash is never the same as anything.
    pub fn same_content(&self, other: &Entry) -> bool {
        if self.kind != other.kind {
            return false;
        }
        match self.kind {
            EntryKind::Dir => self.mode & 0o777 == other.mode & 0o777,
            EntryKind::Symlink => self.target == other.target,
            EntryKind::File => {
                self.mode & 0o777 == other.mode & 0o777
                    && self.sha256.is_some()
                    && self.sha256 == other.sha256
            }
        }
    }

    /// Whether `self` has the same metadata as `old` and `old`'s hash may be reused.
    pub(crate) fn can_reuse_hash_of(&self, old: &Entry, old_taken_at_ns: i64) -> bool {
        self.kind == EntryKind::File
            && old.kind == EntryKind::File
            && old.sha256.is_some()
            && self.size == old.size
            && self.mtime_ns == old.mtime_ns
            && old.mtime_ns.saturating_add(RACY_WINDOW_NS) < old_taken_at_ns
    }
}

/// `Option<&Entry>` equality with [`Entry::same_content`]: both absent is equal.
pub fn same(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_content(b),
        _ => false,
    }
}

/// A workspace's entries at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ManifestRepr", into = "ManifestRepr")]
pub struct Manifest {
    /// When the entries were read (ns since the epoch, clock of the side that read them).
    pub taken_at_ns: i64,
    pub entries: BTreeMap<RelPath, Entry>,
}

#[derive(Serialize, Deserialize)]
struct ManifestRepr {
    taken_at_ns: i64,
    entries: Vec<Entry>,
}

impl From<ManifestRepr> for Manifest {
    fn from(r: ManifestRepr) -> Self {
        Self {
            taken_at_ns: r.taken_at_ns,
            entries: r.entries.into_iter().map(|e| (e.path.clone(), e)).collect(),
        }
    }
}

impl From<Manifest> for ManifestRepr {
    fn from(m: Manifest) -> Self {
        Self {
            taken_at_ns: m.taken_at_ns,
            entries: m.entries.into_values().collect(),
        }
    }
}

impl Manifest {
    pub fn get(&self, p: &RelPath) -> Option<&Entry> {
        self.entries.get(p)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Which paths are out of scope. `.git` (any component) always is.
#[derive(Debug, Clone)]
pub struct Filter {
    matcher: ignore::gitignore::Gitignore,
    /// Git-ignored paths (directories collapsed), when they are skipped.
    git_ignored: BTreeSet<RelPath>,
}

impl Filter {
    /// `.berthignore` at the workspace root plus `excludes` (gitignore syntax).
    pub fn new(root: &Path, excludes: &[String]) -> Result<Self, SyncError> {
        let mut b = ignore::gitignore::GitignoreBuilder::new(root);
        let file = root.join(BERTHIGNORE);
        if file.is_file()
            && let Some(err) = b.add(&file)
        {
            return Err(SyncError::Invalid {
                what: "ignore file".to_owned(),
                value: file.display().to_string(),
                reason: err.to_string(),
            });
        }
        for line in excludes {
            b.add_line(None, line).map_err(|e| SyncError::Invalid {
                what: "exclude pattern".to_owned(),
                value: line.clone(),
                reason: e.to_string(),
            })?;
        }
        let matcher = b.build().map_err(|e| SyncError::Invalid {
            what: "exclude patterns".to_owned(),
            value: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            matcher,
            git_ignored: BTreeSet::new(),
        })
    }

    /// Add git-ignored paths as printed by `git ls-files -z -o -i --exclude-standard
    /// --directory` (directories end with `/`).
    pub fn with_git_ignored(mut self, listing: &[u8]) -> Self {
        for rec in listing.split(|b| *b == 0) {
            let rec = rec.strip_suffix(b"/").unwrap_or(rec);
            if let Ok(p) = RelPath::new(rec.to_vec()) {
                self.git_ignored.insert(p);
            }
        }
        self
    }

    pub fn is_excluded(&self, p: &RelPath, is_dir: bool) -> bool {
        if p.components().any(|c| c == b".git") {
            return true;
        }
        if !self.git_ignored.is_empty() {
            // The path itself and every proper prefix ending before a `/`, without allocating.
            let b = p.as_bytes();
            let prefixes = b
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == b'/')
                .map(|(i, _)| &b[..i])
                .chain(std::iter::once(b));
            for prefix in prefixes {
                if self.git_ignored.contains(prefix) {
                    return true;
                }
            }
        }
        self.matcher
            .matched_path_or_any_parents(p.as_path(), is_dir)
            .is_ignore()
    }
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// SHA-256 of a file's content, and its length.
pub fn hash_file(path: &Path) -> Result<(ContentHash, u64), SyncError> {
    let mut f =
        fs::File::open(path).map_err(|e| SyncError::io("open a file to hash it", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| SyncError::io("read a file to hash it", path, e))?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((ContentHash::finish(h), n_total))
}

pub(crate) fn hash_bytes(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// What a scan found besides entries.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Fifos, sockets and devices: never synced.
    pub skipped_special: Vec<RelPath>,
}

/// Walk `root` into a manifest. Hashes are reused from `previous` when size and mtime match
/// and the previous hash was not racy.
pub fn scan(
    root: &Path,
    filter: &Filter,
    previous: Option<&Manifest>,
) -> Result<(Manifest, ScanReport), SyncError> {
    scan_with(root, filter, previous, true)
}

/// [`scan`], hashing only when `hash` is set. Without it, files whose hash cannot be reused
/// from `previous` keep `sha256: None` (a full push hashes the bytes it sends instead of
/// reading every file twice).
pub fn scan_with(
    root: &Path,
    filter: &Filter,
    previous: Option<&Manifest>,
    hash: bool,
) -> Result<(Manifest, ScanReport), SyncError> {
    let mut entries = BTreeMap::new();
    let (taken_at_ns, report) = scan_each(
        root,
        filter,
        |p| previous.and_then(|m| m.get(p).map(|old| (old.clone(), m.taken_at_ns))),
        hash,
        &mut |e| {
            entries.insert(e.path.clone(), e);
            Ok(())
        },
    )?;
    Ok((
        Manifest {
            taken_at_ns,
            entries,
        },
        report,
    ))
}

/// Directories read (on a few threads) before their entries are handed on: what a scan holds
/// at once is bounded by this many directories, not by the tree.
const SCAN_BATCH_DIRS: usize = 64;

/// Walk `root`, handing every entry in scope to `sink` (directories level by level, in no
/// particular order) and returning when the walk started. `previous(path)` gives the entry
/// recorded for a path and when it was recorded, whose hash is reused when size and mtime
/// match and it was not racy; other files are hashed when `hash` is set. Directories of one
/// depth are read on a few threads (the walk is mostly `getdents`/`statx` time), and files to
/// hash are hashed on a few threads.
pub fn scan_each(
    root: &Path,
    filter: &Filter,
    previous: impl Fn(&RelPath) -> Option<(Entry, i64)> + Sync,
    hash: bool,
    sink: &mut dyn FnMut(Entry) -> Result<(), SyncError>,
) -> Result<(i64, ScanReport), SyncError> {
    let taken_at_ns = now_ns();
    let mut report = ScanReport::default();
    let mut level: Vec<Option<RelPath>> = vec![None];
    while !level.is_empty() {
        let mut next = Vec::new();
        for batch in level.chunks(SCAN_BATCH_DIRS) {
            let mut entries = Vec::new();
            let mut to_hash = Vec::new();
            for dir in parallel_map(batch, 1, |dir| {
                read_dir_entries(root, dir.as_ref(), filter, &previous, hash)
            }) {
                let dir = dir?;
                report.skipped_special.extend(dir.special);
                to_hash.extend(dir.to_hash.into_iter().map(|i| i + entries.len()));
                next.extend(dir.subdirs.into_iter().map(Some));
                entries.extend(dir.entries);
            }
            let hashes = parallel_map(&to_hash, 16, |i| {
                hash_file(&entries[*i].path.under(root)).map(|(h, _)| h)
            });
            for (i, h) in to_hash.into_iter().zip(hashes) {
                entries[i].sha256 = Some(h?);
            }
            for e in entries {
                sink(e)?;
            }
        }
        level = next;
    }
    Ok((taken_at_ns, report))
}

/// Files hashed together (on a few threads) by [`scan_sorted`], and most entries it holds
/// while they are hashed.
const HASH_BATCH: usize = 256;
const PENDING_MAX: usize = 4096;

/// [`scan_each`] into a sorted file next to the sync state (`scratch`), with hashes reused from
/// `previous` (read alongside, in path order) where size and mtime prove them, and the other
/// files hashed when `hash` is set. Memory is bounded by the spool and the batches, not by
/// the tree.
pub fn scan_sorted(
    root: &Path,
    filter: &Filter,
    scratch: &Scratch,
    previous: Option<&SortedFile>,
    hash: bool,
) -> Result<(SortedFile, ScanReport), SyncError> {
    let mut spool = Spool::new(scratch);
    let (taken_at_ns, report) = scan_each(root, filter, |_| None, false, &mut |e| spool.push(e))?;
    let mut out = SortedWriter::create(&scratch.dir)?;
    let prev_at = previous.map_or(0, |p| p.taken_at_ns);
    let mut pending: Vec<Entry> = Vec::new();
    let mut to_hash: Vec<usize> = Vec::new();
    let flush = |pending: &mut Vec<Entry>,
                 to_hash: &mut Vec<usize>,
                 out: &mut SortedWriter|
     -> Result<(), SyncError> {
        let hashes = parallel_map(to_hash, 16, |i| {
            hash_file(&pending[*i].path.under(root)).map(|(h, _)| h)
        });
        for (i, h) in to_hash.drain(..).zip(hashes) {
            pending[i].sha256 = Some(h?);
        }
        pending.drain(..).try_for_each(|e| out.push(&e))
    };
    zip_sorted(
        spool.finish()?,
        previous.into_iter().flat_map(SortedFile::iter),
        |cur, old| {
            let Some(mut e) = cur else { return Ok(()) };
            if e.kind == EntryKind::File {
                match old.filter(|o| e.can_reuse_hash_of(o, prev_at)) {
                    Some(o) => e.sha256 = o.sha256,
                    None if hash => to_hash.push(pending.len()),
                    None => {}
                }
            }
            pending.push(e);
            if to_hash.len() >= HASH_BATCH || pending.len() >= PENDING_MAX {
                flush(&mut pending, &mut to_hash, &mut out)?;
            }
            Ok(())
        },
    )?;
    flush(&mut pending, &mut to_hash, &mut out)?;
    Ok((out.finish(taken_at_ns)?, report))
}

/// `f` over `items` on up to 4 threads, each given at least `per_worker` items (in place when
/// there is little to share), results in input order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    per_worker: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 4)
        .min(items.len().div_ceil(per_worker.max(1)));
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// What one directory of a scan holds.
struct DirScan {
    entries: Vec<Entry>,
    subdirs: Vec<RelPath>,
    special: Vec<RelPath>,
    /// Indices into `entries` of the files to hash.
    to_hash: Vec<usize>,
}

fn read_dir_entries(
    root: &Path,
    dir: Option<&RelPath>,
    filter: &Filter,
    previous: &(impl Fn(&RelPath) -> Option<(Entry, i64)> + Sync),
    hash: bool,
) -> Result<DirScan, SyncError> {
    let mut out = DirScan {
        entries: Vec::new(),
        subdirs: Vec::new(),
        special: Vec::new(),
        to_hash: Vec::new(),
    };
    let abs = match dir {
        Some(d) => d.under(root),
        None => root.to_path_buf(),
    };
    let rd = fs::read_dir(&abs).map_err(|e| SyncError::io("list a directory", &abs, e))?;
    for item in rd {
        let item = item.map_err(|e| SyncError::io("list a directory", &abs, e))?;
        let name = item.file_name();
        let rel = match dir {
            Some(d) => d.join(name.as_bytes())?,
            None => RelPath::new(name.as_bytes().to_vec())?,
        };
        // Relative to the open directory (no walk of the whole path); never follows links.
        let md = item
            .metadata()
            .map_err(|e| SyncError::io("stat a workspace entry", item.path(), e))?;
        let ft = md.file_type();
        let kind = if ft.is_file() {
            EntryKind::File
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            if !filter.is_excluded(&rel, false) {
                out.special.push(rel);
            }
            continue;
        };
        if filter.is_excluded(&rel, kind == EntryKind::Dir) {
            continue;
        }
        let mut e = Entry {
            path: rel.clone(),
            kind,
            mode: md.mode() & 0o7777,
            size: if kind == EntryKind::Dir { 0 } else { md.size() },
            mtime_ns: mtime_ns(&md),
            sha256: None,
            target: None,
        };
        match kind {
            EntryKind::Dir => out.subdirs.push(rel),
            EntryKind::Symlink => {
                let path = item.path();
                let t =
                    fs::read_link(&path).map_err(|e| SyncError::io("read a symlink", &path, e))?;
                e.target = Some(RawBytes(t.as_os_str().as_bytes().to_vec()));
            }
            EntryKind::File => {
                let reuse = previous(&rel).filter(|(old, at)| e.can_reuse_hash_of(old, *at));
                match reuse {
                    Some((old, _)) => e.sha256 = old.sha256,
                    None if hash => out.to_hash.push(out.entries.len()),
                    None => {}
                }
            }
        }
        out.entries.push(e);
    }
    Ok(out)
}

/// A file's modification time in nanoseconds since the epoch, as entries record it.
pub(crate) fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt as _;
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn scan_skips_git_and_ignored_and_keeps_odd_names() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join(".git/objects")).unwrap();
        fs::write(r.join(".git/HEAD"), "x").unwrap();
        fs::write(r.join(BERTHIGNORE), "*.log\nbuild/\n").unwrap();
        fs::create_dir(r.join("build")).unwrap();
        fs::write(r.join("build/out"), "o").unwrap();
        fs::write(r.join("x.log"), "l").unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"-we\xffird\nname 'q'");
        fs::write(r.join(odd), "odd").unwrap();
        std::os::unix::fs::symlink("target", r.join("ln")).unwrap();
        let f = Filter::new(r, &["secret*".to_owned()]).unwrap();
        fs::write(r.join("secret.txt"), "s").unwrap();
        let (m, _) = scan(r, &f, None).unwrap();
        let names: Vec<String> = m.entries.keys().map(|p| p.to_string()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let odd_rel = RelPath::new(odd.as_bytes().to_vec()).unwrap();
        assert_eq!(
            m.get(&odd_rel).unwrap().sha256,
            Some(ContentHash::of(b"odd"))
        );
        let ln = m.get(&RelPath::new(b"ln".to_vec()).unwrap()).unwrap();
        assert_eq!(ln.target, Some(RawBytes(b"target".to_vec())));
        let json = serde_json::to_string(&m).unwrap();
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn hashes_are_reused_only_for_old_unchanged_files() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let p = r.join("f");
        fs::write(&p, "aaaa").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let f = Filter::new(r, &[]).unwrap();
        let (mut m, _) = scan(r, &f, None).unwrap();
        let rel = RelPath::new(b"f".to_vec()).unwrap();
        // Poison the stored hash: a reuse is visible as the poisoned value coming back.
        let poison = ContentHash([7; 32]);
        m.entries.get_mut(&rel).unwrap().sha256 = Some(poison);
        let (m2, _) = scan(r, &f, Some(&m)).unwrap();
        assert_eq!(m2.get(&rel).unwrap().sha256, Some(poison));
        // Same size, new mtime: re-hashed.
        fs::write(&p, "bbbb").unwrap();
        let (m3, _) = scan(r, &f, Some(&m)).unwrap();
        assert_eq!(m3.get(&rel).unwrap().sha256, Some(ContentHash::of(b"bbbb")));
    }
}
