//! The compact binary form of manifests in the local sync state. Read and written as streams
//! (no copy of the file in memory), about a third of the JSON's size, and several times
//! faster to load and save: a resumed push or a restore loads two manifests of the whole tree
//! and saves them again.
//!
//! An entry is `u32 path length, path, u8 kind, u32 mode, u64 size, i64 mtime (ns), u8 flags,
//! [32-byte SHA-256 if flag 1], [u32 target length, target if flag 2]`, little-endian. A
//! manifest is `i64 taken_at_ns, u64 count` and its entries in path order.

use std::io::{self, Read, Write};

use crate::manifest::{ContentHash, Entry, EntryKind, Manifest};
use crate::path::{RawBytes, RelPath};

/// Longest path or link target accepted when reading (Linux's PATH_MAX is 4 KiB).
const MAX_FIELD: u32 = 64 * 1024;

const HAS_HASH: u8 = 1;
const HAS_TARGET: u8 = 2;

fn kind_byte(k: EntryKind) -> u8 {
    match k {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
    }
}

fn invalid(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

/// Write `m` to `w`.
pub fn write_manifest<W: Write>(w: &mut W, m: &Manifest) -> io::Result<()> {
    w.write_all(&m.taken_at_ns.to_le_bytes())?;
    w.write_all(&(m.entries.len() as u64).to_le_bytes())?;
    for e in m.entries.values() {
        write_entry(w, e)?;
    }
    Ok(())
}

pub(crate) fn write_entry<W: Write>(w: &mut W, e: &Entry) -> io::Result<()> {
    let path = e.path.as_bytes();
    let len = u32::try_from(path.len()).map_err(|_| invalid("path too long"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(path)?;
    w.write_all(&[kind_byte(e.kind)])?;
    w.write_all(&e.mode.to_le_bytes())?;
    w.write_all(&e.size.to_le_bytes())?;
    w.write_all(&e.mtime_ns.to_le_bytes())?;
    let flags = if e.sha256.is_some() { HAS_HASH } else { 0 }
        | if e.target.is_some() { HAS_TARGET } else { 0 };
    w.write_all(&[flags])?;
    if let Some(h) = &e.sha256 {
        w.write_all(&h.0)?;
    }
    if let Some(t) = &e.target {
        let len = u32::try_from(t.0.len()).map_err(|_| invalid("link target too long"))?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(&t.0)?;
    }
    Ok(())
}

fn read_array<const N: usize, R: Read>(r: &mut R) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_field<R: Read>(r: &mut R, what: &str) -> io::Result<Vec<u8>> {
    let len = u32::from_le_bytes(read_array(r)?);
    if len > MAX_FIELD {
        return Err(invalid(format!("{what} of {len} bytes")));
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Read one entry written by [`write_entry`]. Its path is validated as when scanned.
pub(crate) fn read_entry<R: Read>(r: &mut R) -> io::Result<Entry> {
    let path = RelPath::new(read_field(r, "path")?).map_err(|e| invalid(e.to_string()))?;
    let kind = match read_array::<1, _>(r)?[0] {
        0 => EntryKind::File,
        1 => EntryKind::Dir,
        2 => EntryKind::Symlink,
        k => return Err(invalid(format!("unknown entry kind {k}"))),
    };
    let mode = u32::from_le_bytes(read_array(r)?);
    let size = u64::from_le_bytes(read_array(r)?);
    let mtime_ns = i64::from_le_bytes(read_array(r)?);
    let flags = read_array::<1, _>(r)?[0];
    if flags & !(HAS_HASH | HAS_TARGET) != 0 {
        return Err(invalid(format!("unknown entry flags {flags:#x}")));
    }
    let sha256 = if flags & HAS_HASH != 0 {
        Some(ContentHash(read_array(r)?))
    } else {
        None
    };
    let target = if flags & HAS_TARGET != 0 {
        Some(RawBytes(read_field(r, "link target")?))
    } else {
        None
    };
    Ok(Entry {
        path,
        kind,
        mode,
        size,
        mtime_ns,
        sha256,
        target,
    })
}

/// Read `count` entries written in path order, one at a time, refusing any out of order.
pub(crate) struct EntryReader<R> {
    r: R,
    left: u64,
    last: Option<RelPath>,
}

impl<R: Read> EntryReader<R> {
    pub(crate) fn new(r: R, count: u64) -> Self {
        Self {
            r,
            left: count,
            last: None,
        }
    }
}

impl<R: Read> Iterator for EntryReader<R> {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let e = match read_entry(&mut self.r) {
            Ok(e) => e,
            Err(e) => {
                self.left = 0;
                return Some(Err(e));
            }
        };
        if self.last.as_ref().is_some_and(|l| *l >= e.path) {
            self.left = 0;
            return Some(Err(invalid(format!("entry {} out of order", e.path))));
        }
        self.last = Some(e.path.clone());
        Some(Ok(e))
    }
}

/// Read a manifest written by [`write_manifest`]. Paths are validated as when scanned, and
/// must come in strictly increasing order.
pub fn read_manifest<R: Read>(r: &mut R) -> io::Result<Manifest> {
    let taken_at_ns = i64::from_le_bytes(read_array(r)?);
    let count = u64::from_le_bytes(read_array(r)?);
    // Collected in order, then built in one pass (no per-entry search of the map).
    let mut entries: Vec<(RelPath, Entry)> =
        Vec::with_capacity(usize::try_from(count.min(1 << 16)).unwrap_or(0));
    for e in EntryReader::new(r, count) {
        let e = e?;
        entries.push((e.path.clone(), e));
    }
    Ok(Manifest {
        taken_at_ns,
        entries: entries.into_iter().collect(),
    })
}

/// Read the `taken_at_ns` and entry count that start a manifest.
pub(crate) fn read_manifest_head<R: Read>(r: &mut R) -> io::Result<(i64, u64)> {
    let taken_at_ns = i64::from_le_bytes(read_array(r)?);
    let count = u64::from_le_bytes(read_array(r)?);
    Ok((taken_at_ns, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &[u8], kind: EntryKind) -> Entry {
        Entry {
            path: RelPath::new(p.to_vec()).unwrap(),
            kind,
            mode: 0o755,
            size: 12,
            mtime_ns: -5,
            sha256: None,
            target: None,
        }
    }

    #[test]
    fn manifests_round_trip_with_odd_names_hashes_and_targets() {
        let mut m = Manifest {
            taken_at_ns: 1_700_000_000_123_456_789,
            ..Manifest::default()
        };
        let mut f = entry(b"-we\xffird\nname 'q'", EntryKind::File);
        f.sha256 = Some(ContentHash::of(b"x"));
        let mut l = entry(b"dir/link", EntryKind::Symlink);
        l.target = Some(RawBytes(b"../t\xfe".to_vec()));
        for e in [f, l, entry(b"dir", EntryKind::Dir)] {
            m.entries.insert(e.path.clone(), e);
        }
        let mut buf = Vec::new();
        write_manifest(&mut buf, &m).unwrap();
        let back = read_manifest(&mut buf.as_slice()).unwrap();
        assert_eq!(back, m);
        // Every strict prefix is an error, never a shorter manifest.
        for cut in 0..buf.len() {
            assert!(read_manifest(&mut &buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn unsafe_paths_and_bad_order_are_refused() {
        let mut m = Manifest::default();
        let e = entry(b"a", EntryKind::File);
        m.entries.insert(e.path.clone(), e);
        let mut buf = Vec::new();
        write_manifest(&mut buf, &m).unwrap();
        // Rewrite the one-byte path `a` as `/`: absolute.
        let at = 8 + 8 + 4;
        buf[at] = b'/';
        assert!(read_manifest(&mut buf.as_slice()).is_err());
        // Two entries in the wrong order.
        let mut two = Vec::new();
        two.extend_from_slice(&0i64.to_le_bytes());
        two.extend_from_slice(&2u64.to_le_bytes());
        write_entry(&mut two, &entry(b"b", EntryKind::Dir)).unwrap();
        write_entry(&mut two, &entry(b"a", EntryKind::Dir)).unwrap();
        let err = read_manifest(&mut two.as_slice()).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
    }
}
