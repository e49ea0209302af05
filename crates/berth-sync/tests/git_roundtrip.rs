//! Git work trees: the remote gets the same HEAD and branch plus the working-tree overlay;
//! remote commits come back as `refs/berth/runs/<run>` and fast-forward the local branch only
//! when local HEAD has not moved.

mod common;

use std::fs;

use berth_exec::LocalTransport;
use berth_sync::{GitRestore, SyncOptions, push, restore};
use common::{Layout, git, write};

fn repo(l: &Layout) {
    git(&l.local, &["init", "-q"]);
    write(&l.local, b"tracked.txt", b"v1\n");
    write(&l.local, b"other.txt", b"other\n");
    write(&l.local, b".gitignore", b"ignored/\n*.log\n");
    git(&l.local, &["add", "."]);
    git(&l.local, &["commit", "-q", "-m", "c1"]);
    // Dirty state: modified, untracked, ignored, deleted.
    write(&l.local, b"other.txt", b"other modified\n");
    write(&l.local, b"untracked.txt", b"u\n");
    write(&l.local, b"ignored/big.bin", b"never synced");
    write(&l.local, b"x.log", b"never synced");
}

#[tokio::test]
async fn remote_gets_head_branch_and_overlay_but_no_ignored_files() {
    let l = Layout::new("g1");
    repo(&l);
    write(&l.local, b"del.txt", b"d\n");
    git(&l.local, &["add", "del.txt"]);
    git(&l.local, &["commit", "-q", "-m", "c2"]);
    fs::remove_file(l.local.join("del.txt")).unwrap();
    let t = LocalTransport::new();
    let rep = push(&t, &l.local, &l.spec, &SyncOptions::default())
        .await
        .unwrap();
    assert!(rep.git_bundle && rep.full);
    let r = l.remote_ws();
    assert_eq!(
        git(&r, &["rev-parse", "HEAD"]),
        git(&l.local, &["rev-parse", "HEAD"])
    );
    assert_eq!(git(&r, &["symbolic-ref", "HEAD"]), "refs/heads/main");
    let status = git(&r, &["status", "--porcelain"]);
    assert!(status.contains("M other.txt"), "{status}");
    assert!(status.contains("?? untracked.txt"), "{status}");
    assert!(status.contains("D del.txt"), "{status}");
    assert!(!r.join("ignored").exists() && !r.join("x.log").exists());
    assert_eq!(fs::read(r.join("other.txt")).unwrap(), b"other modified\n");
}

#[tokio::test]
async fn remote_commits_fast_forward_an_unmoved_local_branch() {
    let l = Layout::new("g2");
    repo(&l);
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let r = l.remote_ws();
    write(&r, b"tracked.txt", b"v2 from remote\n");
    git(&r, &["commit", "-q", "-am", "remote update"]);
    write(&r, b"remote-only.txt", b"r\n");
    let remote_head = git(&r, &["rev-parse", "HEAD"]);
    // A local edit during the run, elsewhere.
    write(&l.local, b"untracked.txt", b"u local edit\n");

    let rep = restore(&t, &l.local, &l.spec, "run-ff", &o).await.unwrap();
    assert!(
        matches!(rep.git, GitRestore::FastForwarded { ref to, .. } if *to == remote_head),
        "{:?}",
        rep.git
    );
    assert_eq!(git(&l.local, &["rev-parse", "HEAD"]), remote_head);
    assert_eq!(
        git(&l.local, &["log", "-1", "--format=%s"]),
        "remote update"
    );
    assert_eq!(
        fs::read(l.local.join("tracked.txt")).unwrap(),
        b"v2 from remote\n"
    );
    assert_eq!(fs::read(l.local.join("remote-only.txt")).unwrap(), b"r\n");
    assert_eq!(
        fs::read(l.local.join("untracked.txt")).unwrap(),
        b"u local edit\n"
    );
    assert_eq!(
        fs::read(l.local.join("ignored/big.bin")).unwrap(),
        b"never synced"
    );
    // Index follows HEAD: the committed change is not shown as a local modification.
    let status = git(&l.local, &["status", "--porcelain"]);
    assert!(
        !status.contains("tracked.txt\n") && !status.contains("M tracked.txt"),
        "{status}"
    );
    // `commit -a` on the remote took the dirty other.txt along: clean now.
    assert!(!status.contains("other.txt"), "{status}");
    assert!(status.contains("?? remote-only.txt"), "{status}");
    assert!(rep.conflicts.is_empty());

    // The next push is incremental, with a bundle only if history moved.
    write(&l.local, b"tracked.txt", b"v3 local\n");
    git(&l.local, &["commit", "-q", "-am", "local v3"]);
    let p2 = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(!p2.full && p2.git_bundle, "{p2:?}");
    assert_eq!(
        git(&r, &["rev-parse", "HEAD"]),
        git(&l.local, &["rev-parse", "HEAD"])
    );
    assert_eq!(fs::read(r.join("tracked.txt")).unwrap(), b"v3 local\n");
    assert!(git(&r, &["status", "--porcelain"]).contains("?? remote-only.txt"));
}

