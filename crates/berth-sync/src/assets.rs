//! Adapter assets (SPEC §8 "Assets"): directories such as skills, an instructions file or a
//! CLI's config home, copied to `<root>/.berth/assets/<adapter>/<key>/` before a run, and
//! selected files (a refreshed `auth.json`) copied back after it.
//!
//! [`sync_asset`] makes the remote directory an exact copy of the local one (or of the listed
//! `only` paths). One probe reads a marker beside the directory (`.<name>.berth-asset`:
//! the digest of the local content last sent and a digest of the remote directory's listing
//! taken right after) and the remote's current listing digest; when both match, nothing
//! travels. Otherwise ONE gzip tar stream is extracted into a fresh sibling directory that then
//! replaces the old copy by rename, and the marker is rewritten. Only `remote_dir`, the marker
//! and Berth's own temporary siblings (`.<name>.berth-tmp-*`, `.<name>.berth-old-*`) are ever
//! written; an existing directory without a marker (not created by Berth, e.g. a user's own
//! `~/.codex`) is never replaced unless it is empty.
//!
//! [`copy_back`] brings selected regular files back, each applied by temp file + rename only
//! when its content differs; names are validated, and symlinks on either side are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use berth_exec::shell::quote;
use berth_exec::{ExecRequest, Transport};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use tokio_util::io::SyncIoBridge;

use crate::archive::{StreamStats, extract_to_staging, write_tar};
use crate::error::SyncError;
use crate::manifest::{Entry, EntryKind, hash_file, mtime_ns};
use crate::path::{RawBytes, RelPath};
use crate::progress::{Phase, ProgressFn, reporter};
use crate::remote::{exec_collect, exec_into, nul_list, run_ok};

/// Marker format version (first word of the marker file).
const MARKER_VERSION: &str = "berth-asset-v1";
/// Deepest directory nesting followed locally (guards against pathological trees).
const MAX_DEPTH: usize = 64;

/// How to sync one asset directory.
#[derive(Debug, Clone, Default)]
pub struct AssetOptions {
    /// Copy what symlinks point at (files and directories) instead of the links themselves.
    /// A followed link that dangles or loops is skipped and reported.
    pub follow_symlinks: bool,
    /// Paths relative to the local directory to copy (a directory brings its subtree); empty
    /// means the whole directory.
    pub only: Vec<String>,
    /// Write the local files over the remote directory and keep everything else in it: for a
    /// CLI's home, where the CLI keeps its own state (sessions, history) beside the config
    /// Berth provides. Nothing on the remote is removed, and the files are sent every time
    /// (the CLI may have rewritten one). Off: the remote becomes an exact copy.
    pub merge: bool,
    /// Called with transfer progress.
    pub progress: Option<ProgressFn>,
}

/// What [`sync_asset`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AssetReport {
    /// The remote copy already matched: nothing was sent.
    pub unchanged: bool,
    /// Files sent and their bytes (0 when unchanged).
    pub files: u64,
    pub bytes: u64,
    /// Entries (files, directories, symlinks) the remote copy holds.
    pub entries: usize,
    /// Digest of the local content (paths, kinds, modes, hashes, link targets).
    pub digest: String,
    /// Local entries not copied: fifos, sockets, devices, dangling or looping followed links.
    pub skipped: Vec<RelPath>,
}

/// The outcome of one file in [`copy_back`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyBackOutcome {
    /// The local file did not exist and was created.
    Created,
    /// The local file had different content and was replaced.
    Updated,
    /// Same content on both sides: the local file was not touched.
    Unchanged,
    /// No such file in the remote directory: the local file was not touched.
    MissingRemotely,
}

/// One file of a [`copy_back`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopiedBack {
    pub name: String,
    pub outcome: CopyBackOutcome,
}

impl CopiedBack {
    /// Whether the local file changed.
    pub fn changed(&self) -> bool {
        matches!(
            self.outcome,
            CopyBackOutcome::Created | CopyBackOutcome::Updated
        )
    }
}

