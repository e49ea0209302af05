//! Property: whatever bytes a value holds (quotes, newlines, `$()`, backticks, globs, a leading
//! `-`, bytes that are not UTF-8), once it goes through the one quoting function — directly, or
//! as an argv word, an env value or the working directory of a launched run — it arrives at the
//! command byte for byte and never executes. Run against local `sh` and a real sshd.
//!
//! `BERTH_SHELL_PROPTEST_CASES` sets the number of cases per property over local `sh` (default
//! 64); over SSH a quarter of that runs (default 16, at least 1).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test loudly"
)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_exec::shell::{exec_command, quote, quote_bytes};
use berth_exec::{
    ExecRequest, LaunchSpec, Launcher, LocalTransport, Offsets, Secret, SshPool, SshTarget,
    SshTransport, Transport,
};
use berth_testkit::sshd::Sshd;
use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const DEFAULT_LOCAL_CASES: u32 = 64;

fn local_cases() -> u32 {
    std::env::var("BERTH_SHELL_PROPTEST_CASES")
        .ok()
        .map(|v| {
            v.parse()
                .expect("BERTH_SHELL_PROPTEST_CASES must be a number")
        })
        .unwrap_or(DEFAULT_LOCAL_CASES)
}

fn ssh_cases() -> u32 {
    (local_cases() / 4).max(1)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// A file that exists only if some value was executed as shell.
struct Sentinel {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sentinel {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(format!("PWNED-{}", uuid::Uuid::new_v4().simple()));
        Self { _dir: dir, path }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert!(!self.path.exists(), "a value was executed as shell");
        Ok(())
    }
}

/// Pieces that mean something to `sh`, including ones that would create the sentinel.
fn specials(sentinel: &Path) -> Vec<String> {
    let s = sentinel.display();
    let mut out: Vec<String> = [
        "'",
        "\"",
        "\n",
        "\r",
        "\t",
        " ",
        "\\",
        "`",
        "$(",
        ")",
        "${",
        "}",
        "$HOME",
        "$1",
        "$@",
        "*",
        "?",
        "[a]",
        "~",
        "-",
        "--",
        "-n",
        "-e",
        "%s",
        "%",
        ";",
        "&",
        "|",
        "!",
        "#",
        "<",
        ">",
        "\\0",
        "'\"'\"'",
        "\u{e9}",
        "\u{1F600}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.extend([
        format!("'; touch {s}; '"),
        format!("\"; touch {s}; \""),
        format!("$(touch {s})"),
        format!("`touch {s}`"),
        format!("\n touch {s}\n"),
    ]);
    out
}

