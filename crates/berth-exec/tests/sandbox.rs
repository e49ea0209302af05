//! The bubblewrap sandbox transport: isolation proven with a real `bwrap`, and the launcher
//! scenarios every transport passes. Under `CI=true` a host without a working `bwrap` fails
//! these tests instead of skipping them.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "common/launcher_scenarios.rs"]
#[allow(dead_code, reason = "the sandbox runs the scenarios that fit it")]
mod scenarios;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_core::config::SandboxNetwork;
use berth_exec::launcher::{LaunchSpec, Launcher, RunOutcome};
use berth_exec::sandbox::host_support;
use berth_exec::{SandboxPolicy, SandboxTransport, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    cwd: PathBuf,
}

impl Fixture {
    /// A sandbox root with one workspace copy, beside a fake `BERTH_HOME` holding a
    /// `master.key` (the default layout puts the runs root beside the home).
    fn new() -> Option<Self> {
        let available = host_support();
        if !berth_testkit::require(
            &format!("a working bwrap ({:?})", available.as_ref().err()),
            available.is_ok(),
        )
        .unwrap()
        {
            return None;
        }
        // Not under /tmp: the sandbox has a private /tmp, which would hide that the parents
        // of the workspace are read-only inside.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("berth-runs/sandboxes/env1");
        let cwd = root.join(".berth/ws/scope-1");
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::create_dir_all(base.join("berth")).unwrap();
        std::fs::write(base.join("berth/master.key"), "TOP-SECRET-KEY").unwrap();
        Some(Self { dir, root, cwd })
    }

    fn home(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join("berth")
    }

    fn transport(&self, network: SandboxNetwork) -> Arc<SandboxTransport> {
        Arc::new(SandboxTransport::new(SandboxPolicy {
            root: self.root.clone(),
            network,
            allow_hosts: Vec::new(),
            read_only_paths: Vec::new(),
            memory_limit_mb: None,
        }))
    }

    async fn run(&self, t: Arc<SandboxTransport>, command: &str) -> (String, String, RunOutcome) {
        run_in(t, &self.root, &self.cwd, command, BTreeMap::new()).await
    }
}