/// A validated absolute remote directory: `(dir, parent, name)`, no trailing slash.
fn split_remote_dir(remote_dir: &str) -> Result<(String, String, String), SyncError> {
    let invalid = |reason: &str| SyncError::Invalid {
        what: "remote asset directory".to_owned(),
        value: remote_dir.to_owned(),
        reason: reason.to_owned(),
    };
    let d = remote_dir.trim_end_matches('/');
    let Some(rest) = d.strip_prefix('/') else {
        return Err(invalid("must be an absolute path other than /"));
    };
    if d.contains('\0') || d.contains('\n') {
        return Err(invalid("must not contain NUL or newline"));
    }
    let comps: Vec<&str> = rest.split('/').collect();
    if comps.len() < 2 {
        return Err(invalid("must be at least two levels below /"));
    }
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(invalid("must not contain empty, `.` or `..` components"));
    }
    let (parent, name) = d.rsplit_once('/').unwrap_or(("", d));
    // The last component names Berth's marker and temporaries beside it.
    crate::remote::validate_id("remote asset directory name", name)?;
    Ok((d.to_owned(), parent.to_owned(), name.to_owned()))
}

/// Listing digest of the current directory, printed as 64 hex digits. The same command runs
/// after an update (recorded in the marker) and in the probe (compared), so any change made
/// to the copy since — content, mode, added or removed entry — forces a resend.
const LISTING_DIGEST: &str = "find . -printf '%y %m %s %T@ %i %p\\0%l\\0' | sha256sum | cut -c1-64";

fn meta_err(path: &Path, what: &str, e: std::io::Error) -> SyncError {
    SyncError::io(what, path, e)
}

struct Walk<'a> {
    root: &'a Path,
    follow: bool,
    entries: BTreeMap<RelPath, Entry>,
    skipped: Vec<RelPath>,
}

impl Walk<'_> {
    /// Add `rel` (and, for a directory, its subtree). `ancestors` holds (dev, ino) of the
    /// directories being walked, to detect loops through followed links.
    fn add(&mut self, rel: &RelPath, ancestors: &mut Vec<(u64, u64)>) -> Result<(), SyncError> {
        let abs = rel.under(self.root);
        let lmd = fs::symlink_metadata(&abs).map_err(|e| meta_err(&abs, "stat an asset", e))?;
        let md = if lmd.file_type().is_symlink() && self.follow {
            match fs::metadata(&abs) {
                Ok(m) => m,
                Err(_) => {
                    self.skipped.push(rel.clone());
                    return Ok(());
                }
            }
        } else {
            lmd
        };
        let ft = md.file_type();
        let mut e = Entry {
            path: rel.clone(),
            kind: EntryKind::File,
            mode: md.mode() & 0o7777,
            size: 0,
            mtime_ns: mtime_ns(&md),
            sha256: None,
            target: None,
        };
        if ft.is_symlink() {
            let t = fs::read_link(&abs).map_err(|x| meta_err(&abs, "read a symlink", x))?;
            e.kind = EntryKind::Symlink;
            e.target = Some(RawBytes(t.as_os_str().as_bytes().to_vec()));
            self.entries.insert(rel.clone(), e);
        } else if ft.is_file() {
            let (h, n) = hash_file(&abs)?;
            e.size = n;
            e.sha256 = Some(h);
            self.entries.insert(rel.clone(), e);
        } else if ft.is_dir() {
            let id = (md.dev(), md.ino());
            if ancestors.contains(&id) || ancestors.len() >= MAX_DEPTH {
                self.skipped.push(rel.clone());
                return Ok(());
            }
            e.kind = EntryKind::Dir;
            self.entries.insert(rel.clone(), e);
            ancestors.push(id);
            let r = self.add_children(Some(rel), &abs, ancestors);
            ancestors.pop();
            r?;
        } else {
            self.skipped.push(rel.clone());
        }
        Ok(())
    }

    fn add_children(
        &mut self,
        dir: Option<&RelPath>,
        abs: &Path,
        ancestors: &mut Vec<(u64, u64)>,
    ) -> Result<(), SyncError> {
        let rd = fs::read_dir(abs).map_err(|e| meta_err(abs, "list an asset directory", e))?;
        let mut names = Vec::new();
        for item in rd {
            let item = item.map_err(|e| meta_err(abs, "list an asset directory", e))?;
            names.push(item.file_name().as_bytes().to_vec());
        }
        names.sort();
        for n in names {
            let rel = match dir {
                Some(d) => d.join(&n)?,
                None => RelPath::new(n)?,
            };
            self.add(&rel, ancestors)?;
        }
        Ok(())
    }

    /// Parents of an `only` path, as directories (mode of the local directory).
    fn add_parents(&mut self, rel: &RelPath) -> Result<(), SyncError> {
        let mut parents: Vec<RelPath> = rel.ancestors().collect();
        parents.reverse();
        for p in parents {
            if self.entries.contains_key(&p) {
                continue;
            }
            let abs = p.under(self.root);
            let md = fs::metadata(&abs).map_err(|e| meta_err(&abs, "stat an asset", e))?;
            if !md.is_dir() {
                return Err(SyncError::Invalid {
                    what: "asset path".to_owned(),
                    value: rel.to_string(),
                    reason: format!("{p} is not a directory"),
                });
            }
            if !self.follow && fs::symlink_metadata(&abs).is_ok_and(|m| m.is_symlink()) {
                return Err(SyncError::unsafe_entry(
                    p.as_bytes(),
                    "asset path goes through a symlink and symlinks are not followed",
                ));
            }
            self.entries.insert(
                p.clone(),
                Entry {
                    path: p,
                    kind: EntryKind::Dir,
                    mode: md.mode() & 0o7777,
                    size: 0,
                    mtime_ns: mtime_ns(&md),
                    sha256: None,
                    target: None,
                },
            );
        }
        Ok(())
    }
}

