//! Sync out: realize a local workspace at `<root>/.berth/ws/<scope>/` on any transport.
//!
//! A push takes the workspace lock, scans the workspace (stat only; hashes are reused where
//! size and mtime prove them) while asking the remote whether its copy is the one the recorded
//! state describes (a marker written at the end of every successful push and removed at the
//! start of the next). If so, only the difference to the recorded remote manifest travels:
//! one deletion list, then one tar stream of changed entries (embedded in a control-shell
//! step when small), and only the sent paths are listed back; the rest of the recorded remote
//! manifest is trusted. The first push of a plain tree (no recorded state) needs no probe: one
//! exec channel, opened while the tree is scanned, clears, extracts, lists and marks.
//! Otherwise the remote copy is cleared (keeping `.git` for git work trees) and rebuilt: git
//! history as a bundle (incremental against a commit the remote has), HEAD and branch set
//! with plumbing, the tree checked out from the index, then the overlay of everything that
//! differs from HEAD. The remote ends with a listing of itself, which becomes the remote
//! manifest; the local manifest with the hashes of the bytes actually sent becomes the
//! baseline of the next restore.

use std::collections::BTreeSet;
use std::path::Path;

use berth_exec::shell::quote;
use berth_exec::{ExecRequest, Transport};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::io::AsyncReadExt as _;
use tokio_util::io::SyncIoBridge;

use crate::archive::{StreamStats, write_tar, write_tar_each};
use crate::error::{SyncError, blocking};
use crate::git;
use crate::manifest::{Entry, EntryKind, Filter, Manifest, scan_each, scan_with};
use crate::path::RelPath;
use crate::progress::{Phase, reporter};
use crate::remote::{
    EMBED_SCRIPT_MAX, RemoteSpec, cd_ws, embedded, exec_collect, exec_into, link_is_local,
    listing_into_spool, listing_script, nul_list, parse_listing, run_collect, run_ok,
};
use crate::spool::{Scratch, SortedFile, SortedWriter, Spool, zip_sorted};
use crate::state::{GitPoint, ScopeState, StateDir, StoredState, SyncOptions, new_state};

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// The remote copy was rebuilt rather than updated incrementally.
    pub full: bool,
    /// Files sent in the tar stream and their uncompressed bytes.
    pub files: u64,
    pub bytes: u64,
    /// Paths removed on the remote.
    pub deleted: usize,
    /// A git bundle was sent (absent when the remote already had HEAD).
    pub git_bundle: bool,
    /// The git position pushed.
    pub git: Option<GitPoint>,
    /// Fifos, sockets and devices in the workspace, never synced.
    pub skipped_special: Vec<RelPath>,
}

pub(crate) async fn local_filter(
    ws: &Path,
    opts: &SyncOptions,
    git: bool,
) -> Result<Filter, SyncError> {
    let f = Filter::new(ws, &opts.excludes)?;
    Ok(if git && !opts.sync_ignored {
        f.with_git_ignored(&git::ignored(ws).await?)
    } else {
        f
    })
}

pub(crate) fn canonical(ws: &Path) -> Result<std::path::PathBuf, SyncError> {
    std::fs::canonicalize(ws).map_err(|e| SyncError::io("resolve the workspace", ws, e))
}

/// [`scan_with`] on a blocking thread. `previous` is handed back (moved, not copied: it holds
/// the whole tree).
pub(crate) async fn scan_blocking(
    ws: &Path,
    filter: &Filter,
    previous: Option<Manifest>,
    hash: bool,
) -> Result<(Manifest, crate::manifest::ScanReport, Option<Manifest>), SyncError> {
    let (ws, filter) = (ws.to_path_buf(), filter.clone());
    tokio::task::spawn_blocking(move || {
        scan_with(&ws, &filter, previous.as_ref(), hash).map(|(m, r)| (m, r, previous))
    })
    .await
    .map_err(|e| SyncError::Task {
        what: "scan the workspace".to_owned(),
        detail: e.to_string(),
    })?
}

/// Hash the files of `m` that have no hash yet.
async fn fill_hashes(ws: &Path, mut m: Manifest) -> Result<Manifest, SyncError> {
    let ws = ws.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let todo: Vec<RelPath> = m
            .entries
            .values()
            .filter(|e| e.kind == EntryKind::File && e.sha256.is_none())
            .map(|e| e.path.clone())
            .collect();
        for (p, h) in crate::manifest::hash_parallel(&ws, &todo)? {
            if let Some(e) = m.entries.get_mut(p) {
                e.sha256 = Some(h);
            }
        }
        Ok(m)
    })
    .await
    .map_err(|e| SyncError::Task {
        what: "hash the workspace".to_owned(),
        detail: e.to_string(),
    })?
}

