//! Sync back: bring a remote copy's changes into the local workspace without ever losing a
//! local edit.
//!
//! Under the workspace lock (stale staging of a crashed restore is removed first): the remote
//! lists itself (while the local side is scanned), hashes only files whose size/mtime differ
//! from the recorded remote manifest, and sends the files that are needed in one tar stream
//! into a staging directory next to the workspace. These steps run on the control shell
//! (no exec channel) unless the data is large: then the file list and the stream use a channel. Then, per path, a three-way decision against the baseline recorded at push:
//! remote-only changes are applied (renames), local-only changes kept, changes on both sides
//! to different content are conflicts (local kept, remote beside it as `<path>.berth-remote`,
//! or `<path>.berth-remote.<n>` when that name is taken: a copy never replaces a file).
//! Symlinks are judged against the tree as it will be after the restore, following the other
//! links in it ([`crate::path::resolve_symlink`]): none may resolve outside the workspace.
//! Remote commits arrive as `refs/berth/runs/<run>`; the local branch is fast-forwarded with a
//! compare-and-swap only when local HEAD has not moved.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use berth_exec::shell::quote;
use berth_exec::{ExecRequest, Transport};

use crate::archive::{Staged, extract_to_staging};
use crate::error::{SyncError, blocking};
use crate::git;
use crate::manifest::{
    ContentHash, Entry, EntryKind, Filter, Manifest, mtime_ns, same, scan_sorted,
};
use crate::path::{RelPath, resolve_symlink, symlink_stays_inside};
use crate::progress::{Phase, reporter};
use crate::push::{canonical, filter_for_listing};
use crate::remote::{
    RemoteSpec, cd_ws, embedded, exec_into, link_is_local, listing_into_spool, listing_script,
    marker_script, maybe_gunzip, nul_list, run_collect, spool_listing, step, validate_id,
};
use crate::spool::{Cursor, Scratch, SortedFile, SortedWriter, next_path, zip_sorted};
use crate::state::{StateDir, SyncOptions};

/// Suffix of the remote version written beside a conflicting local path.
pub const REMOTE_SUFFIX: &str = ".berth-remote";

/// What happened to the local branch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum GitRestore {
    /// Not a git work tree.
    NotGit,
    /// The remote made no commits.
    Unchanged,
    /// Local HEAD had not moved: the branch (or detached HEAD) now points at the remote head.
    FastForwarded { from: String, to: String },
    /// Local HEAD moved during the run (or the remote rewrote history): the remote head is
    /// left at `ref_name` for the user.
    RefKept { ref_name: String, head: String },
}

/// Where the remote version of a conflicting path was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteCopy {
    /// The conflicting path (the local version is kept there).
    pub path: RelPath,
    /// The new file or symlink holding the remote version.
    pub copy: RelPath,
}

/// A remote entry that was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    pub path: RelPath,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// Remote-only changes written locally (created or replaced entries).
    pub applied: Vec<RelPath>,
    /// Remote deletions applied locally.
    pub deleted: Vec<RelPath>,
    /// Paths changed on both sides to different content (or whose remote change could not be
    /// applied without touching a local change). The local version is kept.
    pub conflicts: Vec<RelPath>,
    /// The remote versions written beside conflicting paths, each under a name that was free
    /// (`<path>.berth-remote`, else `<path>.berth-remote.1`, …): never over an existing file.
    pub remote_copies: Vec<RemoteCopy>,
    /// Paths changed only locally during the run, kept.
    pub kept_local: Vec<RelPath>,
    /// Remote entries refused (devices, fifos, symlinks escaping the workspace).
    pub rejected: Vec<Rejected>,
    pub git: GitRestore,
    /// Files received and their bytes (uncompressed).
    pub files: u64,
    pub bytes: u64,
}

/// Per-path decision of the three-way merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed remotely (or both sides made the same change).
    Keep,
    /// Changed only locally.
    KeepLocal,
    /// Changed only remotely.
    ApplyRemote,
    /// Changed on both sides to different content.
    Conflict,
}

/// The three-way decision for one path from its baseline, local and remote states.
pub fn decide(base: Option<&Entry>, local: Option<&Entry>, remote: Option<&Entry>) -> Decision {
    let lc = !same(local, base);
    let rc = !same(remote, base);
    match (lc, rc) {
        (_, false) if lc => Decision::KeepLocal,
        (_, false) => Decision::Keep,
        (false, true) => Decision::ApplyRemote,
        (true, true) if same(local, remote) => Decision::Keep,
        (true, true) => Decision::Conflict,
    }
}

