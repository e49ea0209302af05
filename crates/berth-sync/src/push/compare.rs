//! The comparisons a push makes, each one merge of path-ordered streams: what to send and
//! delete (against the recorded remote manifest, or against git's HEAD), the remote manifest
//! after a round (from the remote's listing, or the recorded one updated with the sent
//! paths), and what still differs afterwards.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::SyncError;
use crate::manifest::{ContentHash, Entry, EntryKind, Filter};
use crate::path::RelPath;
use crate::spool::{Scratch, SortedFile, SortedWriter, zip_sorted};

/// A resumed push: local entries the recorded remote lacks or has with other content, and
/// remote paths that are gone locally or changed kind.
pub(super) fn against_remote(
    local: impl Iterator<Item = Result<Entry, SyncError>>,
    remote: impl Iterator<Item = Result<Entry, SyncError>>,
) -> Result<(Vec<Entry>, Vec<RelPath>), SyncError> {
    let (mut send, mut delete) = (Vec::new(), Vec::new());
    zip_sorted(local, remote, |l, r| {
        match (&l, &r) {
            (Some(l), r) if r.as_ref().is_none_or(|r| !r.same_content(l)) => send.push(l.clone()),
            _ => {}
        }
        if let Some(r) = r
            && l.as_ref().is_none_or(|l| l.kind != r.kind)
        {
            delete.push(r.path);
        }
        Ok(())
    })?;
    Ok((send, delete))
}

/// A full push of a git work tree over a checkout of HEAD: every directory (modes) and every
/// path git reports as differing from HEAD is sent; differing paths that are not local
/// directories are deleted first (a deleted or replaced tracked file).
pub(super) fn git_overlay(
    local: impl Iterator<Item = Result<Entry, SyncError>>,
    changed: Vec<RelPath>,
    filter: &Filter,
) -> Result<(Vec<Entry>, Vec<RelPath>), SyncError> {
    let changed_set: BTreeSet<&RelPath> = changed.iter().collect();
    let mut send = Vec::new();
    let mut changed_dirs = BTreeSet::new();
    for e in local {
        let e = e?;
        let is_changed = changed_set.contains(&e.path);
        if e.kind == EntryKind::Dir && is_changed {
            changed_dirs.insert(e.path.clone());
        }
        if e.kind == EntryKind::Dir || is_changed {
            send.push(e);
        }
    }
    let delete = changed
        .iter()
        .filter(|p| !changed_dirs.contains(*p) && !filter.is_excluded(p, false))
        .cloned()
        .collect();
    Ok((send, delete))
}

/// What still differs between the local manifest and the remote after a push, as far as a
/// listing can tell (kind, size, mode, link target): paths to delete and entries to resend.
pub(super) fn reconcile(
    local: impl Iterator<Item = Result<Entry, SyncError>>,
    remote: impl Iterator<Item = Result<Entry, SyncError>>,
) -> Result<(Vec<RelPath>, Vec<Entry>), SyncError> {
    let (mut delete, mut send) = (Vec::new(), Vec::new());
    zip_sorted(local, remote, |l, r| {
        reconcile_path(l.as_ref(), r.as_ref(), &mut delete, &mut send);
        Ok(())
    })?;
    Ok((delete, send))
}

/// [`reconcile`] for one path.
fn reconcile_path(
    local: Option<&Entry>,
    remote: Option<&Entry>,
    delete: &mut Vec<RelPath>,
    send: &mut Vec<Entry>,
) {
    if let Some(r) = remote {
        let stale = local.is_none_or(|l| {
            l.kind != r.kind || (l.kind == EntryKind::Symlink && l.target != r.target)
        });
        if stale {
            delete.push(r.path.clone());
        }
    }
    if let Some(l) = local {
        let differs = match remote {
            None => true,
            Some(r) if r.kind != l.kind => true,
            Some(r) => match l.kind {
                EntryKind::File => r.size != l.size || r.mode & 0o777 != l.mode & 0o777,
                EntryKind::Dir => r.mode & 0o777 != l.mode & 0o777,
                EntryKind::Symlink => r.target != l.target,
            },
        };
        if differs {
            send.push(l.clone());
        }
    }
}

