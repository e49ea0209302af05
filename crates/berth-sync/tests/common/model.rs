//! The random-edit model shared by the LocalTransport and sshd property tests: random trees,
//! random edits on both sides, and the oracle a restore must satisfy.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use berth_exec::Transport;
use berth_sync::{RestoreReport, SyncOptions, push, restore};
use proptest::prelude::*;

use super::{Layout, Node, Tree, p, snapshot};

/// Names with spaces, newlines, quotes, leading dashes and non-UTF-8 bytes, and the name a
/// conflict copy of `a` takes first (so that name is often taken already, on either side).
pub const NAMES: &[&[u8]] = &[
    b"a",
    b"b c",
    b"-d",
    b"n\nl",
    b"q'x",
    b"\xff\xfe",
    b"a.berth-remote",
];
/// Link targets: plain ones, and ones that leave the root only through other links (`a -> .`
/// makes `a/a/a/../../..` climb three levels) or on their own (`..` at the top).
const TARGETS: &[&[u8]] = &[b"a", b"b c/a", b".", b"..", b"a/a/a/../../.."];

#[derive(Debug, Clone)]
pub enum Op {
    Write(Vec<usize>, u8),
    Delete(Vec<usize>),
    Rename(Vec<usize>, Vec<usize>),
    Chmod(Vec<usize>, bool),
    /// File (or symlink) ↔ directory.
    Swap(Vec<usize>, u8),
    Link(Vec<usize>, usize),
    /// A file at `<path>.berth-remote`: the name a conflict copy of `<path>` would take.
    Squat(Vec<usize>, u8),
    /// `a -> .` beside `<path>`, and `<path> -> a/a/a/../../..`: inside when read lexically,
    /// above the root when followed.
    Chain(Vec<usize>),
}

fn path_s() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..NAMES.len(), 1..=3)
}

pub fn op_s() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path_s(), any::<u8>()).prop_map(|(p, c)| Op::Write(p, c)),
        2 => path_s().prop_map(Op::Delete),
        1 => (path_s(), path_s()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (path_s(), any::<bool>()).prop_map(|(p, x)| Op::Chmod(p, x)),
        1 => (path_s(), any::<u8>()).prop_map(|(p, c)| Op::Swap(p, c)),
        1 => (path_s(), 0..TARGETS.len()).prop_map(|(p, t)| Op::Link(p, t)),
        1 => squat_s(),
        1 => path_s().prop_map(Op::Chain),
    ]
}

/// Squats at the top level, where conflicts are most frequent.
fn squat_s() -> impl Strategy<Value = Op> {
    (0..NAMES.len(), any::<u8>()).prop_map(|(i, c)| Op::Squat(vec![i], c))
}

pub fn init_s() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (path_s(), any::<u8>()).prop_map(|(p, c)| Op::Write(p, c)),
            1 => (path_s(), 0..TARGETS.len()).prop_map(|(p, t)| Op::Link(p, t)),
            1 => squat_s(),
        ],
        1..12,
    )
}

pub fn edits_s() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_s(), 0..7)
}

fn rel(ix: &[usize]) -> Vec<u8> {
    ix.iter().map(|i| NAMES[*i]).collect::<Vec<_>>().join(&b'/')
}

/// Same length for many values, so content changes often keep the size.
fn content(c: u8) -> Vec<u8> {
    vec![b'a' + (c / 4) % 26; usize::from(c % 4) + 1]
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Every proper ancestor is a real directory (or absent, when `create`).
fn ancestors_ok(root: &Path, r: &[u8], create: bool) -> bool {
    let comps: Vec<&[u8]> = r.split(|b| *b == b'/').collect();
    for i in 1..comps.len() {
        let a = p(root, &comps[..i].join(&b'/'));
        match fs::symlink_metadata(&a) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return false,
            Err(_) if create => {}
            Err(_) => return false,
        }
    }
    true
}