/// Restore the remote copy of `spec` into `ws` after run `run_id`.
pub async fn restore(
    t: &dyn Transport,
    ws: &Path,
    spec: &RemoteSpec,
    run_id: &str,
    opts: &SyncOptions,
) -> Result<RestoreReport, SyncError> {
    validate_id("run id", run_id)?;
    let ws = canonical(ws)?;
    let sd = StateDir::for_workspace(&ws, opts)?;
    let _lock = sd.lock().await?;
    // The recorded manifests stay on disk and are read as streams alongside the new ones:
    // memory is bounded by the spools and the size of the change, not by the tree.
    let st = {
        let (sd, scope) = (sd.clone(), spec.scope.clone());
        blocking("load the sync state", move || sd.open(&scope)).await?
    };
    let mut st = st.ok_or_else(|| SyncError::NoBaseline {
        scope: spec.scope.clone(),
    })?;
    let is_git = st.git.is_some();
    let env = t.describe();

    // 1. The remote lists itself.
    let script = format!(
        "{}{}{}",
        cd_ws(spec),
        marker_script(spec),
        listing_script(is_git, is_git && !opts.sync_ignored)
    );
    let what = "list the remote workspace";
    let list_remote = async {
        let scratch = sd.scratch();
        // A tree that fits in a spool lists itself on the control shell when there is one (no
        // exec channel; the output, ~100 bytes per entry, is held in memory); a larger one, or
        // a listing too large for a step's output, streams through its own channel into a
        // spool.
        if st.remote.count <= scratch.spool_entries as u64 {
            let listed = step(t, &script).await?;
            if !listed.stdout_truncated {
                let listed = listed.check(&env, what)?;
                let env = env.clone();
                return blocking(what, move || {
                    listing_into_spool(&env, &mut &listed.stdout[..], &scratch)
                })
                .await;
            }
        }
        let consume = spool_listing(env.clone(), scratch);
        exec_into(t, ExecRequest::new(script.clone()), what, consume).await
    };
    // The local side, read while the remote lists itself (on a fresh connection: connect,
    // authenticate, start the control shell). Edits made after this scan are caught by the
    // last check before each write.
    let scan_local = async {
        let lfilter = crate::push::local_filter(&ws, opts, is_git).await?;
        let (ws, scratch, recorded) = (ws.clone(), sd.scratch(), st.local.clone());
        blocking("scan the workspace", move || {
            scan_sorted(&ws, &lfilter, &scratch, Some(&recorded), true)
        })
        .await
    };
    let (listing, scanned) = tokio::join!(list_remote, scan_local);
    let (local, _) = scanned?;
    let (listing, listed) = listing?;
    // A copy that is not the one pushed (wiped, recreated, re-pushed from elsewhere) would
    // look like "the remote deleted everything": refuse it rather than apply that.
    let expected = format!(
        "{}:{}",
        st.state_id,
        listing.ws_id.as_deref().unwrap_or_default()
    );
    if listing.marker.as_deref() != Some(expected.as_str()) {
        return Err(SyncError::Remote {
            env,
            what: "verify the remote workspace before restoring".to_owned(),
            detail: "the remote copy is not the one this workspace pushed (removed, recreated or \
                     overwritten); nothing was changed locally"
                .to_owned(),
        });
    }
    let rfilter = filter_for_listing(&ws, opts, &listing)?;
    let mut rejected = Vec::new();
    for p in &listing.special {
        if !rfilter.is_excluded(p, false) {
            rejected.push(Rejected {
                path: p.clone(),
                reason: "not a regular file, directory or symlink".to_owned(),
            });
        }
    }
    // The listing, against the recorded remote manifest, becomes the remote manifest: out of
    // scope and refused entries dropped, hashes reused where size/mtime prove them.
    let RemoteRead {
        manifest: remote,
        need_hash,
        need_bytes,
        refused,
    } = {
        let (scratch, recorded) = (sd.scratch(), st.remote.clone());
        let taken_at_ns = listing.taken_at_ns;
        blocking("read the remote listing", move || {
            remote_manifest(&scratch, listed, &recorded, &rfilter, taken_at_ns)
        })
        .await?
    };
    rejected.extend(refused);
    let rejected_set: BTreeSet<RelPath> = rejected.iter().map(|r| r.path.clone()).collect();

    // 2. Hash only what may have changed, and only when that is cheaper than fetching it: a
    //    few small files are fetched below with an unknown hash (never "unchanged", so always
    //    wanted) and hashed as they arrive, saving a round trip; the decision is taken again
    //    with those hashes before anything is applied.
    let fetch_unhashed =
        need_hash.count <= FETCH_UNHASHED_MAX_FILES && need_bytes <= FETCH_UNHASHED_MAX_BYTES;
    // Fetched below, alongside the three-way merge.
    let (early, early_bytes): (BTreeSet<RelPath>, u64) = if fetch_unhashed {
        let paths = need_hash.iter().map(|e| e.map(|e| e.path));
        (paths.collect::<Result<_, _>>()?, need_bytes)
    } else {
        (BTreeSet::new(), 0)
    };
    let hashed: Option<SortedFile> = if need_hash.count > 0 && !fetch_unhashed {
        Some(hash_remote(t, spec, &sd.scratch(), &need_hash).await?)
    } else {
        None
    };
    drop(need_hash);

    // 3. Only the paths where something is to be done, in path order, with their baseline,
    //    local and remote entries: one merge of the three sorted manifests. Files whose
    //    remote hash is still unknown are always among them (an unknown hash is never
    //    "unchanged") and are always wanted: their fetch starts now, alongside the merge.
    let staging = sd.staging(run_id)?;
    let local_scan = local.clone();
    let compare = {
        let (base, local, remote) = (st.local.clone(), local.clone(), remote.clone());
        let (hashed, rejected_set) = (hashed.clone(), rejected_set.clone());
        blocking("compare the workspace with the remote", move || {
            changed_entries(
                base.iter(),
                local.iter(),
                with_hashes(remote.iter(), hashed.as_ref()),
                &rejected_set,
            )
        })
    };
    let progress: Progress = std::sync::Arc::new(reporter(opts.progress.clone(), Phase::Restore));
    let early_dir = staging.dir.join("early");
    let prefetch = fetch(t, spec, &early_dir, early, early_bytes, progress.clone());
    let (compared, prefetched) = tokio::join!(compare, prefetch);
    let Changed {
        paths: changed,
        base,
        local,
        remote: mut remote_changed,
    } = compared?;
    let (mut staged, mut stats) = prefetched?;
    let base = &base;

    // 4. Fetch the rest of the remote files that will be written (applied or beside a
    //    conflict).
    let wanted: BTreeSet<RelPath> = changed
        .iter()
        .filter(|p| {
            remote_changed
                .get(p)
                .is_some_and(|r| r.kind == EntryKind::File)
                && matches!(
                    decide(base.get(p), local.get(p), remote_changed.get(p)),
                    Decision::ApplyRemote | Decision::Conflict
                )
        })
        .cloned()
        .collect();
    let missing: BTreeSet<RelPath> = wanted
        .iter()
        .filter(|p| !staged.contains_key(*p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let needed: u64 = missing
            .iter()
            .filter_map(|p| remote_changed.get(p).map(|e| e.size))
            .sum();
        let dir = staging.dir.join("rest");
        let (more, s) = fetch(t, spec, &dir, missing, needed, progress).await?;
        staged.extend(more);
        stats.files += s.files;
        stats.bytes += s.bytes;
    }
    for p in &wanted {
        let s: &Staged = staged.get(p).ok_or_else(|| SyncError::Remote {
            env: env.clone(),
            what: "send changed remote files".to_owned(),
            detail: format!("{p} missing from the stream"),
        })?;
        // The file may have changed since it was hashed: what was received is what counts.
        if let Some(e) = remote_changed.entries.get_mut(p) {
            e.sha256 = Some(s.sha256);
            e.size = s.size;
            e.mode = s.mode;
        }
    }
    let (files, bytes) = (stats.files, stats.bytes);

    // 5. Git history.
    let git_outcome = match &st.git {
        None => GitRestore::NotGit,
        Some(gp) => {
            integrate_git(
                t,
                &ws,
                spec,
                run_id,
                gp,
                listing.head.as_deref(),
                &staging.dir,
            )
            .await?
        }
    };

    // 6. Apply, per path.
    let mut report = RestoreReport {
        applied: Vec::new(),
        deleted: Vec::new(),
        conflicts: Vec::new(),
        remote_copies: Vec::new(),
        kept_local: Vec::new(),
        rejected,
        git: git_outcome,
        files,
        bytes,
    };
    let mut apply = Vec::new();
    let mut conflicts = BTreeSet::new();
    // Decided again: a fetched file counts as received, which may settle a path.
    for p in &changed {
        match decide(base.get(p), local.get(p), remote_changed.get(p)) {
            Decision::Keep => {}
            Decision::KeepLocal => report.kept_local.push(p.clone()),
            Decision::Conflict => {
                conflicts.insert(p.clone());
            }
            Decision::ApplyRemote => apply.push(p.clone()),
        }
    }
    // Every symlink judged against the tree as it will be, before anything is written.
    let local_links: Vec<RelPath> = {
        let scan = local_scan.clone();
        blocking("list the workspace's symlinks", move || {
            let mut out = Vec::new();
            for e in scan.iter() {
                let e = e?;
                if e.kind == EntryKind::Symlink {
                    out.push(e.path);
                }
            }
            Ok(out)
        })
        .await?
    };
    // Reads the local file system (links outside the scan count too): a blocking thread.
    let links = {
        let (ws, apply, conflicts) = (ws.clone(), apply.clone(), conflicts.clone());
        let (local, remote) = (local.clone(), remote_changed.clone());
        blocking("judge the symlinks", move || {
            Ok(judge_links(
                &ws,
                &local_links,
                &apply,
                &conflicts,
                &local,
                &remote,
            ))
        })
        .await?
    };
    let refused_links: BTreeSet<RelPath> = links.refused.iter().map(|r| r.path.clone()).collect();
    apply.retain(|p| !refused_links.contains(p));
    for r in &links.refused {
        conflicts.remove(&r.path);
    }
    report.rejected.extend(links.refused);
    let mut blocked = BTreeSet::new();
    let mut dir_modes = Vec::new();
    // Removals deepest first, so a directory is empty when its turn comes.
    for p in apply.iter().rev() {
        let (Some(l), r) = (local.get(p), remote_changed.get(p)) else {
            continue;
        };
        if r.is_some_and(|r| r.kind == l.kind) {
            continue;
        }
        let abs = p.under(&ws);
        if !parent_is_dir(&ws, p) || !unchanged_since_scan(&abs, Some(l)) {
            conflicts.insert(p.clone());
            blocked.insert(p.clone());
            continue;
        }
        let res = if l.kind == EntryKind::Dir {
            fs::remove_dir(&abs)
        } else {
            fs::remove_file(&abs)
        };
        match res {
            Ok(()) => {
                if r.is_none() {
                    report.deleted.push(p.clone());
                }
            }
            // A local change below it keeps the directory.
            Err(e)
                if l.kind == EntryKind::Dir
                    && e.kind() == std::io::ErrorKind::DirectoryNotEmpty =>
            {
                conflicts.insert(p.clone());
                blocked.insert(p.clone());
            }
            Err(e) => return Err(SyncError::io("remove a path deleted remotely", abs, e)),
        }
    }
    for p in &apply {
        let Some(r) = remote_changed.get(p) else {
            continue;
        };
        if blocked.contains(p) {
            continue;
        }
        if !parent_is_dir(&ws, p) {
            conflicts.insert(p.clone());
            continue;
        }
        let abs = p.under(&ws);
        // Removed above when the kind differs: then the path must be absent now.
        let expected = local.get(p).filter(|l| l.kind == r.kind);
        match r.kind {
            EntryKind::Dir => {
                if expected.is_none() {
                    if fs::symlink_metadata(&abs).is_ok() {
                        conflicts.insert(p.clone());
                        continue;
                    }
                    fs::create_dir(&abs)
                        .map_err(|e| SyncError::io("create a directory", &abs, e))?;
                }
                // Modes are set last, deepest first: a read-only directory must not stop its
                // own children from being placed.
                dir_modes.push((abs, r.mode & 0o7777));
            }
            EntryKind::File | EntryKind::Symlink => {
                if !unchanged_since_scan(&abs, expected) {
                    conflicts.insert(p.clone());
                    continue;
                }
                place(&ws, p, &abs, r, staged.get(p))?;
            }
        }
        report.applied.push(p.clone());
    }
    // The remote side of each conflict, beside the local one, under a name nothing holds:
    // an existing `<path>.berth-remote` may be a file the user is editing.
    for p in &conflicts {
        let Some(r) = remote_changed.get(p) else {
            continue;
        };
        if r.kind == EntryKind::Dir || !parent_is_dir(&ws, p) {
            continue;
        }
        // A symlink only under the name it was judged with (files may take any free name).
        let only = match r.kind {
            EntryKind::Symlink => match links.copy_names.get(p) {
                Some(name) => Some(name),
                None => continue,
            },
            _ => None,
        };
        if let Some(copy) = place_copy(&ws, p, r, staged.get(p), only, &local)? {
            report.remote_copies.push(RemoteCopy {
                path: p.clone(),
                copy,
            });
        }
    }
    for (abs, mode) in dir_modes.iter().rev() {
        fs::set_permissions(abs, fs::Permissions::from_mode(*mode))
            .map_err(|e| SyncError::io("set a directory's mode", abs, e))?;
    }
    report.conflicts = conflicts.into_iter().collect();

    // 7. Remember what the remote holds now: the listing with the hashes taken and the
    //    entries as received.
    st.remote = {
        let dir = sd.dir.clone();
        blocking("record the remote manifest", move || {
            let mut out = SortedWriter::create(&dir)?;
            for e in with_hashes(remote.iter(), hashed.as_ref()) {
                let e = e?;
                match remote_changed.get(&e.path) {
                    Some(received) => out.push(received)?,
                    None => out.push(&e)?,
                }
            }
            out.finish(remote.taken_at_ns)
        })
        .await?
    };
    st.remote_head = listing.head.or(st.remote_head);
    {
        let (sd, scope) = (sd.clone(), spec.scope.clone());
        blocking("save the sync state", move || sd.save_sorted(&scope, &st)).await?;
    }
    drop(staging);
    Ok(report)
}

/// The paths whose [`decide`] is not [`Decision::Keep`] (refused remote paths left out), in
/// path order, with their baseline, local and remote entries as three small manifests.
struct Changed {
    paths: Vec<RelPath>,
    base: Manifest,
    local: Manifest,
    remote: Manifest,
}

/// [`Changed`], from one merge of the three sorted streams.
fn changed_entries(
    base: impl Iterator<Item = Result<Entry, SyncError>>,
    local: impl Iterator<Item = Result<Entry, SyncError>>,
    remote: impl Iterator<Item = Result<Entry, SyncError>>,
    rejected: &BTreeSet<RelPath>,
) -> Result<Changed, SyncError> {
    let (mut b, mut l, mut r) = (
        Cursor::new(base)?,
        Cursor::new(local)?,
        Cursor::new(remote)?,
    );
    let mut out = Changed {
        paths: Vec::new(),
        base: Manifest::default(),
        local: Manifest::default(),
        remote: Manifest::default(),
    };
    while let Some(p) = next_path(&[b.peek(), l.peek(), r.peek()]) {
        let (be, le, re) = (b.take(&p)?, l.take(&p)?, r.take(&p)?);
        if rejected.contains(&p) || decide(be.as_ref(), le.as_ref(), re.as_ref()) == Decision::Keep
        {
            continue;
        }
        for (m, e) in [
            (&mut out.base, be),
            (&mut out.local, le),
            (&mut out.remote, re),
        ] {
            if let Some(e) = e {
                m.entries.insert(p.clone(), e);
            }
        }
        out.paths.push(p);
    }
    Ok(out)
}

/// Remote entries with the hashes computed remotely in this restore (a sorted file of the
/// hashed entries, merged in as the remote stream goes).
fn with_hashes(
    remote: impl Iterator<Item = Result<Entry, SyncError>>,
    hashed: Option<&SortedFile>,
) -> impl Iterator<Item = Result<Entry, SyncError>> {
    let mut hashed = hashed.into_iter().flat_map(SortedFile::iter).peekable();
    remote.map(move |e| {
        let mut e = e?;
        while let Some(h) = hashed.next_if(|h| h.as_ref().map_or(true, |h| h.path <= e.path)) {
            let h = h?;
            if h.path == e.path {
                e.sha256 = h.sha256;
            }
        }
        Ok(e)
    })
}

/// Hash the `need` files remotely (`sha256sum`), in path order, into a sorted file of their
/// entries with the hashes. A short list travels embedded in one control-shell step; a long
/// one streams through an exec channel, names in and sums out in the same order (xargs and
/// sha256sum keep it), so neither side holds the whole list. `sha256sum` gets the names as
/// arguments (never the contents): coreutils has no `--files0-from` for it.
async fn hash_remote(
    t: &dyn Transport,
    spec: &RemoteSpec,
    scratch: &Scratch,
    need: &SortedFile,
) -> Result<SortedFile, SyncError> {
    let env = t.describe();
    let what = "hash changed remote files";
    let cmd = "xargs -0 sha256sum -z --\n";
    if need.count <= EMBEDDED_HASH_MAX_FILES {
        let paths: Vec<Vec<u8>> = need
            .iter()
            .map(|e| e.map(|e| e.path.dot_slash()))
            .collect::<Result<_, _>>()?;
        if let Some(data) = embedded(&nul_list(&paths)) {
            let c = run_collect(t, &format!("{}{data} | {cmd}", cd_ws(spec)), what).await?;
            let (need, scratch) = (need.clone(), scratch.clone());
            return blocking(what, move || {
                let mut out = c.stdout.split(|b| *b == 0).filter(|r| !r.is_empty());
                let sums = std::iter::from_fn(|| out.next().map(|r| Ok(r.to_vec())));
                hashed_entries(&env, &scratch, &need, sums)
            })
            .await;
        }
    }
    let (rd, wr) = tokio::io::duplex(64 * 1024);
    let names = need.clone();
    let feed = blocking(what, move || {
        let mut w = std::io::BufWriter::new(tokio_util::io::SyncIoBridge::new(wr));
        let io = |e| SyncError::io("send file names to hash", Path::new("."), e);
        for e in names.iter() {
            w.write_all(&e?.path.dot_slash()).map_err(io)?;
            w.write_all(&[0]).map_err(io)?;
        }
        w.flush().map_err(io)
    });
    let (need, scratch) = (need.clone(), scratch.clone());
    let req = ExecRequest::new(format!("{}{cmd}", cd_ws(spec))).stdin_reader(rd);
    let (hashed, fed) = tokio::join!(
        exec_into(t, req, what, move |r| {
            let mut r = std::io::BufReader::with_capacity(64 * 1024, r);
            let sums = std::iter::from_fn(|| {
                let mut rec = Vec::new();
                match std::io::BufRead::read_until(&mut r, 0, &mut rec) {
                    Ok(0) => None,
                    Ok(_) => {
                        if rec.last() == Some(&0) {
                            rec.pop();
                        }
                        Some(Ok(rec))
                    }
                    Err(e) => Some(Err(SyncError::io("read remote hashes", Path::new("."), e))),
                }
            });
            hashed_entries(&env, &scratch, &need, sums)
        }),
        feed
    );
    let hashed = hashed?;
    fed?;
    Ok(hashed)
}

/// The `need` entries with the hashes of `sha256sum -z` records (`<hex>  <name>`), which come
/// in the same order.
fn hashed_entries(
    env: &str,
    scratch: &Scratch,
    need: &SortedFile,
    mut sums: impl Iterator<Item = Result<Vec<u8>, SyncError>>,
) -> Result<SortedFile, SyncError> {
    let mut out = SortedWriter::create(&scratch.dir)?;
    for e in need.iter() {
        let mut e = e?;
        let rec = sums.next().transpose()?.unwrap_or_default();
        let name = e.path.dot_slash();
        let hash = (rec.len() > 66 && rec[64] == b' ' && rec[66..] == name[..])
            .then(|| ContentHash::from_hex(&rec[..64]))
            .flatten()
            .ok_or_else(|| SyncError::Remote {
                env: env.to_owned(),
                what: "hash changed remote files".to_owned(),
                detail: format!("no hash for {}", e.path),
            })?;
        e.sha256 = Some(hash);
        out.push(&e)?;
    }
    out.finish(0)
}

/// Most files hashed in one control-shell step (their names embedded in the script).
const EMBEDDED_HASH_MAX_FILES: u64 = 1024;

/// The remote manifest from the remote's listing (sorted) and the recorded one: entries out of
/// scope dropped, symlinks pointing outside the workspace refused (unless recorded so), file
/// hashes reused where size and mtime prove them.
fn remote_manifest(
    scratch: &Scratch,
    listed: impl Iterator<Item = Result<Entry, SyncError>>,
    recorded: &SortedFile,
    filter: &Filter,
    taken_at_ns: i64,
) -> Result<RemoteRead, SyncError> {
    let mut out = SortedWriter::create(&scratch.dir)?;
    let mut need_hash = SortedWriter::create(&scratch.dir)?;
    let mut need_bytes = 0u64;
    let mut rejected = Vec::new();
    zip_sorted(listed, recorded.iter(), |e, old| {
        let Some(mut e) = e else { return Ok(()) };
        if filter.is_excluded(&e.path, e.kind == EntryKind::Dir) {
            return Ok(());
        }
        if e.kind == EntryKind::Symlink {
            let target = e
                .target
                .as_ref()
                .map(|t| t.0.as_slice())
                .unwrap_or_default();
            if !symlink_stays_inside(&e.path, target)
                && !old.as_ref().is_some_and(|o| o.same_content(&e))
            {
                rejected.push(Rejected {
                    path: e.path.clone(),
                    reason: "symlink pointing outside the workspace".to_owned(),
                });
                // Still recorded as what the remote holds: the next push then removes it
                // there, and every restore judges it again (a remote symlink is always
                // judged in the future tree before it is written).
                return out.push(&e);
            }
        }
        if e.kind == EntryKind::File {
            match old {
                Some(old) if e.can_reuse_hash_of(&old, recorded.taken_at_ns) => {
                    e.sha256 = old.sha256;
                }
                _ => {
                    need_hash.push(&e)?;
                    need_bytes += e.size;
                }
            }
        }
        out.push(&e)
    })?;
    Ok(RemoteRead {
        manifest: out.finish(taken_at_ns)?,
        need_hash: need_hash.finish(0)?,
        need_bytes,
        refused: rejected,
    })
}

/// The remote manifest as read from a listing.
struct RemoteRead {
    manifest: SortedFile,
    /// Files whose hash could not be reused, with their sizes.
    need_hash: SortedFile,
    need_bytes: u64,
    /// Entries refused (symlinks pointing outside the workspace).
    refused: Vec<Rejected>,
}

/// Fetch `wanted` remote files (`needed` bytes) into a new staging directory `dir`: a few as
/// the output of one control-shell step, anything larger streamed through its own channel
/// (compressed unless the link is local). Refuses to start when the files cannot fit.
async fn fetch(
    t: &dyn Transport,
    spec: &RemoteSpec,
    dir: &Path,
    wanted: BTreeSet<RelPath>,
    needed: u64,
    progress: Progress,
) -> Result<(BTreeMap<RelPath, Staged>, crate::archive::StreamStats), SyncError> {
    if wanted.is_empty() {
        return Ok(Default::default());
    }
    fs::create_dir(dir).map_err(|e| SyncError::io("create a staging dir", dir, e))?;
    check_headroom(dir, needed)?;
    let list = nul_list(&wanted.iter().map(RelPath::dot_slash).collect::<Vec<_>>());
    let dir = dir.to_path_buf();
    let what = "send changed remote files";
    let small = (needed <= FETCH_INLINE_MAX)
        .then(|| embedded(&list))
        .flatten();
    let z = if link_is_local(t) { "" } else { "-z " };
    match small {
        Some(data) => {
            let c = run_collect(
                t,
                &format!(
                    "{}{data} | tar -c {z}-f - --null --no-recursion -T -\n",
                    cd_ws(spec)
                ),
                what,
            )
            .await?;
            blocking(what, move || {
                let r = maybe_gunzip(&c.stdout[..])
                    .map_err(|e| SyncError::io("read a tar stream", &dir, e))?;
                extract_to_staging(r, &dir, &wanted, &*progress)
            })
            .await
        }
        None => {
            exec_into(
                t,
                ExecRequest::new(format!(
                    "{}tar -c {z}-f - --null --no-recursion -T -\n",
                    cd_ws(spec)
                ))
                .stdin_bytes(list),
                what,
                move |r| {
                    let r =
                        maybe_gunzip(r).map_err(|e| SyncError::io("read a tar stream", &dir, e))?;
                    extract_to_staging(r, &dir, &wanted, &*progress)
                },
            )
            .await
        }
    }
}

/// Reports transfer progress from the threads that receive files.
type Progress = std::sync::Arc<dyn Fn(crate::archive::StreamStats) + Send + Sync>;

/// Up to this many changed remote files, of at most this many bytes in all, are fetched
/// without hashing them remotely first: one round trip fewer, against at most 1 MiB that may
/// turn out unchanged (files modified within the racy window of the last listing, e.g. by a
/// push a moment before, cannot reuse their hashes). The byte cap is what bounds the waste;
/// the count bounds the per-file overhead of the stream (a tar header each).
const FETCH_UNHASHED_MAX_FILES: u64 = 256;
const FETCH_UNHASHED_MAX_BYTES: u64 = 1 << 20;

/// Most bytes of remote files fetched as one control-shell step's output (held in memory).
const FETCH_INLINE_MAX: u64 = 8 << 20;

/// Free space kept beyond what staging needs.
const HEADROOM: u64 = 16 << 20;

/// Refuse to start a transfer that cannot fit next to the workspace.
fn check_headroom(dir: &Path, needed: u64) -> Result<(), SyncError> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| SyncError::io("check free space", dir, std::io::Error::from(e)))?;
    #[allow(
        clippy::useless_conversion,
        reason = "u64 on 64-bit targets, narrower elsewhere"
    )]
    let available = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
    if needed.saturating_add(HEADROOM) > available {
        return Err(SyncError::NoSpace {
            path: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Whether every ancestor of `p` is a real directory. Each level is checked without following
/// symlinks: a directory the local side replaced with a symlink must not let a remote change
/// be written through it to wherever it points.
fn parent_is_dir(ws: &Path, p: &RelPath) -> bool {
    p.ancestors()
        .all(|a| fs::symlink_metadata(a.under(ws)).is_ok_and(|m| m.is_dir()))
}

/// Whether the local entry still looks as scanned (`None`: still absent). A last guard
/// against an edit made while the restore runs.
fn unchanged_since_scan(abs: &Path, l: Option<&Entry>) -> bool {
    let md = fs::symlink_metadata(abs);
    match (l, md) {
        (None, Err(e)) => e.kind() == std::io::ErrorKind::NotFound,
        (None, Ok(_)) | (Some(_), Err(_)) => false,
        (Some(l), Ok(md)) => {
            let kind = if md.is_dir() {
                EntryKind::Dir
            } else if md.file_type().is_symlink() {
                EntryKind::Symlink
            } else {
                EntryKind::File
            };
            let mtime = mtime_ns(&md);
            kind == l.kind
                && (kind == EntryKind::Dir || (md.size() == l.size && mtime == l.mtime_ns))
        }
    }
}

fn tmp_beside(abs: &Path) -> PathBuf {
    let name = format!(".berth-tmp-{}", uuid::Uuid::new_v4().simple());
    abs.parent()
        .map_or_else(|| PathBuf::from(&name), |d| d.join(&name))
}

/// Put the remote entry `r` at `abs` atomically (rename over whatever file is there).
fn place(
    _ws: &Path,
    p: &RelPath,
    abs: &Path,
    r: &Entry,
    staged: Option<&Staged>,
) -> Result<(), SyncError> {
    match r.kind {
        EntryKind::Symlink => {
            let target = r
                .target
                .as_ref()
                .map(|t| t.0.as_slice())
                .unwrap_or_default();
            let tmp = tmp_beside(abs);
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &tmp)
                .map_err(|e| SyncError::io("create a symlink", &tmp, e))?;
            fs::rename(&tmp, abs).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                SyncError::io("move a symlink into place", abs, e)
            })
        }
        EntryKind::File => {
            let s = staged.ok_or_else(|| SyncError::Remote {
                env: String::new(),
                what: "apply a remote file".to_owned(),
                detail: format!("{p} was not staged"),
            })?;
            match fs::rename(&s.file, abs) {
                Ok(()) => Ok(()),
                // Staging on another filesystem: copy beside the target, then rename.
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    let tmp = tmp_beside(abs);
                    fs::copy(&s.file, &tmp)
                        .map_err(|e| SyncError::io("copy a staged file", &tmp, e))?;
                    fs::rename(&tmp, abs)
                        .map_err(|e| SyncError::io("move a file into place", abs, e))
                }
                Err(e) => Err(SyncError::io("move a file into place", abs, e)),
            }
        }
        EntryKind::Dir => Ok(()),
    }
}

