//! Push and restore over `LocalTransport`: the basic paths, one behaviour per test.

mod common;

use std::fs;

use berth_exec::LocalTransport;
use berth_sync::{GitRestore, SyncOptions, push, restore};
use common::{Layout, Node, snapshot, write};

#[tokio::test]
async fn push_then_restore_applies_remote_changes_and_keeps_local_ones() {
    let l = Layout::new("scope1");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    write(&l.local, b"a.txt", b"a");
    write(&l.local, b"dir/b.txt", b"b");
    write(&l.local, b"both.txt", b"base");
    write(&l.local, b"gone.txt", b"x");
    write(&l.local, b"-dash \n'q\xff", b"odd");
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(rep.full);
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));

    let r = l.remote_ws();
    write(&r, b"a.txt", b"remote a");
    write(&r, b"new/remote.txt", b"new");
    write(&r, b"both.txt", b"remote both");
    fs::remove_file(r.join("gone.txt")).unwrap();
    write(&l.local, b"dir/b.txt", b"local b");
    write(&l.local, b"both.txt", b"local both");

    let rep = restore(&t, &l.local, &l.spec, "run1", &o).await.unwrap();
    let s = snapshot(&l.local);
    let content = |k: &[u8]| match s.get(k) {
        Some(Node::File { content, .. }) => Some(content.clone()),
        _ => None,
    };
    assert_eq!(content(b"a.txt").unwrap(), b"remote a");
    assert_eq!(content(b"new/remote.txt").unwrap(), b"new");
    assert_eq!(content(b"dir/b.txt").unwrap(), b"local b");
    assert_eq!(content(b"both.txt").unwrap(), b"local both");
    assert_eq!(content(b"both.txt.berth-remote").unwrap(), b"remote both");
    assert_eq!(content(b"-dash \n'q\xff").unwrap(), b"odd");
    assert!(content(b"gone.txt").is_none());
    assert_eq!(rep.conflicts.len(), 1);
    assert_eq!(rep.git, GitRestore::NotGit);

    // A second push is incremental and makes the remote equal to local again.
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(!rep.full, "{rep:?}");
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));
}

#[tokio::test]
async fn remote_gc_removes_only_copies_of_vanished_scopes() {
    let l = Layout::new("keep1");
    write(&l.local, b"a", b"1");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let root = l.remote_root.to_str().unwrap().to_owned();
    let other = berth_sync::RemoteSpec::new(root.clone(), "gone2").unwrap();
    push(&t, &l.local, &other, &o).await.unwrap();
    let removed = berth_sync::gc_remote_scopes(&t, &root, &["keep1".to_owned()])
        .await
        .unwrap();
    assert_eq!(removed, vec!["gone2".to_owned()]);
    assert!(l.remote_ws().join("a").exists());
    assert!(!std::path::Path::new(&other.ws()).exists());
    assert!(!std::path::Path::new(&other.meta()).exists());
    assert!(std::path::Path::new(&l.spec.meta()).exists());
}

#[tokio::test]
async fn a_lost_remote_copy_triggers_a_full_push_instead_of_a_wrong_increment() {
    let l = Layout::new("lost");
    write(&l.local, b"a", b"1");
    write(&l.local, b"d/b", b"2");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    // The remote copy vanished (GC, disk wipe) and stale files appeared elsewhere.
    fs::remove_dir_all(l.remote_ws()).unwrap();
    write(&l.remote_ws(), b"stale", b"old");
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(rep.full);
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));
}

#[tokio::test]
async fn restore_without_a_push_is_an_error_not_a_mirror() {
    let l = Layout::new("nobase");
    write(&l.local, b"a", b"1");
    let t = LocalTransport::new();
    let err = restore(&t, &l.local, &l.spec, "r", &SyncOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, berth_sync::SyncError::NoBaseline { .. }),
        "{err}"
    );
    assert_eq!(fs::read(l.local.join("a")).unwrap(), b"1");
}

