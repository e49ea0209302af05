//! Adapter assets (`sync_asset`, `copy_back`) over `LocalTransport` and over a real OpenSSH
//! sshd (`SshTransport`; under `CI=true` a missing sshd fails). Every scenario runs on both:
//! first sync creates the copy, an unchanged second sync sends nothing, changed/removed/added
//! local files (and a change made to the remote copy) are reconciled, `only` limits the set,
//! symlinks are followed or kept per flag, copy-back applies a changed remote file and leaves
//! the others, unsafe names and symlinks are refused, and files of the user next to the assets
//! (a remote `$HOME`'s own config, a sibling in the assets dir) are never touched.
#![expect(clippy::expect_used, reason = "test helpers fail the test loudly")]

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};

use berth_exec::{LocalTransport, Secret, SshPool, SshTarget, SshTransport, Transport};
use berth_sync::{AssetOptions, CopyBackOutcome, SyncError, copy_back, sync_asset};
use berth_testkit::sshd::Sshd;
use common::{Node, snapshot, write};

/// A local asset directory and a remote root playing the user's `$HOME`.
struct Fx {
    _tmp: tempfile::TempDir,
    local: PathBuf,
    home: PathBuf,
}

impl Fx {
    fn new(remote_base: &Path, name: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let local = tmp.path().join("codex-home");
        fs::create_dir_all(&local).expect("mkdir local");
        let home = remote_base.join(name);
        fs::create_dir_all(&home).expect("mkdir home");
        Self {
            _tmp: tmp,
            local,
            home,
        }
    }

    fn remote_dir(&self, key: &str) -> String {
        format!("{}/.berth/assets/codex/{key}/", self.home.display())
    }

    fn remote(&self, key: &str) -> PathBuf {
        self.home.join(".berth/assets/codex").join(key)
    }
}

fn content(root: &Path, rel: &str) -> Option<Vec<u8>> {
    fs::read(root.join(rel)).ok()
}

async fn basic_cycle(t: &dyn Transport, base: &Path) {
    let f = Fx::new(base, "basic");
    // The user's own files in the remote $HOME, and a sibling next to the asset dir.
    write(&f.home, b".codex/auth.json", b"user's own auth");
    write(&f.home, b".berth/assets/codex/notes.txt", b"sibling");
    write(&f.local, b"config.toml", b"model = 'x'\n");
    write(&f.local, b"auth.json", b"{\"t\":1}");
    write(&f.local, b"skills/a/SKILL.md", b"# a");
    write(&f.local, b"gone.txt", b"bye");
    fs::set_permissions(f.local.join("auth.json"), fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let o = AssetOptions::default();

    let r1 = sync_asset(t, &f.local, &f.remote_dir("home"), &o)
        .await
        .expect("first sync");
    assert!(!r1.unchanged);
    assert_eq!(r1.files, 4, "{r1:?}");
    assert_eq!(snapshot(&f.local), snapshot(&f.remote("home")));

    let r2 = sync_asset(t, &f.local, &f.remote_dir("home"), &o)
        .await
        .expect("second sync");
    assert!(r2.unchanged, "{r2:?}");
    assert_eq!((r2.files, r2.bytes), (0, 0));
    assert_eq!(r2.digest, r1.digest);

    write(&f.local, b"config.toml", b"model = 'y'\n");
    fs::remove_file(f.local.join("gone.txt")).expect("rm");
    write(&f.local, b"skills/b/SKILL.md", b"# b");
    let r3 = sync_asset(t, &f.local, &f.remote_dir("home"), &o)
        .await
        .expect("third sync");
    assert!(!r3.unchanged);
    assert_ne!(r3.digest, r1.digest);
    assert_eq!(snapshot(&f.local), snapshot(&f.remote("home")));
    assert!(!f.remote("home").join("gone.txt").exists());

    // A change made to the remote copy (by the CLI or anyone) is noticed and undone.
    write(&f.remote("home"), b"config.toml", b"tampered");
    write(&f.remote("home"), b"extra.txt", b"extra");
    let r4 = sync_asset(t, &f.local, &f.remote_dir("home"), &o)
        .await
        .expect("fourth sync");
    assert!(!r4.unchanged);
    assert_eq!(snapshot(&f.local), snapshot(&f.remote("home")));
    let r5 = sync_asset(t, &f.local, &f.remote_dir("home"), &o)
        .await
        .expect("fifth sync");
    assert!(r5.unchanged);

    // Nothing outside the asset dir was touched; no temporaries are left.
    assert_eq!(
        content(&f.home, ".codex/auth.json").as_deref(),
        Some(&b"user's own auth"[..])
    );
    assert_eq!(
        content(&f.home, ".berth/assets/codex/notes.txt").as_deref(),
        Some(&b"sibling"[..])
    );
    let mut names: Vec<String> = fs::read_dir(f.home.join(".berth/assets/codex"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".home.berth-asset", "home", "notes.txt"]);
    let mut top: Vec<String> = fs::read_dir(&f.home)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, [".berth", ".codex"]);
}