/// The remote manifest from the remote's listing of itself after a round, and [`reconcile`],
/// in one merge of the baseline and the listing: out-of-scope entries dropped, file hashes
/// taken from the baseline where kind and size agree (the remote was just made equal to it).
pub(super) fn remote_from_listing(
    scratch: &Scratch,
    baseline: impl Iterator<Item = Result<Entry, SyncError>>,
    listed: impl Iterator<Item = Result<Entry, SyncError>>,
    filter: &Filter,
    taken_at_ns: i64,
) -> Result<(SortedFile, Vec<RelPath>, Vec<Entry>), SyncError> {
    let mut out = SortedWriter::create(&scratch.dir)?;
    let (mut delete, mut send) = (Vec::new(), Vec::new());
    zip_sorted(baseline, listed, |b, r| {
        let r = r
            .filter(|r| !filter.is_excluded(&r.path, r.kind == EntryKind::Dir))
            .map(|r| with_sent_hash(r, b.as_ref()));
        reconcile_path(b.as_ref(), r.as_ref(), &mut delete, &mut send);
        match r {
            Some(r) => out.push(&r),
            None => Ok(()),
        }
    })?;
    Ok((out.finish(taken_at_ns)?, delete, send))
}

/// The remote manifest after a round that listed only the sent paths, from the recorded one:
/// deleted paths (and what was below them) and the sent paths go, the sent paths come back as
/// listed (with the hashes of the bytes sent). Untouched entries keep what was recorded, as a
/// full listing would have given them (their hashes came from the same baseline or a
/// restore's hashing).
pub(super) fn merge_remote(
    scratch: &Scratch,
    recorded: &SortedFile,
    deleted: &[RelPath],
    sent: &BTreeMap<RelPath, Entry>,
    listed: impl Iterator<Item = Result<Entry, SyncError>>,
    taken_at_ns: i64,
) -> Result<SortedFile, SyncError> {
    let gone: BTreeSet<&RelPath> = deleted.iter().collect();
    let mut out = SortedWriter::create(&scratch.dir)?;
    zip_sorted(recorded.iter(), listed, |old, new| {
        if let Some(n) = new
            && let Some(s) = sent.get(&n.path)
        {
            return out.push(&with_sent_hash(n, Some(s)));
        }
        match old {
            Some(o)
                if !sent.contains_key(&o.path)
                    && !gone.contains(&o.path)
                    && !o.path.ancestors().any(|a| gone.contains(&a)) =>
            {
                out.push(&o)
            }
            _ => Ok(()),
        }
    })?;
    out.finish(taken_at_ns)
}

/// The baseline with the hashes of the bytes actually sent, where they differ from the ones
/// scanned (a file rewritten between scan and send). `before` and `after` are the sent
/// entries before and after sending, in the same order. Usually nothing differs and the
/// baseline is returned as it is.
pub(super) fn with_sent_hashes(
    scratch: &Scratch,
    baseline: SortedFile,
    before: &[Entry],
    after: &[Entry],
) -> Result<SortedFile, SyncError> {
    let changed: BTreeMap<&RelPath, ContentHash> = before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.kind == EntryKind::File && a.sha256 != b.sha256)
        .filter_map(|(_, a)| a.sha256.map(|h| (&a.path, h)))
        .collect();
    if changed.is_empty() {
        return Ok(baseline);
    }
    let mut out = SortedWriter::create(&scratch.dir)?;
    for e in baseline.iter() {
        let mut e = e?;
        if let Some(h) = changed.get(&e.path).filter(|_| e.kind == EntryKind::File) {
            e.sha256 = Some(*h);
        }
        out.push(&e)?;
    }
    out.finish(baseline.taken_at_ns)
}

/// A listed remote entry with the hash of the baseline's entry where kind and size agree (the
/// remote was just made equal to it); else unknown.
fn with_sent_hash(mut r: Entry, baseline: Option<&Entry>) -> Entry {
    if r.kind == EntryKind::File {
        r.sha256 = baseline
            .filter(|b| b.kind == EntryKind::File && b.size == r.size)
            .and_then(|b| b.sha256);
    }
    r
}