/// Any string without NUL, biased towards shell syntax.
fn text(sentinel: &Path) -> impl Strategy<Value = String> + use<> {
    let piece = prop_oneof![
        2 => any::<char>()
            .prop_filter("NUL cannot be carried", |c| *c != '\0')
            .prop_map(String::from),
        3 => prop::sample::select(specials(sentinel)),
    ];
    vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// Any bytes without NUL, biased towards shell syntax and bytes that are not UTF-8.
fn raw_bytes(sentinel: &Path) -> impl Strategy<Value = Vec<u8>> + use<> {
    let piece = prop_oneof![
        2 => (1u8..=255).prop_map(|b| vec![b]),
        1 => (0x80u8..=0xff).prop_map(|b| vec![b]),
        2 => prop::sample::select(specials(sentinel)).prop_map(String::into_bytes),
    ];
    vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// A single path component: no NUL, no `/`, not `.` or `..`, not empty.
fn component(bytes: Vec<u8>) -> Vec<u8> {
    let mut c: Vec<u8> = bytes
        .into_iter()
        .map(|b| if b == b'/' { b'_' } else { b })
        .take(200)
        .collect();
    if c.is_empty() || c == b"." || c == b".." {
        c.insert(0, b'd');
    }
    c
}

/// `printf '%s\0' <word>…`: each word followed by NUL, so the output proves exact arrival.
fn nul_joined<S: AsRef<[u8]>>(words: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in words {
        out.extend_from_slice(w.as_ref());
        out.push(0);
    }
    out
}

/// Quoted words through `run` (the SSH control shell when it is up) and through an exec
/// channel: `printf` prints each exactly.
async fn quoted_words_arrive(
    t: &dyn Transport,
    words: &[String],
    sentinel: &Sentinel,
) -> Result<(), TestCaseError> {
    // A fixed first word: `printf` with no words would still print the format once.
    let words: Vec<String> = std::iter::once("w".to_owned())
        .chain(words.iter().cloned())
        .collect();
    let mut script = "printf '%s\\0'".to_owned();
    for w in &words {
        script.push(' ');
        script.push_str(&quote(w));
    }
    let expected = nul_joined(&words);
    let ran = t.run(&script, Bytes::new()).await.unwrap();
    prop_assert!(ran.outcome.success(), "{}", ran.stderr_text());
    prop_assert_eq!(ran.stdout.as_ref(), expected.as_slice());
    let execd = t
        .exec(ExecRequest::new(script))
        .await
        .unwrap()
        .collect(1 << 20)
        .await
        .unwrap();
    prop_assert!(execd.outcome.success(), "{}", execd.stderr_text());
    prop_assert_eq!(execd.stdout.as_ref(), expected.as_slice());
    sentinel.check()
}

/// Bytes that are not UTF-8 cannot be script *text* of a transport, so the byte-quoted script
/// goes to `sh` on stdin. It creates a directory with that exact name (a path that is not
/// UTF-8) under `base` and prints the name back.
async fn quoted_bytes_arrive(
    t: &dyn Transport,
    base: &Path,
    name: &[u8],
    sentinel: &Sentinel,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut script = b"cd -- ".to_vec();
    script.extend(quote_bytes(dir.path().as_os_str().as_bytes()));
    script.extend_from_slice(b" && mkdir -- ");
    script.extend(quote_bytes(name));
    script.extend_from_slice(b" && printf '%s\\0' ");
    script.extend(quote_bytes(name));
    script.push(b'\n');
    let done = t.run("sh", Bytes::from(script)).await.unwrap();
    prop_assert!(done.outcome.success(), "{}", done.stderr_text());
    let expected = nul_joined(&[name]);
    prop_assert_eq!(done.stdout.as_ref(), expected.as_slice());
    let made: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    prop_assert_eq!(made, vec![OsStr::from_bytes(name).to_os_string()]);
    sentinel.check()
}

/// One launched run: argv words, env values and the working directory (a directory whose
/// name is arbitrary) all arrive exactly. The command prints each env value, then `pwd`,
/// then execs `printf` with the argv.
async fn launch_arrives(
    launcher: &Launcher,
    base: &Path,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    dir_name: String,
    sentinel: &Sentinel,
) -> Result<(), TestCaseError> {
    let parent = tempfile::tempdir_in(base).unwrap();
    let cwd = parent.path().join(&dir_name);
    std::fs::create_dir(&cwd).unwrap();
    let cwd = cwd.to_str().unwrap().to_owned();
    // Fixed first words: `printf` with no words would still print the format once.
    let mut command = "printf '%s\\0' env".to_owned();
    for key in env.keys() {
        command.push_str(&format!(" \"${key}\""));
    }
    command.push_str("\npwd\nprintf '\\0'\n");
    let mut argv = vec!["%s\\0".to_owned(), "argv".to_owned()];
    argv.extend(args.iter().cloned());
    command.push_str(&exec_command("printf", &argv));
    let run = launcher
        .launch(LaunchSpec {
            run_id: format!("p-{}", uuid::Uuid::new_v4().simple()),
            command,
            cwd: cwd.clone(),
            env: env
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect(),
            stdin: Bytes::new(),
            login_profile: false,
        })
        .await
        .unwrap();
    let (out, err, outcome) = launcher.wait(&run, Offsets::default()).await.unwrap();
    launcher.cleanup(&run).await.unwrap();
    prop_assert!(
        outcome.success(),
        "{outcome:?}: {}",
        String::from_utf8_lossy(&err)
    );
    let values: Vec<&str> = std::iter::once("env")
        .chain(env.values().map(String::as_str))
        .collect();
    let mut expected = nul_joined(&values);
    expected.extend_from_slice(cwd.as_bytes());
    expected.extend_from_slice(b"\n\0");
    expected.extend(nul_joined(&[b"argv".as_slice()]));
    expected.extend(nul_joined(&args));
    prop_assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&expected)
    );
    prop_assert_eq!(out, expected);
    sentinel.check()
}