pub fn apply(root: &Path, op: &Op) {
    match op {
        Op::Write(ix, c) => {
            let r = rel(ix);
            let path = p(root, &r);
            if !ancestors_ok(root, &r, true) || is_real_dir(&path) {
                return;
            }
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if fs::symlink_metadata(&path).is_ok() {
                fs::remove_file(&path).unwrap();
            }
            fs::write(&path, content(*c)).unwrap();
        }
        Op::Delete(ix) => {
            let r = rel(ix);
            // Never through a symlink: some point above the root.
            if !ancestors_ok(root, &r, false) {
                return;
            }
            let path = p(root, &r);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path).unwrap(),
                Ok(_) => fs::remove_file(&path).unwrap(),
                Err(_) => {}
            }
        }
        Op::Rename(a, b) => {
            let (ra, rb) = (rel(a), rel(b));
            let (pa, pb) = (p(root, &ra), p(root, &rb));
            let under = rb.len() > ra.len() && rb.starts_with(&ra) && rb[ra.len()] == b'/';
            if ra == rb
                || under
                || !ancestors_ok(root, &ra, false)
                || fs::symlink_metadata(&pa).is_err()
                || fs::symlink_metadata(&pb).is_ok()
                || !ancestors_ok(root, &rb, false)
            {
                return;
            }
            fs::rename(pa, pb).unwrap();
        }
        Op::Chmod(ix, x) => {
            let r = rel(ix);
            if !ancestors_ok(root, &r, false) {
                return;
            }
            let path = p(root, &r);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {
                    let mode = if *x { 0o755 } else { 0o644 };
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
                }
                Ok(m) if m.is_dir() => {
                    let mode = if *x { 0o755 } else { 0o700 };
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
                }
                _ => {}
            }
        }
        Op::Swap(ix, c) => {
            let r = rel(ix);
            if !ancestors_ok(root, &r, false) {
                return;
            }
            let path = p(root, &r);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    fs::remove_dir_all(&path).unwrap();
                    fs::write(&path, content(*c)).unwrap();
                }
                Ok(_) => {
                    fs::remove_file(&path).unwrap();
                    fs::create_dir(&path).unwrap();
                    fs::write(path.join("a"), content(*c)).unwrap();
                }
                Err(_) => {}
            }
        }
        Op::Link(ix, t) => link(root, &rel(ix), TARGETS[*t]),
        Op::Squat(ix, c) => {
            let r = [rel(ix).as_slice(), b".berth-remote"].concat();
            let path = p(root, &r);
            if !ancestors_ok(root, &r, true) || fs::symlink_metadata(&path).is_ok() {
                return;
            }
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content(*c)).unwrap();
        }
        Op::Chain(ix) => {
            let r = rel(ix);
            let a = match r.iter().rposition(|b| *b == b'/') {
                Some(i) => [&r[..=i], b"a"].concat(),
                None => b"a".to_vec(),
            };
            link(root, &a, b".");
            link(root, &r, b"a/a/a/../../..");
        }
    }
}

/// A symlink `r -> target`, unless something is at `r` or an ancestor is no directory.
fn link(root: &Path, r: &[u8], target: &[u8]) {
    let path = p(root, r);
    if !ancestors_ok(root, r, true) || fs::symlink_metadata(&path).is_ok() {
        return;
    }
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(p(Path::new(""), target), &path).unwrap();
}

fn is_under(d: &[u8], dir: &[u8]) -> bool {
    d.len() > dir.len() && d.starts_with(dir) && d[dir.len()] == b'/'
}

fn ancestors(x: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = x;
    while let Some(i) = cur.iter().rposition(|b| *b == b'/') {
        cur = &cur[..i];
        out.push(cur.to_vec());
    }
    out
}

