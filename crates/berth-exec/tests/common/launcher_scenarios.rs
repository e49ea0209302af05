//! Launcher scenarios run unchanged over every transport.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_exec::{
    AttachEvent, LaunchSpec, Launcher, LauncherError, Offsets, RemoteRun, Secret, StreamKind,
    Transport,
};
use bytes::Bytes;
use futures::StreamExt;

fn run_id() -> String {
    format!("run-{}", uuid::Uuid::new_v4().simple())
}

/// Live (non-zombie) pids whose process group or session is `g`.
pub fn group_members(g: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(") ").map(|x| x.1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f[0] != "Z" && (f[2] == g.to_string() || f[3] == g.to_string()) {
            out.push(pid);
        }
    }
    out
}

/// Every process's argv, joined.
pub fn all_cmdlines() -> String {
    let mut all = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&c).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

pub async fn run_streams_output_and_exit_code(t: Arc<dyn Transport>, root: &str, cwd: &str) {
    let l = Launcher::new(t, root);
    let mut env = BTreeMap::new();
    env.insert(
        "GREETING".to_owned(),
        Secret::new("it's $HOME `x` \"q\"".to_owned()),
    );
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "echo hello; echo oops >&2; cat; printf '%s' \"$GREETING\"; pwd >&2; exit 5"
                .to_owned(),
            cwd: cwd.to_owned(),
            env,
            stdin: Bytes::from_static(b"input\n"),
            login_profile: true,
        })
        .await
        .unwrap();
    assert!(run.pgid > 1);
    let (out, err, outcome) = l.wait(&run, Offsets::default()).await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "hello\ninput\nit's $HOME `x` \"q\""
    );
    assert_eq!(String::from_utf8(err).unwrap(), format!("oops\n{cwd}\n"));
    assert_eq!(outcome.exit_code, Some(5));
    assert!(!outcome.cancelled && !outcome.timed_out && outcome.signal.is_none());
    // The env file was sourced and deleted; everything else is private to the user.
    let listing = l
        .transport()
        .run(
            &format!("cd '{}' && ls && stat -c '%a %n' *", run.dir),
            Bytes::new(),
        )
        .await
        .unwrap()
        .stdout_text();
    assert!(!listing.lines().any(|n| n == "env"), "{listing}");
    let dir_mode = l
        .transport()
        .run(&format!("stat -c %a '{}'", run.dir), Bytes::new())
        .await
        .unwrap()
        .stdout_text();
    assert_eq!(dir_mode.trim(), "700");
    for line in listing.lines().filter(|l| l.contains(' ')) {
        assert!(line.starts_with("600 "), "{listing}");
    }
    assert_eq!(l.status(&run).await.unwrap().unwrap().exit_code, Some(5));
    l.cleanup(&run).await.unwrap();
    let gone = l
        .transport()
        .run(&format!("test -e '{}'", run.dir), Bytes::new())
        .await
        .unwrap();
    assert_eq!(gone.outcome.code, Some(1));
}

pub async fn launch_rejects_bad_input(t: Arc<dyn Transport>, root: &str, cwd: &str) {
    let l = Launcher::new(t, root);
    let mut env = BTreeMap::new();
    env.insert("BAD-KEY".to_owned(), Secret::new("v".to_owned()));
    let err = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "true".into(),
            cwd: cwd.into(),
            env,
            ..LaunchSpec::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LauncherError::InvalidEnvKey { .. }), "{err}");
    let err = l
        .launch(LaunchSpec {
            run_id: "../x".into(),
            command: "true".into(),
            cwd: cwd.into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LauncherError::InvalidRunId { .. }), "{err}");
    let err = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "true".into(),
            cwd: "/nonexistent/berth".into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    // The same run id cannot be launched twice.
    let id = run_id();
    let spec = LaunchSpec {
        run_id: id.clone(),
        command: "true".into(),
        cwd: cwd.into(),
        ..LaunchSpec::default()
    };
    let run = l.launch(spec.clone()).await.unwrap();
    assert!(l.launch(spec).await.is_err());
    l.wait(&run, Offsets::default()).await.unwrap();
    l.cleanup(&run).await.unwrap();
}