/// Validate an `only` name or a copy-back name: a safe relative path.
fn rel_name(what: &str, name: &str) -> Result<RelPath, SyncError> {
    let trimmed = name.strip_prefix("./").unwrap_or(name);
    let trimmed = trimmed.trim_end_matches('/');
    RelPath::new(trimmed.as_bytes().to_vec()).map_err(|e| SyncError::Invalid {
        what: what.to_owned(),
        value: name.to_owned(),
        reason: e.to_string(),
    })
}

/// The local side of an asset: its entries (parents first), skipped paths, root mode.
fn local_entries(
    local_dir: &Path,
    opts: &AssetOptions,
) -> Result<(Vec<Entry>, Vec<RelPath>, u32), SyncError> {
    let md = fs::metadata(local_dir).map_err(|e| meta_err(local_dir, "open the asset", e))?;
    if !md.is_dir() {
        return Err(SyncError::Invalid {
            what: "asset directory".to_owned(),
            value: local_dir.display().to_string(),
            reason: "is not a directory".to_owned(),
        });
    }
    let mut w = Walk {
        root: local_dir,
        follow: opts.follow_symlinks,
        entries: BTreeMap::new(),
        skipped: Vec::new(),
    };
    let mut ancestors = vec![(md.dev(), md.ino())];
    if opts.only.is_empty() {
        w.add_children(None, local_dir, &mut ancestors)?;
    } else {
        let mut names = BTreeSet::new();
        for n in &opts.only {
            names.insert(rel_name("asset `only` path", n)?);
        }
        for rel in &names {
            w.add_parents(rel)?;
            let abs = rel.under(local_dir);
            if fs::symlink_metadata(&abs).is_err() {
                return Err(SyncError::Invalid {
                    what: "asset `only` path".to_owned(),
                    value: rel.to_string(),
                    reason: format!("does not exist in {}", local_dir.display()),
                });
            }
            if !w.entries.contains_key(rel) {
                w.add(rel, &mut ancestors)?;
            }
        }
    }
    Ok((
        w.entries.into_values().collect(),
        w.skipped,
        md.mode() & 0o7777,
    ))
}

