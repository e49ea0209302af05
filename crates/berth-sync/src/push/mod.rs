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
//!
//! Manifests never sit in memory whole: they are path-ordered streams (sorted spools and
//! files next to the sync state, see [`crate::spool`]), and every comparison is a merge of
//! such streams (`compare.rs`). What a push holds is bounded by the spool size and by the size
//! of the change (the lists of entries to send and paths to delete), not by the tree. The
//! rounds of the protocol live in `round.rs`.

use std::path::Path;

use berth_exec::shell::quote;
use berth_exec::{ExecRequest, Transport};
use tokio::io::AsyncReadExt as _;

use crate::archive::StreamStats;
use crate::error::{SyncError, blocking};
use crate::git;
use crate::manifest::{Entry, Filter, scan_each, scan_sorted};
use crate::path::RelPath;
use crate::progress::{Phase, reporter};
use crate::remote::{
    RemoteSpec, cd_ws, exec_collect, exec_into, link_is_local, listing_script, run_ok,
    spool_listing, validate_object_id,
};
use crate::spool::{SortedFile, SortedWriter, Spool};
use crate::state::{GitPoint, StateDir, StoredState, SyncOptions, new_state_id};

mod compare;
mod round;

use round::{Ctx, send_round, stream_each};

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

/// Push `ws` to `spec` over `t`. Records the baseline for [`crate::restore()`].
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
        let prev = {
            let (sd, scope) = (sd.clone(), spec.scope.clone());
            blocking("load the sync state", move || sd.open(&scope)).await?
        };
        let point = git::local_point(&ws).await?;
        let filter = local_filter(&ws, opts, point.is_some()).await?;
        // Hashes are reused from the recorded local manifest where size and mtime prove them
        // and computed for the rest when they will be compared: with the recorded remote
        // (a resumed push) or before asking git what differs from HEAD (a file edited in
        // between is then sent rather than recorded with content the remote checkout does
        // not have). A full push of a plain tree hashes the bytes as it sends them.
        let hash = prev.is_some() || point.is_some();
        let (root, f, scratch) = (ws.clone(), filter.clone(), sd.scratch());
        let recorded = prev.as_ref().map(|p| p.local.clone());
        let (local, scan_report) = blocking("scan the workspace", move || {
            scan_sorted(&root, &f, &scratch, recorded.as_ref(), hash)
        })
        .await?;
        Ok::<_, SyncError>((prev, point, filter, local, scan_report))
    };
    let (out, local_side) = tokio::join!(
        run_ok(t, &probe, "prepare the remote workspace"),
        local_side
    );
    let (prev, point, filter, local, scan_report) = local_side?;
    let out = out?;
    let mut out = out.stdout_text();
    if point.is_some() {
        let git_probe = format!(
            "command -v git >/dev/null 2>&1 || {{ echo 'git is not installed' >&2; exit 4; }}\n\
             cd {rws} && git rev-parse -q --verify 'HEAD^{{commit}}' 2>/dev/null\nexit 0\n"
        );
        let g = run_ok(t, &git_probe, "prepare the remote workspace").await?;
        out.push_str(&g.stdout_text());
    }
    let mut lines = out.lines();
    let marker = lines.next().unwrap_or("").trim().to_owned();
    let inode = lines.next().unwrap_or("").trim().to_owned();
    let probe_head = lines
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|h| validate_object_id(&t.describe(), h))
        .transpose()?;
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

    // A full push of a git work tree sends only what differs from HEAD. Computed after the
    // scan: a file edited in between is then sent rather than assumed equal to HEAD.
    let changed = match &point {
        Some(_) if !incremental => Some(git::changed_vs_head(&ws, opts.sync_ignored).await?),
        _ => None,
    };

    if !incremental {
        // `-delete`, not `-exec rm`: no name of the old copy reaches a command line.
        let keep_git = if point.is_some() {
            "! -path ./.git ! -path './.git/*' "
        } else {
            ""
        };
        run_ok(
            t,
            &format!("{}find . -mindepth 1 {keep_git}-delete\n", cd_ws(spec)),
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
            "set the remote HEAD",
        )
        .await?;
    }

    // What to send and what to delete (`None`: everything), and the recorded remote manifest
    // a resumed push updates instead of listing the whole copy again.
    let (send, delete, trusted) = match (prev, incremental, changed) {
        (Some(st), true, _) => {
            let (l, r) = (local.clone(), st.remote.clone());
            let (send, delete) = blocking("compare with the remote copy", move || {
                compare::against_remote(l.iter(), r.iter())
            })
            .await?;
            (Some(send), delete, Some(st.remote))
        }
        (_, _, Some(changed)) => {
            let (l, f) = (local.clone(), filter.clone());
            let (send, delete) = blocking("compare with HEAD", move || {
                compare::git_overlay(l.iter(), changed, &f)
            })
            .await?;
            (Some(send), delete, None)
        }
        _ => (None, Vec::new(), None),
    };
    let cx = Ctx {
        t,
        ws: &ws,
        spec,
        opts,
        scratch: sd.scratch(),
        is_git: point.is_some(),
        progress: std::sync::Arc::new(reporter(opts.progress.clone(), Phase::Push)),
    };
    let (local, remote, listed_head) =
        rounds(&cx, &mut report, local, send, delete, trusted).await?;
    let st = StoredState {
        state_id: new_state_id(),
        remote_head: point.as_ref().map(|p| p.head.clone()).or(listed_head),
        git: point,
        local,
        remote,
    };
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