pub async fn attach_yields_contiguous_chunks_and_reattaches_from_offsets(
    t: Arc<dyn Transport>,
    root: &str,
    cwd: &str,
) {
    let l = Launcher::new(t, root);
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "i=0; while [ $i -lt 20 ]; do echo line$i; echo e$i >&2; i=$((i+1)); sleep 0.05; done"
                .into(),
            cwd: cwd.into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let expected_out: String = (0..20).map(|i| format!("line{i}\n")).collect();
    let expected_err: String = (0..20).map(|i| format!("e{i}\n")).collect();
    // First attach: take a few chunks, remember offsets, drop the stream.
    let mut offsets = Offsets::default();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut first_chunk_at = None;
    let start = Instant::now();
    {
        let s = l.attach(&run, offsets);
        futures::pin_mut!(s);
        let mut n = 0;
        while let Some(ev) = s.next().await {
            match ev.unwrap() {
                AttachEvent::Output(c) => {
                    first_chunk_at.get_or_insert(start.elapsed());
                    let (buf, off) = match c.stream {
                        StreamKind::Stdout => (&mut out, &mut offsets.stdout),
                        StreamKind::Stderr => (&mut err, &mut offsets.stderr),
                    };
                    assert_eq!(c.offset, *off, "chunks must be contiguous");
                    buf.extend_from_slice(&c.data);
                    *off = c.end();
                    n += 1;
                    if n >= 3 {
                        break;
                    }
                }
                AttachEvent::Exited(_) => panic!("ended too early"),
            }
        }
    }
    assert!(first_chunk_at.unwrap() < Duration::from_secs(2));
    // Re-attach from the recorded offsets: no lost and no duplicated byte.
    let (rest_out, rest_err, outcome) = l.wait(&run, offsets).await.unwrap();
    out.extend_from_slice(&rest_out);
    err.extend_from_slice(&rest_err);
    assert_eq!(String::from_utf8(out).unwrap(), expected_out);
    assert_eq!(String::from_utf8(err).unwrap(), expected_err);
    assert!(outcome.success());
    l.cleanup(&run).await.unwrap();
}

pub async fn cancel_kills_grandchildren_that_ignore_term(
    t: Arc<dyn Transport>,
    root: &str,
    cwd: &str,
) {
    let l = Launcher::new(t, root);
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "trap '' TERM\n\
                      sh -c 'trap \"\" TERM; sleep 1000' &\n\
                      ( trap '' TERM; sleep 1000; echo never ) &\n\
                      sh -c 'sh -c \"sleep 1000\" & wait' &\n\
                      echo started\n\
                      wait\n"
                .into(),
            cwd: cwd.into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    // Wait until the tree is up.
    let s = l.attach(&run, Offsets::default());
    futures::pin_mut!(s);
    match s.next().await.unwrap().unwrap() {
        AttachEvent::Output(c) => assert_eq!(&c.data[..], b"started\n"),
        other => panic!("unexpected {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let members = group_members(run.pgid);
    assert!(
        members.len() >= 5,
        "expected a process tree, got {members:?}"
    );
    let start = Instant::now();
    let outcome = l.cancel(&run, Duration::from_millis(500)).await.unwrap();
    assert!(outcome.cancelled);
    assert_eq!(outcome.signal.as_deref(), Some("KILL"), "{outcome:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "TERM was ignored, so KILL came after the grace"
    );
    assert!(group_members(run.pgid).is_empty());
    for p in members {
        let alive = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| !s.rsplit_once(") ").unwrap().1.starts_with('Z'))
            .unwrap_or(false);
        assert!(!alive, "process {p} survived the cancel");
    }
    // Cancelling a finished run is harmless and keeps its outcome.
    let again = l.cancel(&run, Duration::from_millis(100)).await.unwrap();
    assert!(again.cancelled);
    l.cleanup(&run).await.unwrap();
}

pub async fn cancel_of_a_polite_command_reports_term(t: Arc<dyn Transport>, root: &str, cwd: &str) {
    let l = Launcher::new(t, root);
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "sleep 1000".into(),
            cwd: cwd.into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let outcome = l
        .stop(
            &run,
            Duration::from_secs(5),
            berth_exec::StopReason::Timeout,
        )
        .await
        .unwrap();
    assert!(outcome.timed_out && !outcome.cancelled);
    assert_eq!(outcome.signal.as_deref(), Some("TERM"));
    assert!(group_members(run.pgid).is_empty());
    l.cleanup(&run).await.unwrap();
}

pub async fn secrets_never_appear_in_any_argv(
    t: Arc<dyn Transport>,
    root: &str,
    cwd: &str,
    also_forbidden: &[String],
) -> RemoteRun {
    let l = Launcher::new(t, root);
    let sentinel = format!("berth-sentinel-{}", uuid::Uuid::new_v4().simple());
    let mut env = BTreeMap::new();
    env.insert("BERTH_API_TOKEN".to_owned(), Secret::new(sentinel.clone()));
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "i=0; while [ $i -lt 15 ]; do [ -n \"$BERTH_API_TOKEN\" ] && echo ok; sleep 0.1; i=$((i+1)); done".into(),
            cwd: cwd.into(),
            env,
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let s = l.attach(&run, Offsets::default());
    futures::pin_mut!(s);
    let mut saw_ok = false;
    while let Some(ev) = s.next().await {
        let cmdlines = all_cmdlines();
        assert!(!cmdlines.contains(&sentinel), "env value on an argv");
        for f in also_forbidden {
            assert!(!cmdlines.contains(f.as_str()), "secret on an argv");
        }
        match ev.unwrap() {
            AttachEvent::Output(c) => saw_ok |= c.data.starts_with(b"ok"),
            AttachEvent::Exited(o) => {
                assert!(o.success());
                break;
            }
        }
    }
    assert!(saw_ok, "the command saw its env value");
    l.cleanup(&run).await.unwrap();
    run
}

/// A process group number can be reused once its run ended: a stop aimed at the old number
/// must leave the new owner alone.
pub async fn stop_never_signals_a_reused_process_group(
    t: Arc<dyn Transport>,
    root: &str,
    cwd: &str,
) {
    let l = Launcher::new(t, root);
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "true".into(),
            cwd: cwd.into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let (_, _, outcome) = l.wait(&run, Offsets::default()).await.unwrap();
    assert_eq!(outcome.exit_code, Some(0));
    // Someone else's group leader, standing in for a process that got the old number.
    let mut victim = std::process::Command::new("setsid")
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let victim_pid = victim.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_members(victim_pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stand-in never led its group"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reused = RemoteRun {
        pgid: victim_pid,
        ..run.clone()
    };
    let stopped = l
        .stop(
            &reused,
            Duration::from_millis(200),
            berth_exec::StopReason::Cancel,
        )
        .await
        .unwrap();
    assert_eq!(stopped.exit_code, Some(0), "the recorded outcome stands");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the stop signalled a process group that is not the run's"
    );
    let _ = victim.kill();
    let _ = victim.wait();
    l.cleanup(&run).await.unwrap();
}

