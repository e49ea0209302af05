//! The SSH transport against a real OpenSSH sshd (never skipped under CI=true).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_exec::error::HostKeyRejection;
use berth_exec::ssh::SshTimeouts;
use berth_exec::{ExecError, ExecRequest, Output, Secret, SshPool, SshTransport, Transport};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn exec_streams_both_streams_and_reports_the_exit_code() {
    let Some(sshd) = common::sshd() else { return };
    let t = SshTransport::new(SshPool::new(), common::target(&sshd));
    let mut h = t
        .exec(ExecRequest::new("echo out; echo err >&2; cat; exit 7").stdin_bytes("in\n"))
        .await
        .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(o) = h.next_output().await {
        match o {
            Output::Stdout(b) => out.extend_from_slice(&b),
            Output::Stderr(b) => err.extend_from_slice(&b),
        }
    }
    let outcome = h.wait().await.unwrap();
    assert_eq!(outcome.code, Some(7));
    assert_eq!(out, b"out\nin\n");
    assert_eq!(err, b"err\n");
    assert_eq!(
        t.describe(),
        format!("SSH environment {}@127.0.0.1:{}", sshd.username, sshd.port)
    );
    assert_eq!(t.identity().transport, "ssh");
}

#[tokio::test]
async fn control_shell_runs_short_steps_isolated_and_fast() {
    let Some(sshd) = common::sshd() else { return };
    let t = SshTransport::new(SshPool::new(), common::target(&sshd));
    // Warm up: connect and start the control shell.
    let c = t
        .run("echo hi; echo e >&2; exit 3", Bytes::new())
        .await
        .unwrap();
    assert_eq!(c.stdout_text(), "hi\n");
    assert_eq!(c.stderr_text(), "e\n");
    assert_eq!(c.outcome.code, Some(3));
    // Each step is isolated: `cd`, variables and `exit` do not leak into the next one.
    t.run("cd /; X=1; exit 0", Bytes::new()).await.unwrap();
    let c = t
        .run("printf '%s|%s' \"$X\" \"$(pwd)\"", Bytes::new())
        .await
        .unwrap();
    assert_ne!(c.stdout_text(), "1|/");
    // Output without a trailing newline and quoting-heavy scripts survive framing.
    let c = t.run("printf 'a'\"'\"'b'", Bytes::new()).await.unwrap();
    assert_eq!(c.stdout_text(), "a'b");
    let start = Instant::now();
    for i in 0..30 {
        let c = t.run(&format!("echo {i}"), Bytes::new()).await.unwrap();
        assert_eq!(c.stdout_text(), format!("{i}\n"));
    }
    let control = start.elapsed() / 30;
    let start = Instant::now();
    for i in 0..10 {
        let h = t.exec(ExecRequest::new(format!("echo {i}"))).await.unwrap();
        assert_eq!(
            h.collect(100).await.unwrap().stdout_text(),
            format!("{i}\n")
        );
    }
    let exec = start.elapsed() / 10;
    eprintln!("per step: control shell {control:?}, exec channel {exec:?}");
    // Baseline in the same run: a control-shell step must clearly beat an exec channel.
    assert!(
        control < exec,
        "control shell {control:?} vs exec channel {exec:?}"
    );
    assert!(
        control < Duration::from_millis(100),
        "control shell step took {control:?}"
    );
}

#[tokio::test]
async fn wrong_client_key_fails_authentication_by_name() {
    let Some(sshd) = common::sshd() else { return };
    let mut target = common::target(&sshd);
    target.private_key = Some(Secret::new(common::fresh_private_key()));
    let err = SshTransport::new(SshPool::new(), target)
        .run("true", Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Auth { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("failed to authenticate to SSH environment"),
        "{msg}"
    );
    assert!(msg.contains(&sshd.username), "{msg}");
}

#[tokio::test]
async fn undecodable_private_key_fails_before_connecting_without_echoing_it() {
    let Some(sshd) = common::sshd() else { return };
    let mut target = common::target(&sshd);
    target.private_key = Some(Secret::new(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETJUNK\n".into(),
    ));
    let err = SshTransport::new(SshPool::new(), target)
        .run("true", Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::PrivateKey { .. }), "{err}");
    assert!(!err.to_string().contains("SECRETJUNK"));
}