async fn run_in(
    t: Arc<SandboxTransport>,
    root: &Path,
    cwd: &Path,
    command: &str,
    env: BTreeMap<String, berth_exec::Secret<String>>,
) -> (String, String, RunOutcome) {
    let launcher = Launcher::new(t, root.display().to_string());
    let run = launcher
        .launch(LaunchSpec {
            run_id: format!("r{}", uuid::Uuid::new_v4().simple()),
            command: command.to_string(),
            cwd: cwd.display().to_string(),
            env,
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let (out, err, outcome) = tokio::time::timeout(
        Duration::from_secs(30),
        launcher.wait(&run, Default::default()),
    )
    .await
    .expect("the sandboxed command did not finish in 30 s")
    .unwrap();
    launcher.cleanup(&run).await.unwrap();
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        outcome,
    )
}

#[tokio::test]
async fn sandbox_writes_outside_the_workspace_fail() {
    let Some(f) = Fixture::new() else { return };
    let home = f.home();
    let sibling = f.root.join(".berth/ws/other-scope");
    std::fs::create_dir_all(&sibling).unwrap();
    let private = format!("/tmp/berth-private-{}", uuid::Uuid::new_v4().simple());
    let command = format!(
        "echo inside > made-here && echo WORKSPACE_OK\n\
         for p in /usr/berth-x /etc/berth-x /berth-x {root}/berth-x {sib}/berth-x {home}/berth-x; do\n\
           if ( echo x > \"$p\" ) 2>/dev/null; then echo \"WROTE $p\"; fi\n\
         done\n\
         echo x > {private} && echo TMP_OK\n\
         echo x > /dev/null && echo DEVNULL_OK",
        root = f.root.display(),
        sib = sibling.display(),
        home = home.display(),
    );
    let (out, err, outcome) = f.run(f.transport(SandboxNetwork::None), &command).await;
    assert!(
        !Path::new(&private).exists(),
        "the sandbox's /tmp is the host's"
    );
    assert!(outcome.success(), "{outcome:?} {err}");
    assert!(out.contains("WORKSPACE_OK"), "{out}{err}");
    // Nothing written outside the workspace reaches the host. (When the test's directories lie
    // under /tmp, a write there lands in the sandbox's private /tmp, so it "works" inside
    // but the host never sees it; the read-only system paths must refuse it either way.)
    for p in [
        f.root.join("berth-x"),
        sibling.join("berth-x"),
        home.join("berth-x"),
    ] {
        assert!(
            !p.exists(),
            "a write outside the workspace reached the host: {}",
            p.display()
        );
    }
    for p in ["/usr/berth-x", "/etc/berth-x", "/berth-x"] {
        assert!(
            !out.contains(&format!("WROTE {p}\n")),
            "a write outside the workspace worked: {out}"
        );
    }
    if !f.root.starts_with("/tmp") {
        assert!(
            !out.contains("WROTE"),
            "a write outside the workspace worked: {out}"
        );
    }
    assert!(
        out.contains("TMP_OK") && out.contains("DEVNULL_OK"),
        "{out}{err}"
    );
    assert_eq!(
        std::fs::read_to_string(f.cwd.join("made-here")).unwrap(),
        "inside\n"
    );
    for p in [
        f.root.join("berth-x"),
        sibling.join("berth-x"),
        home.join("berth-x"),
    ] {
        assert!(!p.exists(), "{} exists on the host", p.display());
    }
}

#[tokio::test]
async fn sandbox_cannot_see_berth_home_other_workspaces_or_the_host_home() {
    let Some(f) = Fixture::new() else { return };
    let sibling = f.root.join(".berth/ws/other-scope");
    std::fs::create_dir_all(&sibling).unwrap();
    std::fs::write(sibling.join("other-company.txt"), "theirs").unwrap();
    let host_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let command = format!(
        "cat {home}/master.key 2>&1; ls {home} 2>&1; cat {sib}/other-company.txt 2>&1; ls -a {hh} 2>&1; \
         ls -a {runs} 2>&1; echo HOME=$HOME",
        home = f.home().display(),
        sib = sibling.display(),
        hh = host_home,
        runs = f.root.join(".berth/runs").display(),
    );
    let (out, err, _) = f.run(f.transport(SandboxNetwork::None), &command).await;
    assert!(
        !out.contains("TOP-SECRET-KEY"),
        "master.key was readable: {out}"
    );
    assert!(
        !out.contains("theirs"),
        "another workspace was readable: {out}"
    );
    assert!(
        out.contains("No such file or directory"),
        "expected the paths to be absent: {out}{err}"
    );
    assert!(
        out.contains(&format!("HOME={}", f.root.join(".berth/home").display())),
        "{out}"
    );
}

#[tokio::test]
async fn sandbox_cannot_see_host_processes() {
    let Some(f) = Fixture::new() else { return };
    let mut marker = std::process::Command::new("sleep")
        .arg("987.654")
        .spawn()
        .unwrap();
    let (out, err, outcome) = f
        .run(
            f.transport(SandboxNetwork::None),
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done; echo COUNT $(ls -d /proc/[0-9]* | wc -l)",
        )
        .await;
    marker.kill().unwrap();
    let _ = marker.wait();
    assert!(outcome.success(), "{outcome:?} {err}");
    assert!(!out.contains("987.654"), "a host process is visible: {out}");
    let count: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("COUNT "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(count < 10, "{count} processes visible: {out}");
}

/// A listener on the host's loopback standing in for "the network"; answers `pong`.
async fn pong_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong")
                    .await;
            });
        }
    });
    (addr, task)
}

