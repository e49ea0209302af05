//! A 10,000-file tree syncs out and back (manifests spilled to disk in sorted runs); the resumed push sends only the difference; crash
//! leftovers in staging are removed; concurrent restores are serialized.

mod common;

use std::fs;
use std::time::Instant;

use berth_exec::LocalTransport;
use berth_sync::{ProgressFn, SyncOptions, push, restore};
use common::{Layout, racy_restore, snapshot, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_files_sync_out_and_back() {
    let l = Layout::new("big");
    for d in 0..100 {
        for f in 0..100 {
            write(
                &l.local,
                format!("d{d}/f{f}.txt").as_bytes(),
                format!("{d}-{f}\n").as_bytes(),
            );
        }
    }
    let t = LocalTransport::new();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen2 = seen.clone();
    let o = SyncOptions {
        progress: Some(ProgressFn::new(move |p| {
            seen2.fetch_max(p.files, std::sync::atomic::Ordering::Relaxed);
        })),
        // Manifests spill to disk in sorted runs of 1,000 entries: the path a tree larger
        // than memory takes, here with ten runs per manifest.
        spool_entries: Some(1_000),
        ..SyncOptions::default()
    };
    let start = Instant::now();
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    let push_time = start.elapsed();
    assert_eq!(rep.files, 10_000);
    assert!(
        seen.load(std::sync::atomic::Ordering::Relaxed) >= 9_900,
        "progress reported"
    );
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));

    let r = l.remote_ws();
    for i in 0..100 {
        write(&r, format!("d{i}/f0.txt").as_bytes(), b"changed remotely\n");
        fs::remove_file(r.join(format!("d{i}/f1.txt"))).unwrap();
        write(&r, format!("d{i}/new.txt").as_bytes(), b"new\n");
    }
    let start = Instant::now();
    let rep = restore(&t, &l.local, &l.spec, "big-run", &o).await.unwrap();
    let restore_time = start.elapsed();
    assert_eq!(rep.applied.len(), 200);
    assert_eq!(rep.deleted.len(), 100);
    assert_eq!(rep.files, 200);
    assert!(rep.conflicts.is_empty());
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));

    write(&l.local, b"d5/f5.txt", b"local change\n");
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(!rep.full);
    assert_eq!(rep.files, 1, "{rep:?}");
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));
    eprintln!("10k files: push {push_time:?}, restore {restore_time:?}");
}

#[tokio::test]
async fn staging_left_by_a_crash_is_removed_and_restores_are_serialized() {
    let l = Layout::new("crash");
    write(&l.local, b"a", b"1");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let state_root = l.local.parent().unwrap().join(".berth-sync");
    let state_dir = fs::read_dir(&state_root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let leftover = state_dir.join("staging-crashed-0123");
    fs::create_dir(&leftover).unwrap();
    fs::write(leftover.join("f0"), "half").unwrap();
    // A spool file is unlinked as soon as it is open; one left by a crash in between goes too.
    let spool = state_dir.join(".spool-0123456789abcdef");
    fs::write(&spool, "run").unwrap();
    write(&l.remote_ws(), b"a", b"2");
    let (x, y) = tokio::join!(
        restore(&t, &l.local, &l.spec, "r1", &o),
        restore(&t, &l.local, &l.spec, "r2", &o)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(!leftover.exists());
    assert!(!spool.exists());
    // One of them applied the change; the other found it already there.
    assert_eq!(x.applied.len() + y.applied.len(), 1, "{x:?} {y:?}");
    assert!(x.conflicts.is_empty() && y.conflicts.is_empty());
    assert_eq!(fs::read(l.local.join("a")).unwrap(), b"2");
    let left: Vec<_> = fs::read_dir(&state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("staging-") || name.starts_with(".spool-")
        })
        .collect();
    assert!(left.is_empty());
}

/// A few hundred: the names travel embedded in one control-shell step.
#[tokio::test]
async fn a_few_hundred_racy_files_are_hashed_remotely_in_one_step() {
    racy_restore(&LocalTransport::new(), &Layout::new("racy300"), 300).await;
}

/// Thousands: names stream in and sums stream out through one channel.
#[tokio::test]
async fn thousands_of_racy_files_are_hashed_remotely_as_a_stream() {
    racy_restore(&LocalTransport::new(), &Layout::new("racy3000"), 3000).await;
}
