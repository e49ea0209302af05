//! The launcher over the SSH transport against a real sshd (never skipped under CI=true).

mod common;
#[path = "common/launcher_scenarios.rs"]
mod scenarios;

use std::sync::Arc;
use std::time::Duration;

use berth_exec::{
    AttachEvent, LaunchSpec, Launcher, Offsets, SshPool, SshTransport, StreamKind, Transport,
};
use berth_testkit::sshd::Sshd;
use bytes::Bytes;
use futures::StreamExt;

#[expect(clippy::unwrap_used, reason = "test setup fails the test loudly")]
fn setup(sshd: &Sshd) -> (Arc<dyn Transport>, String, String) {
    let root = sshd.workspace.join("root");
    let cwd = sshd.workspace.join("work");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    (
        Arc::new(SshTransport::new(SshPool::new(), common::target(sshd))),
        root.to_string_lossy().into_owned(),
        cwd.canonicalize().unwrap().to_string_lossy().into_owned(),
    )
}

#[tokio::test]
async fn ssh_run_streams_output_and_exit_code() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::run_streams_output_and_exit_code(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_launch_rejects_bad_input() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::launch_rejects_bad_input(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_attach_reattaches_from_offsets() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::attach_yields_contiguous_chunks_and_reattaches_from_offsets(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_cancel_kills_grandchildren_that_ignore_term() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::cancel_kills_grandchildren_that_ignore_term(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_timeout_stop_reports_term() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::cancel_of_a_polite_command_reports_term(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_env_values_and_private_key_never_appear_in_any_argv() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    // A distinctive middle line of the private key text.
    let key_lines: Vec<String> = sshd
        .client_private_key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_owned)
        .collect();
    assert!(!key_lines.is_empty());
    scenarios::secrets_never_appear_in_any_argv(t, &root, &cwd, &key_lines).await;
}

#[tokio::test]
async fn run_survives_its_sshd_connection_being_killed_with_byte_exact_output() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    let l = Launcher::new(t, root);
    let run = l
        .launch(LaunchSpec {
            run_id: format!("reattach-{}", uuid::Uuid::new_v4().simple()),
            command: "i=0; while [ $i -lt 40 ]; do head -c 3000 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; echo err$i >&2; i=$((i+1)); sleep 0.05; done; exit 3"
                .into(),
            cwd,
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut offsets = Offsets::default();
    let mut killed = 0;
    let mut killed_at = 0;
    // Attach; after the first output, kill the sshd process serving our connection. The stream
    // bridges the drop by reconnecting; then drop the stream and re-attach from the recorded
    // offsets as a restarted control plane would.
    {
        let s = l.attach(&run, offsets);
        futures::pin_mut!(s);
        while let Some(ev) = s.next().await {
            match ev.unwrap() {
                AttachEvent::Output(c) => {
                    let (buf, off) = match c.stream {
                        StreamKind::Stdout => (&mut out, &mut offsets.stdout),
                        StreamKind::Stderr => (&mut err, &mut offsets.stderr),
                    };
                    assert_eq!(c.offset, *off);
                    buf.extend_from_slice(&c.data);
                    *off = c.end();
                    if killed == 0 {
                        killed = sshd.kill_connections();
                        killed_at = offsets.stdout;
                        assert!(killed >= 1, "no per-connection sshd child found");
                    } else if offsets.stdout > killed_at + 30_000 {
                        break;
                    }
                }
                AttachEvent::Exited(_) => break,
            }
        }
    }
    // Drop the bridged connection too (if the run has not ended yet), then re-attach.
    sshd.kill_connections();
    let (rest_out, rest_err, outcome) = l.wait(&run, offsets).await.unwrap();
    out.extend_from_slice(&rest_out);
    err.extend_from_slice(&rest_err);
    assert_eq!(outcome.exit_code, Some(3));
    let on_disk_out = std::fs::read(format!("{}/stdout", run.dir)).unwrap();
    let on_disk_err = std::fs::read(format!("{}/stderr", run.dir)).unwrap();
    assert_eq!(on_disk_out.len(), 40 * 6001);
    assert!(
        out == on_disk_out,
        "stdout differs: {} vs {} bytes",
        out.len(),
        on_disk_out.len()
    );
    assert_eq!(err, on_disk_err);
    assert!(sshd.log().matches("Accepted publickey").count() >= 2);
    l.cleanup(&run).await.unwrap();
}

#[tokio::test]
async fn launch_uses_one_exec_channel_and_polls_use_the_control_shell() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    let l = Launcher::new(t.clone(), root);
    t.run("true", Bytes::new()).await.unwrap();
    let run = l
        .launch(LaunchSpec {
            run_id: format!("fast-{}", uuid::Uuid::new_v4().simple()),
            command: "echo done".into(),
            cwd,
            ..LaunchSpec::default()
        })
        .await
        .unwrap();
    let start = std::time::Instant::now();
    for _ in 0..20 {
        l.status(&run).await.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let (out, _, o) = l.wait(&run, Offsets::default()).await.unwrap();
    assert_eq!(out, b"done\n");
    assert!(o.success());
}

#[tokio::test]
async fn ssh_stop_never_signals_a_reused_process_group() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::stop_never_signals_a_reused_process_group(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_a_dead_launcher_is_reported_and_its_command_can_be_stopped() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::a_dead_launcher_is_reported_and_its_command_can_be_stopped(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_stop_with_a_huge_grace_still_stops() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::stop_with_a_huge_grace_still_stops(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_nul_bytes_are_refused_by_name() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::nul_bytes_are_refused_by_name(t, &root, &cwd).await;
}

#[tokio::test]
async fn ssh_stop_refuses_process_groups_0_and_1() {
    let Some(sshd) = common::sshd() else { return };
    let (t, root, cwd) = setup(&sshd);
    scenarios::stop_refuses_process_groups_0_and_1(t, &root, &cwd).await;
}