/// Send rounds until the remote matches: deletions, one tar stream, the remote's listing of
/// itself (of the sent paths only when the recorded remote manifest is `trusted`). A second
/// round, with a full listing, repairs whatever still differs (e.g. a directory emptied by a
/// deletion of tracked files in a git checkout, or a stale entry of unexpected kind).
/// Returns the baseline (hashes of the bytes sent), the remote manifest and the remote HEAD.
async fn rounds(
    cx: &Ctx<'_>,
    report: &mut PushReport,
    mut baseline: SortedFile,
    mut send: Option<Vec<Entry>>,
    mut delete: Vec<RelPath>,
    mut trusted: Option<SortedFile>,
) -> Result<(SortedFile, SortedFile, Option<String>), SyncError> {
    let mut round = 0;
    loop {
        round += 1;
        let r = send_round(cx, baseline, send, delete, trusted.take()).await?;
        baseline = r.baseline;
        report.deleted += r.deleted;
        report.files += r.stats.files;
        report.bytes += r.stats.bytes;
        if (r.extra.is_empty() && r.differing.is_empty()) || round >= 2 {
            if !r.extra.is_empty() || !r.differing.is_empty() {
                tracing::warn!(
                    extra = r.extra.len(),
                    differing = r.differing.len(),
                    "remote copy still differs after repair; the next push resends it"
                );
            }
            return Ok((baseline, r.remote, r.head));
        }
        delete = r.extra;
        send = Some(r.differing);
    }
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
    let (listed, built) = tokio::join!(
        exec_into(
            t,
            ExecRequest::new(script).stdin_reader(rd),
            "extract the workspace stream",
            spool_listing(t.describe(), sd.scratch()),
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
    let taken_at_ns = listing.taken_at_ns;
    let (remote, d, s) = blocking("record the remote manifest", move || {
        compare::remote_from_listing(&scratch, local.iter(), listed, &rfilter, taken_at_ns)
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
    // The copy differs from what was sent (rare): a repair round, as in `push`; the marker is
    // only rewritten after it.
    drop(remote);
    run_ok(
        t,
        &format!("rm -f {meta}/state-id\n"),
        "prepare the remote workspace",
    )
    .await?;
    let cx = Ctx {
        t,
        ws,
        spec,
        opts,
        scratch: sd.scratch(),
        is_git: false,
        progress,
    };
    let mut more = PushReport::default();
    let (local, remote, _) = rounds(&cx, &mut more, baseline, Some(s), d, None).await?;
    report.deleted += more.deleted;
    report.files += more.files;
    report.bytes += more.bytes;
    let st = StoredState {
        state_id,
        git: None,
        remote_head: None,
        local,
        remote,
    };
    let new_id = st.state_id.clone();
    save_blocking(sd, &spec.scope, st).await?;
    record_state_id(t, spec, &new_id).await?;
    Ok(report)
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
        "record the remote workspace state",
    )
    .await?;
    Ok(())
}
/// [`StateDir::save_sorted`] on a blocking thread.
async fn save_blocking(sd: &StateDir, scope: &str, st: StoredState) -> Result<(), SyncError> {
    let (sd, scope) = (sd.clone(), scope.to_owned());
    blocking("save the sync state", move || sd.save_sorted(&scope, &st)).await
}