/// The oracle: which paths must be conflicts and what the local tree must be afterwards.
/// `rejected`: remote changes the restore refused (they count as not made; a remote change
/// below a refused path that is no local directory cannot be applied).
pub fn expected(
    b: &Tree,
    l: &Tree,
    r: &Tree,
    rejected: &BTreeSet<Vec<u8>>,
) -> (BTreeSet<Vec<u8>>, Tree) {
    let mut r = r.clone();
    for x in rejected {
        match b.get(x) {
            Some(n) => r.insert(x.clone(), n.clone()),
            None => r.remove(x),
        };
    }
    let r = &r;
    let all: BTreeSet<Vec<u8>> = b.keys().chain(l.keys()).chain(r.keys()).cloned().collect();
    let lc = |x: &[u8]| l.get(x) != b.get(x);
    let rc = |x: &[u8]| r.get(x) != b.get(x);
    let mut conflicts = BTreeSet::new();
    for x in &all {
        if !rc(x) {
            continue;
        }
        let both = lc(x) && l.get(x) != r.get(x);
        let blocked_by_ancestor = ancestors(x)
            .iter()
            .any(|q| (lc(q) || rejected.contains(q)) && !l.get(q).is_some_and(Node::is_dir));
        let blocked_by_child = b.get(x).is_some_and(Node::is_dir)
            && !r.get(x).is_some_and(Node::is_dir)
            && all
                .iter()
                .any(|d| is_under(d, x) && lc(d) && l.contains_key(d));
        if both || (!lc(x) && (blocked_by_ancestor || blocked_by_child)) {
            conflicts.insert(x.clone());
        }
    }
    let mut fin = Tree::new();
    for x in &all {
        let keep_local = lc(x) || conflicts.contains(x) || !rc(x);
        let v = if keep_local { l.get(x) } else { r.get(x) };
        if let Some(v) = v {
            fin.insert(x.clone(), v.clone());
        }
    }
    (conflicts, fin)
}

/// The tree without the conflict copies the restore reports (copy name → conflicting path).
fn strip_remote_copies(t: Tree, rep: &RestoreReport) -> (Tree, BTreeMap<Vec<u8>, Node>) {
    let names: BTreeMap<Vec<u8>, Vec<u8>> = rep
        .remote_copies
        .iter()
        .map(|c| (c.copy.as_bytes().to_vec(), c.path.as_bytes().to_vec()))
        .collect();
    let mut copies = BTreeMap::new();
    let mut rest = Tree::new();
    for (k, v) in t {
        match names.get(&k) {
            Some(orig) => {
                copies.insert(orig.clone(), v);
            }
            None => {
                rest.insert(k, v);
            }
        }
    }
    (rest, copies)
}

/// Whether the symlink at `link` in `t` resolves outside the root: following the links of
/// `t`, any other name taken as a directory (so a path missing now cannot hide an escape).
pub fn escapes(t: &Tree, link: &[u8]) -> bool {
    let Some(Node::Symlink { target }) = t.get(link) else {
        return false;
    };
    let mut dir: Vec<Vec<u8>> = ancestors(link)
        .into_iter()
        .rev()
        .map(|a| a.rsplit(|b| *b == b'/').next().unwrap().to_vec())
        .collect();
    let mut todo: Vec<Vec<u8>> = target
        .split(|b| *b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"" | b"." => {}
            b".." => {
                if dir.pop().is_none() {
                    return true;
                }
            }
            _ => {
                dir.push(c);
                if let Some(Node::Symlink { target }) = t.get(&dir.join(&b'/')) {
                    dir.pop();
                    hops += 1;
                    if hops > 40 || target.first() == Some(&b'/') {
                        return true;
                    }
                    todo.extend(target.split(|b| *b == b'/').rev().map(<[u8]>::to_vec));
                }
            }
        }
    }
    false
}

fn show(t: &Tree) -> Vec<(String, String)> {
    t.iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), format!("{v:?}")))
        .collect()
}

/// One case: build `init`, push, edit both sides, restore, check the oracle.
pub async fn run_case(
    t: &dyn Transport,
    lay: &Layout,
    init: &[Op],
    local_ops: &[Op],
    remote_ops: &[Op],
) -> RestoreReport {
    run_case_with(t, lay, init, None, local_ops, remote_ops).await
}

