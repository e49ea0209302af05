//! Manifests larger than memory. A [`Spool`] takes entries in any order and hands them back
//! sorted by path, keeping at most [`SPOOL_ENTRIES`] in memory and spilling sorted runs to
//! unlinked files in the sync state directory (next to the workspace, never in `/tmp`);
//! a [`SortedFile`] is a manifest written to such a file in path order, read back as often as
//! needed. Push and restore combine them with merge-joins ([`zip_sorted`]), so their memory
//! is bounded by the spool size and the size of the change, not by the size of the tree.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::{EntryReader, write_entry};
use crate::error::SyncError;
use crate::manifest::{Entry, Manifest};
use crate::path::RelPath;

/// Entries a spool holds in memory before it writes a sorted run to disk (a few MB; a tree
/// this small never touches the disk).
pub const SPOOL_ENTRIES: usize = 16 * 1024;

const READ_BUF: usize = 32 * 1024;

/// Name prefix of spool files (each unlinked as soon as it is open).
pub(crate) const SPOOL_PREFIX: &str = ".spool-";

/// Where spools and sorted files go (the sync state directory) and how many entries a spool
/// holds in memory.
#[derive(Debug, Clone)]
pub struct Scratch {
    pub dir: PathBuf,
    pub spool_entries: usize,
}

/// Reads the byte range `[pos, end)` of a shared file with positioned reads: several readers
/// of one file never disturb each other.
struct RangeReader {
    file: Arc<fs::File>,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sorted manifest file is shorter than recorded",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Entries in path order, encoded as in the sync state, in (a byte range of) a file.
#[derive(Clone)]
pub struct SortedFile {
    file: Arc<fs::File>,
    /// For error messages: where the file was created (it is unlinked at once).
    origin: PathBuf,
    start: u64,
    len: u64,
    pub count: u64,
    pub taken_at_ns: i64,
}

impl std::fmt::Debug for SortedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedFile")
            .field("origin", &self.origin)
            .field("count", &self.count)
            .field("bytes", &self.len)
            .finish_non_exhaustive()
    }
}

impl SortedFile {
    /// A manifest section of an open state file (`[start, start + len)`, `count` entries).
    pub(crate) fn section(
        file: Arc<fs::File>,
        origin: PathBuf,
        start: u64,
        len: u64,
        count: u64,
        taken_at_ns: i64,
    ) -> Self {
        Self {
            file,
            origin,
            start,
            len,
            count,
            taken_at_ns,
        }
    }

    /// The entries, in path order (each checked as it is read).
    pub fn iter(&self) -> impl Iterator<Item = Result<Entry, SyncError>> + Send + 'static {
        let r = BufReader::with_capacity(
            READ_BUF,
            RangeReader {
                file: self.file.clone(),
                pos: self.start,
                end: self.start + self.len,
            },
        );
        let origin = self.origin.clone();
        EntryReader::new(r, self.count)
            .map(move |e| e.map_err(|e| SyncError::io("read a sorted manifest", &origin, e)))
    }

    /// Copy the encoded entries (without count or time) into `w`.
    pub(crate) fn copy_entries_to<W: Write>(&self, w: &mut W) -> io::Result<u64> {
        let mut r = RangeReader {
            file: self.file.clone(),
            pos: self.start,
            end: self.start + self.len,
        };
        io::copy(&mut r, w)
    }

    /// The whole manifest in memory (for the rare paths that need random access).
    pub fn to_manifest(&self) -> Result<Manifest, SyncError> {
        let mut m = Manifest {
            taken_at_ns: self.taken_at_ns,
            ..Manifest::default()
        };
        for e in self.iter() {
            let e = e?;
            m.entries.insert(e.path.clone(), e);
        }
        Ok(m)
    }

    /// A manifest held in memory written out as a sorted file.
    pub fn from_manifest(dir: &Path, m: &Manifest) -> Result<Self, SyncError> {
        let mut w = SortedWriter::create(dir)?;
        for e in m.entries.values() {
            w.push(e)?;
        }
        w.finish(m.taken_at_ns)
    }
}

/// Writes entries, which must come in strictly increasing path order, to an unlinked file.
pub struct SortedWriter {
    w: BufWriter<fs::File>,
    file: Arc<fs::File>,
    origin: PathBuf,
    count: u64,
    len: u64,
    last: Option<RelPath>,
}