fn dial(port: u16) -> String {
    format!(
        "if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | socat -t 5 - TCP:127.0.0.1:{port},connect-timeout=3 2>/dev/null | grep -q pong; then echo REACHED; else echo UNREACHABLE; fi"
    )
}

#[tokio::test]
async fn sandbox_network_none_cannot_reach_a_host_listener_and_open_can() {
    let Some(f) = Fixture::new() else { return };
    let (addr, task) = pong_listener().await;
    let (out, err, _) = f
        .run(f.transport(SandboxNetwork::None), &dial(addr.port()))
        .await;
    assert_eq!(out.trim(), "UNREACHABLE", "{err}");
    let (out, err, _) = f
        .run(f.transport(SandboxNetwork::Open), &dial(addr.port()))
        .await;
    assert_eq!(out.trim(), "REACHED", "{err}");
    task.abort();
}

#[tokio::test]
async fn sandbox_reaches_the_api_through_the_bridge_with_network_none() {
    let Some(f) = Fixture::new() else { return };
    let (api, task) = pong_listener().await;
    let t = f.transport(SandboxNetwork::None);
    let exposed = t.expose_local_port(api).await.unwrap().unwrap();
    assert_eq!(exposed.ip().to_string(), "127.0.0.1");
    assert_eq!(exposed.port(), api.port(), "BERTH_API_URL keeps its port");
    let (out, err, outcome) = f.run(t.clone(), &dial(exposed.port())).await;
    assert!(outcome.success(), "{outcome:?} {err}");
    assert_eq!(out.trim(), "REACHED", "{err}");
    // Only the API: another host port is still unreachable from the same sandbox.
    let (other, other_task) = pong_listener().await;
    let (out, _, _) = f.run(t.clone(), &dial(other.port())).await;
    assert_eq!(out.trim(), "UNREACHABLE");
    drop(t);
    assert!(
        !f.root.join(".berth/api/api.sock").exists(),
        "the bridge's socket outlived its last transport"
    );
    task.abort();
    other_task.abort();
}

/// Through the proxy the agent's HTTPS_PROXY names: `port`'s answer, or REFUSED.
fn via_proxy(port: u16) -> String {
    format!(
        "pp=${{HTTPS_PROXY##*:}}; if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | socat -t 5 - \"PROXY:127.0.0.1:127.0.0.1:{port},proxyport=$pp\" 2>/dev/null | grep -q pong; then echo \"REACHED {port}\"; else echo \"REFUSED {port}\"; fi; "
    )
}

#[tokio::test]
async fn sandbox_allowlist_admits_only_listed_hosts_and_reports_each_refusal() {
    let Some(f) = Fixture::new() else { return };
    // Two listeners stand in for the internet: one allowed, one not.
    let (allowed, a_task) = pong_listener().await;
    let (other, o_task) = pong_listener().await;
    let t = Arc::new(SandboxTransport::new(SandboxPolicy {
        root: f.root.clone(),
        network: SandboxNetwork::Allowlist,
        allow_hosts: vec![format!("127.0.0.1:{}", allowed.port())],
        read_only_paths: Vec::new(),
        memory_limit_mb: None,
    }));
    let mut refusals = t.egress("run-1").await.unwrap().unwrap();
    let command = format!(
        "{}{}{}; echo \"proxy=$HTTPS_PROXY no=$NO_PROXY\"",
        via_proxy(allowed.port()),
        via_proxy(other.port()),
        dial(allowed.port()),
    );
    let (out, err, outcome) = f.run(t.clone(), &command).await;
    assert!(outcome.success(), "{outcome:?} {err}");
    assert!(
        out.contains(&format!("REACHED {}", allowed.port())),
        "{out}{err}"
    );
    assert!(
        out.contains(&format!("REFUSED {}", other.port())),
        "{out}{err}"
    );
    assert!(
        out.contains("UNREACHABLE"),
        "without the proxy nothing is reachable, not even an allowed host: {out}"
    );
    assert!(out.contains("proxy=http://127.0.0.1:3128"), "{out}");
    let refusal = tokio::time::timeout(Duration::from_secs(5), refusals.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refusal.target, format!("127.0.0.1:{}", other.port()));
    assert!(refusal.reason.contains("allowHosts"), "{refusal:?}");
    drop(t);
    a_task.abort();
    o_task.abort();
}