#[tokio::test]
async fn a_wiped_remote_copy_is_refused_instead_of_deleting_local_files() {
    let l = Layout::new("wiped");
    write(&l.local, b"a", b"1");
    write(&l.local, b"d/b", b"2");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    // Emptied and recreated: it would look like "the remote deleted everything".
    fs::remove_dir_all(l.remote_ws()).unwrap();
    fs::create_dir(l.remote_ws()).unwrap();
    let before = snapshot(&l.local);
    let err = restore(&t, &l.local, &l.spec, "r", &o).await.unwrap_err();
    assert!(err.to_string().contains("not the one"), "{err}");
    assert_eq!(snapshot(&l.local), before);
    // Gone entirely: an error too, local untouched.
    fs::remove_dir_all(l.remote_ws()).unwrap();
    assert!(restore(&t, &l.local, &l.spec, "r", &o).await.is_err());
    assert_eq!(snapshot(&l.local), before);
}

#[tokio::test]
async fn a_state_dir_inside_the_workspace_is_refused() {
    let l = Layout::new("inside");
    let o = SyncOptions {
        state_dir: Some(l.local.join(".state")),
        ..SyncOptions::default()
    };
    let err = push(&LocalTransport::new(), &l.local, &l.spec, &o)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("outside the workspace"), "{err}");
}

/// Found by the property test: a directory replaced locally by a symlink to another directory
/// must not let a file the remote created below it be written through the link.
#[tokio::test]
async fn a_remote_file_is_never_written_through_a_local_symlink() {
    let l = Layout::new("through-link");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    write(&l.local, b"a/sub/keep", b"k");
    write(&l.local, b"d/sub/old", b"o");
    push(&t, &l.local, &l.spec, &o).await.unwrap();

    write(&l.remote_ws(), b"d/sub/new", b"remote");
    fs::remove_dir_all(l.local.join("d")).unwrap();
    std::os::unix::fs::symlink("a", l.local.join("d")).unwrap();

    let rep = restore(&t, &l.local, &l.spec, "run1", &o).await.unwrap();
    let s = snapshot(&l.local);
    assert!(!s.contains_key(b"a/sub/new".as_slice()), "{s:?}");
    assert!(
        !s.contains_key(b"a/sub/new.berth-remote".as_slice()),
        "{s:?}"
    );
    assert_eq!(
        s.get(b"d".as_slice()),
        Some(&Node::Symlink {
            target: b"a".to_vec()
        })
    );
    assert!(
        rep.conflicts.iter().any(|c| c.to_string() == "d/sub/new"),
        "{rep:?}"
    );
    assert!(rep.applied.is_empty(), "{rep:?}");
}

#[tokio::test]
async fn a_baseline_recorded_as_json_by_an_earlier_version_still_restores() {
    let l = Layout::new("legacy");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    write(&l.local, b"keep.txt", b"base");
    write(&l.local, b"edit.txt", b"base");
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    // Rewrite the recorded state as the JSON file version 1 wrote.
    let ws = fs::canonicalize(&l.local).unwrap();
    let sd = berth_sync::state::StateDir::for_workspace(&ws, &o).unwrap();
    let mut st = sd.load("legacy").unwrap().expect("state recorded");
    st.version = 1;
    let binary = sd.dir.join("scope-legacy.state");
    let legacy = sd.dir.join("scope-legacy.json");
    fs::write(&legacy, serde_json::to_vec(&st).unwrap()).unwrap();
    fs::remove_file(&binary).unwrap();

    write(&l.remote_ws(), b"edit.txt", b"remote");
    write(&l.local, b"keep.txt", b"local");
    let rep = restore(&t, &l.local, &l.spec, "run-legacy", &o)
        .await
        .unwrap();
    assert!(rep.conflicts.is_empty(), "{rep:?}");
    assert_eq!(fs::read(l.local.join("edit.txt")).unwrap(), b"remote");
    assert_eq!(fs::read(l.local.join("keep.txt")).unwrap(), b"local");
    // The next save replaces it with the binary form.
    assert!(binary.exists() && !legacy.exists());
    let again = sd.load("legacy").unwrap().expect("state recorded");
    assert_eq!(again.local, st.local);
}