#[tokio::test]
async fn wrong_pinned_host_key_is_refused_before_anything_runs() {
    let Some(a) = common::sshd() else { return };
    let b = a.start_with_different_host_key().unwrap();
    let mut target = common::target(&b);
    // Pin A's host key under B's address.
    target.known_hosts = Some(format!("[127.0.0.1]:{} {}\n", b.port, a.host_public_key));
    let marker = b.workspace.join("ran");
    let err = SshTransport::new(SshPool::new(), target)
        .run(&format!("touch '{}'", marker.display()), Bytes::new())
        .await
        .unwrap_err();
    let ExecError::HostKey {
        presented, reason, ..
    } = &err
    else {
        panic!("expected a host key error, got {err}");
    };
    assert_eq!(presented.key_type, "ssh-ed25519");
    assert!(presented.fingerprint_sha256.starts_with("SHA256:"));
    assert_eq!(
        presented.known_hosts_line,
        format!("[127.0.0.1]:{} {}", b.port, b.host_public_key)
    );
    assert!(
        matches!(reason, HostKeyRejection::Mismatch { known_fingerprints } if known_fingerprints.len() == 1)
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&presented.fingerprint_sha256) && msg.contains(&b.host_public_key),
        "{msg}"
    );
    assert!(!marker.exists());
    // Give sshd a moment to log, then check it never saw an authentication.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = b.log();
    assert!(!log.contains("Accepted publickey"), "{log}");
    assert!(!log.contains("Failed publickey"), "{log}");
}

#[tokio::test]
async fn unknown_host_is_refused_and_strict_off_is_accepted_with_a_warning() {
    let Some(sshd) = common::sshd() else { return };
    let mut target = common::target(&sshd);
    target.known_hosts = Some(format!("[other.example]:22 {}\n", sshd.host_public_key));
    let err = SshTransport::new(SshPool::new(), target.clone())
        .run("true", Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ExecError::HostKey {
                reason: HostKeyRejection::Unknown,
                ..
            }
        ),
        "{err}"
    );

    target.strict_host_key_checking = false;
    target.known_hosts = None;
    let t = SshTransport::new(SshPool::new(), target);
    let info = t.connection_info().await.unwrap();
    assert!(!info.host_key.pinned);
    assert_eq!(info.warnings.len(), 1);
    assert!(info.warnings[0].contains(&info.host_key.presented.fingerprint_sha256));
    assert!(t.run("true", Bytes::new()).await.unwrap().outcome.success());
}

#[tokio::test]
async fn probe_info_reports_pinned_key_and_latencies() {
    let Some(sshd) = common::sshd() else { return };
    let t = SshTransport::new(SshPool::new(), common::target(&sshd));
    let info = t.connection_info().await.unwrap();
    assert!(info.host_key.pinned);
    assert!(info.warnings.is_empty());
    assert_eq!(
        info.host_key.presented.known_hosts_line,
        sshd.known_hosts.trim()
    );
    assert_eq!(info.auth_method, "private_key");
    assert!(info.tcp_connect < Duration::from_secs(1));
    assert!(info.auth < Duration::from_secs(5));
}

