//! One round of the push protocol: deletions, one tar stream of entries (embedded in a
//! control-shell step when small), and the remote's listing of itself, which becomes the new
//! remote manifest (merged into the recorded one when only the sent paths were listed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use berth_exec::transport::RUN_TIMEOUT;
use berth_exec::{ExecRequest, Transport};
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio_util::io::SyncIoBridge;

use super::compare;
use crate::archive::{StreamStats, write_tar_each};
use crate::error::{SyncError, blocking};
use crate::manifest::{Entry, EntryKind};
use crate::path::RelPath;
use crate::remote::{
    EMBED_SCRIPT_MAX, Listing, RemoteSpec, cd_ws, embedded, exec_collect, exec_into, link_is_local,
    listing_into_spool, listing_script, nul_list, run_collect, run_ok, spool_listing,
};
use crate::spool::{Scratch, Sorted, SortedFile, SortedWriter};
use crate::state::SyncOptions;

/// What every round of one push shares.
pub(super) struct Ctx<'a> {
    pub t: &'a dyn Transport,
    pub ws: &'a Path,
    pub spec: &'a RemoteSpec,
    pub opts: &'a SyncOptions,
    pub scratch: Scratch,
    pub is_git: bool,
    pub progress: Arc<dyn Fn(StreamStats) + Send + Sync>,
}

/// What one round did and found.
pub(super) struct Round {
    /// The local manifest with the hashes of the bytes sent.
    pub baseline: SortedFile,
    /// The remote manifest after the round.
    pub remote: SortedFile,
    pub head: Option<String>,
    pub stats: StreamStats,
    pub deleted: usize,
    /// Remote paths that should not be there, and local entries the remote lacks or has
    /// different (as far as a listing can tell).
    pub extra: Vec<RelPath>,
    pub differing: Vec<Entry>,
}

/// What the tar stream carried, as the baseline needs it.
enum Sent {
    /// The entries of `send` as they were to be sent, and in the same order as sent, with
    /// the hashes of the bytes sent.
    List(Vec<Entry>, Vec<Entry>),
    /// Everything: the new baseline, written as the stream went.
    All(SortedFile),
}

/// Prints (NUL-terminated) each `./`-prefixed argument none of whose ancestors (below `.`) is
/// a symbolic link, for `xargs -0 rm -rf --`. Parameter expansion, not `dirname`: no process
/// per path. The names being deleted do reach these processes' argv (`sh`, `rm`): no POSIX
/// tool deletes by names read from stdin with this guard.
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

/// Most uncompressed file bytes an embedded (control-shell) tar payload is built from.
const EMBED_RAW_MAX: u64 = 512 * 1024;