/// Most names tried for one conflict copy before giving up.
const COPY_NAMES_MAX: u32 = 1000;

/// Write the remote version `r` of the conflicting path `p` beside it, under the first name of
/// `<p>.berth-remote`, `<p>.berth-remote.1`, … that does not exist. Every attempt is a
/// create-or-fail (a no-replace rename, a hard link, a symlink), so a file appearing under a
/// name between two checks is never replaced either.
/// With `only`, that name or none (`Ok(None)` when it is taken). A name that held a local
/// entry this restore changed (a remote deletion, say) is not free either: the copy never
/// lands where something of the user's was.
fn place_copy(
    ws: &Path,
    p: &RelPath,
    r: &Entry,
    staged: Option<&Staged>,
    only: Option<&RelPath>,
    local: &Manifest,
) -> Result<Option<RelPath>, SyncError> {
    for n in 0..COPY_NAMES_MAX {
        let copy = match only {
            Some(name) if n == 0 => name.clone(),
            Some(_) => return Ok(None),
            None => copy_name(p, n),
        };
        if local.get(&copy).is_some() {
            if only.is_some() {
                return Ok(None);
            }
            continue;
        }
        let abs = copy.under(ws);
        let res = match r.kind {
            EntryKind::Symlink => {
                let target = r
                    .target
                    .as_ref()
                    .map(|t| t.0.as_slice())
                    .unwrap_or_default();
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &abs)
            }
            EntryKind::File => {
                let s = staged.ok_or_else(|| SyncError::Remote {
                    env: String::new(),
                    what: "write the remote side of a conflict".to_owned(),
                    detail: format!("{p} was not staged"),
                })?;
                rename_noreplace(&s.file, &abs)
            }
            EntryKind::Dir => return Ok(None),
        };
        match res {
            Ok(()) => return Ok(Some(copy)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(SyncError::io("write the remote side of a conflict", abs, e)),
        }
    }
    Err(SyncError::io(
        "write the remote side of a conflict",
        p.with_suffix(REMOTE_SUFFIX).under(ws),
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{COPY_NAMES_MAX} names beside it are taken"),
        ),
    ))
}

