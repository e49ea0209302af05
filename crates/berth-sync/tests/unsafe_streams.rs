//! Extraction refuses absolute paths, `..`, links, devices and fifos, and unrequested members;
//! a restore refuses remote symlinks escaping the workspace and special files.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::BTreeSet;
use std::fs;

use berth_exec::LocalTransport;
use berth_sync::archive::extract_to_staging;
use berth_sync::{RelPath, SyncError, SyncOptions, push, restore};
use common::{Layout, write};

fn raw_member(name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name);
        g.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn stream(members: &[Vec<u8>]) -> Vec<u8> {
    let mut v: Vec<u8> = members.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

fn extract(bytes: &[u8], wanted: &[&[u8]]) -> (Result<usize, SyncError>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let wanted: BTreeSet<RelPath> = wanted
        .iter()
        .map(|w| RelPath::new(w.to_vec()).unwrap())
        .collect();
    let r = extract_to_staging(bytes, &staging, &wanted, &|_| {}).map(|(m, _)| m.len());
    (r, dir)
}

fn assert_refused(bytes: &[u8], wanted: &[&[u8]]) {
    let (r, dir) = extract(bytes, wanted);
    assert!(matches!(r, Err(SyncError::Unsafe { .. })), "{r:?}");
    // Nothing landed outside staging.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("staging")]);
}

#[test]
fn absolute_paths_are_refused() {
    assert_refused(
        &stream(&[raw_member(b"/tmp/evil", tar::EntryType::Regular, b"x", b"")]),
        &[b"tmp/evil"],
    );
}

#[test]
fn dot_dot_paths_are_refused() {
    assert_refused(
        &stream(&[raw_member(b"../evil", tar::EntryType::Regular, b"x", b"")]),
        &[b"evil"],
    );
    assert_refused(
        &stream(&[raw_member(
            b"a/../../evil",
            tar::EntryType::Regular,
            b"x",
            b"",
        )]),
        &[b"a"],
    );
}

#[test]
fn links_are_refused() {
    assert_refused(
        &stream(&[raw_member(b"link", tar::EntryType::Symlink, b"", b"/etc")]),
        &[b"link"],
    );
    assert_refused(
        &stream(&[
            raw_member(b"link", tar::EntryType::Symlink, b"", b".."),
            raw_member(b"link/evil", tar::EntryType::Regular, b"x", b""),
        ]),
        &[b"link", b"link/evil"],
    );
    assert_refused(
        &stream(&[raw_member(
            b"hard",
            tar::EntryType::Link,
            b"",
            b"/etc/passwd",
        )]),
        &[b"hard"],
    );
}

#[test]
fn devices_and_fifos_are_refused() {
    assert_refused(
        &stream(&[raw_member(b"dev", tar::EntryType::Char, b"", b"")]),
        &[b"dev"],
    );
    assert_refused(
        &stream(&[raw_member(b"blk", tar::EntryType::Block, b"", b"")]),
        &[b"blk"],
    );
    assert_refused(
        &stream(&[raw_member(b"fifo", tar::EntryType::Fifo, b"", b"")]),
        &[b"fifo"],
    );
}

#[test]
fn unrequested_and_duplicate_members_are_refused() {
    assert_refused(
        &stream(&[raw_member(b"other", tar::EntryType::Regular, b"x", b"")]),
        &[b"a"],
    );
    let m = raw_member(b"a", tar::EntryType::Regular, b"x", b"");
    assert_refused(&stream(&[m.clone(), m]), &[b"a"]);
}

#[test]
fn safe_members_with_odd_names_are_staged() {
    let name: &[u8] = b"./-d/q'x \n\xff";
    let (r, _dir) = extract(
        &stream(&[raw_member(name, tar::EntryType::Regular, b"hello", b"")]),
        &[b"-d/q'x \n\xff"],
    );
    assert_eq!(r.unwrap(), 1);
}

#[tokio::test]
async fn restore_rejects_escaping_symlinks_and_special_files_from_the_remote() {
    let l = Layout::new("unsafe");
    write(&l.local, b"a.txt", b"a");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let r = l.remote_ws();
    std::os::unix::fs::symlink("/etc/passwd", r.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../outside", r.join("up")).unwrap();
    std::os::unix::fs::symlink("a.txt", r.join("fine")).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(r.join("fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    let rep = restore(&t, &l.local, &l.spec, "run", &o).await.unwrap();
    let rejected: BTreeSet<String> = rep.rejected.iter().map(|x| x.path.to_string()).collect();
    assert_eq!(
        rejected,
        ["abs", "fifo", "up"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert!(fs::symlink_metadata(l.local.join("abs")).is_err());
    assert!(fs::symlink_metadata(l.local.join("up")).is_err());
    assert!(fs::symlink_metadata(l.local.join("fifo")).is_err());
    assert_eq!(
        fs::read_link(l.local.join("fine")).unwrap(),
        std::path::PathBuf::from("a.txt")
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn restore_rejects_symlinks_that_escape_through_other_links() {
    let l = Layout::new("linkchain");
    write(&l.local, b"a.txt", b"a");
    fs::create_dir(l.local.join("d")).unwrap();
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let r = l.remote_ws();
    // Each target is inside the workspace when read lexically; followed through `s -> .`
    // (and `d/up -> ..`) they climb above it.
    std::os::unix::fs::symlink(".", r.join("s")).unwrap();
    std::os::unix::fs::symlink("s/s/s/../../..", r.join("x")).unwrap();
    std::os::unix::fs::symlink("..", r.join("d/up")).unwrap();
    std::os::unix::fs::symlink("up/d/up/d/../../..", r.join("d/y")).unwrap();
    std::os::unix::fs::symlink("s/a.txt", r.join("fine")).unwrap();
    let rep = restore(&t, &l.local, &l.spec, "run1", &o).await.unwrap();
    let rejected: BTreeSet<String> = rep.rejected.iter().map(|x| x.path.to_string()).collect();
    assert_eq!(
        rejected,
        BTreeSet::from(["x".to_owned(), "d/y".to_owned()]),
        "{rep:?}"
    );
    assert!(fs::symlink_metadata(l.local.join("x")).is_err());
    assert!(fs::symlink_metadata(l.local.join("d/y")).is_err());
    assert_eq!(fs::read(l.local.join("fine")).unwrap(), b"a");
    assert_no_link_escapes(&l.local);

    // In two steps: a link that is harmless on its own arrives first, the link that arms it
    // in a later restore.
    let l = Layout::new("linkchain2");
    write(&l.local, b"a.txt", b"a");
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let r = l.remote_ws();
    std::os::unix::fs::symlink("q/q/q/../../..", r.join("later")).unwrap();
    let rep = restore(&t, &l.local, &l.spec, "run2", &o).await.unwrap();
    assert!(rep.rejected.is_empty(), "{rep:?}");
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    std::os::unix::fs::symlink(".", r.join("q")).unwrap();
    let rep = restore(&t, &l.local, &l.spec, "run3", &o).await.unwrap();
    let rejected: Vec<String> = rep.rejected.iter().map(|x| x.path.to_string()).collect();
    assert_eq!(rejected, ["q"], "{rep:?}");
    assert!(fs::symlink_metadata(l.local.join("q")).is_err());
    assert_no_link_escapes(&l.local);
}

/// No symlink below `root` resolves (on the real file system) to a path outside it.
fn assert_no_link_escapes(root: &std::path::Path) {
    let root = fs::canonicalize(root).unwrap();
    for (rel, node) in common::snapshot(&root) {
        if let common::Node::Symlink { .. } = node
            && let Ok(real) = fs::canonicalize(common::p(&root, &rel))
        {
            {
                assert!(
                    real.starts_with(&root),
                    "{} resolves to {}",
                    String::from_utf8_lossy(&rel),
                    real.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn a_conflict_copy_never_replaces_an_existing_file() {
    let l = Layout::new("copies");
    write(&l.local, b"a.txt", b"base");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    write(&l.remote_ws(), b"a.txt", b"remote");
    write(&l.local, b"a.txt", b"local");
    // Files the user keeps under the names a conflict copy would take first.
    let notes: &[u8] = b"user notes \xff\x00 kept\n";
    write(&l.local, b"a.txt.berth-remote", notes);
    write(&l.local, b"a.txt.berth-remote.1", b"older notes");
    let rep = restore(&t, &l.local, &l.spec, "run", &o).await.unwrap();
    assert_eq!(
        rep.conflicts,
        vec![RelPath::new(b"a.txt".to_vec()).unwrap()]
    );
    assert_eq!(
        rep.remote_copies,
        vec![berth_sync::RemoteCopy {
            path: RelPath::new(b"a.txt".to_vec()).unwrap(),
            copy: RelPath::new(b"a.txt.berth-remote.2".to_vec()).unwrap(),
        }]
    );
    assert_eq!(fs::read(l.local.join("a.txt")).unwrap(), b"local");
    assert_eq!(fs::read(l.local.join("a.txt.berth-remote")).unwrap(), notes);
    assert_eq!(
        fs::read(l.local.join("a.txt.berth-remote.1")).unwrap(),
        b"older notes"
    );
    assert_eq!(
        fs::read(l.local.join("a.txt.berth-remote.2")).unwrap(),
        b"remote"
    );
    // The report carries the name for the run's events.
    let json = serde_json::to_value(&rep).unwrap();
    assert_eq!(
        json["remote_copies"][0]["copy"],
        serde_json::json!("a.txt.berth-remote.2")
    );
}

/// A transport whose "remote" answers the restore's file request with a hostile stream.
struct Hostile {
    inner: LocalTransport,
    evil_tar: std::path::PathBuf,
}

#[async_trait::async_trait]
impl berth_exec::Transport for Hostile {
    fn describe(&self) -> String {
        "hostile environment".to_owned()
    }

    fn identity(&self) -> berth_exec::RemoteIdentity {
        self.inner.identity()
    }

    async fn exec(
        &self,
        mut req: berth_exec::ExecRequest,
    ) -> Result<berth_exec::ExecHandle, berth_exec::ExecError> {
        // The script travels on stdin, ahead of the step's own input.
        let script_in = matches!(&req.stdin, berth_exec::Stdin::Bytes(b) if contains(b, b"tar -c"));
        if req.script.contains("tar -c") || script_in {
            req.script = format!("cat >/dev/null; gzip -c < '{}'", self.evil_tar.display());
        }
        self.inner.exec(req).await
    }
}

#[tokio::test]
async fn a_hostile_stream_during_restore_changes_nothing_locally() {
    let evil: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            stream(&[raw_member(
                b"../../escape",
                tar::EntryType::Regular,
                b"x",
                b"",
            )]),
        ),
        (
            "absolute",
            stream(&[raw_member(
                b"/tmp/berth-escape",
                tar::EntryType::Regular,
                b"x",
                b"",
            )]),
        ),
        (
            "symlink",
            stream(&[
                raw_member(b"a.txt", tar::EntryType::Symlink, b"", b"/etc/passwd"),
                raw_member(b"a.txt/x", tar::EntryType::Regular, b"x", b""),
            ]),
        ),
        (
            "device",
            stream(&[raw_member(b"a.txt", tar::EntryType::Char, b"", b"")]),
        ),
    ];
    for (name, bytes) in evil {
        let l = Layout::new("hostile");
        write(&l.local, b"a.txt", b"local");
        let o = SyncOptions::default();
        let local = LocalTransport::new();
        push(&local, &l.local, &l.spec, &o).await.unwrap();
        write(&l.remote_ws(), b"a.txt", b"remote change");
        let evil_tar = l.remote_root.join("evil.tar");
        fs::write(&evil_tar, &bytes).unwrap();
        let before = common::snapshot(&l.local);
        let t = Hostile {
            inner: LocalTransport::new(),
            evil_tar,
        };
        let err = restore(&t, &l.local, &l.spec, "evil", &o)
            .await
            .unwrap_err();
        assert!(matches!(err, SyncError::Unsafe { .. }), "{name}: {err}");
        assert_eq!(common::snapshot(&l.local), before, "{name}");
        assert!(!l.local.parent().unwrap().join("escape").exists(), "{name}");
        assert!(
            !std::path::Path::new("/tmp/berth-escape").exists(),
            "{name}"
        );
        // Staging is gone; a normal restore afterwards still works.
        let staging_left = fs::read_dir(l.local.parent().unwrap().join(".berth-sync"))
            .unwrap()
            .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
            .any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("staging-")
            });
        assert!(!staging_left, "{name}");
        let rep = restore(&local, &l.local, &l.spec, "fine", &o)
            .await
            .unwrap();
        assert_eq!(rep.applied.len(), 1, "{name}");
        assert_eq!(fs::read(l.local.join("a.txt")).unwrap(), b"remote change");
    }
}

/// A transport whose "remote" reports `head` as its git HEAD (in the restore's listing and the
/// push's probe), whatever git says.
struct LyingHead {
    inner: LocalTransport,
    head: String,
}

#[async_trait::async_trait]
impl berth_exec::Transport for LyingHead {
    fn describe(&self) -> String {
        "lying environment".to_owned()
    }

    fn identity(&self) -> berth_exec::RemoteIdentity {
        self.inner.identity()
    }

    async fn exec(
        &self,
        mut req: berth_exec::ExecRequest,
    ) -> Result<berth_exec::ExecHandle, berth_exec::ExecError> {
        // Same-length replacements (padded with spaces), so the script's framing holds.
        let fakes = [
            (
                &b"\"$(git rev-parse -q --verify HEAD 2>/dev/null)\""[..],
                format!("'{}'", self.head),
            ),
            (
                b"git rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null",
                format!("echo '{}'", self.head),
            ),
        ];
        if let berth_exec::Stdin::Bytes(b) = &req.stdin {
            let mut v = b.to_vec();
            for (real, fake) in &fakes {
                let mut fake = fake.clone().into_bytes();
                assert!(fake.len() <= real.len(), "test value too long");
                fake.resize(real.len(), b' ');
                while let Some(i) = v.windows(real.len()).position(|w| w == *real) {
                    v[i..i + real.len()].copy_from_slice(&fake);
                }
            }
            req.stdin = berth_exec::Stdin::Bytes(v.into());
        }
        self.inner.exec(req).await
    }
}

const BAD_HEADS: &[&str] = &[
    "--upload-pack=touch x",
    "HEAD~1",
    "abc1234",
    "0123456789ABCDEF0123456789ABCDEF01234567",
    "0123456789abcdef0123456789abcdef012345678",
];

fn assert_bad_head(err: &SyncError, head: &str) {
    assert!(
        matches!(err, SyncError::Invalid { .. }),
        "{head}: expected an invalid remote HEAD, got {err}"
    );
    if let SyncError::Invalid { what, value, .. } = err {
        assert!(what.contains("lying environment"), "{err}");
        assert_eq!(value, head);
    }
}

#[tokio::test]
async fn restore_refuses_a_remote_head_that_is_not_an_object_id() {
    for head in BAD_HEADS {
        let l = Layout::new("head");
        common::git(&l.local, &["init", "-q"]);
        write(&l.local, b"f.txt", b"1\n");
        common::git(&l.local, &["add", "."]);
        common::git(&l.local, &["commit", "-q", "-m", "c1"]);
        let o = SyncOptions::default();
        push(&LocalTransport::new(), &l.local, &l.spec, &o)
            .await
            .unwrap();
        write(&l.remote_ws(), b"f.txt", b"remote\n");
        let before = common::snapshot(&l.local);
        let refs_before = common::git(&l.local, &["for-each-ref"]);
        let t = LyingHead {
            inner: LocalTransport::new(),
            head: (*head).to_owned(),
        };
        let err = restore(&t, &l.local, &l.spec, "run", &o).await.unwrap_err();
        assert_bad_head(&err, head);
        assert_eq!(common::snapshot(&l.local), before, "{head}");
        assert_eq!(common::git(&l.local, &["for-each-ref"]), refs_before);
    }
}

#[tokio::test]
async fn push_refuses_a_remote_head_that_is_not_an_object_id() {
    for head in BAD_HEADS {
        let l = Layout::new("pushhead");
        common::git(&l.local, &["init", "-q"]);
        write(&l.local, b"f.txt", b"1\n");
        common::git(&l.local, &["add", "."]);
        common::git(&l.local, &["commit", "-q", "-m", "c1"]);
        let t = LyingHead {
            inner: LocalTransport::new(),
            head: (*head).to_owned(),
        };
        let err = push(&t, &l.local, &l.spec, &SyncOptions::default())
            .await
            .unwrap_err();
        assert_bad_head(&err, head);
    }
}