async fn only_and_symlinks(t: &dyn Transport, base: &Path) {
    let f = Fx::new(base, "only");
    write(&f.local, b"AGENTS.md", b"instructions");
    write(&f.local, b"private.txt", b"not for the remote");
    write(&f.local, b"sub/x.json", b"x");
    write(&f.local, b"sub/y.json", b"y");
    let only = AssetOptions {
        only: vec!["AGENTS.md".to_owned(), "sub/x.json".to_owned()],
        ..AssetOptions::default()
    };
    sync_asset(t, &f.local, &f.remote_dir("instructions"), &only)
        .await
        .expect("only sync");
    let s = snapshot(&f.remote("instructions"));
    let names: Vec<&[u8]> = s.keys().map(Vec::as_slice).collect();
    assert_eq!(names, [&b"AGENTS.md"[..], b"sub", b"sub/x.json"]);
    assert!(
        sync_asset(t, &f.local, &f.remote_dir("instructions"), &only)
            .await
            .expect("again")
            .unchanged
    );
    // Another local file changing does not matter to an `only` asset.
    write(&f.local, b"private.txt", b"changed");
    assert!(
        sync_asset(t, &f.local, &f.remote_dir("instructions"), &only)
            .await
            .expect("again")
            .unchanged
    );

    // Symlinks: followed (content copied) or kept as links.
    let outside = f._tmp.path().join("outside");
    write(&outside, b"real-auth.json", b"secret-token");
    write(&outside, b"dir/inner.txt", b"inner");
    let sl = f._tmp.path().join("links");
    fs::create_dir_all(&sl).expect("mkdir");
    symlink(outside.join("real-auth.json"), sl.join("auth.json")).expect("symlink");
    symlink(outside.join("dir"), sl.join("linked-dir")).expect("symlink");
    symlink("nowhere", sl.join("dangling")).expect("symlink");
    let follow = AssetOptions {
        follow_symlinks: true,
        ..AssetOptions::default()
    };
    let r = sync_asset(t, &sl, &f.remote_dir("followed"), &follow)
        .await
        .expect("follow");
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    let s = snapshot(&f.remote("followed"));
    assert!(
        matches!(s.get(&b"auth.json"[..]), Some(Node::File { content, .. }) if content == b"secret-token")
    );
    assert!(matches!(s.get(&b"linked-dir"[..]), Some(Node::Dir { .. })));
    assert!(
        matches!(s.get(&b"linked-dir/inner.txt"[..]), Some(Node::File { content, .. }) if content == b"inner")
    );
    assert!(!s.contains_key(&b"dangling"[..]));

    let kept = AssetOptions::default();
    sync_asset(t, &sl, &f.remote_dir("kept"), &kept)
        .await
        .expect("keep");
    assert_eq!(snapshot(&sl), snapshot(&f.remote("kept")));
    let s = snapshot(&f.remote("kept"));
    assert!(matches!(
        s.get(&b"auth.json"[..]),
        Some(Node::Symlink { .. })
    ));

    // Switching the same asset from links to followed content replaces the links.
    sync_asset(t, &sl, &f.remote_dir("kept"), &follow)
        .await
        .expect("switch");
    let s = snapshot(&f.remote("kept"));
    assert!(matches!(s.get(&b"auth.json"[..]), Some(Node::File { .. })));
    assert_eq!(
        content(&outside, "real-auth.json").as_deref(),
        Some(&b"secret-token"[..])
    );
}

