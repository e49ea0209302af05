//! Both transfer paths of every step: data embedded in a control-shell step (small) and a
//! stream or stdin list on its own channel (large), for incremental pushes (changes, long
//! deletion lists) and restores (many or large remote files).

mod common;

use std::fs;

use berth_exec::LocalTransport;
use berth_sync::{SyncOptions, push, restore};
use common::{Layout, snapshot, write};

/// Deterministic, poorly compressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_increments_and_restores_round_trip() {
    let l = Layout::new("paths");
    // Long names: 4,000 of them make a deletion list well above what is embedded in a step.
    let long = "n".repeat(40);
    for i in 0..4_000 {
        write(
            &l.local,
            format!("del/{long}-{i:05}").as_bytes(),
            format!("{i}\n").as_bytes(),
        );
    }
    write(&l.local, b"keep/a.txt", b"a\n");
    let t = LocalTransport::new();
    let o = SyncOptions::default();
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(rep.full);
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));

    // Small increment: embedded payload, only the sent paths listed back.
    write(&l.local, b"keep/a.txt", b"a changed\n");
    write(&l.local, b"keep/new/b.txt", b"b\n");
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(!rep.full);
    assert_eq!(rep.files, 2, "{rep:?}");
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));

    // Large increment: a streamed payload and a long deletion list.
    // Files go, their directory stays: each one is on the deletion list.
    for i in 0..4_000 {
        fs::remove_file(l.local.join(format!("del/{long}-{i:05}"))).unwrap();
    }
    for i in 0..4 {
        write(
            &l.local,
            format!("big/{i}.bin").as_bytes(),
            &noise(300_000, i),
        );
    }
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(!rep.full);
    assert_eq!(rep.files, 4, "{rep:?}");
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));

    // Nothing changed: nothing sent, still incremental.
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(!rep.full);
    assert_eq!(rep.files, 0, "{rep:?}");

    // Restore of a few small remote changes (fetched inside a step) ...
    write(&l.remote_ws(), b"keep/a.txt", b"remote\n");
    let rep = restore(&t, &l.local, &l.spec, "small", &o).await.unwrap();
    assert_eq!(rep.applied.len(), 1, "{rep:?}");
    assert_eq!(fs::read(l.local.join("keep/a.txt")).unwrap(), b"remote\n");

    // ... and of a large one (streamed on its own channel), next to a local edit that stays.
    let big = noise(9 << 20, 99);
    write(&l.remote_ws(), b"big/huge.bin", &big);
    write(&l.remote_ws(), b"big/0.bin", b"remote wins\n");
    write(&l.local, b"keep/new/b.txt", b"local edit\n");
    write(&l.remote_ws(), b"keep/new/b.txt", b"remote edit\n");
    let rep = restore(&t, &l.local, &l.spec, "large", &o).await.unwrap();
    assert_eq!(rep.applied.len(), 2, "{rep:?}");
    assert_eq!(rep.conflicts.len(), 1, "{rep:?}");
    assert_eq!(fs::read(l.local.join("big/huge.bin")).unwrap(), big);
    assert_eq!(
        fs::read(l.local.join("big/0.bin")).unwrap(),
        b"remote wins\n"
    );
    assert_eq!(
        fs::read(l.local.join("keep/new/b.txt")).unwrap(),
        b"local edit\n"
    );
    assert_eq!(
        fs::read(l.local.join("keep/new/b.txt.berth-remote")).unwrap(),
        b"remote edit\n"
    );

    // The recorded state is still trusted afterwards: the next push is incremental and sends
    // only the local edit and the conflict copy.
    let rep = push(&t, &l.local, &l.spec, &o).await.unwrap();
    assert!(!rep.full);
    assert_eq!(rep.files, 2, "{rep:?}");
    assert_eq!(snapshot(&l.local), snapshot(&l.remote_ws()));
}
