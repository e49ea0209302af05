//! Local git plumbing for sync: where HEAD is, what differs from it, bundles. Never
//! `reset --hard`, never a checkout of the user's work tree.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::error::SyncError;
use crate::path::RelPath;
use crate::state::GitPoint;

fn cmd(ws: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(ws)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Run git and return its stdout; a non-zero exit is an error naming `what`.
pub(crate) async fn git<S: AsRef<OsStr>>(
    ws: &Path,
    args: &[S],
    what: &str,
) -> Result<Vec<u8>, SyncError> {
    let out = cmd(ws)
        .args(args)
        .output()
        .await
        .map_err(|e| SyncError::Git {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SyncError::Git {
            what: what.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// Whether git exits 0.
pub(crate) async fn git_succeeds<S: AsRef<OsStr>>(ws: &Path, args: &[S]) -> bool {
    cmd(ws)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

fn text(v: Vec<u8>) -> String {
    String::from_utf8_lossy(&v).trim().to_owned()
}

/// HEAD and branch when `ws` is the top of a git work tree with at least one commit.
pub(crate) async fn local_point(ws: &Path) -> Result<Option<GitPoint>, SyncError> {
    if std::fs::symlink_metadata(ws.join(".git")).is_err() {
        return Ok(None);
    }
    let head = match git(
        ws,
        &["rev-parse", "-q", "--verify", "HEAD^{commit}"],
        "read HEAD",
    )
    .await
    {
        Ok(h) => text(h),
        // An unborn branch has no history to carry: sync the files only.
        Err(_) => return Ok(None),
    };
    let branch = match git(ws, &["symbolic-ref", "-q", "HEAD"], "read the branch").await {
        Ok(b) => Some(text(b)),
        Err(_) => None,
    };
    Ok(Some(GitPoint { head, branch }))
}

pub(crate) async fn has_commit(ws: &Path, sha: &str) -> bool {
    git_succeeds(ws, &["cat-file", "-e", &format!("{sha}^{{commit}}")]).await
}

pub(crate) async fn is_ancestor(ws: &Path, a: &str, b: &str) -> bool {
    git_succeeds(ws, &["merge-base", "--is-ancestor", a, b]).await
}

fn split_paths(v: &[u8]) -> Vec<RelPath> {
    v.split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .filter_map(|r| RelPath::new(r.to_vec()).ok())
        .collect()
}

/// Paths whose working-tree state differs from HEAD: modified, deleted, type-changed, staged,
/// and untracked (ignored ones too when `with_ignored`).
pub(crate) async fn changed_vs_head(
    ws: &Path,
    with_ignored: bool,
) -> Result<Vec<RelPath>, SyncError> {
    let diff = git(
        ws,
        &[
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            "--no-ext-diff",
            "HEAD",
            "--",
        ],
        "list changes against HEAD",
    )
    .await?;
    let mut others = vec!["ls-files", "-z", "-o"];
    if !with_ignored {
        others.push("--exclude-standard");
    }
    let untracked = git(ws, &others, "list untracked files").await?;
    let mut v = split_paths(&diff);
    v.extend(split_paths(&untracked));
    v.sort();
    v.dedup();
    Ok(v)
}

/// Git-ignored paths, directories collapsed (`dir/`).
pub(crate) async fn ignored(ws: &Path) -> Result<Vec<u8>, SyncError> {
    git(
        ws,
        &[
            "ls-files",
            "-z",
            "-o",
            "-i",
            "--exclude-standard",
            "--directory",
        ],
        "list ignored files",
    )
    .await
}

/// `git bundle create - <refname> [^base]` with stdout piped.
pub(crate) fn spawn_bundle(
    ws: &Path,
    refname: &str,
    base: Option<&str>,
) -> Result<Child, SyncError> {
    let mut c = cmd(ws);
    c.args(["bundle", "create", "-q", "-", refname]);
    if let Some(b) = base {
        c.arg(format!("^{b}"));
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SyncError::Git {
            what: "create a bundle".to_owned(),
            detail: e.to_string(),
        })
}
