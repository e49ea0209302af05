//! Tar streams: building the stream that carries entries out (streamed, memory bounded; the
//! caller decides on compression), and extracting a received stream into a staging directory,
//! refusing anything that is not a plain file with a safe relative name.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::error::SyncError;
use crate::manifest::{ContentHash, Entry, EntryKind};
use crate::path::RelPath;

/// Reads exactly `size` bytes from `inner` (zero-padding when the file shrank since it was
/// listed), hashing what it hands out, so the recorded hash is that of the bytes sent.
struct Exact<R> {
    inner: R,
    left: u64,
    hasher: Sha256,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.left.min(buf.len() as u64)).unwrap_or(buf.len());
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Counters of a built or received stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub files: u64,
    pub bytes: u64,
}

/// Write `entries` of the workspace at `root` as a tar stream into `out`. Returns the SHA-256
/// of every file's bytes as actually sent.
pub fn write_tar<'a, W: Write>(
    root: &Path,
    entries: impl IntoIterator<Item = &'a Entry>,
    out: W,
    progress: &dyn Fn(StreamStats),
) -> Result<(BTreeMap<RelPath, ContentHash>, StreamStats, W), SyncError> {
    let mut sent = BTreeMap::new();
    let (stats, out) = write_tar_each(
        root,
        entries.into_iter().map(|e| Ok(e.clone())),
        out,
        progress,
        &mut |e| {
            if let Some(h) = e.sha256.filter(|_| e.kind == EntryKind::File) {
                sent.insert(e.path, h);
            }
            Ok(())
        },
    )?;
    Ok((sent, stats, out))
}

/// Write `entries` as a tar stream into `out`, handing each entry on to `sent` once it is in
/// the stream, a file's with the SHA-256 of the bytes actually sent. Nothing is kept per
/// entry: memory does not grow with the number of entries.
pub fn write_tar_each<W: Write>(
    root: &Path,
    entries: impl IntoIterator<Item = Result<Entry, SyncError>>,
    out: W,
    progress: &dyn Fn(StreamStats),
    sent: &mut dyn FnMut(Entry) -> Result<(), SyncError>,
) -> Result<(StreamStats, W), SyncError> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut stats = StreamStats::default();
    let tar_err = |p: &RelPath, e: io::Error| SyncError::io("write a tar entry", p.under(root), e);
    for e in entries {
        let mut e = e?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode & 0o7777);
        h.set_mtime(u64::try_from(e.mtime_ns / 1_000_000_000).unwrap_or(0));
        h.set_uid(0);
        h.set_gid(0);
        match e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, e.path.as_path(), io::empty())
                    .map_err(|x| tar_err(&e.path, x))?;
            }
            EntryKind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                let target = e.target.as_ref().map(|t| t.0.as_slice()).unwrap_or(&[]);
                b.append_link(
                    &mut h,
                    e.path.as_path(),
                    Path::new(OsStr::from_bytes(target)),
                )
                .map_err(|x| tar_err(&e.path, x))?;
            }
            EntryKind::File => {
                let abs = e.path.under(root);
                let f = fs::File::open(&abs)
                    .map_err(|x| SyncError::io("open a file to send it", &abs, x))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(e.size);
                let mut r = Exact {
                    inner: f,
                    left: e.size,
                    hasher: Sha256::new(),
                };
                b.append_data(&mut h, e.path.as_path(), &mut r)
                    .map_err(|x| tar_err(&e.path, x))?;
                e.sha256 = Some(ContentHash::finish(r.hasher));
                stats.files += 1;
                stats.bytes += e.size;
                progress(stats);
            }
        }
        sent(e)?;
    }
    let out = b
        .into_inner()
        .map_err(|x| SyncError::io("finish a tar stream", root, x))?;
    Ok((stats, out))
}

/// A file extracted into staging.
#[derive(Debug, Clone)]
pub struct Staged {
    pub file: PathBuf,
    pub sha256: ContentHash,
    pub size: u64,
    pub mode: u32,
}

/// Extract a (decompressed) tar stream into `staging`, accepting only regular files whose
/// names are safe relative paths listed in `wanted`, each at most once. Directories are
/// ignored; symlinks, hard links, devices, fifos and anything else are refused. Staged files
/// get flat names (`f<N>`), so no member name is ever used as a local path.
pub fn extract_to_staging<R: Read>(
    reader: R,
    staging: &Path,
    wanted: &BTreeSet<RelPath>,
    progress: &dyn Fn(StreamStats),
) -> Result<(BTreeMap<RelPath, Staged>, StreamStats), SyncError> {
    let mut ar = tar::Archive::new(reader);
    let mut out: BTreeMap<RelPath, Staged> = BTreeMap::new();
    let mut stats = StreamStats::default();
    let entries = ar
        .entries()
        .map_err(|e| SyncError::io("read a tar stream", staging, e))?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| SyncError::io("read a tar stream", staging, e))?;
        let raw = entry.path_bytes().into_owned();
        let name = raw.strip_suffix(b"/").unwrap_or(&raw);
        if name.first() == Some(&b'/') {
            return Err(SyncError::unsafe_entry(&raw, "absolute path in tar stream"));
        }
        let rel = RelPath::from_dot_slash(name)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(SyncError::unsafe_entry(&raw, "link in tar stream"));
            }
            other => {
                return Err(SyncError::unsafe_entry(
                    &raw,
                    format!("unsupported tar entry type {other:?} (device, fifo or other)"),
                ));
            }
        }
        if !wanted.contains(&rel) {
            return Err(SyncError::unsafe_entry(
                &raw,
                "tar member that was not requested",
            ));
        }
        if out.contains_key(&rel) {
            return Err(SyncError::unsafe_entry(&raw, "duplicate tar member"));
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mtime = entry.header().mtime().ok();
        let file = staging.join(format!("f{n}"));
        let mut f = fs::File::options()
            .write(true)
            .create_new(true)
            .open(&file)
            .map_err(|e| SyncError::io("create a staged file", &file, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let k = entry
                .read(&mut buf)
                .map_err(|e| SyncError::io("read a tar member", &file, e))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            f.write_all(&buf[..k])
                .map_err(|e| SyncError::io("write a staged file", &file, e))?;
            size += k as u64;
            stats.bytes += k as u64;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| SyncError::io("set a staged file's mode", &file, e))?;
        if let Some(m) = mtime {
            let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(m));
        }
        stats.files += 1;
        progress(stats);
        out.insert(
            rel,
            Staged {
                file,
                sha256: ContentHash::finish(h),
                size,
                mode,
            },
        );
    }
    Ok((out, stats))
}