/// The launcher shell killed from outside never writes a status: attach must not wait
/// forever, and a stop still ends the command's group.
pub async fn a_dead_launcher_is_reported_and_its_command_can_be_stopped(
    t: Arc<dyn Transport>,
    root: &str,
    cwd: &str,
) {
    let l = Launcher::new(t, root);
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "echo up; sleep 1000".into(),
            cwd: cwd.into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let launcher_pid: i32 = std::fs::read_to_string(format!("{}/pid", run.dir))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(20), l.wait(&run, Offsets::default()))
        .await
        .unwrap_or_else(|_| panic!("attach waited forever for a launcher that is gone"))
        .unwrap();
    assert_eq!(waited.0, b"up\n");
    assert!(waited.2.launcher_lost, "{:?}", waited.2);
    assert!(!waited.2.success());
    assert!(
        !group_members(run.pgid).is_empty(),
        "the command outlived its launcher"
    );
    l.cancel(&run, Duration::from_millis(200)).await.unwrap();
    assert!(group_members(run.pgid).is_empty());
    l.cleanup(&run).await.unwrap();
}

/// A grace of `u64::MAX` seconds (a stored `graceSec` from before validation) once overflowed
/// the stop deadline and panicked, so the stop never happened. It is capped: the command still
/// gets TERM, and the stop returns with the whole group gone.
pub async fn stop_with_a_huge_grace_still_stops(t: Arc<dyn Transport>, root: &str, cwd: &str) {
    let l = Launcher::new(t, root);
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "sleep 1000".into(),
            cwd: cwd.into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        l.stop(
            &run,
            Duration::from_secs(u64::MAX),
            berth_exec::StopReason::Cancel,
        ),
    )
    .await
    .expect("the stop finished")
    .unwrap();
    assert!(outcome.cancelled);
    assert_eq!(outcome.signal.as_deref(), Some("TERM"));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(group_members(run.pgid).is_empty());
    l.cleanup(&run).await.unwrap();
}

/// A NUL byte in the command or the working directory cannot reach `sh` faithfully: the launch
/// is refused by name before anything runs, and the transport refuses such a script too.
pub async fn nul_bytes_are_refused_by_name(t: Arc<dyn Transport>, root: &str, cwd: &str) {
    let l = Launcher::new(t.clone(), root);
    for (command, cwd, what) in [
        ("echo a\0b", cwd.to_owned(), "the command"),
        ("true", format!("{cwd}\0/x"), "the working directory"),
    ] {
        let err = l
            .launch(LaunchSpec {
                run_id: run_id(),
                command: command.into(),
                cwd,
                ..LaunchSpec::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, LauncherError::Nul { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("{what} contains a NUL")),
            "{err}"
        );
    }
    let err = t.run("echo a\0b", Bytes::new()).await.unwrap_err();
    assert!(matches!(err, berth_exec::ExecError::Nul { .. }), "{err}");
    let err = t
        .exec(berth_exec::ExecRequest::new("echo a\0b"))
        .await
        .unwrap_err();
    assert!(matches!(err, berth_exec::ExecError::Nul { .. }), "{err}");
}

/// A run record whose process group is 0 or 1 (corrupt or forged) would make the stop script
/// `kill -TERM -1`: every process of the user. It is refused and nothing is signalled.
pub async fn stop_refuses_process_groups_0_and_1(t: Arc<dyn Transport>, root: &str, cwd: &str) {
    let l = Launcher::new(t, root);
    let run = l
        .launch(LaunchSpec {
            run_id: run_id(),
            command: "sleep 1000".into(),
            cwd: cwd.into(),
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    for pgid in [0, 1] {
        let forged = RemoteRun {
            pgid,
            ..run.clone()
        };
        let err = l
            .stop(
                &forged,
                Duration::from_secs(1),
                berth_exec::StopReason::Cancel,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, LauncherError::InvalidPgid { .. }), "{err}");
    }
    assert!(
        !group_members(run.pgid).is_empty(),
        "the real run was not touched"
    );
    l.cancel(&run, Duration::from_secs(1)).await.unwrap();
    l.cleanup(&run).await.unwrap();
}