async fn copy_back_cycle(t: &dyn Transport, base: &Path) {
    let f = Fx::new(base, "back");
    write(&f.local, b"auth.json", b"old token");
    write(&f.local, b"config.toml", b"cfg");
    write(&f.local, b"sub/state.json", b"s1");
    fs::set_permissions(f.local.join("auth.json"), fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let o = AssetOptions::default();
    sync_asset(t, &f.local, &f.remote_dir("home"), &o)
        .await
        .expect("sync");
    let r = f.remote("home");
    write(&r, b"auth.json", b"refreshed token");
    write(&r, b"config.toml", b"changed remotely but not requested");
    write(&r, b"sub/new.json", b"new");

    let got = copy_back(
        t,
        &f.remote_dir("home"),
        &[
            "auth.json",
            "sub/state.json",
            "sub/new.json",
            "missing.json",
        ],
        &f.local,
    )
    .await
    .expect("copy back");
    let outcomes: Vec<(&str, CopyBackOutcome)> =
        got.iter().map(|c| (c.name.as_str(), c.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            ("auth.json", CopyBackOutcome::Updated),
            ("sub/state.json", CopyBackOutcome::Unchanged),
            ("sub/new.json", CopyBackOutcome::Created),
            ("missing.json", CopyBackOutcome::MissingRemotely),
        ]
    );
    assert_eq!(got.iter().filter(|c| c.changed()).count(), 2);
    assert_eq!(
        content(&f.local, "auth.json").as_deref(),
        Some(&b"refreshed token"[..])
    );
    let mode = fs::metadata(f.local.join("auth.json"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the local file's mode is kept");
    assert_eq!(
        content(&f.local, "config.toml").as_deref(),
        Some(&b"cfg"[..])
    );
    assert_eq!(
        content(&f.local, "sub/new.json").as_deref(),
        Some(&b"new"[..])
    );
    // No staging leftovers.
    assert!(fs::read_dir(&f.local).expect("ls").all(|e| {
        !e.expect("entry")
            .file_name()
            .to_string_lossy()
            .contains("berth")
    }));

    // After copying back, the next sync sends the new local state.
    let again = sync_asset(t, &f.local, &f.remote_dir("home"), &o)
        .await
        .expect("resync");
    assert!(!again.unchanged);
    assert_eq!(snapshot(&f.local), snapshot(&f.remote("home")));
}

fn is_refusal(e: &SyncError) -> bool {
    matches!(e, SyncError::Unsafe { .. } | SyncError::Invalid { .. })
}

async fn refusals(t: &dyn Transport, base: &Path) {
    let f = Fx::new(base, "unsafe");
    write(&f.local, b"auth.json", b"local");
    write(&f.home, b"secret", b"outside the asset dir");
    let o = AssetOptions::default();
    sync_asset(t, &f.local, &f.remote_dir("home"), &o)
        .await
        .expect("sync");
    let r = f.remote("home");

    for bad in ["../../../../secret", "/etc/passwd", "", "a/../../x", "a//b"] {
        let e = copy_back(t, &f.remote_dir("home"), &[bad], &f.local)
            .await
            .expect_err(bad);
        assert!(is_refusal(&e), "{bad:?}: {e}");
    }
    // A remote symlink (pointing out of the asset dir) is refused, nothing applied.
    symlink(f.home.join("secret"), r.join("leak.json")).expect("symlink");
    write(&r, b"auth.json", b"remote");
    let e = copy_back(
        t,
        &f.remote_dir("home"),
        &["auth.json", "leak.json"],
        &f.local,
    )
    .await
    .expect_err("remote symlink");
    assert!(is_refusal(&e), "{e}");
    assert_eq!(
        content(&f.local, "auth.json").as_deref(),
        Some(&b"local"[..])
    );
    // A remote directory symlink on the way is refused too.
    symlink(&f.home, r.join("up")).expect("symlink");
    let e = copy_back(t, &f.remote_dir("home"), &["up/secret"], &f.local)
        .await
        .expect_err("remote dir symlink");
    assert!(is_refusal(&e), "{e}");
    // A local destination that is a symlink is refused (never written through).
    let target = f._tmp.path().join("target.json");
    fs::write(&target, b"t").expect("write");
    symlink(&target, f.local.join("linked.json")).expect("symlink");
    write(&r, b"linked.json", b"remote linked");
    let e = copy_back(t, &f.remote_dir("home"), &["linked.json"], &f.local)
        .await
        .expect_err("local symlink");
    assert!(is_refusal(&e), "{e}");
    assert_eq!(fs::read(&target).expect("read"), b"t");

    // Unsafe `only` names and remote dirs.
    let bad_only = AssetOptions {
        only: vec!["../x".to_owned()],
        ..AssetOptions::default()
    };
    let e = sync_asset(t, &f.local, &f.remote_dir("other"), &bad_only)
        .await
        .expect_err("bad only");
    assert!(is_refusal(&e), "{e}");
    for bad in ["relative/dir", "/", "/x", "/a/../b"] {
        let e = sync_asset(t, &f.local, bad, &o).await.expect_err(bad);
        assert!(is_refusal(&e), "{bad}: {e}");
    }

    // A directory Berth did not create (the user's own config home) is never replaced.
    write(&f.home, b".codex/config.toml", b"user's config");
    let users = format!("{}/.codex", f.home.display());
    let e = sync_asset(t, &f.local, &users, &o)
        .await
        .expect_err("foreign dir");
    assert!(is_refusal(&e), "{e}");
    assert_eq!(
        content(&f.home, ".codex/config.toml").as_deref(),
        Some(&b"user's config"[..])
    );
    assert!(!f.home.join("..codex.berth-asset").exists());
    assert_eq!(
        content(&f.home, "secret").as_deref(),
        Some(&b"outside the asset dir"[..])
    );
}

async fn robustness(t: &dyn Transport, base: &Path) {
    let f = Fx::new(base, "robust");
    // A read-only asset directory with a read-only subdirectory is replaced cleanly.
    write(&f.local, b"ro/file", b"1");
    write(&f.local, b"top", b"t");
    let o = AssetOptions::default();
    let ro =
        |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).expect("chmod");
    ro(&f.local.join("ro"), 0o555);
    ro(&f.local, 0o555);
    sync_asset(t, &f.local, &f.remote_dir("ro"), &o)
        .await
        .expect("read-only first");
    assert_eq!(snapshot(&f.local), snapshot(&f.remote("ro")));
    ro(&f.local, 0o755);
    write(&f.local, b"top", b"t2");
    ro(&f.local, 0o555);
    sync_asset(t, &f.local, &f.remote_dir("ro"), &o)
        .await
        .expect("read-only second");
    assert_eq!(snapshot(&f.local), snapshot(&f.remote("ro")));
    ro(&f.local, 0o755);
    ro(&f.local.join("ro"), 0o755);

    // Temporaries of a crashed update are removed once old; fresh ones (a concurrent update's)
    // are left alone.
    let parent = f.home.join(".berth/assets/codex");
    let stale = parent.join(".ro.berth-tmp-crashed");
    write(&stale, b"sub/x", b"x");
    ro(&stale.join("sub"), 0o555);
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::open(&stale)
        .expect("open")
        .set_modified(old)
        .expect("mtime");
    let fresh = parent.join(".ro.berth-tmp-running");
    fs::create_dir_all(&fresh).expect("mkdir");
    write(&f.local, b"top", b"t3");
    sync_asset(t, &f.local, &f.remote_dir("ro"), &o)
        .await
        .expect("third");
    assert!(!stale.exists());
    assert!(fresh.exists());
    fs::remove_dir(&fresh).expect("rmdir");

    // Two concurrent updates of one asset: each either succeeds or fails cleanly; the copy
    // is always exactly one of the two versions, never one nested in the other.
    let other = f._tmp.path().join("other");
    write(&other, b"top", b"other version");
    let rd = f.remote_dir("ro");
    let (a, b) = tokio::join!(
        sync_asset(t, &f.local, &rd, &o),
        sync_asset(t, &other, &rd, &o)
    );
    assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
    let got = snapshot(&f.remote("ro"));
    assert!(
        got == snapshot(&f.local) || got == snapshot(&other),
        "{got:?}"
    );
    let settled = sync_asset(t, &other, &f.remote_dir("ro"), &o)
        .await
        .expect("settle");
    assert_eq!(snapshot(&other), snapshot(&f.remote("ro")), "{settled:?}");
}

/// A CLI home in merge mode: the CLI's own state beside the provided config survives every
/// sync, and the provided files are rewritten even when the CLI changed them.
async fn merge_keeps_the_clis_state(t: &dyn Transport, base: &Path) {
    let f = Fx::new(base, "merge");
    let o = AssetOptions {
        merge: true,
        ..AssetOptions::default()
    };
    write(&f.local, b"config.toml", b"model = 'x'\n");
    let rd = f.remote_dir("home");
    sync_asset(t, &f.local, &rd, &o).await.expect("first sync");
    // The CLI writes its sessions and edits the config during a run.
    write(&f.remote("home"), b"sessions/2026/rollout-1.jsonl", b"{}\n");
    write(
        &f.remote("home"),
        b"config.toml",
        b"model = 'changed by the cli'\n",
    );
    write(&f.local, b"skills/a.md", b"skill");
    let rep = sync_asset(t, &f.local, &rd, &o).await.expect("second sync");
    assert!(!rep.unchanged && rep.files == 2, "{rep:?}");
    let got = snapshot(&f.remote("home"));
    assert!(
        got.contains_key(b"sessions/2026/rollout-1.jsonl".as_slice()),
        "the CLI's session survived: {got:?}"
    );
    assert_eq!(
        content(&f.remote("home"), "config.toml").expect("config"),
        b"model = 'x'\n"
    );
    assert_eq!(
        content(&f.remote("home"), "skills/a.md").expect("skill"),
        b"skill"
    );
    // Without merge the remote becomes an exact copy again.
    sync_asset(t, &f.local, &rd, &AssetOptions::default())
        .await
        .expect("exact sync");
    assert_eq!(snapshot(&f.local), snapshot(&f.remote("home")));
}

#[tokio::test]
async fn assets_over_local_transport() {
    let t = LocalTransport::new();
    let base = tempfile::tempdir().expect("tempdir");
    basic_cycle(&t, base.path()).await;
    only_and_symlinks(&t, base.path()).await;
    copy_back_cycle(&t, base.path()).await;
    refusals(&t, base.path()).await;
    robustness(&t, base.path()).await;
    merge_keeps_the_clis_state(&t, base.path()).await;
}

fn ssh(s: &Sshd) -> SshTransport {
    let mut target = SshTarget::new(s.host.clone(), s.port, s.username.clone());
    target.private_key = Some(Secret::new(s.client_private_key.clone()));
    target.known_hosts = Some(s.known_hosts.clone());
    target.strict_host_key_checking = true;
    SshTransport::new(SshPool::new(), target)
}

#[tokio::test]
async fn assets_over_sshd() {
    let Some(s) = Sshd::start_unless_unavailable().expect("failed to start the sshd fixture")
    else {
        return;
    };
    let t = ssh(&s);
    basic_cycle(&t, &s.workspace).await;
    only_and_symlinks(&t, &s.workspace).await;
    copy_back_cycle(&t, &s.workspace).await;
    refusals(&t, &s.workspace).await;
    robustness(&t, &s.workspace).await;
    merge_keeps_the_clis_state(&t, &s.workspace).await;
}