fn words(sentinel: &Path) -> impl Strategy<Value = Vec<String>> + use<> {
    vec(text(sentinel), 0..6)
}

fn launch_input(
    sentinel: &Path,
) -> impl Strategy<Value = (Vec<String>, BTreeMap<String, String>, String)> + use<> {
    (
        words(sentinel),
        btree_map("BT_[A-Z0-9_]{0,6}", text(sentinel), 0..4),
        text(sentinel).prop_map(|s| String::from_utf8(component(s.into_bytes())).unwrap()),
    )
}

/// Drive one property with `cases` cases on a fresh runtime.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = runner(cases);
    if let Err(e) = runner.run(&strategy, test) {
        panic_with(e);
    }
}

#[expect(clippy::panic, reason = "a failed property fails the test")]
fn panic_with(e: impl std::fmt::Display) {
    panic!("{e}");
}

fn local() -> Arc<dyn Transport> {
    Arc::new(LocalTransport::new())
}

fn ssh(sshd: &Sshd) -> Arc<dyn Transport> {
    let mut t = SshTarget::new(sshd.host.clone(), sshd.port, sshd.username.clone());
    t.private_key = Some(Secret::new(sshd.client_private_key.clone()));
    t.known_hosts = Some(sshd.known_hosts.clone());
    t.strict_host_key_checking = true;
    Arc::new(SshTransport::new(SshPool::new(), t))
}

fn sshd() -> Option<Sshd> {
    Sshd::start_unless_unavailable().expect("failed to start the sshd fixture")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn quoted_words_property(t: Arc<dyn Transport>, cases: u32) {
    let rt = rt();
    let sentinel = Sentinel::new();
    check(cases, words(&sentinel.path), |w| {
        rt.block_on(quoted_words_arrive(t.as_ref(), &w, &sentinel))
    });
}

fn quoted_bytes_property(t: Arc<dyn Transport>, base: &Path, cases: u32) {
    let rt = rt();
    let sentinel = Sentinel::new();
    check(cases, raw_bytes(&sentinel.path).prop_map(component), |n| {
        rt.block_on(quoted_bytes_arrive(t.as_ref(), base, &n, &sentinel))
    });
}

fn launch_property(t: Arc<dyn Transport>, base: &Path, cases: u32) {
    let rt = rt();
    let sentinel = Sentinel::new();
    let root = tempfile::tempdir_in(base).unwrap();
    let launcher = Launcher::new(t, root.path().to_str().unwrap());
    check(cases, launch_input(&sentinel.path), |(args, env, dir)| {
        rt.block_on(launch_arrives(&launcher, base, args, env, dir, &sentinel))
    });
}

fn local_base() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // Canonical, so `pwd` prints exactly the path the run was given.
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(canonical, dir.path());
    dir
}

#[test]
fn local_quoted_words_arrive_exactly_and_never_run() {
    quoted_words_property(local(), local_cases());
}

#[test]
fn local_quoted_bytes_make_exact_non_utf8_paths() {
    let base = local_base();
    quoted_bytes_property(local(), base.path(), local_cases());
}

#[test]
fn local_launch_argv_env_and_cwd_arrive_exactly() {
    let base = local_base();
    launch_property(local(), base.path(), local_cases());
}

#[test]
fn ssh_quoted_words_arrive_exactly_and_never_run() {
    let Some(sshd) = sshd() else { return };
    quoted_words_property(ssh(&sshd), ssh_cases());
}

#[test]
fn ssh_quoted_bytes_make_exact_non_utf8_paths() {
    let Some(sshd) = sshd() else { return };
    let base = sshd.workspace.canonicalize().unwrap();
    quoted_bytes_property(ssh(&sshd), &base, ssh_cases());
}

#[test]
fn ssh_launch_argv_env_and_cwd_arrive_exactly() {
    let Some(sshd) = sshd() else { return };
    let base = sshd.workspace.canonicalize().unwrap();
    launch_property(ssh(&sshd), &base, ssh_cases());
}