/// The `n`th name for the remote side of conflicting `p`: `<p>.berth-remote`, then
/// `<p>.berth-remote.<n>`.
fn copy_name(p: &RelPath, n: u32) -> RelPath {
    if n == 0 {
        p.with_suffix(REMOTE_SUFFIX)
    } else {
        p.with_suffix(&format!("{REMOTE_SUFFIX}.{n}"))
    }
}

/// The symlinks of a restore, judged.
struct LinkPlan {
    /// Remote changes refused because of where a symlink would resolve.
    refused: Vec<Rejected>,
    /// Conflicting paths whose remote side is a symlink, with the name its copy was judged
    /// under.
    copy_names: BTreeMap<RelPath, RelPath>,
}

/// The tree as it will be after the restore: the paths it writes (`Some(target)`: a symlink)
/// over the local file system as it is.
struct Future<'a> {
    ws: &'a Path,
    writes: BTreeMap<RelPath, Option<Vec<u8>>>,
    now: BTreeMap<RelPath, Option<Vec<u8>>>,
}

impl Future<'_> {
    /// The target of the symlink at `p` now (`None`: no symlink), read once.
    fn now(&mut self, p: &RelPath) -> Option<Vec<u8>> {
        let ws = self.ws;
        self.now
            .entry(p.clone())
            .or_insert_with(|| {
                let abs = p.under(ws);
                match fs::symlink_metadata(&abs) {
                    Ok(m) if m.file_type().is_symlink() => fs::read_link(&abs)
                        .ok()
                        .map(|t| t.into_os_string().into_vec()),
                    _ => None,
                }
            })
            .clone()
    }

    /// The target of the symlink at `p` after the restore. Below a path the restore writes
    /// as a non-link, only what it writes there exists.
    fn after(&mut self, p: &RelPath) -> Option<Vec<u8>> {
        if let Some(w) = self.writes.get(p) {
            return w.clone();
        }
        if p.ancestors().any(|a| self.writes.contains_key(&a)) {
            return None;
        }
        self.now(p)
    }
}