/// Push `ws` to `spec` over `t`. Records the baseline for [`crate::restore`].
pub async fn push(
    t: &dyn Transport,
    ws: &Path,
    spec: &RemoteSpec,
    opts: &SyncOptions,
) -> Result<PushReport, SyncError> {
    let ws = canonical(ws)?;
    let sd = StateDir::for_workspace(&ws, opts)?;
    let _lock = sd.lock().await?;
    // The first push of a plain tree needs no probe. Decided from cheap checks, so that
    // otherwise the probe (on a fresh connection: connect, authenticate, start the control
    // shell) starts at once and everything local happens meanwhile.
    if !sd.has_state(&spec.scope) && std::fs::symlink_metadata(ws.join(".git")).is_err() {
        return push_first(t, &ws, spec, opts, &sd).await;
    }
    let (rws, meta) = (quote(&spec.ws()), quote(&spec.meta()));
    // The marker names the state and the work tree it was written for (inode and birth time):
    // a copy that was removed (GC, disk wipe) and recreated never passes for the recorded one.
    let probe = format!(
        "mkdir -p {meta} || exit 1\ncat {meta}/state-id 2>/dev/null\nrm -f {meta}/state-id\nprintf '\\n'\n\
         if [ -d {rws} ]; then stat -c %i.%.9W {rws}; else printf '\\n'; fi\nmkdir -p {rws} || exit 1\n"
    );
    let local_side = async {
        let mut prev = {
            let (sd, scope) = (sd.clone(), spec.scope.clone());
            tokio::task::spawn_blocking(move || sd.load(&scope))
                .await
                .map_err(|e| SyncError::Task {
                    what: "load the sync state".to_owned(),
                    detail: e.to_string(),
                })??
        };
        let point = git::local_point(&ws).await?;
        let filter = local_filter(&ws, opts, point.is_some()).await?;
        // Stat only: hashes are reused where size and mtime prove them, computed below where
        // needed, or taken from the bytes as they are sent. The recorded local manifest is
        // needed only for its hashes; the new one replaces it.
        let recorded = prev.as_mut().map(|p| std::mem::take(&mut p.local));
        let (local, scan_report, _) = scan_blocking(&ws, &filter, recorded, false).await?;
        Ok::<_, SyncError>((prev, point, filter, local, scan_report))
    };
    let (out, local_side) = tokio::join!(
        run_ok(t, &probe, Bytes::new(), "prepare the remote workspace"),
        local_side
    );
    let (prev, point, filter, mut local, scan_report) = local_side?;
    let out = out?;
    let mut out = out.stdout_text();
    if point.is_some() {
        let git_probe = format!(
            "command -v git >/dev/null 2>&1 || {{ echo 'git is not installed' >&2; exit 4; }}\n\
             cd {rws} && git rev-parse -q --verify 'HEAD^{{commit}}' 2>/dev/null\nexit 0\n"
        );
        let g = run_ok(t, &git_probe, Bytes::new(), "prepare the remote workspace").await?;
        out.push_str(&g.stdout_text());
    }
    let mut lines = out.lines();
    let marker = lines.next().unwrap_or("").trim().to_owned();
    let inode = lines.next().unwrap_or("").trim().to_owned();
    let probe_head = lines
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty());
    let incremental = !inode.is_empty()
        && prev
            .as_ref()
            .is_some_and(|p| marker == format!("{}:{inode}", p.state_id));
    let mut report = PushReport {
        full: !incremental,
        git: point.clone(),
        skipped_special: scan_report.skipped_special,
        ..PushReport::default()
    };

    // Hash what the recorded hashes do not cover (in parallel), except on a full push of a
    // plain tree, where every file is hashed as it is sent. For a git work tree this happens
    // before asking git what differs from HEAD: a file edited in between is then sent rather
    // than recorded with content the remote checkout does not have.
    if incremental || point.is_some() {
        local = fill_hashes(&ws, local).await?;
    }

    // A full push of a git work tree sends only what differs from HEAD. Computed after the
    // scan: a file edited in between is then sent rather than assumed equal to HEAD.
    let changed = match &point {
        Some(_) if !incremental => Some(git::changed_vs_head(&ws, opts.sync_ignored).await?),
        _ => None,
    };

    if !incremental {
        let keep_git = if point.is_some() { "! -name .git " } else { "" };
        run_ok(
            t,
            &format!(
                "{}find . -mindepth 1 -maxdepth 1 {keep_git}-exec rm -rf -- {{}} +\n",
                cd_ws(spec)
            ),
            Bytes::new(),
            "clear the remote workspace",
        )
        .await?;
    }

    if let Some(p) = &point {
        let known = if incremental {
            prev.as_ref().and_then(|s| s.remote_head.clone())
        } else {
            probe_head.clone()
        };
        let base = match known {
            Some(k) if git::has_commit(&ws, &k).await => Some(k),
            _ => None,
        };
        if base.as_deref() != Some(p.head.as_str()) {
            send_bundle(t, &ws, spec, &p.head, base.as_deref()).await?;
            report.git_bundle = true;
        }
        let set_head = match &p.branch {
            Some(b) => format!(
                "git symbolic-ref HEAD {b}\ngit update-ref {b} {h}\n",
                b = quote(b),
                h = quote(&p.head)
            ),
            None => format!("git update-ref --no-deref HEAD {}\n", quote(&p.head)),
        };
        let checkout = if incremental {
            ""
        } else {
            "git checkout-index -a -f\n"
        };
        run_ok(
            t,
            &format!(
                "set -e\n{}{set_head}git read-tree {}\n{checkout}",
                cd_ws(spec),
                quote(&p.head)
            ),
            Bytes::new(),
            "set the remote HEAD",
        )
        .await?;
    }

    // What to send and what to delete. `None`: everything.
    let mut send: Option<Vec<Entry>> = Some(Vec::new());
    let mut delete: Vec<RelPath> = Vec::new();
    // The recorded remote manifest an incremental push updates instead of re-listing it.
    let mut trusted: Option<Manifest> = None;
    match (prev, incremental, &changed) {
        (Some(st), true, _) => {
            let list = send.get_or_insert_with(Vec::new);
            for e in local.entries.values() {
                if st.remote.get(&e.path).is_none_or(|r| !r.same_content(e)) {
                    list.push(e.clone());
                }
            }
            for (p, r) in &st.remote.entries {
                let gone = match local.get(p) {
                    None => true,
                    Some(l) => l.kind != r.kind,
                };
                if gone {
                    delete.push(p.clone());
                }
            }
            trusted = Some(st.remote);
        }
        (_, _, Some(changed)) => {
            let changed_set: BTreeSet<&RelPath> = changed.iter().collect();
            let list = send.get_or_insert_with(Vec::new);
            for e in local.entries.values() {
                if e.kind == EntryKind::Dir || changed_set.contains(&e.path) {
                    list.push(e.clone());
                }
            }
            for p in changed {
                let is_dir = local.get(p).is_some_and(|e| e.kind == EntryKind::Dir);
                if !is_dir && !filter.is_excluded(p, false) {
                    delete.push(p.clone());
                }
            }
        }
        // Everything travels; hashes are those of the bytes sent.
        _ => send = None,
    }
    // Deletions, one tar stream, the remote's listing of itself (of the sent paths only when
    // the recorded remote manifest is trusted). A second round, with a full listing, repairs
    // whatever still differs (e.g. a directory emptied by a deletion of tracked files in a
    // git checkout, or a stale entry of unexpected kind).
    let mut baseline = local;
    let mut round = 0;
    let progress: std::sync::Arc<dyn Fn(StreamStats) + Send + Sync> =
        std::sync::Arc::new(reporter(opts.progress.clone(), Phase::Push));
    let (remote, listed_head) = loop {
        round += 1;
        let targeted = trusted.take();
        let (b, r) = send_round(
            t,
            &ws,
            spec,
            opts,
            point.is_some(),
            baseline,
            send,
            delete,
            targeted.is_some(),
            &progress,
        )
        .await?;
        baseline = b;
        report.deleted += r.deleted;
        report.files += r.stats.files;
        report.bytes += r.stats.bytes;
        let remote = match (targeted, r.targeted) {
            (Some(prev_remote), Some(listed)) => {
                merge_remote(prev_remote, &r.deleted_paths, &listed, r.listing, &baseline)
            }
            _ => {
                let rfilter = filter_for_listing(&ws, opts, &r.listing)?;
                remote_manifest(&baseline, r.listing.manifest, &rfilter)
            }
        };
        let (d, s) = reconcile(&baseline, &remote);
        if (d.is_empty() && s.is_empty()) || round >= 2 {
            if !d.is_empty() || !s.is_empty() {
                tracing::warn!(
                    extra = d.len(),
                    differing = s.len(),
                    "remote copy still differs after repair; the next push resends it"
                );
            }
            break (remote, r.head);
        }
        delete = d;
        send = Some(s);
    };
    let mut st = new_state(baseline, remote);
    st.git = point.clone();
    st.remote_head = point.map(|p| p.head).or(listed_head);
    // Either order is safe (a mismatch only means a full push next time): both at once.
    let state_id = st.state_id.clone();
    let (saved, recorded) = tokio::join!(
        save_blocking(&sd, &spec.scope, st),
        record_state_id(t, spec, &state_id)
    );
    saved?;
    recorded?;
    Ok(report)
}