#[tokio::test]
async fn sandbox_memory_limit_applies_inside() {
    let Some(f) = Fixture::new() else { return };
    let t = Arc::new(SandboxTransport::new(SandboxPolicy {
        root: f.root.clone(),
        network: SandboxNetwork::None,
        allow_hosts: Vec::new(),
        read_only_paths: vec!["/opt".into()],
        memory_limit_mb: Some(512),
    }));
    let (out, err, outcome) = f.run(t, "ulimit -v").await;
    assert!(outcome.success(), "{outcome:?} {err}");
    assert_eq!(out.trim(), (512 * 1024).to_string());
}

#[tokio::test]
async fn sandbox_refuses_a_working_directory_outside_its_workspaces() {
    let Some(f) = Fixture::new() else { return };
    let (_, err, outcome) = run_in(
        f.transport(SandboxNetwork::None),
        &f.root,
        &f.root,
        "echo should-not-run",
        BTreeMap::new(),
    )
    .await;
    assert_eq!(outcome.exit_code, Some(126), "{err}");
    assert!(
        err.contains("not a workspace or scratch directory"),
        "{err}"
    );
}

fn scenario_setup() -> Option<(Fixture, Arc<dyn Transport>, String, String)> {
    let f = Fixture::new()?;
    let t: Arc<dyn Transport> = f.transport(SandboxNetwork::None);
    let root = f.root.display().to_string();
    let cwd = f.cwd.display().to_string();
    Some((f, t, root, cwd))
}

#[tokio::test]
async fn sandbox_run_streams_output_and_exit_code() {
    let Some((_f, t, root, cwd)) = scenario_setup() else {
        return;
    };
    scenarios::run_streams_output_and_exit_code(t, &root, &cwd).await;
}

#[tokio::test]
async fn sandbox_attach_reattaches_from_offsets() {
    let Some((_f, t, root, cwd)) = scenario_setup() else {
        return;
    };
    scenarios::attach_yields_contiguous_chunks_and_reattaches_from_offsets(t, &root, &cwd).await;
}

/// Cancel ends the whole sandbox, processes that ignore TERM and escaped sessions included:
/// nothing of it survives on the host.
#[tokio::test]
async fn sandbox_cancel_leaves_no_process_of_the_sandbox_behind() {
    let Some(f) = Fixture::new() else { return };
    let launcher = Launcher::new(
        f.transport(SandboxNetwork::None),
        f.root.display().to_string(),
    );
    let marker = format!("{}.{}", 4000 + std::process::id() % 1000, 321);
    let run = launcher
        .launch(LaunchSpec {
            run_id: format!("r{}", uuid::Uuid::new_v4().simple()),
            command: format!(
                "trap '' TERM; sleep {marker} & setsid sleep {marker} & echo started; wait"
            ),
            cwd: f.cwd.display().to_string(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while scenarios::all_cmdlines()
        .matches(&format!("sleep {marker}"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sleeps never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcome = launcher
        .cancel(&run, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(outcome.cancelled, "{outcome:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while scenarios::all_cmdlines().contains(&format!("sleep {marker}")) {
        assert!(
            std::time::Instant::now() < deadline,
            "a process of the sandbox survived its cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    launcher.cleanup(&run).await.unwrap();
}

#[tokio::test]
async fn sandbox_env_values_never_appear_in_any_argv() {
    let Some((_f, t, root, cwd)) = scenario_setup() else {
        return;
    };
    scenarios::secrets_never_appear_in_any_argv(t, &root, &cwd, &[]).await;
}