/// One round: delete `delete`, send `send` (`None`: all of `baseline`), list the remote
/// (only the sent paths when `trusted` is the recorded remote manifest and the list is small).
pub(super) async fn send_round(
    cx: &Ctx<'_>,
    baseline: SortedFile,
    send: Option<Vec<Entry>>,
    mut delete: Vec<RelPath>,
    trusted: Option<SortedFile>,
) -> Result<Round, SyncError> {
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
                    cx.t,
                    &format!("{}{data} | {cmd}", cd_ws(cx.spec)),
                    "delete paths in the remote workspace",
                )
                .await?;
            }
            None => {
                exec_collect(
                    cx.t,
                    ExecRequest::new(format!("{}{cmd}", cd_ws(cx.spec)))
                        .stdin_bytes(list)
                        .timeout(RUN_TIMEOUT),
                    "delete paths in the remote workspace",
                )
                .await?;
            }
        }
    }

    // Which paths to list afterwards: only the sent ones when the caller trusts the rest and
    // the list is small enough to embed; otherwise the whole tree.
    let targeted = match (&send, &trusted) {
        (Some(list), Some(_)) => {
            let data = nul_list(&list.iter().map(|e| e.path.dot_slash()).collect::<Vec<_>>());
            embedded(&data)
        }
        _ => None,
    };
    let listing_part = match &targeted {
        Some(frag) => {
            let mut l = String::from("printf 'T\\0%s\\0' \"$(date +%s)\"\n");
            if cx.is_git {
                l.push_str(
                    "printf 'H\\0%s\\0' \"$(git rev-parse -q --verify HEAD 2>/dev/null)\"\n",
                );
            }
            l.push_str(frag);
            l.push_str(" | ");
            l.push_str(targeted_listing_cmd());
            l
        }
        None => listing_script(cx.is_git, cx.is_git && !cx.opts.sync_ignored),
    };
    // A full listing of a tree larger than a spool never goes through a control-shell step
    // (whose output is held in memory): it streams from its own channel into a spool.
    let inline_ok = targeted.is_some() || baseline.count <= cx.scratch.spool_entries as u64;
    let small = inline_ok
        && send.as_ref().is_some_and(|list| {
            list.iter()
                .filter(|e| e.kind == EntryKind::File)
                .map(|e| e.size)
                .sum::<u64>()
                <= EMBED_RAW_MAX
        });
    let (stats, sent, listing, listed) = match send {
        Some(list) if small => {
            match embedded_round(cx, list, targeted.as_deref(), &listing_part).await? {
                Ok(received) => received,
                // Too large once packed: streamed instead.
                Err(list) => streamed_round(cx, &baseline, Some(list), &listing_part).await?,
            }
        }
        send => streamed_round(cx, &baseline, send, &listing_part).await?,
    };
    let taken_at_ns = listing.taken_at_ns;
    let head = listing.head.clone();
    let scratch = cx.scratch.clone();
    let rfilter = super::filter_for_listing(cx.ws, cx.opts, &listing)?;
    drop(listing);
    let deleted = delete.len();
    blocking("record the remote manifest", move || {
        let (baseline, sent_entries) = match sent {
            Sent::All(file) => (file, Vec::new()),
            Sent::List(before, entries) => (
                compare::with_sent_hashes(&scratch, baseline, &before, &entries)?,
                entries,
            ),
        };
        let (remote, extra, differing) = match trusted.filter(|_| targeted.is_some()) {
            Some(recorded) => {
                let sent: BTreeMap<RelPath, Entry> = sent_entries
                    .into_iter()
                    .map(|e| (e.path.clone(), e))
                    .collect();
                let remote = compare::merge_remote(
                    &scratch,
                    &recorded,
                    &delete,
                    &sent,
                    listed,
                    taken_at_ns,
                )?;
                let (extra, differing) = compare::reconcile(baseline.iter(), remote.iter())?;
                (remote, extra, differing)
            }
            None => compare::remote_from_listing(
                &scratch,
                baseline.iter(),
                listed,
                &rfilter,
                taken_at_ns,
            )?,
        };
        Ok(Round {
            baseline,
            remote,
            head,
            stats,
            deleted,
            extra,
            differing,
        })
    })
    .await
}

type Received = (StreamStats, Sent, Listing, Sorted);

/// Send `list` inside one control-shell step (no exec channel, no stdin) with the listing in
/// the same script. `Err(list)` when the packed payload is too large to embed.
async fn embedded_round(
    cx: &Ctx<'_>,
    list: Vec<Entry>,
    targeted: Option<&str>,
    listing_part: &str,
) -> Result<Result<Received, Vec<Entry>>, SyncError> {
    let (root, prog) = (cx.ws.to_path_buf(), cx.progress.clone());
    let (list, built) = blocking("build the workspace stream", move || {
        let gz = GzEncoder::new(Vec::new(), Compression::fast());
        let mut sent = Vec::with_capacity(list.len());
        let (stats, gz) =
            write_tar_each(&root, list.iter().cloned().map(Ok), gz, &*prog, &mut |e| {
                sent.push(e);
                Ok(())
            })?;
        let bytes = gz
            .finish()
            .map_err(|e| SyncError::io("finish the compressed stream", &root, e))?;
        Ok((list, (stats, sent, bytes)))
    })
    .await?;
    let (stats, sent, bytes) = built;
    // The listed paths are embedded in the same script: both together stay within the budget
    // of one script (the exec-channel fallback passes it as one argv string).
    let list_len = targeted.map_or(0, str::len);
    let Some(data) = embedded(&bytes).filter(|d| d.len() + list_len <= EMBED_SCRIPT_MAX) else {
        return Ok(Err(list));
    };
    drop(bytes);
    let script = format!(
        "set -e\n{}{data} | tar -x -z -p -f - --no-same-owner --delay-directory-restore\n{listing_part}",
        cd_ws(cx.spec)
    );
    let out = run_collect(cx.t, &script, "extract the workspace stream").await?;
    let (env, scratch) = (cx.t.describe(), cx.scratch.clone());
    let (listing, listed) = blocking("read the remote listing", move || {
        listing_into_spool(&env, &mut &out.stdout[..], &scratch)
    })
    .await?;
    Ok(Ok((stats, Sent::List(list, sent), listing, listed)))
}