/// Judge every symlink the restore would write, and every local one, against the tree as it
/// will be after the restore, following links in that tree (the local file system where the
/// restore writes nothing, so links outside the scan count too). Refused: a remote symlink
/// (applied or as a conflict copy) whose resolution leaves the root; and a remote change that
/// would make a local symlink that resolves inside today resolve outside (a link the remote
/// writes on its path, or a local link on its path that the remote removes) — which also
/// stops a link planted in one restore from being armed by another. Local links that already
/// resolve outside are the user's own. Refusing one change can settle others: repeated until
/// nothing more is refused.
fn judge_links(
    ws: &Path,
    local_links: &[RelPath],
    apply: &[RelPath],
    conflicts: &BTreeSet<RelPath>,
    local: &Manifest,
    remote: &Manifest,
) -> LinkPlan {
    let target = |r: &Entry| r.target.as_ref().map(|t| t.0.clone()).unwrap_or_default();
    let mut fut = Future {
        ws,
        writes: BTreeMap::new(),
        now: BTreeMap::new(),
    };
    // Symlinks the restore writes → the path whose change writes it.
    let mut placed: BTreeMap<RelPath, RelPath> = BTreeMap::new();
    // Local symlinks the restore removes or replaces.
    let mut removed: BTreeSet<RelPath> = BTreeSet::new();
    for p in apply {
        match remote.get(p) {
            Some(r) if r.kind == EntryKind::Symlink => {
                fut.writes.insert(p.clone(), Some(target(r)));
                placed.insert(p.clone(), p.clone());
            }
            // A directory staying a directory keeps what is below it.
            Some(r)
                if r.kind == EntryKind::Dir
                    && local.get(p).is_some_and(|l| l.kind == EntryKind::Dir) => {}
            r => {
                fut.writes.insert(p.clone(), None);
                let was_link = local.get(p).is_some_and(|l| l.kind == EntryKind::Symlink);
                if was_link && r.is_none_or(|r| r.kind != EntryKind::Symlink) {
                    removed.insert(p.clone());
                }
            }
        }
    }
    let mut copy_names = BTreeMap::new();
    for p in conflicts {
        let Some(r) = remote.get(p).filter(|r| r.kind == EntryKind::Symlink) else {
            continue;
        };
        let free = (0..COPY_NAMES_MAX).map(|n| copy_name(p, n)).find(|c| {
            !fut.writes.contains_key(c)
                && local.get(c).is_none()
                && fs::symlink_metadata(c.under(ws)).is_err()
        });
        if let Some(name) = free {
            fut.writes.insert(name.clone(), Some(target(r)));
            placed.insert(name.clone(), p.clone());
            copy_names.insert(p.clone(), name);
        }
    }
    let mut refused: BTreeMap<RelPath, &str> = BTreeMap::new();
    loop {
        let mut culprits = BTreeSet::new();
        let candidates: Vec<RelPath> = placed.keys().chain(local_links.iter()).cloned().collect();
        for link in &candidates {
            let Some(t) = fut.after(link) else { continue };
            let after = resolve_symlink(link, &t, |p| fut.after(p));
            if after.inside {
                continue;
            }
            if placed.contains_key(link) {
                culprits.insert(link.clone());
                continue;
            }
            let Some(t0) = fut.now(link) else { continue };
            let before = resolve_symlink(link, &t0, |p| fut.now(p));
            if !before.inside {
                continue;
            }
            culprits.extend(after.via.into_iter().filter(|v| placed.contains_key(v)));
            culprits.extend(before.via.into_iter().filter(|v| removed.contains(v)));
        }
        if culprits.is_empty() {
            break;
        }
        for c in culprits {
            fut.writes.remove(&c);
            if let Some(p) = placed.remove(&c) {
                if copy_names.get(&p) == Some(&c) {
                    copy_names.remove(&p);
                }
                refused.insert(p, "symlink resolving outside the workspace");
            } else if removed.remove(&c) {
                refused.insert(
                    c,
                    "removing this symlink would make another resolve outside the workspace",
                );
            }
        }
    }
    LinkPlan {
        refused: refused
            .into_iter()
            .map(|(path, reason)| Rejected {
                path,
                reason: reason.to_owned(),
            })
            .collect(),
        copy_names,
    }
}