#[tokio::test]
async fn closed_port_fails_fast_with_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut target = berth_exec::SshTarget::new("127.0.0.1", port, "nobody");
    target.private_key = Some(Secret::new(common::fresh_private_key()));
    let start = Instant::now();
    let err = SshTransport::new(SshPool::new(), target)
        .run("true", Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn streams_100_mb_of_stdout() {
    let Some(sshd) = common::sshd() else { return };
    let t = SshTransport::new(SshPool::new(), common::target(&sshd));
    let mut h = t
        .exec(ExecRequest::new("head -c 104857600 /dev/zero"))
        .await
        .unwrap();
    let mut n = 0usize;
    while let Some(o) = h.next_output().await {
        if let Output::Stdout(b) = o {
            n += b.len();
        }
    }
    assert!(h.wait().await.unwrap().success());
    assert_eq!(n, 104_857_600);
}

#[tokio::test]
async fn echoes_20_mb_of_stdin_while_reading_stdout_without_deadlock() {
    let Some(sshd) = common::sshd() else { return };
    let t = SshTransport::new(SshPool::new(), common::target(&sshd));
    let size = 20 * 1024 * 1024;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let reader = std::io::Cursor::new(data);
    let h = t
        .exec(ExecRequest::new("cat").stdin_reader(reader))
        .await
        .unwrap();
    let c = tokio::time::timeout(Duration::from_secs(120), h.collect(usize::MAX))
        .await
        .expect("stdin/stdout deadlocked")
        .unwrap();
    assert!(c.outcome.success());
    assert_eq!(c.stdout.len(), size);
    assert!(c.stdout == expected);
    // And stdin alone, counted remotely.
    let c = t
        .exec(ExecRequest::new("wc -c").stdin_reader(tokio::io::repeat(7).take(size as u64)))
        .await
        .unwrap()
        .collect(1024)
        .await
        .unwrap();
    assert_eq!(c.stdout_text().trim(), size.to_string());
}

#[tokio::test]
async fn fifty_concurrent_channels_share_one_pooled_connection() {
    let Some(sshd) = common::sshd() else { return };
    let mut target = common::target(&sshd);
    target.max_sessions = 60;
    let pool = SshPool::new();
    let t = Arc::new(SshTransport::new(pool.clone(), target));
    t.run("true", Bytes::new()).await.unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let c = t
                .exec(ExecRequest::new(format!("sleep 1; echo {i}")))
                .await
                .unwrap()
                .collect(1024)
                .await
                .unwrap();
            assert!(c.outcome.success());
            assert_eq!(c.stdout_text(), format!("{i}\n"));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // All 50 ran at once (not one after another) on one connection.
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(pool.connection_count().await, 1);
    let accepted = sshd.log().matches("Accepted publickey").count();
    assert_eq!(accepted, 1, "{}", sshd.log());
}

#[tokio::test]
async fn a_killed_connection_is_replaced_transparently() {
    let Some(sshd) = common::sshd() else { return };
    let pool = SshPool::new();
    let t = SshTransport::new(pool.clone(), common::target(&sshd));
    assert!(t.run("true", Bytes::new()).await.unwrap().outcome.success());
    assert!(sshd.kill_connections() >= 1);
    // Let the client notice the hang-up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = t.run("echo again", Bytes::new()).await.unwrap();
    assert_eq!(c.stdout_text(), "again\n");
    let c = t
        .exec(ExecRequest::new("echo exec"))
        .await
        .unwrap()
        .collect(100)
        .await
        .unwrap();
    assert_eq!(c.stdout_text(), "exec\n");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let Some(sshd) = common::sshd() else { return };
    let pool = SshPool::with_timeouts(SshTimeouts {
        idle: Duration::from_millis(500),
        ..SshTimeouts::default()
    });
    let t = SshTransport::new(pool.clone(), common::target(&sshd));
    t.run("true", Bytes::new()).await.unwrap();
    assert_eq!(pool.connection_count().await, 1);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(pool.connection_count().await, 0);
    // And a new step reconnects.
    assert!(t.run("true", Bytes::new()).await.unwrap().outcome.success());
}

#[tokio::test]
async fn exec_timeout_terminates_and_is_reported() {
    let Some(sshd) = common::sshd() else { return };
    let t = SshTransport::new(SshPool::new(), common::target(&sshd));
    let start = Instant::now();
    let outcome = t
        .exec(ExecRequest::new("sleep 30").timeout(Duration::from_millis(300)))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(outcome.timed_out);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn fetch_host_key_reports_the_line_to_pin_without_authenticating() {
    let Some(sshd) = common::sshd() else { return };
    let presented =
        berth_exec::ssh::fetch_host_key("127.0.0.1", sshd.port, &SshTimeouts::default())
            .await
            .unwrap();
    assert_eq!(presented.known_hosts_line, sshd.known_hosts.trim());
    assert!(!sshd.log().contains("Accepted publickey"));
}

#[tokio::test]
async fn agent_authentication_uses_the_configured_agent_socket() {
    let Some(sshd) = common::sshd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = KillOnDrop(
        std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The socket file appears before the agent listens: wait until it accepts.
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "ssh-agent did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let added = std::process::Command::new("ssh-add")
        .arg(sshd.dir().join("client_key"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let mut target = common::target(&sshd);
    target.private_key = None;
    target.agent_socket = Some(sock.clone());
    // Without the admin's `useAgentAuth`, the operator's agent is never offered.
    let refused = SshTransport::new(SshPool::new(), target.clone())
        .run("echo via-agent", Bytes::new())
        .await
        .unwrap_err();
    target.use_agent = true;
    let t = SshTransport::new(SshPool::new(), target.clone());
    let result = t.run("echo via-agent", Bytes::new()).await;
    let info = t.connection_info().await;
    // A missing agent is a named auth error.
    target.agent_socket = Some(dir.path().join("missing.sock"));
    let err = SshTransport::new(SshPool::new(), target)
        .run("true", Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(result.unwrap().stdout_text(), "via-agent\n");
    assert_eq!(info.unwrap().auth_method, "agent");
    assert!(matches!(err, ExecError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("missing.sock"), "{err}");
    assert!(matches!(refused, ExecError::Auth { .. }), "{refused}");
    assert!(refused.to_string().contains("useAgentAuth"), "{refused}");
}

#[tokio::test]
async fn pool_reconnects_after_sshd_restarts_on_the_same_port() {
    let Some(mut sshd) = common::sshd() else {
        return;
    };
    let pool = SshPool::new();
    let t = SshTransport::new(pool.clone(), common::target(&sshd));
    assert!(t.run("true", Bytes::new()).await.unwrap().outcome.success());
    let old_pid = sshd.pid();
    sshd.restart().unwrap();
    assert_ne!(sshd.pid(), old_pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = t.run("echo back", Bytes::new()).await.unwrap();
    assert_eq!(c.stdout_text(), "back\n");
    assert_eq!(pool.connection_count().await, 1);
}

#[tokio::test]
async fn strict_without_pinned_keys_uses_the_users_known_hosts_and_refuses_unknown_hosts() {
    let Some(sshd) = common::sshd() else { return };
    let mut target = common::target(&sshd);
    target.known_hosts = None;
    // The fixture's fresh host key on a random port is in no user's ~/.ssh/known_hosts.
    let err = SshTransport::new(SshPool::new(), target)
        .run("true", Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ExecError::HostKey {
                reason: HostKeyRejection::Unknown,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(sshd.known_hosts.trim()), "{err}");
}

/// What a command on the environment reads from the forwarded port (through the remote
/// host's loopback, which here is ours too).
#[expect(clippy::unwrap_used, reason = "test helper fails the test loudly")]
async fn read_through(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    got
}

/// An agent holds `BERTH_API_URL` with the forwarded port: after the pooled connection dies
/// and reconnects, the same port still leads to the control plane, and after a control-plane
/// restart the port can be pointed at the new process.
#[tokio::test]
async fn a_remote_forward_keeps_its_port_across_reconnects_and_can_be_repointed() {
    let Some(sshd) = common::sshd() else { return };
    let serve = |greeting: &'static str| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(greeting.as_bytes()).await;
            }
        });
        addr
    };
    let first = serve("first").await;
    let pool = SshPool::new();
    let t = SshTransport::new(pool.clone(), common::target(&sshd));
    let exposed = t.expose_local_port(first).await.unwrap().unwrap();
    assert_eq!(read_through(exposed.port()).await, "first");

    assert!(sshd.kill_connections() >= 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Any use of the environment reconnects, and the forward comes back on its port.
    assert!(t.run("true", Bytes::new()).await.unwrap().outcome.success());
    assert_eq!(read_through(exposed.port()).await, "first");

    // A new control-plane process listens elsewhere: the agent's port now leads there.
    let second = serve("second").await;
    let again = t
        .expose_local_port_at(second, exposed.port())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.port(), exposed.port());
    assert_eq!(read_through(exposed.port()).await, "second");
    // A fresh pool (a restarted process) gets the same port from the server too.
    let restarted = SshTransport::new(SshPool::new(), common::target(&sshd));
    drop(t);
    drop(pool);
    assert!(sshd.kill_connections() >= 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = serve("third").await;
    let at = restarted
        .expose_local_port_at(third, exposed.port())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at.port(), exposed.port());
    assert_eq!(read_through(exposed.port()).await, "third");
}
