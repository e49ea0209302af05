//! Property: over `LocalTransport`, random trees with random concurrent edits on both sides
//! (create, modify, delete, rename, chmod, file↔directory swaps, symlinks; names with spaces,
//! newlines, quotes, leading dashes, non-UTF-8 bytes) restore so that every local edit
//! survives, every remote-only change arrives, and the conflicts are exactly the paths changed
//! on both sides; no symlink resolves outside the root unless the user made it so (remote
//! links that escape only through other links, like `a -> .` with `x -> a/a/a/../../..`, are
//! generated); no conflict copy replaces an existing file (`a.berth-remote` is one of the
//! names). `BERTH_SYNC_PROPTEST_CASES` raises the case count (default 500).

mod common;

use berth_exec::LocalTransport;
use common::Layout;
use common::model::{edits_s, init_s, run_case, run_case_with};
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("BERTH_SYNC_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

#[test]
fn restore_keeps_every_local_edit_and_applies_every_remote_only_change() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = LocalTransport::new();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    // How often each outcome occurred, so a generator that stopped producing conflicts or
    // remote changes cannot go unnoticed.
    let seen = std::cell::RefCell::new([0u32; 6]);
    runner
        .run(&(init_s(), edits_s(), edits_s()), |(init, lops, rops)| {
            let lay = Layout::new("prop");
            let rep = rt.block_on(run_case(&t, &lay, &init, &lops, &rops));
            // Symlinks refused only when followed through other links (a lexical check
            // passes them), and conflict copies that had to take another name.
            let through_links = rep
                .rejected
                .iter()
                .any(|r| r.reason == "symlink resolving outside the workspace");
            let renamed_copy = rep
                .remote_copies
                .iter()
                .any(|c| c.copy != c.path.with_suffix(berth_sync::REMOTE_SUFFIX));
            let mut s = seen.borrow_mut();
            for (i, n) in [
                rep.conflicts.len(),
                rep.applied.len(),
                rep.deleted.len(),
                rep.kept_local.len(),
                usize::from(through_links),
                usize::from(renamed_copy),
            ]
            .into_iter()
            .enumerate()
            {
                s[i] += u32::from(n > 0);
            }
            Ok(())
        })
        .unwrap();
    let [
        conflicts,
        applied,
        deleted,
        kept,
        through_links,
        renamed_copy,
    ] = *seen.borrow();
    eprintln!(
        "cases with conflicts {conflicts}, remote applied {applied}, remote deletions {deleted}, \
         local kept {kept}, symlinks refused through other links {through_links}, conflict \
         copies under a second name {renamed_copy}"
    );
    if cases() >= 100 {
        let floor = cases() / 20;
        assert!(
            conflicts > floor && applied > floor && deleted > floor && kept > floor,
            "the generator no longer covers every outcome"
        );
        assert!(
            through_links > floor / 2,
            "the generator no longer plants escaping symlink chains"
        );
    }
    // About one case in a hundred: only a long run is sure to meet it.
    if cases() >= 2000 {
        assert!(
            renamed_copy > 0,
            "the generator no longer makes conflict copies meet taken names"
        );
    }
}

fn git_cases() -> u32 {
    std::env::var("BERTH_SYNC_GIT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
}

/// The same property for git work trees: the full push goes through `git bundle`,
/// `checkout-index` and the overlay of what differs from HEAD (modified, untracked, deleted,
/// type changes), with the same hostile names.
#[test]
fn git_work_trees_round_trip_under_random_edits() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = LocalTransport::new();
    let mut runner = TestRunner::new(Config {
        cases: git_cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(init_s(), edits_s(), edits_s(), edits_s()),
            |(init, dirty, lops, rops)| {
                let lay = Layout::new("gitprop");
                rt.block_on(run_case_with(&t, &lay, &init, Some(&dirty), &lops, &rops));
                Ok(())
            },
        )
        .unwrap();
}
