#![allow(dead_code, reason = "each test binary uses a subset")]
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use berth_sync::RemoteSpec;

/// What a test sees of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { mode: u32, content: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: Vec<u8> },
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. })
    }
}

pub mod model;

pub type Tree = BTreeMap<Vec<u8>, Node>;

/// Every path below `root` (`.git` skipped), as the test sees it.
pub fn snapshot(root: &Path) -> Tree {
    let mut out = Tree::new();
    walk(root, b"", &mut out);
    out
}

fn walk(dir: &Path, prefix: &[u8], out: &mut Tree) {
    for item in fs::read_dir(dir).unwrap() {
        let item = item.unwrap();
        let name = item.file_name();
        if name.as_bytes() == b".git" {
            continue;
        }
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let md = fs::symlink_metadata(item.path()).unwrap();
        let mode = md.permissions().mode() & 0o777;
        if md.file_type().is_symlink() {
            let t = fs::read_link(item.path()).unwrap();
            out.insert(
                rel,
                Node::Symlink {
                    target: t.as_os_str().as_bytes().to_vec(),
                },
            );
        } else if md.is_dir() {
            out.insert(rel.clone(), Node::Dir { mode });
            walk(&item.path(), &rel, out);
        } else {
            out.insert(
                rel,
                Node::File {
                    mode,
                    content: fs::read(item.path()).unwrap(),
                },
            );
        }
    }
}

pub fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

/// A local workspace and a "remote" root in one temp dir.
pub struct Layout {
    pub _tmp: tempfile::TempDir,
    pub local: PathBuf,
    pub remote_root: PathBuf,
    pub spec: RemoteSpec,
}

impl Layout {
    pub fn new(scope: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let local = tmp.path().join("local").join("ws");
        let remote_root = tmp.path().join("remote");
        fs::create_dir_all(&local).unwrap();
        fs::create_dir_all(&remote_root).unwrap();
        let spec = RemoteSpec::new(remote_root.to_str().unwrap(), scope).unwrap();
        Self {
            _tmp: tmp,
            local,
            remote_root,
            spec,
        }
    }

    pub fn with_remote_root(scope: &str, remote_root: &Path) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let local = tmp.path().join("local").join("ws");
        fs::create_dir_all(&local).unwrap();
        let spec = RemoteSpec::new(remote_root.to_str().unwrap(), scope).unwrap();
        Self {
            _tmp: tmp,
            local,
            remote_root: remote_root.to_path_buf(),
            spec,
        }
    }

    /// The remote work tree (same machine in these tests).
    pub fn remote_ws(&self) -> PathBuf {
        PathBuf::from(self.spec.ws())
    }
}

pub fn write(root: &Path, rel: &[u8], content: &[u8]) {
    let path = p(root, rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Every file "racy" (modified too close to the recorded listing to trust size and mtime:
/// here, mtimes a minute ahead), so a restore must hash all of them remotely; only the files
/// that really changed travel.
pub async fn racy_restore(t: &dyn berth_exec::Transport, l: &Layout, files: usize) {
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    for i in 0..files {
        let name = format!("f{i}.txt");
        write(&l.local, name.as_bytes(), format!("{i}\n").as_bytes());
        fs::File::options()
            .write(true)
            .open(l.local.join(&name))
            .unwrap()
            .set_modified(ahead)
            .unwrap();
    }
    let o = berth_sync::SyncOptions::default();
    berth_sync::push(t, &l.local, &l.spec, &o).await.unwrap();
    for i in 0..3 {
        write(&l.remote_ws(), format!("f{i}.txt").as_bytes(), b"remote\n");
    }
    let rep = berth_sync::restore(t, &l.local, &l.spec, "racy-run", &o)
        .await
        .unwrap();
    assert_eq!(rep.applied.len(), 3, "{rep:?}");
    assert_eq!(rep.files, 3, "only the changed files are sent");
    assert!(rep.conflicts.is_empty());
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));
}
