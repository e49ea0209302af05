//! The same property and a git round trip over a real OpenSSH sshd with `SshTransport`
//! (the fixture's key and pinned known_hosts). Under `CI=true` a missing sshd fails.
#![expect(clippy::expect_used, reason = "test helpers fail the test loudly")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use berth_exec::{Secret, SshPool, SshTarget, SshTransport};
use berth_sync::{GitRestore, SyncOptions, push, restore};
use berth_testkit::sshd::Sshd;
use common::model::{edits_s, init_s, run_case};
use common::{Layout, git, racy_restore, write};
use proptest::test_runner::{Config, TestRunner};

fn sshd() -> Option<Sshd> {
    Sshd::start_unless_unavailable().expect("failed to start the sshd fixture")
}

fn transport(s: &Sshd) -> SshTransport {
    let mut t = SshTarget::new(s.host.clone(), s.port, s.username.clone());
    t.private_key = Some(Secret::new(s.client_private_key.clone()));
    t.known_hosts = Some(s.known_hosts.clone());
    t.strict_host_key_checking = true;
    SshTransport::new(SshPool::new(), t)
}

fn cases() -> u32 {
    std::env::var("BERTH_SYNC_SSH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

#[test]
fn restore_over_ssh_keeps_local_edits_and_applies_remote_changes() {
    let Some(s) = sshd() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = transport(&s);
    let n = AtomicU32::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(init_s(), edits_s(), edits_s()), |(init, lops, rops)| {
            let scope = format!("case{}", n.fetch_add(1, Ordering::Relaxed));
            let lay = Layout::with_remote_root(&scope, &s.workspace);
            rt.block_on(run_case(&t, &lay, &init, &lops, &rops));
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn git_round_trip_over_ssh_fast_forwards() {
    let Some(s) = sshd() else { return };
    let t = transport(&s);
    let l = Layout::with_remote_root("git", &s.workspace);
    git(&l.local, &["init", "-q"]);
    write(&l.local, b"f.txt", b"1\n");
    git(&l.local, &["add", "."]);
    git(&l.local, &["commit", "-q", "-m", "c1"]);
    let o = SyncOptions::default();
    push(&t, &l.local, &l.spec, &o).await.unwrap();
    let r = l.remote_ws();
    write(&r, b"f.txt", b"2\n");
    git(&r, &["commit", "-q", "-am", "remote"]);
    let head = git(&r, &["rev-parse", "HEAD"]);
    let rep = restore(&t, &l.local, &l.spec, "ssh-run", &o).await.unwrap();
    assert!(
        matches!(rep.git, GitRestore::FastForwarded { .. }),
        "{:?}",
        rep.git
    );
    assert_eq!(git(&l.local, &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read(l.local.join("f.txt")).unwrap(), b"2\n");
}

/// Thousands of files to hash remotely after a push over SSH: names stream in and sums stream
/// out through one exec channel.
#[tokio::test]
async fn racy_files_are_hashed_remotely_over_ssh() {
    let Some(s) = sshd() else { return };
    let t = transport(&s);
    let l = Layout::with_remote_root("racy", &s.workspace);
    racy_restore(&t, &l, 2000).await;
}
