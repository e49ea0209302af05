//! Sync out: realize a local workspace at `<root>/.berth/ws/<scope>/` on any transport.
//!
//! A push takes the workspace lock, scans the workspace, and asks the remote whether its copy is
//! the one the recorded state describes (a marker written at the end of every successful
//! push and removed at the start of the next). If so, only the difference to the recorded
//! remote manifest travels: one deletion list, then one tar stream of changed entries.
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

use crate::archive::{StreamStats, write_tar};
use crate::error::SyncError;
use crate::git;
use crate::manifest::{Entry, EntryKind, Filter, Manifest, scan};
use crate::path::RelPath;
use crate::progress::{Phase, reporter};
use crate::remote::{
    RemoteSpec, cd_ws, exec_collect, listing_script, nul_list, parse_listing, run_ok,
};
use crate::state::{GitPoint, ScopeState, StateDir, SyncOptions, new_state};

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

pub(crate) async fn scan_blocking(
    ws: &Path,
    filter: &Filter,
    previous: Option<Manifest>,
) -> Result<(Manifest, crate::manifest::ScanReport), SyncError> {
    let (ws, filter) = (ws.to_path_buf(), filter.clone());
    tokio::task::spawn_blocking(move || scan(&ws, &filter, previous.as_ref()))
        .await
        .map_err(|e| SyncError::Task {
            what: "scan the workspace".to_owned(),
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
    let prev: Option<ScopeState> = sd.load(&spec.scope)?;
    let point = git::local_point(&ws).await?;
    let filter = local_filter(&ws, opts, point.is_some()).await?;
    let (local, scan_report) =
        scan_blocking(&ws, &filter, prev.as_ref().map(|p| p.local.clone())).await?;

    let (rws, meta) = (quote(&spec.ws()), quote(&spec.meta()));
    // The marker names the state and the work tree it was written for (inode and birth time):
    // a copy that was removed (GC, disk wipe) and recreated never passes for the recorded one.
    let mut probe = format!(
        "mkdir -p {meta} || exit 1\ncat {meta}/state-id 2>/dev/null\nrm -f {meta}/state-id\nprintf '\\n'\n\
         if [ -d {rws} ]; then stat -c %i.%.9W {rws}; else printf '\\n'; fi\nmkdir -p {rws} || exit 1\n"
    );
    if point.is_some() {
        probe.push_str(&format!(
            "command -v git >/dev/null 2>&1 || {{ echo 'git is not installed' >&2; exit 4; }}\n\
             cd {rws} && git rev-parse -q --verify 'HEAD^{{commit}}' 2>/dev/null\nexit 0\n"
        ));
    }
    let out = run_ok(t, &probe, Bytes::new(), "prepare the remote workspace").await?;
    let out = out.stdout_text();
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

    // What to send and what to delete.
    let mut send: Vec<Entry> = Vec::new();
    let mut delete: Vec<RelPath> = Vec::new();
    match (&prev, incremental, &changed) {
        (Some(st), true, _) => {
            for e in local.entries.values() {
                if st.remote.get(&e.path).is_none_or(|r| !r.same_content(e)) {
                    send.push(e.clone());
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
        }
        (_, _, Some(changed)) => {
            let changed_set: BTreeSet<&RelPath> = changed.iter().collect();
            for e in local.entries.values() {
                if e.kind == EntryKind::Dir || changed_set.contains(&e.path) {
                    send.push(e.clone());
                }
            }
            for p in changed {
                let is_dir = local.get(p).is_some_and(|e| e.kind == EntryKind::Dir);
                if !is_dir && !filter.is_excluded(p, false) {
                    delete.push(p.clone());
                }
            }
        }
        _ => send.extend(local.entries.values().cloned()),
    }
    // Deletions, one tar stream, the remote's listing of itself. A second round repairs
    // whatever the listing shows still differs (e.g. a directory emptied by a deletion of
    // tracked files in a git checkout, or a stale entry of unexpected kind).
    let mut baseline = local;
    let mut round = 0;
    let progress: std::sync::Arc<dyn Fn(StreamStats) + Send + Sync> =
        std::sync::Arc::new(reporter(opts.progress.clone(), Phase::Push));
    let (remote, listed_head) = loop {
        round += 1;
        let r = send_round(t, &ws, spec, opts, point.is_some(), send, delete, &progress).await?;
        report.deleted += r.deleted;
        report.files += r.stats.files;
        report.bytes += r.stats.bytes;
        for (p, h) in r.sent {
            if let Some(e) = baseline.entries.get_mut(&p) {
                e.sha256 = Some(h);
            }
        }
        let rfilter = filter_for_listing(&ws, opts, &r.listing)?;
        let remote = remote_manifest(&baseline, r.listing.manifest, &rfilter);
        let (d, s) = reconcile(&baseline, &remote);
        if (d.is_empty() && s.is_empty()) || round >= 2 {
            if !d.is_empty() || !s.is_empty() {
                tracing::warn!(
                    extra = d.len(),
                    differing = s.len(),
                    "remote copy still differs after repair; the next push resends it"
                );
            }
            break (remote, r.listing.head);
        }
        delete = d;
        send = s;
    };
    let mut st = new_state(baseline, remote);
    st.git = point.clone();
    st.remote_head = point.map(|p| p.head).or(listed_head);
    sd.save(&spec.scope, &st)?;
    run_ok(
        t,
        &format!(
            "printf '%s:%s' {} \"$(stat -c %i.%.9W {rws})\" > {meta}/state-id\n",
            quote(&st.state_id)
        ),
        Bytes::new(),
        "record the remote workspace state",
    )
    .await?;
    Ok(report)
}

/// `rm -rf` each argument unless one of its ancestors (below `.`) is a symbolic link.
const DELETE_UNLESS_BELOW_LINK: &str = r#"'for p do
  d=$(dirname -- "$p"); below_link=
  while [ "$d" != . ] && [ "$d" != / ]; do
    if [ -L "$d" ]; then below_link=1; break; fi
    d=$(dirname -- "$d")
  done
  [ -n "$below_link" ] || rm -rf -- "$p"
done'"#;

struct Round {
    sent: std::collections::BTreeMap<RelPath, String>,
    stats: StreamStats,
    listing: crate::remote::Listing,
    deleted: usize,
}

#[expect(clippy::too_many_arguments, reason = "one round of the push protocol")]
async fn send_round(
    t: &dyn Transport,
    ws: &Path,
    spec: &RemoteSpec,
    opts: &SyncOptions,
    is_git: bool,
    send: Vec<Entry>,
    mut delete: Vec<RelPath>,
    progress: &std::sync::Arc<dyn Fn(StreamStats) + Send + Sync>,
) -> Result<Round, SyncError> {
    // Deleting a directory deletes what is below it.
    let del_set: BTreeSet<RelPath> = delete.iter().cloned().collect();
    delete.retain(|p| !p.ancestors().any(|a| del_set.contains(&a)));
    if !delete.is_empty() {
        let list: Vec<Vec<u8>> = delete.iter().map(RelPath::dot_slash).collect();
        run_ok(
            t,
            // A path below a symlink is not an entry of this tree (a directory may have been
            // replaced by a link earlier in the push): never delete through a link.
            &format!(
                "{}xargs -0 sh -c {} berth-delete\n",
                cd_ws(spec),
                DELETE_UNLESS_BELOW_LINK
            ),
            nul_list(&list),
            "delete paths in the remote workspace",
        )
        .await?;
    }

    // One tar stream in, the remote's listing of itself out.
    let (rd, wr) = tokio::io::duplex(256 * 1024);
    let root = ws.to_path_buf();
    let progress = progress.clone();
    let builder = tokio::task::spawn_blocking(move || {
        let gz = GzEncoder::new(SyncIoBridge::new(wr), Compression::fast());
        let (sent, stats, gz) = write_tar(&root, &send, gz, &*progress)?;
        let mut bridge = gz
            .finish()
            .map_err(|e| SyncError::io("finish the compressed stream", &root, e))?;
        std::io::Write::flush(&mut bridge)
            .map_err(|e| SyncError::io("finish the compressed stream", &root, e))?;
        drop(bridge);
        Ok::<_, SyncError>((sent, stats))
    });
    let script = format!(
        "set -e\n{}tar -x -z -p -f - --no-same-owner --delay-directory-restore\n{}",
        cd_ws(spec),
        listing_script(is_git, is_git && !opts.sync_ignored)
    );
    let listed = exec_collect(
        t,
        ExecRequest::new(script).stdin_reader(rd),
        "extract the workspace stream",
    )
    .await;
    let built = builder.await.map_err(|e| SyncError::Task {
        what: "build the workspace stream".to_owned(),
        detail: e.to_string(),
    })?;
    let listed = listed?;
    let (sent, stats) = built?;
    let listing = parse_listing(&t.describe(), &listed.stdout)?;
    Ok(Round {
        sent,
        stats,
        listing,
        deleted: delete.len(),
    })
}

/// The remote manifest from a post-push listing: hashes come from the baseline where kind and
/// size agree (the remote was just made equal to it), else stay unknown.
fn remote_manifest(baseline: &Manifest, listed: Manifest, filter: &Filter) -> Manifest {
    let mut remote = Manifest {
        taken_at_ns: listed.taken_at_ns,
        ..Manifest::default()
    };
    for (p, mut e) in listed.entries {
        if filter.is_excluded(&p, e.kind == EntryKind::Dir) {
            continue;
        }
        if e.kind == EntryKind::File {
            e.sha256 = baseline
                .get(&p)
                .filter(|b| b.kind == EntryKind::File && b.size == e.size)
                .and_then(|b| b.sha256.clone());
        }
        remote.entries.insert(p, e);
    }
    remote
}

/// What still differs between the local manifest and the remote after a push, as far as a
/// listing can tell (kind, size, mode, link target): paths to delete and entries to resend.
fn reconcile(local: &Manifest, remote: &Manifest) -> (Vec<RelPath>, Vec<Entry>) {
    let mut delete = Vec::new();
    let mut send = Vec::new();
    for (p, r) in &remote.entries {
        match local.get(p) {
            None => delete.push(p.clone()),
            Some(l)
                if l.kind != r.kind || (l.kind == EntryKind::Symlink && l.target != r.target) =>
            {
                delete.push(p.clone());
            }
            Some(_) => {}
        }
    }
    for (p, l) in &local.entries {
        let differs = match remote.get(p) {
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
    (delete, send)
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