/// Stream `send` (`None`: all of `baseline`) into one exec channel, which extracts it and
/// lists the result; the listing streams back into a spool.
async fn streamed_round(
    cx: &Ctx<'_>,
    baseline: &SortedFile,
    send: Option<Vec<Entry>>,
    listing_part: &str,
) -> Result<Received, SyncError> {
    // Compressed unless the link is local.
    let gzip = !link_is_local(cx.t);
    let (rd, wr) = tokio::io::duplex(256 * 1024);
    let (root, progress, scratch) = (cx.ws.to_path_buf(), cx.progress.clone(), cx.scratch.clone());
    let all = baseline.clone();
    let builder = blocking("build the workspace stream", move || match send {
        Some(list) => {
            let mut sent = Vec::with_capacity(list.len());
            let stats = stream_each(
                &root,
                list.iter().cloned().map(Ok),
                wr,
                gzip,
                &*progress,
                &mut |e| {
                    sent.push(e);
                    Ok(())
                },
            )?;
            Ok((stats, Sent::List(list, sent)))
        }
        None => {
            let mut w = SortedWriter::create(&scratch.dir)?;
            let stats = stream_each(&root, all.iter(), wr, gzip, &*progress, &mut |e| w.push(&e))?;
            Ok((stats, Sent::All(w.finish(all.taken_at_ns)?)))
        }
    });
    let z = if gzip { "-z " } else { "" };
    let script = format!(
        "set -e\n{}tar -x {z}-p -f - --no-same-owner --delay-directory-restore\n{listing_part}",
        cd_ws(cx.spec),
    );
    let (listed, built) = tokio::join!(
        exec_into(
            cx.t,
            ExecRequest::new(script).stdin_reader(rd),
            "extract the workspace stream",
            spool_listing(cx.t.describe(), cx.scratch.clone()),
        ),
        builder
    );
    // The remote's failure explains a broken stream: report it first.
    let (listing, listed) = listed?;
    let (stats, sent) = built?;
    Ok((stats, sent, listing, listed))
}

/// A tar stream of `entries` into `wr` (gzip unless the link is local), finished and flushed;
/// each entry goes on to `sent` once it is in the stream (a file's with the hash of the bytes
/// sent).
pub(super) fn stream_each(
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
/// NUL list on stdin. The names go to `find -files0-from -` (findutils 4.9), never onto a
/// command line; an older `find` lists the whole tree instead (the merge takes only the
/// sent paths from a listing, so more entries change nothing).
fn targeted_listing_cmd() -> &'static str {
    // Missing paths are simply not listed: the reconcile step resends them.
    "if find -files0-from /dev/null -maxdepth 0 </dev/null >/dev/null 2>&1; then \
     find -files0-from - -maxdepth 0 -printf 'E\\0%y\\0%m\\0%s\\0%T@\\0%p\\0%l\\0' || true; \
     else cat >/dev/null; \
     find . -mindepth 1 \\( -name .git -prune \\) -o -printf 'E\\0%y\\0%m\\0%s\\0%T@\\0%p\\0%l\\0'; fi\n"
}