/// Digest of what an asset copy holds.
fn content_digest(entries: &[Entry], root_mode: u32) -> String {
    let mut h = Sha256::new();
    h.update(format!("{MARKER_VERSION}\0root {:o}\0", root_mode & 0o7777));
    for e in entries {
        let hex = e.sha256.map(|h| h.to_hex()).unwrap_or_default();
        let (k, v): (&str, &[u8]) = match e.kind {
            EntryKind::Dir => ("d", b""),
            EntryKind::File => ("f", hex.as_bytes()),
            EntryKind::Symlink => ("l", e.target.as_ref().map_or(&b""[..], |t| &t.0)),
        };
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update(e.path.as_bytes());
        h.update(format!("\0{:o}\0", e.mode & 0o7777));
        h.update(v);
        h.update(b"\0");
    }
    hex::encode(h.finalize())
}

/// Make `remote_dir` an exact copy of `local_dir` (or of `opts.only`), in one tar stream,
/// skipping the transfer when the remote copy is known to match.
pub async fn sync_asset(
    t: &dyn Transport,
    local_dir: &Path,
    remote_dir: &str,
    opts: &AssetOptions,
) -> Result<AssetReport, SyncError> {
    let (dir, parent, name) = split_remote_dir(remote_dir)?;
    let root = local_dir.to_path_buf();
    let o = opts.clone();
    let (entries, skipped, root_mode) =
        tokio::task::spawn_blocking(move || local_entries(&root, &o))
            .await
            .map_err(|e| SyncError::Task {
                what: "scan the asset".to_owned(),
                detail: e.to_string(),
            })??;
    let digest = content_digest(&entries, root_mode);
    let mut report = AssetReport {
        entries: entries.len(),
        digest: digest.clone(),
        skipped,
        ..AssetReport::default()
    };

    let (qd, qm) = (quote(&dir), quote(&format!("{parent}/.{name}.berth-asset")));
    let probe = format!(
        "if [ -f {qm} ]; then printf 'Y %s\\n' \"$(head -n 1 {qm})\"; else echo N; fi\n\
         if [ -L {qd} ]; then echo L; elif [ -d {qd} ]; then echo D; elif [ -e {qd} ]; then echo F; else echo N; fi\n\
         if [ -d {qd} ] && [ ! -L {qd} ]; then cd {qd} || exit 3; {LISTING_DIGEST}; find . -mindepth 1 -maxdepth 1 | head -n 1 | wc -l; fi\n"
    );
    let out = run_ok(t, &probe, "probe the remote asset directory").await?;
    let out = out.stdout_text();
    let mut lines = out.lines();
    let marker_line = lines.next().unwrap_or("").trim().to_owned();
    let kind = lines.next().unwrap_or("").trim().to_owned();
    let listing = lines.next().unwrap_or("").trim().to_owned();
    let nonempty = lines.next().unwrap_or("0").trim() != "0";
    let has_marker = marker_line.starts_with('Y');
    let expected = format!("Y {MARKER_VERSION} {digest} {listing}");
    if has_marker && kind == "D" && marker_line == expected {
        report.unchanged = true;
        return Ok(report);
    }
    // Never replace something Berth did not create.
    let foreign = !has_marker && (kind == "L" || kind == "F" || (kind == "D" && nonempty));
    if foreign {
        return Err(SyncError::Unsafe {
            path: dir,
            reason: "exists and was not created by Berth (no asset marker); refusing to replace it"
                .to_owned(),
        });
    }

    let qp = quote(&parent);
    if opts.merge {
        let script = format!(
            "set -e\nmkdir -p {qp}\ncd {qp}\n\
             printf '%s pending\\n' {MARKER_VERSION} > {qm}\n\
             if [ -L {qd} ]; then echo 'the asset directory is a symlink' >&2; exit 3; fi\n\
             mkdir -p {qd}\ncd {qd}\n\
             tar -x -z -p -f - --no-same-owner --delay-directory-restore\n\
             chmod {root_mode:o} .\ncd {qp}\n\
             printf '%s %s merged\\n' {MARKER_VERSION} {digest} > {qm}\n"
        );
        let stats = send_tree(t, local_dir, entries, script, opts).await?;
        report.files = stats.files;
        report.bytes = stats.bytes;
        return Ok(report);
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let qtmp = quote(&format!("{parent}/.{name}.berth-tmp-{id}"));
    let qold = quote(&format!("{parent}/.{name}.berth-old-{id}"));
    // Leftovers of a crashed update are removed once they are an hour old (a concurrent
    // update of the same asset owns its own fresh temporary). `name` is `[A-Za-z0-9._-]+`,
    // so it is a literal `find -name` pattern.
    let stale = format!(
        "find . -mindepth 1 -maxdepth 1 \\( -name '.{name}.berth-tmp-*' -o -name '.{name}.berth-old-*' \\) -mmin +60 \
         -print0 2>/dev/null | xargs -0 -r sh -c \
         'for x; do if [ -d \"$x\" ] && [ ! -L \"$x\" ]; then chmod -R u+w \"$x\"; fi; rm -rf -- \"$x\"; done' sh \
         2>/dev/null || true"
    );
    // `mv -T` never moves the new copy *into* a directory a concurrent update just put in
    // place: it fails instead.
    let script = format!(
        "set -e\nmkdir -p {qp}\ncd {qp}\n{stale}\n\
         printf '%s pending\\n' {MARKER_VERSION} > {qm}\n\
         mkdir -m 700 {qtmp}\ncd {qtmp}\n\
         tar -x -z -p -f - --no-same-owner --delay-directory-restore\n\
         chmod {root_mode:o} .\ncd {qp}\n\
         if [ -e {qd} ] || [ -L {qd} ]; then mv -T -- {qd} {qold}; fi\n\
         mv -T -- {qtmp} {qd}\nif [ -d {qold} ] && [ ! -L {qold} ]; then chmod -R u+w {qold} 2>/dev/null || true; fi\nrm -rf -- {qold}\n\
         l=$(cd {qd} && {LISTING_DIGEST})\n\
         printf '%s %s %s\\n' {MARKER_VERSION} {digest} \"$l\" > {qm}\n"
    );
    let stats = send_tree(t, local_dir, entries, script, opts).await?;
    report.files = stats.files;
    report.bytes = stats.bytes;
    Ok(report)
}

/// Stream `entries` of `local_dir` as one gzip tar into `script` on the environment.
async fn send_tree(
    t: &dyn Transport,
    local_dir: &Path,
    entries: Vec<Entry>,
    script: String,
    opts: &AssetOptions,
) -> Result<StreamStats, SyncError> {
    let (rd, wr) = tokio::io::duplex(256 * 1024);
    let root = local_dir.to_path_buf();
    let progress: std::sync::Arc<dyn Fn(StreamStats) + Send + Sync> =
        std::sync::Arc::new(reporter(opts.progress.clone(), Phase::Push));
    let builder = tokio::task::spawn_blocking(move || {
        let gz = GzEncoder::new(SyncIoBridge::new(wr), Compression::fast());
        let (_, stats, gz) = write_tar(&root, &entries, gz, &*progress)?;
        let mut bridge = gz
            .finish()
            .map_err(|e| SyncError::io("finish the compressed stream", &root, e))?;
        std::io::Write::flush(&mut bridge)
            .map_err(|e| SyncError::io("finish the compressed stream", &root, e))?;
        drop(bridge);
        Ok::<_, SyncError>(stats)
    });
    let ran = exec_collect(
        t,
        ExecRequest::new(script).stdin_reader(rd),
        "extract the asset stream",
    )
    .await;
    let built = builder.await.map_err(|e| SyncError::Task {
        what: "build the asset stream".to_owned(),
        detail: e.to_string(),
    })?;
    ran?;
    built
}

/// Removes a local staging directory on drop.
struct StagingGuard(PathBuf);

impl Drop for StagingGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Refuse a local destination that is, or lies below, a symlink inside `local_dir`.
fn check_local_dest(local_dir: &Path, rel: &RelPath) -> Result<Option<fs::Metadata>, SyncError> {
    let mut parents: Vec<RelPath> = rel.ancestors().collect();
    parents.reverse();
    for p in parents {
        let abs = p.under(local_dir);
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SyncError::unsafe_entry(
                    rel.as_bytes(),
                    format!("local {p} is not a directory (a symlink or a file)"),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(SyncError::io("stat a local asset path", abs, e)),
        }
    }
    let abs = rel.under(local_dir);
    match fs::symlink_metadata(&abs) {
        Ok(m) if m.is_file() => Ok(Some(m)),
        Ok(_) => Err(SyncError::unsafe_entry(
            rel.as_bytes(),
            "local destination is not a regular file (a symlink, directory or other)",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SyncError::io("stat a local asset file", abs, e)),
    }
}

/// Copy `files` (relative names) from `remote_dir` back into `local_dir`, each atomically
/// (temp + rename) and only when its content differs. Unsafe names, remote symlinks (the file
/// or a directory on its way) and local symlinks at the destination are refused before
/// anything is written.
pub async fn copy_back(
    t: &dyn Transport,
    remote_dir: &str,
    files: &[&str],
    local_dir: &Path,
) -> Result<Vec<CopiedBack>, SyncError> {
    let (dir, _, _) = split_remote_dir(remote_dir)?;
    let mut rels = Vec::new();
    let mut seen = BTreeSet::new();
    for f in files {
        let rel = rel_name("copy-back file name", f)?;
        if !seen.insert(rel.clone()) {
            return Err(SyncError::Invalid {
                what: "copy-back file name".to_owned(),
                value: (*f).to_owned(),
                reason: "listed twice".to_owned(),
            });
        }
        rels.push(((*f).to_owned(), rel));
    }
    let ld = fs::metadata(local_dir).map_err(|e| meta_err(local_dir, "open the asset", e))?;
    if !ld.is_dir() {
        return Err(SyncError::Invalid {
            what: "asset directory".to_owned(),
            value: local_dir.display().to_string(),
            reason: "is not a directory".to_owned(),
        });
    }
    for (_, rel) in &rels {
        check_local_dest(local_dir, rel)?;
    }
    if rels.is_empty() {
        return Ok(Vec::new());
    }

    // One probe: per name, `F` regular file, `N` missing, `L` a symlink on the way, `O` other.
    let mut probe = format!("cd {} || exit 3\n", quote(&dir));
    for (_, rel) in &rels {
        let mut checks = String::new();
        let mut ancestors: Vec<RelPath> = rel.ancestors().collect();
        ancestors.reverse();
        for a in &ancestors {
            let q = quote(&String::from_utf8_lossy(&a.dot_slash()));
            checks.push_str(&format!("if [ -L {q} ]; then r=L; fi; "));
        }
        let q = quote(&String::from_utf8_lossy(&rel.dot_slash()));
        probe.push_str(&format!(
            "r=; {checks}if [ -z \"$r\" ]; then if [ -L {q} ]; then r=L; elif [ -f {q} ]; then r=F; elif [ -e {q} ]; then r=O; else r=N; fi; fi; echo \"$r\"\n"
        ));
    }
    let out = run_ok(t, &probe, "probe the remote asset files").await?;
    let out = out.stdout_text();
    let kinds: Vec<&str> = out.lines().map(str::trim).collect();
    if kinds.len() != rels.len() {
        return Err(SyncError::Remote {
            env: t.describe(),
            what: "probe the remote asset files".to_owned(),
            detail: format!("expected {} answers, got {}", rels.len(), kinds.len()),
        });
    }
    let mut wanted = BTreeSet::new();
    for ((_, rel), k) in rels.iter().zip(&kinds) {
        match *k {
            "F" => {
                wanted.insert(rel.clone());
            }
            "N" => {}
            "L" => {
                return Err(SyncError::unsafe_entry(
                    rel.as_bytes(),
                    "remote asset file is or lies below a symlink",
                ));
            }
            _ => {
                return Err(SyncError::unsafe_entry(
                    rel.as_bytes(),
                    "remote asset path is not a regular file",
                ));
            }
        }
    }

    let staging = local_dir.join(format!(
        ".berth-copy-back-{}",
        uuid::Uuid::new_v4().simple()
    ));
    fs::create_dir(&staging)
        .map_err(|e| SyncError::io("create a staging directory", &staging, e))?;
    let _guard = StagingGuard(staging.clone());
    let staged = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        let list: Vec<Vec<u8>> = wanted.iter().map(RelPath::dot_slash).collect();
        let script = format!(
            "cd {} || exit 3\ntar -c -z --null --no-recursion -f - -T -\n",
            quote(&dir)
        );
        let st = staging.clone();
        let w = wanted.clone();
        let (staged, _) = exec_into(
            t,
            ExecRequest::new(script).stdin_bytes(nul_list(&list)),
            "read the remote asset files",
            move |r| extract_to_staging(GzDecoder::new(r), &st, &w, &|_| {}),
        )
        .await?;
        for w in &wanted {
            if !staged.contains_key(w) {
                return Err(SyncError::unsafe_entry(
                    w.as_bytes(),
                    "requested file missing from the remote stream",
                ));
            }
        }
        staged
    };

    let mut report = Vec::new();
    for (name, rel) in &rels {
        let Some(s) = staged.get(rel) else {
            report.push(CopiedBack {
                name: name.clone(),
                outcome: CopyBackOutcome::MissingRemotely,
            });
            continue;
        };
        // Re-check right before applying: the destination must still be a plain file (or
        // absent) on a path without symlinks.
        let existing = check_local_dest(local_dir, rel)?;
        let dest = rel.under(local_dir);
        let outcome = match &existing {
            Some(m) => {
                let (h, _) = hash_file(&dest)?;
                if h == s.sha256 {
                    CopyBackOutcome::Unchanged
                } else {
                    fs::set_permissions(&s.file, fs::Permissions::from_mode(m.mode() & 0o7777))
                        .map_err(|e| SyncError::io("set a staged file's mode", &s.file, e))?;
                    CopyBackOutcome::Updated
                }
            }
            None => CopyBackOutcome::Created,
        };
        if outcome != CopyBackOutcome::Unchanged {
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p)
                    .map_err(|e| SyncError::io("create a local asset directory", p, e))?;
            }
            fs::rename(&s.file, &dest)
                .map_err(|e| SyncError::io("apply a copied-back file", &dest, e))?;
        }
        report.push(CopiedBack {
            name: name.clone(),
            outcome,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_dirs_are_validated() {
        assert!(split_remote_dir("relative/x").is_err());
        assert!(split_remote_dir("/x").is_err());
        assert!(split_remote_dir("/").is_err());
        assert!(split_remote_dir("/a/../b").is_err());
        assert!(split_remote_dir("/a//b").is_err());
        assert!(split_remote_dir("/a/b\nc").is_err());
        let (d, p, n) = split_remote_dir("/r/.berth/assets/codex/home/").unwrap();
        assert_eq!(d, "/r/.berth/assets/codex/home");
        assert_eq!(p, "/r/.berth/assets/codex");
        assert_eq!(n, "home");
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a\0b"] {
            assert!(rel_name("n", bad).is_err(), "{bad:?}");
        }
        assert!(rel_name("n", "./auth.json").is_ok());
        assert!(rel_name("n", "sub/auth.json").is_ok());
    }
}