/// A file in `dir` that disappears with its last handle (unlinked as soon as it is open).
fn unlinked_file(dir: &Path) -> Result<(fs::File, PathBuf), SyncError> {
    let p = dir.join(format!("{SPOOL_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let f = fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(|e| SyncError::io("create a sorted manifest file", &p, e))?;
    fs::remove_file(&p).map_err(|e| SyncError::io("unlink a sorted manifest file", &p, e))?;
    Ok((f, p))
}

impl SortedWriter {
    pub fn create(dir: &Path) -> Result<Self, SyncError> {
        let (f, origin) = unlinked_file(dir)?;
        let writer = f
            .try_clone()
            .map_err(|e| SyncError::io("open a sorted manifest file", &origin, e))?;
        Ok(Self {
            w: BufWriter::with_capacity(64 * 1024, writer),
            file: Arc::new(f),
            origin,
            count: 0,
            len: 0,
            last: None,
        })
    }

    pub fn push(&mut self, e: &Entry) -> Result<(), SyncError> {
        if self.last.as_ref().is_some_and(|l| *l >= e.path) {
            return Err(SyncError::Invalid {
                what: "manifest".to_owned(),
                value: e.path.to_string(),
                reason: "listed twice or out of order".to_owned(),
            });
        }
        let mut counted = Counted {
            w: &mut self.w,
            n: 0,
        };
        write_entry(&mut counted, e)
            .map_err(|x| SyncError::io("write a sorted manifest", &self.origin, x))?;
        self.len += counted.n;
        self.count += 1;
        self.last = Some(e.path.clone());
        Ok(())
    }

    pub fn finish(mut self, taken_at_ns: i64) -> Result<SortedFile, SyncError> {
        self.w
            .flush()
            .map_err(|x| SyncError::io("write a sorted manifest", &self.origin, x))?;
        Ok(SortedFile {
            file: self.file,
            origin: self.origin,
            start: 0,
            len: self.len,
            count: self.count,
            taken_at_ns,
        })
    }
}

struct Counted<'a, W> {
    w: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Takes entries in any order; [`Spool::finish`] gives them back in path order.
pub struct Spool {
    dir: PathBuf,
    buf: Vec<Entry>,
    runs: Vec<SortedFile>,
    limit: usize,
}

impl Spool {
    pub fn new(scratch: &Scratch) -> Self {
        Self::with_limit(&scratch.dir, scratch.spool_entries)
    }

    /// A spool that keeps at most `limit` entries in memory.
    pub fn with_limit(dir: &Path, limit: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            buf: Vec::new(),
            runs: Vec::new(),
            limit: limit.max(1),
        }
    }

    pub fn push(&mut self, e: Entry) -> Result<(), SyncError> {
        self.buf.push(e);
        if self.buf.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), SyncError> {
        self.buf.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let mut w = SortedWriter::create(&self.dir)?;
        for e in self.buf.drain(..) {
            w.push(&e)?;
        }
        self.runs.push(w.finish(0)?);
        // Give the memory back: a spill means the tree is large.
        self.buf.shrink_to(self.limit);
        Ok(())
    }

    /// The entries in path order. Two entries with one path are an error when read.
    pub fn finish(mut self) -> Result<Sorted, SyncError> {
        if self.runs.is_empty() {
            self.buf.sort_unstable_by(|a, b| a.path.cmp(&b.path));
            if let Some(w) = self.buf.windows(2).find(|w| w[0].path == w[1].path) {
                return Err(twice(&w[0].path));
            }
            return Ok(Sorted {
                inner: SortedInner::Memory(self.buf.into_iter()),
            });
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        let mut iters: Vec<Box<dyn Iterator<Item = Result<Entry, SyncError>> + Send>> =
            self.runs.iter().map(|r| Box::new(r.iter()) as _).collect();
        let mut heads = Vec::with_capacity(iters.len());
        let mut heap = BinaryHeap::new();
        for (i, it) in iters.iter_mut().enumerate() {
            let head = it.next().transpose()?;
            if let Some(e) = &head {
                heap.push(Reverse((e.path.clone(), i)));
            }
            heads.push(head);
        }
        Ok(Sorted {
            inner: SortedInner::Merge {
                iters,
                heads,
                heap,
                last: None,
            },
        })
    }
}

fn twice(p: &RelPath) -> SyncError {
    SyncError::Invalid {
        what: "manifest".to_owned(),
        value: p.to_string(),
        reason: "listed twice".to_owned(),
    }
}

/// The entries of a [`Spool`], in path order.
pub struct Sorted {
    inner: SortedInner,
}

type RunIter = Box<dyn Iterator<Item = Result<Entry, SyncError>> + Send>;

enum SortedInner {
    Memory(std::vec::IntoIter<Entry>),
    Merge {
        iters: Vec<RunIter>,
        heads: Vec<Option<Entry>>,
        heap: BinaryHeap<Reverse<(RelPath, usize)>>,
        last: Option<RelPath>,
    },
}

impl Iterator for Sorted {
    type Item = Result<Entry, SyncError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            SortedInner::Memory(it) => it.next().map(Ok),
            SortedInner::Merge {
                iters,
                heads,
                heap,
                last,
            } => {
                let Reverse((_, i)) = heap.pop()?;
                let e = heads[i].take()?;
                match iters[i].next().transpose() {
                    Ok(Some(n)) => {
                        heap.push(Reverse((n.path.clone(), i)));
                        heads[i] = Some(n);
                    }
                    Ok(None) => {}
                    Err(err) => {
                        heap.clear();
                        return Some(Err(err));
                    }
                }
                if last.as_ref() == Some(&e.path) {
                    heap.clear();
                    return Some(Err(twice(&e.path)));
                }
                *last = Some(e.path.clone());
                Some(Ok(e))
            }
        }
    }
}