/// The first push of a plain (non-git) tree, with no recorded state: necessarily a full one,
/// so no probe is needed. One exec channel prepares and clears the remote copy, extracts the
/// stream, lists the result and writes the marker; it is opened while the workspace is
/// scanned. The marker is written before the local state is saved: if that save fails, the
/// ids differ and the next push is a full one again.
async fn push_first(
    t: &dyn Transport,
    ws: &Path,
    spec: &RemoteSpec,
    opts: &SyncOptions,
    sd: &StateDir,
) -> Result<PushReport, SyncError> {
    let (rws, meta) = (quote(&spec.ws()), quote(&spec.meta()));
    let filter = local_filter(ws, opts, false).await?;
    let state_id = uuid::Uuid::new_v4().simple().to_string();
    let gzip = !link_is_local(t);
    let z = if gzip { "-z " } else { "" };
    let script = format!(
        "set -e\nmkdir -p {meta}\nrm -f {meta}/state-id\nmkdir -p {rws}\ncd {rws}\n\
         find . -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} +\n\
         tar -x {z}-p -f - --no-same-owner --delay-directory-restore\n{listing}\
         printf '%s:%s' {id} \"$(stat -c %i.%.9W .)\" > {meta}/state-id\n",
        listing = listing_script(false, false),
        id = quote(&state_id),
    );
    let (rd, wr) = tokio::io::duplex(256 * 1024);
    let progress: std::sync::Arc<dyn Fn(StreamStats) + Send + Sync> =
        std::sync::Arc::new(reporter(opts.progress.clone(), Phase::Push));
    // The tree is scanned into a spool and streamed in path order; the baseline is written
    // as the stream goes, with the hashes of the bytes sent. Nothing of the whole tree is
    // held in memory (see `spool`).
    let build = {
        let (ws, filter, progress) = (ws.to_path_buf(), filter.clone(), progress.clone());
        let scratch = sd.scratch();
        blocking("build the workspace stream", move || {
            let mut spool = Spool::new(&scratch);
            let (taken_at_ns, scan_report) =
                scan_each(&ws, &filter, |_| None, false, &mut |e| spool.push(e))?;
            let mut base = SortedWriter::create(&scratch.dir)?;
            let stats = stream_each(&ws, spool.finish()?, wr, gzip, &*progress, &mut |e| {
                base.push(&e)
            })?;
            Ok((base.finish(taken_at_ns)?, stats, scan_report))
        })
    };
    let listen = {
        let (env, scratch) = (t.describe(), sd.scratch());
        move |r: &mut crate::remote::ChanReader| {
            let mut r = std::io::BufReader::with_capacity(64 * 1024, r);
            listing_into_spool(&env, &mut r, &scratch)
        }
    };
    let (listed, built) = tokio::join!(
        exec_into(
            t,
            ExecRequest::new(script).stdin_reader(rd),
            "extract the workspace stream",
            listen,
        ),
        build
    );
    // The remote's failure explains a broken stream: report it first.
    let (listing, listed) = listed?;
    let (baseline, stats, scan_report) = built?;
    let mut report = PushReport {
        full: true,
        files: stats.files,
        bytes: stats.bytes,
        skipped_special: scan_report.skipped_special,
        ..PushReport::default()
    };
    let rfilter = filter_for_listing(ws, opts, &listing)?;
    let (scratch, local) = (sd.scratch(), baseline.clone());
    let taken_at_ns = listing.manifest.taken_at_ns;
    let (remote, d, s) = blocking("record the remote manifest", move || {
        remote_from_listing(&scratch, local.iter(), listed, &rfilter, taken_at_ns)
    })
    .await?;
    if d.is_empty() && s.is_empty() {
        let st = StoredState {
            state_id,
            git: None,
            remote_head: None,
            local: baseline,
            remote,
        };
        let (sd, scope) = (sd.clone(), spec.scope.clone());
        blocking("save the sync state", move || sd.save_sorted(&scope, &st)).await?;
        return Ok(report);
    }
    // The copy differs from what was sent (rare): one repair round, as in `push`, on manifests
    // in memory; the marker is only rewritten after it.
    drop(remote);
    let baseline = baseline.to_manifest()?;
    run_ok(
        t,
        &format!("rm -f {meta}/state-id\n"),
        Bytes::new(),
        "prepare the remote workspace",
    )
    .await?;
    let (baseline, r) = send_round(
        t,
        ws,
        spec,
        opts,
        false,
        baseline,
        Some(s),
        d,
        false,
        &progress,
    )
    .await?;
    report.deleted += r.deleted;
    report.files += r.stats.files;
    report.bytes += r.stats.bytes;
    let rfilter = filter_for_listing(ws, opts, &r.listing)?;
    let remote = remote_manifest(&baseline, r.listing.manifest, &rfilter);
    let (d, s) = reconcile(&baseline, &remote);
    if !d.is_empty() || !s.is_empty() {
        tracing::warn!(
            extra = d.len(),
            differing = s.len(),
            "remote copy still differs after repair; the next push resends it"
        );
    }
    let mut st = new_state(baseline, remote);
    st.state_id = state_id;
    sd.save(&spec.scope, &st)?;
    record_state_id(t, spec, &st.state_id).await?;
    Ok(report)
}