/// Like [`run_case`]; with `git = Some(dirty)` the initial tree is committed to a git
/// repository and `dirty` edits it before the push (so the overlay is not empty).
pub async fn run_case_with(
    t: &dyn Transport,
    lay: &Layout,
    init: &[Op],
    git: Option<&[Op]>,
    local_ops: &[Op],
    remote_ops: &[Op],
) -> RestoreReport {
    // Half the cases keep every manifest in memory; the other half spill them to disk in
    // sorted runs of 1 to 4 entries, so the merge-joins over runs meet every kind of tree.
    let o = SyncOptions {
        spool_entries: (init.len() % 2 == 1).then_some(1 + init.len() / 2 % 4),
        ..SyncOptions::default()
    };
    for op in init {
        apply(&lay.local, op);
    }
    if let Some(dirty) = git {
        super::git(&lay.local, &["init", "-q"]);
        super::git(&lay.local, &["add", "-A"]);
        super::git(&lay.local, &["commit", "-q", "--allow-empty", "-m", "init"]);
        for op in dirty {
            apply(&lay.local, op);
        }
    }
    push(t, &lay.local, &lay.spec, &o).await.unwrap();
    let base = snapshot(&lay.local);
    assert_eq!(
        base,
        snapshot(&lay.remote_ws()),
        "remote differs after push"
    );
    for op in local_ops {
        apply(&lay.local, op);
    }
    for op in remote_ops {
        apply(&lay.remote_ws(), op);
    }
    let l0 = snapshot(&lay.local);
    let r0 = snapshot(&lay.remote_ws());
    let rep = restore(t, &lay.local, &lay.spec, "run", &o).await.unwrap();
    let after = snapshot(&lay.local);
    let (fin, copies) = strip_remote_copies(after.clone(), &rep);
    let rejected: BTreeSet<Vec<u8>> = rep
        .rejected
        .iter()
        .map(|x| x.path.as_bytes().to_vec())
        .collect();
    // Only symlinks are refused here: remote ones, or local ones the remote removed.
    for x in &rejected {
        let link = |t: &Tree| matches!(t.get(x), Some(Node::Symlink { .. }));
        assert!(
            link(&r0) || link(&base),
            "refused a non-link {x:?}: {rep:?}"
        );
    }
    let (want_conflicts, want) = expected(&base, &l0, &r0, &rejected);
    let got_conflicts: BTreeSet<Vec<u8>> = rep
        .conflicts
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    if fin != want || got_conflicts != want_conflicts {
        panic!(
            "restore broke the oracle\nbase {:?}\nlocal {:?}\nremote {:?}\nfinal {:?}\nwant {:?}\n\
             conflicts got {:?} want {:?}\nreport {rep:?}",
            show(&base),
            show(&l0),
            show(&r0),
            show(&fin),
            show(&want),
            got_conflicts
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>(),
            want_conflicts
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>(),
        );
    }
    // A conflict copy never takes the name of anything that was there.
    for c in &rep.remote_copies {
        let name = c.copy.as_bytes();
        assert!(!l0.contains_key(name), "a copy replaced {c:?}: {rep:?}");
        assert!(!want.contains_key(name), "a copy took the place of {c:?}");
    }
    // Every conflict whose remote side is a file carries it beside the local one.
    for c in &want_conflicts {
        if let Some(n @ Node::File { .. }) = r0.get(c) {
            let parent_ok = ancestors(c)
                .first()
                .is_none_or(|par| fin.get(par).is_some_and(Node::is_dir));
            if parent_ok {
                assert_eq!(copies.get(c), Some(n), "remote copy of a conflict");
            }
        }
    }
    // No symlink resolves outside the root after the restore unless it did before (a local
    // link the user made), in the model and on the real file system.
    let root = fs::canonicalize(&lay.local).unwrap();
    for (k, v) in &after {
        if !matches!(v, Node::Symlink { .. }) || (l0.get(k) == Some(v) && escapes(&l0, k)) {
            continue;
        }
        assert!(
            !escapes(&after, k),
            "{:?} resolves outside the root\nlocal {:?}\nremote {:?}\nafter {:?}\nreport {rep:?}",
            String::from_utf8_lossy(k),
            show(&l0),
            show(&r0),
            show(&after)
        );
        if let Ok(real) = fs::canonicalize(p(&lay.local, k)) {
            assert!(
                real.starts_with(&root),
                "{:?} -> {}",
                String::from_utf8_lossy(k),
                real.display()
            );
        }
    }
    // The next push makes the remote equal to local again, incrementally.
    let rep2 = push(t, &lay.local, &lay.spec, &o).await.unwrap();
    assert!(!rep2.full);
    assert_eq!(
        snapshot(&lay.local),
        snapshot(&lay.remote_ws()),
        "remote differs after 2nd push"
    );
    rep
}