/// A path-ordered entry stream with its next entry read ahead.
pub struct Cursor<I> {
    it: I,
    head: Option<Entry>,
}

impl<I: Iterator<Item = Result<Entry, SyncError>>> Cursor<I> {
    pub fn new(mut it: I) -> Result<Self, SyncError> {
        let head = it.next().transpose()?;
        Ok(Self { it, head })
    }

    /// The path of the next entry.
    pub fn peek(&self) -> Option<&RelPath> {
        self.head.as_ref().map(|e| &e.path)
    }

    /// The next entry when it is at `p`.
    pub fn take(&mut self, p: &RelPath) -> Result<Option<Entry>, SyncError> {
        if self.peek() != Some(p) {
            return Ok(None);
        }
        let e = self.head.take();
        self.head = self.it.next().transpose()?;
        Ok(e)
    }
}

/// The smallest next path of `cursors`.
pub fn next_path(peeks: &[Option<&RelPath>]) -> Option<RelPath> {
    peeks.iter().flatten().min().map(|p| (*p).clone())
}

/// Walk two path-ordered entry streams together: `f` is called once per path present in
/// either, with each side's entry.
pub fn zip_sorted<A, B>(
    a: A,
    b: B,
    mut f: impl FnMut(Option<Entry>, Option<Entry>) -> Result<(), SyncError>,
) -> Result<(), SyncError>
where
    A: IntoIterator<Item = Result<Entry, SyncError>>,
    B: IntoIterator<Item = Result<Entry, SyncError>>,
{
    let (mut a, mut b) = (Cursor::new(a.into_iter())?, Cursor::new(b.into_iter())?);
    while let Some(p) = next_path(&[a.peek(), b.peek()]) {
        let x = a.take(&p)?;
        let y = b.take(&p)?;
        f(x, y)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::EntryKind;

    fn entry(p: &str) -> Entry {
        Entry {
            path: RelPath::new(p.as_bytes().to_vec()).unwrap(),
            kind: EntryKind::File,
            mode: 0o644,
            size: p.len() as u64,
            mtime_ns: 1,
            sha256: None,
            target: None,
        }
    }

    fn names(it: impl Iterator<Item = Result<Entry, SyncError>>) -> Vec<String> {
        it.map(|e| e.unwrap().path.to_string()).collect()
    }

    #[test]
    fn a_spool_sorts_across_spilled_runs_like_in_memory() {
        let d = tempfile::tempdir().unwrap();
        // Bytewise order, with `/`, `-` and `.` around a directory name.
        let mut input: Vec<String> = (0..1000)
            .map(|i| format!("d{}/{}", i % 7, (i * 7919) % 1000))
            .collect();
        input.extend(["a", "a-b", "a.txt", "a/x", "a0"].map(str::to_owned));
        let mut expected = input.clone();
        expected.sort();
        for limit in [1, 3, 64, 100_000] {
            let mut s = Spool::with_limit(d.path(), limit);
            for p in &input {
                s.push(entry(p)).unwrap();
            }
            assert_eq!(names(s.finish().unwrap()), expected, "limit {limit}");
        }
        // Nothing is left behind in the directory.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn duplicates_are_refused_in_memory_and_on_disk() {
        let d = tempfile::tempdir().unwrap();
        for limit in [2, 100] {
            let mut s = Spool::with_limit(d.path(), limit);
            for p in ["b", "a", "c", "a"] {
                s.push(entry(p)).unwrap();
            }
            let r: Result<Vec<_>, _> = s.finish().and_then(|s| s.collect());
            let err = r.unwrap_err().to_string();
            assert!(err.contains("listed twice"), "limit {limit}: {err}");
        }
        let mut w = SortedWriter::create(d.path()).unwrap();
        w.push(&entry("b")).unwrap();
        assert!(w.push(&entry("a")).is_err());
    }

    #[test]
    fn sorted_files_read_back_and_zip() {
        let d = tempfile::tempdir().unwrap();
        let mut m = Manifest::default();
        for p in ["a", "b/c", "b/d"] {
            m.entries
                .insert(RelPath::new(p.as_bytes().to_vec()).unwrap(), entry(p));
        }
        m.taken_at_ns = 42;
        let f = SortedFile::from_manifest(d.path(), &m).unwrap();
        assert_eq!(f.to_manifest().unwrap(), m);
        // Two readers of one file at once.
        let mut pairs = Vec::new();
        let other: Vec<_> = ["b/c", "z"].iter().map(|p| Ok(entry(p))).collect();
        zip_sorted(f.iter(), other, |x, y| {
            pairs.push((x.map(|e| e.path.to_string()), y.map(|e| e.path.to_string())));
            Ok(())
        })
        .unwrap();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            pairs,
            vec![
                (s("a"), None),
                (s("b/c"), s("b/c")),
                (s("b/d"), None),
                (None, s("z"))
            ]
        );
        let mut buf = Vec::new();
        f.copy_entries_to(&mut buf).unwrap();
        assert_eq!(buf.len() as u64, f.len);
    }
}