#[tokio::test]
async fn moved_local_head_keeps_the_remote_head_as_a_ref_and_loses_nothing() {
    let l = Layout::new("g3");
    repo(&l);
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let r = l.remote_ws();
    write(&r, b"tracked.txt", b"remote v2\n");
    git(&r, &["commit", "-q", "-am", "remote commit"]);
    let remote_head = git(&r, &["rev-parse", "HEAD"]);
    // Meanwhile the user commits locally.
    write(&l.local, b"tracked.txt", b"local v2\n");
    git(&l.local, &["commit", "-q", "-am", "local commit"]);
    let local_head = git(&l.local, &["rev-parse", "HEAD"]);

    let rep = restore(&t, &l.local, &l.spec, "run-kept", &o)
        .await
        .unwrap();
    assert_eq!(
        rep.git,
        GitRestore::RefKept {
            ref_name: "refs/berth/runs/run-kept".to_owned(),
            head: remote_head.clone()
        }
    );
    assert_eq!(git(&l.local, &["rev-parse", "HEAD"]), local_head);
    assert_eq!(
        git(&l.local, &["rev-parse", "refs/berth/runs/run-kept"]),
        remote_head
    );
    // Both sides changed tracked.txt: local kept, remote beside it.
    assert_eq!(
        fs::read(l.local.join("tracked.txt")).unwrap(),
        b"local v2\n"
    );
    assert_eq!(
        fs::read(l.local.join("tracked.txt.berth-remote")).unwrap(),
        b"remote v2\n"
    );
    assert_eq!(rep.conflicts.len(), 1);
    assert_eq!(
        git(
            &l.local,
            &["log", "-1", "--format=%s", "refs/berth/runs/run-kept"]
        ),
        "remote commit"
    );
}

#[tokio::test]
async fn ignored_and_excluded_paths_stay_out_in_both_directions_unless_sync_ignored() {
    let l = Layout::new("g4");
    repo(&l);
    write(&l.local, b".berthignore", b"secrets/\n");
    write(&l.local, b"secrets/key", b"never leaves");
    let t = LocalTransport::new();
    let o = SyncOptions {
        excludes: vec!["*.tmp".to_owned()],
        ..SyncOptions::default()
    };
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let r = l.remote_ws();
    assert!(!r.join("secrets").exists());
    assert!(!r.join("ignored").exists());
    // The agent produces ignored and excluded files remotely: they do not come back.
    write(&r, b"ignored/build.out", b"artifact");
    write(&r, b"scratch.tmp", b"tmp");
    write(&r, b"secrets/key", b"remote secret");
    write(&r, b"real.txt", b"real");
    let rep = restore(&t, &l.local, &l.spec, "r4", &o).await.unwrap();
    assert_eq!(fs::read(l.local.join("real.txt")).unwrap(), b"real");
    assert!(!l.local.join("ignored/build.out").exists());
    assert!(!l.local.join("scratch.tmp").exists());
    assert_eq!(
        fs::read(l.local.join("secrets/key")).unwrap(),
        b"never leaves"
    );
    assert_eq!(rep.applied.len(), 1, "{rep:?}");

    // With sync_ignored the git-ignored files travel (excludes still apply).
    let l2 = Layout::new("g5");
    repo(&l2);
    let o2 = SyncOptions {
        sync_ignored: true,
        ..SyncOptions::default()
    };
    push(&t, &l2.local, &l2.spec, &o2).await.unwrap();
    assert_eq!(
        fs::read(l2.remote_ws().join("ignored/big.bin")).unwrap(),
        b"never synced"
    );
    assert_eq!(
        fs::read(l2.remote_ws().join("x.log")).unwrap(),
        b"never synced"
    );
}