/// Move `from` to `to` unless `to` exists (then `AlreadyExists`, nothing moved).
/// `renameat2(RENAME_NOREPLACE)` where the kernel and filesystem have it; otherwise a hard link
/// (which never replaces) then an unlink; across filesystems a copy beside `to` first.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // Not supported here (old kernel, some filesystems) or across filesystems: the
            // portable way below.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::ENOTSUP | Errno::EXDEV) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let tmp = tmp_beside(to);
            fs::copy(from, &tmp)?;
            let linked = fs::hard_link(&tmp, to);
            let _ = fs::remove_file(&tmp);
            linked?;
            fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

async fn integrate_git(
    t: &dyn Transport,
    ws: &Path,
    spec: &RemoteSpec,
    run_id: &str,
    pushed: &crate::state::GitPoint,
    remote_head: Option<&str>,
    staging: &Path,
) -> Result<GitRestore, SyncError> {
    let Some(rh) = remote_head else {
        return Ok(GitRestore::Unchanged);
    };
    if rh == pushed.head {
        return Ok(GitRestore::Unchanged);
    }
    let ref_name = format!("refs/berth/runs/{run_id}");
    if git::has_commit(ws, rh).await {
        git::git(ws, &["update-ref", &ref_name, rh], "record the remote head").await?;
    } else {
        let bundle = staging.join("import.bundle");
        let file = bundle.clone();
        exec_into(
            t,
            ExecRequest::new(format!(
                "{cd}git update-ref refs/berth/export HEAD || exit 1\n\
                 git bundle create -q - refs/berth/export ^{base}\nrc=$?\n\
                 git update-ref -d refs/berth/export\nexit $rc\n",
                cd = cd_ws(spec),
                base = quote(&pushed.head)
            )),
            "export the remote git history",
            move |r| {
                let mut f = fs::File::create(&file)
                    .map_err(|e| SyncError::io("create the bundle file", &file, e))?;
                std::io::copy(r, &mut f)
                    .map_err(|e| SyncError::io("write the bundle file", &file, e))?;
                f.flush()
                    .map_err(|e| SyncError::io("write the bundle file", &file, e))?;
                Ok(())
            },
        )
        .await?;
        let refspec = format!("+refs/berth/export:{ref_name}");
        git::git(
            ws,
            &[
                std::ffi::OsStr::new("fetch"),
                std::ffi::OsStr::new("-q"),
                bundle.as_os_str(),
                std::ffi::OsStr::new(&refspec),
            ],
            "import the remote git history",
        )
        .await?;
    }
    let now = git::local_point(ws).await?;
    let unmoved = now
        .as_ref()
        .is_some_and(|n| n.head == pushed.head && n.branch == pushed.branch);
    if unmoved && git::is_ancestor(ws, &pushed.head, rh).await {
        let cas = match &pushed.branch {
            Some(b) => {
                git::git(
                    ws,
                    &["update-ref", b, rh, &pushed.head],
                    "fast-forward the branch",
                )
                .await
            }
            None => {
                git::git(
                    ws,
                    &["update-ref", "--no-deref", "HEAD", rh, &pushed.head],
                    "fast-forward HEAD",
                )
                .await
            }
        };
        if cas.is_ok() {
            // Move the index along where it still matches the old HEAD; staged changes stay.
            if let Err(e) = git::git(
                ws,
                &["read-tree", "-m", "-i", &pushed.head, rh],
                "update the index",
            )
            .await
            {
                tracing::warn!(error = %e, "index left at the previous HEAD");
            }
            let _ = git::git(ws, &["update-ref", "-d", &ref_name], "delete the run ref").await;
            return Ok(GitRestore::FastForwarded {
                from: pushed.head.clone(),
                to: rh.to_owned(),
            });
        }
    }
    Ok(GitRestore::RefKept {
        ref_name,
        head: rh.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::RawBytes;

    fn file(h: &str, mode: u32) -> Entry {
        Entry {
            path: RelPath::new(b"f".to_vec()).unwrap_or_else(|_| unreachable!()),
            kind: EntryKind::File,
            mode,
            size: 1,
            mtime_ns: 0,
            sha256: Some(crate::manifest::ContentHash::of(h.as_bytes())),
            target: None,
        }
    }

    #[test]
    fn three_way_decisions() {
        let (a, b, c) = (file("a", 0o644), file("b", 0o644), file("c", 0o644));
        use Decision::*;
        assert_eq!(decide(Some(&a), Some(&a), Some(&a)), Keep);
        assert_eq!(decide(Some(&a), Some(&b), Some(&a)), KeepLocal);
        assert_eq!(decide(Some(&a), Some(&a), Some(&b)), ApplyRemote);
        assert_eq!(decide(Some(&a), Some(&b), Some(&b)), Keep);
        assert_eq!(decide(Some(&a), Some(&b), Some(&c)), Conflict);
        assert_eq!(decide(Some(&a), Some(&a), None), ApplyRemote);
        assert_eq!(decide(Some(&a), Some(&b), None), Conflict);
        assert_eq!(decide(None, None, Some(&a)), ApplyRemote);
        assert_eq!(decide(None, Some(&a), Some(&b)), Conflict);
        assert_eq!(decide(Some(&a), None, None), Keep);
        // A mode change is a change.
        assert_eq!(
            decide(Some(&a), Some(&a), Some(&file("a", 0o755))),
            ApplyRemote
        );
        // An unknown hash is never "unchanged": the conservative side wins.
        let mut unknown = a.clone();
        unknown.sha256 = None;
        assert_eq!(decide(Some(&unknown), Some(&a), Some(&b)), Conflict);
        let link = Entry {
            kind: EntryKind::Symlink,
            sha256: None,
            target: Some(RawBytes(b"t".to_vec())),
            ..a.clone()
        };
        assert_eq!(decide(Some(&a), Some(&a), Some(&link)), ApplyRemote);
    }
}