/// Prints (NUL-terminated) each `./`-prefixed argument none of whose ancestors (below `.`) is
/// a symbolic link, for `xargs -0 rm -rf --`. Parameter expansion, not `dirname`: no process
/// per path.
const UNLESS_BELOW_LINK: &str = r#"'for p do
  d=${p%/*}; below_link=
  while [ "$d" != . ] && [ -n "$d" ]; do
    if [ -L "$d" ]; then below_link=1; break; fi
    n=${d%/*}
    [ "$n" != "$d" ] || break
    d=$n
  done
  [ -n "$below_link" ] || printf "%s\0" "$p"
done'"#;

struct Round {
    stats: StreamStats,
    /// The full listing (empty when only the sent paths were listed).
    listing: crate::remote::Listing,
    /// The paths that were listed, when only those were.
    targeted: Option<Vec<RelPath>>,
    head: Option<String>,
    deleted: usize,
    deleted_paths: Vec<RelPath>,
}

/// Most uncompressed file bytes an embedded (control-shell) tar payload is built from.
const EMBED_RAW_MAX: u64 = 512 * 1024;

/// Build the tar stream of `send` (or of all of `baseline`) into `out`, recording the hash
/// of every file as sent into `baseline`.
fn build_into<W: std::io::Write>(
    root: &Path,
    baseline: &mut Manifest,
    send: Option<&[Entry]>,
    out: W,
    progress: &dyn Fn(StreamStats),
) -> Result<(StreamStats, W), SyncError> {
    let (sent, stats, out) = match send {
        Some(list) => write_tar(root, list, out, progress)?,
        None => write_tar(root, baseline.entries.values(), out, progress)?,
    };
    for (p, h) in sent {
        if let Some(e) = baseline.entries.get_mut(&p) {
            e.sha256 = Some(h);
        }
    }
    Ok((stats, out))
}

/// [`build_into`] a stream into `wr` (gzip unless the link is local), finished and flushed.
fn stream_into(
    root: &Path,
    baseline: &mut Manifest,
    send: Option<&[Entry]>,
    wr: tokio::io::DuplexStream,
    gzip: bool,
    progress: &dyn Fn(StreamStats),
) -> Result<StreamStats, SyncError> {
    let mut hashes = Vec::new();
    let entries: Box<dyn Iterator<Item = &Entry>> = match send {
        Some(list) => Box::new(list.iter()),
        None => Box::new(baseline.entries.values()),
    };
    let stats = stream_each(
        root,
        entries.cloned().map(Ok),
        wr,
        gzip,
        progress,
        &mut |e| {
            if let Some(h) = e.sha256.filter(|_| e.kind == EntryKind::File) {
                hashes.push((e.path, h));
            }
            Ok(())
        },
    )?;
    for (p, h) in hashes {
        if let Some(e) = baseline.entries.get_mut(&p) {
            e.sha256 = Some(h);
        }
    }
    Ok(stats)
}

/// A tar stream of `entries` into `wr` (gzip unless the link is local), finished and flushed;
/// each entry goes on to `sent` once it is in the stream (a file's with the hash of the bytes
/// sent).
fn stream_each(
    root: &Path,
    entries: impl IntoIterator<Item = Result<Entry, SyncError>>,
    wr: tokio::io::DuplexStream,
    gzip: bool,
    progress: &dyn Fn(StreamStats),
    sent: &mut dyn FnMut(Entry) -> Result<(), SyncError>,
) -> Result<StreamStats, SyncError> {
    let out = Packer::new(
        std::io::BufWriter::with_capacity(256 * 1024, SyncIoBridge::new(wr)),
        gzip,
    );
    let (stats, out) = write_tar_each(root, entries, out, progress, sent)?;
    let finish = |e| SyncError::io("finish the workspace stream", root, e);
    let mut bridge = out
        .finish()
        .and_then(|b| b.into_inner().map_err(|e| e.into_error()))
        .map_err(finish)?;
    std::io::Write::flush(&mut bridge).map_err(finish)?;
    Ok(stats)
}

/// The tar output: plain (fast links) or gzip (fast level).
enum Packer<W: std::io::Write> {
    Plain(W),
    Gz(GzEncoder<W>),
}

impl<W: std::io::Write> std::io::Write for Packer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gz(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gz(w) => w.flush(),
        }
    }
}

impl<W: std::io::Write> Packer<W> {
    fn new(w: W, gzip: bool) -> Self {
        if gzip {
            Self::Gz(GzEncoder::new(w, Compression::fast()))
        } else {
            Self::Plain(w)
        }
    }
    fn finish(self) -> std::io::Result<W> {
        match self {
            Self::Plain(w) => Ok(w),
            Self::Gz(w) => w.finish(),
        }
    }
}

/// Script fragment listing only `paths` (as `listing_script` does for the whole tree), from a
/// NUL list on stdin.
fn targeted_listing_cmd() -> &'static str {
    // Missing paths are simply not listed: the reconcile step resends them.
    "xargs -0 -r sh -c 'exec find \"$@\" -maxdepth 0 -printf \"E\\\\0%y\\\\0%m\\\\0%s\\\\0%T@\\\\0%p\\\\0%l\\\\0\"' berth-list || true\n"
}

#[expect(clippy::too_many_arguments, reason = "one round of the push protocol")]
async fn send_round(
    t: &dyn Transport,
    ws: &Path,
    spec: &RemoteSpec,
    opts: &SyncOptions,
    is_git: bool,
    mut baseline: Manifest,
    mut send: Option<Vec<Entry>>,
    mut delete: Vec<RelPath>,
    want_targeted: bool,
    progress: &std::sync::Arc<dyn Fn(StreamStats) + Send + Sync>,
) -> Result<(Manifest, Round), SyncError> {
    // Deleting a directory deletes what is below it.
    let del_set: BTreeSet<RelPath> = delete.iter().cloned().collect();
    delete.retain(|p| !p.ancestors().any(|a| del_set.contains(&a)));
    if !delete.is_empty() {
        let list = nul_list(&delete.iter().map(RelPath::dot_slash).collect::<Vec<_>>());
        // A path below a symlink is not an entry of this tree (a directory may have been
        // replaced by a link earlier in the push): never delete through a link.
        let cmd =
            format!("xargs -0 sh -c {UNLESS_BELOW_LINK} berth-delete | xargs -0 -r rm -rf --\n");
        match embedded(&list) {
            Some(data) => {
                run_ok(
                    t,
                    &format!("{}{data} | {cmd}", cd_ws(spec)),
                    Bytes::new(),
                    "delete paths in the remote workspace",
                )
                .await?;
            }
            None => {
                run_ok(
                    t,
                    &format!("{}{cmd}", cd_ws(spec)),
                    list,
                    "delete paths in the remote workspace",
                )
                .await?;
            }
        }
    }

    // Which paths to list afterwards: only the sent ones when the caller trusts the rest and
    // the list is small enough to embed; otherwise the whole tree.
    let targeted_list = match (&send, want_targeted) {
        (Some(list), true) => {
            let paths: Vec<RelPath> = list.iter().map(|e| e.path.clone()).collect();
            let data = nul_list(&paths.iter().map(RelPath::dot_slash).collect::<Vec<_>>());
            embedded(&data).map(|frag| (paths, frag))
        }
        _ => None,
    };
    let listing_part = match &targeted_list {
        Some((_, frag)) => {
            let mut l = String::from("printf 'T\\0%s\\0' \"$(date +%s)\"\n");
            if is_git {
                l.push_str(
                    "printf 'H\\0%s\\0' \"$(git rev-parse -q --verify HEAD 2>/dev/null)\"\n",
                );
            }
            l.push_str(frag);
            l.push_str(" | ");
            l.push_str(targeted_listing_cmd());
            l
        }
        None => listing_script(is_git, is_git && !opts.sync_ignored),
    };

    // Small payloads travel inside one control-shell step (no exec channel, no stdin).
    let small = send.as_ref().is_some_and(|list| {
        list.iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.size)
            .sum::<u64>()
            <= EMBED_RAW_MAX
    });
    let mut done: Option<(StreamStats, Bytes)> = None;
    if small {
        let root = ws.to_path_buf();
        let prog = progress.clone();
        let (b, send_back, built) = tokio::task::spawn_blocking(move || {
            let gz = GzEncoder::new(Vec::new(), Compression::fast());
            let r = build_into(&root, &mut baseline, send.as_deref(), gz, &*prog).and_then(
                |(stats, gz)| {
                    gz.finish()
                        .map(|v| (stats, v))
                        .map_err(|e| SyncError::io("finish the compressed stream", &root, e))
                },
            );
            (baseline, send, r)
        })
        .await
        .map_err(|e| SyncError::Task {
            what: "build the workspace stream".to_owned(),
            detail: e.to_string(),
        })?;
        baseline = b;
        let (stats, bytes) = built?;
        // The listed paths are embedded in the same script: both together stay within the
        // budget of one script (the exec-channel fallback passes it as one argv string).
        let list_len = targeted_list.as_ref().map_or(0, |(_, frag)| frag.len());
        let data = embedded(&bytes).filter(|d| d.len() + list_len <= EMBED_SCRIPT_MAX);
        if let Some(data) = data {
            let script = format!(
                "set -e\n{}{data} | tar -x -z -p -f - --no-same-owner --delay-directory-restore\n{listing_part}",
                cd_ws(spec)
            );
            let out = run_collect(t, &script, "extract the workspace stream").await?;
            done = Some((stats, out.stdout));
        }
        // Too large once packed: streamed instead.
        send = send_back;
    }
    finish_round(
        t,
        ws,
        spec,
        baseline,
        send,
        done,
        delete,
        targeted_list,
        listing_part,
        progress,
    )
    .await
}

#[expect(clippy::too_many_arguments, reason = "one round of the push protocol")]
async fn finish_round(
    t: &dyn Transport,
    ws: &Path,
    spec: &RemoteSpec,
    mut baseline: Manifest,
    send: Option<Vec<Entry>>,
    done: Option<(StreamStats, Bytes)>,
    delete: Vec<RelPath>,
    targeted_list: Option<(Vec<RelPath>, String)>,
    listing_part: String,
    progress: &std::sync::Arc<dyn Fn(StreamStats) + Send + Sync>,
) -> Result<(Manifest, Round), SyncError> {
    let (stats, stdout) = match done {
        Some(d) => d,
        None => {
            // One tar stream in, the listing out. Compressed unless the link is local.
            let gzip = !link_is_local(t);
            let (rd, wr) = tokio::io::duplex(256 * 1024);
            let root = ws.to_path_buf();
            let progress = progress.clone();
            let builder = tokio::task::spawn_blocking(move || {
                let r = stream_into(&root, &mut baseline, send.as_deref(), wr, gzip, &*progress);
                (baseline, r)
            });
            let z = if gzip { "-z " } else { "" };
            let script = format!(
                "set -e\n{}tar -x {z}-p -f - --no-same-owner --delay-directory-restore\n{listing_part}",
                cd_ws(spec),
            );
            let listed = exec_collect(
                t,
                ExecRequest::new(script).stdin_reader(rd),
                "extract the workspace stream",
            )
            .await;
            let (b, built) = builder.await.map_err(|e| SyncError::Task {
                what: "build the workspace stream".to_owned(),
                detail: e.to_string(),
            })?;
            baseline = b;
            let listed = listed?;
            (built?, listed.stdout)
        }
    };
    let listing = parse_listing(&t.describe(), &stdout)?;
    drop(stdout);
    let head = listing.head.clone();
    let round = Round {
        stats,
        listing,
        targeted: targeted_list.map(|(paths, _)| paths),
        head,
        deleted: delete.len(),
        deleted_paths: delete,
    };
    Ok((baseline, round))
}

/// The remote manifest after an incremental push, from the recorded one: deleted paths (and
/// what was below them) and the sent paths go, the sent paths come back as listed (with the
/// hashes of the bytes sent). Untouched entries keep what was recorded, as a full re-listing
/// would have given them (their hashes came from the same baseline or a restore's hashing).
fn merge_remote(
    mut prev: Manifest,
    deleted: &[RelPath],
    sent: &[RelPath],
    listed: crate::remote::Listing,
    baseline: &Manifest,
) -> Manifest {
    let gone: BTreeSet<&RelPath> = deleted.iter().collect();
    if !gone.is_empty() {
        prev.entries
            .retain(|p, _| !gone.contains(p) && !p.ancestors().any(|a| gone.contains(&a)));
    }
    for p in sent {
        prev.entries.remove(p);
    }
    let sent_set: BTreeSet<&RelPath> = sent.iter().collect();
    for (p, mut e) in listed.manifest.entries {
        if !sent_set.contains(&p) {
            continue;
        }
        if e.kind == EntryKind::File {
            e.sha256 = baseline
                .get(&p)
                .filter(|b| b.kind == EntryKind::File && b.size == e.size)
                .and_then(|b| b.sha256);
        }
        prev.entries.insert(p, e);
    }
    prev.taken_at_ns = listed.manifest.taken_at_ns;
    prev
}

/// The remote manifest from a post-push listing: hashes come from the baseline where kind and
/// size agree (the remote was just made equal to it), else stay unknown.
fn remote_manifest(baseline: &Manifest, mut listed: Manifest, filter: &Filter) -> Manifest {
    // In place: no second copy of a large listing.
    listed
        .entries
        .retain(|p, e| !filter.is_excluded(p, e.kind == EntryKind::Dir));
    for e in listed.entries.values_mut() {
        if e.kind == EntryKind::File {
            e.sha256 = sent_hash(e, baseline.get(&e.path));
        }
    }
    listed
}

/// What still differs between the local manifest and the remote after a push, as far as a
/// listing can tell (kind, size, mode, link target): paths to delete and entries to resend.
fn reconcile(local: &Manifest, remote: &Manifest) -> (Vec<RelPath>, Vec<Entry>) {
    let (mut delete, mut send) = (Vec::new(), Vec::new());
    let (l, r) = (local.entries.values(), remote.entries.values());
    let ok = zip_sorted(l.cloned().map(Ok), r.cloned().map(Ok), |l, r| {
        reconcile_path(l.as_ref(), r.as_ref(), &mut delete, &mut send);
        Ok(())
    });
    debug_assert!(ok.is_ok(), "in-memory streams cannot fail");
    (delete, send)
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

/// [`remote_manifest`] and [`reconcile`] in one merge of two sorted streams: the baseline and
/// the remote's listing of itself. The remote manifest goes to a sorted file; what still
/// differs is returned (normally nothing).
fn remote_from_listing(
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

/// A listed remote entry with the hash of the baseline's entry where kind and size agree (the
/// remote was just made equal to it); else unknown.
fn with_sent_hash(mut r: Entry, baseline: Option<&Entry>) -> Entry {
    if r.kind == EntryKind::File {
        r.sha256 = sent_hash(&r, baseline);
    }
    r
}

/// The hash a listed remote file has after a push: the baseline's, where kind and size agree.
fn sent_hash(r: &Entry, baseline: Option<&Entry>) -> Option<crate::manifest::ContentHash> {
    baseline
        .filter(|b| b.kind == EntryKind::File && b.size == r.size)
        .and_then(|b| b.sha256)
}

/// The scope filter for a remote listing: the local rules plus the remote's git-ignored paths.
pub(crate) fn filter_for_listing(
    ws: &Path,
    opts: &SyncOptions,
    listing: &crate::remote::Listing,
) -> Result<Filter, SyncError> {
    let f = Filter::new(ws, &opts.excludes)?;
    Ok(f.with_git_ignored(&listing.git_ignored))
}

async fn send_bundle(
    t: &dyn Transport,
    ws: &Path,
    spec: &RemoteSpec,
    head: &str,
    base: Option<&str>,
) -> Result<(), SyncError> {
    let tmp_ref = format!("refs/berth/sync/push-{}", uuid::Uuid::new_v4().simple());
    git::git(
        ws,
        &["update-ref", &tmp_ref, head],
        "create a temporary ref",
    )
    .await?;
    let result = async {
        let mut child = git::spawn_bundle(ws, &tmp_ref, base)?;
        let stdout = child.stdout.take().ok_or_else(|| SyncError::Git {
            what: "create a bundle".to_owned(),
            detail: "no stdout".to_owned(),
        })?;
        let mut stderr = child.stderr.take();
        let script = format!(
            "set -e\n{cd}[ -e .git ] || git init -q .\nb={meta}/in-{id}.bundle\ntrap 'rm -f \"$b\"' EXIT\ncat > \"$b\"\n\
             git fetch -q --force \"$b\" {r}:refs/berth/sync/head\n",
            cd = cd_ws(spec),
            meta = quote(&spec.meta()),
            r = quote(&tmp_ref),
            id = uuid::Uuid::new_v4().simple(),
        );
        let sent = exec_collect(
            t,
            ExecRequest::new(script).stdin_reader(stdout),
            "import the git bundle",
        )
        .await;
        let status = child.wait().await.map_err(|e| SyncError::Git {
            what: "create a bundle".to_owned(),
            detail: e.to_string(),
        })?;
        if !status.success() {
            let mut msg = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut msg).await;
            }
            return Err(SyncError::Git {
                what: "create a bundle".to_owned(),
                detail: msg.trim().to_owned(),
            });
        }
        sent.map(|_| ())
    }
    .await;
    let _ = git::git(
        ws,
        &["update-ref", "-d", &tmp_ref],
        "delete a temporary ref",
    )
    .await;
    result
}

/// [`StateDir::save`] on a blocking thread.
async fn save_blocking(sd: &StateDir, scope: &str, st: ScopeState) -> Result<(), SyncError> {
    let (sd, scope) = (sd.clone(), scope.to_owned());
    tokio::task::spawn_blocking(move || sd.save(&scope, &st))
        .await
        .map_err(|e| SyncError::Task {
            what: "save the sync state".to_owned(),
            detail: e.to_string(),
        })?
}

/// Write `<state id>:<inode.birth time of the remote copy>` as the remote marker, which a
/// restore checks before trusting the copy.
async fn record_state_id(
    t: &dyn Transport,
    spec: &RemoteSpec,
    state_id: &str,
) -> Result<(), SyncError> {
    run_ok(
        t,
        &format!(
            "printf '%s:%s' {} \"$(stat -c %i.%.9W {})\" > {}/state-id\n",
            quote(state_id),
            quote(&spec.ws()),
            quote(&spec.meta())
        ),
        Bytes::new(),
        "record the remote workspace state",
    )
    .await?;
    Ok(())
}
