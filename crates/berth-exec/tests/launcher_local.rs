//! The launcher over `LocalTransport`.

#[path = "common/launcher_scenarios.rs"]
mod scenarios;

use std::sync::Arc;

use berth_exec::{LocalTransport, Transport};

#[expect(clippy::unwrap_used, reason = "test setup fails the test loudly")]
fn setup() -> (tempfile::TempDir, Arc<dyn Transport>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let cwd = dir.path().join("work");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let cwd = cwd.canonicalize().unwrap();
    (
        dir,
        Arc::new(LocalTransport::new()),
        root.to_string_lossy().into_owned(),
        cwd.to_string_lossy().into_owned(),
    )
}

#[tokio::test]
async fn local_run_streams_output_and_exit_code() {
    let (_d, t, root, cwd) = setup();
    scenarios::run_streams_output_and_exit_code(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_launch_rejects_bad_input() {
    let (_d, t, root, cwd) = setup();
    scenarios::launch_rejects_bad_input(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_attach_reattaches_from_offsets() {
    let (_d, t, root, cwd) = setup();
    scenarios::attach_yields_contiguous_chunks_and_reattaches_from_offsets(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_cancel_kills_grandchildren_that_ignore_term() {
    let (_d, t, root, cwd) = setup();
    scenarios::cancel_kills_grandchildren_that_ignore_term(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_timeout_stop_reports_term() {
    let (_d, t, root, cwd) = setup();
    scenarios::cancel_of_a_polite_command_reports_term(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_env_values_never_appear_in_any_argv() {
    let (_d, t, root, cwd) = setup();
    scenarios::secrets_never_appear_in_any_argv(t, &root, &cwd, &[]).await;
}

#[tokio::test]
async fn local_stop_never_signals_a_reused_process_group() {
    let (_d, t, root, cwd) = setup();
    scenarios::stop_never_signals_a_reused_process_group(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_a_dead_launcher_is_reported_and_its_command_can_be_stopped() {
    let (_d, t, root, cwd) = setup();
    scenarios::a_dead_launcher_is_reported_and_its_command_can_be_stopped(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_stop_with_a_huge_grace_still_stops() {
    let (_d, t, root, cwd) = setup();
    scenarios::stop_with_a_huge_grace_still_stops(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_nul_bytes_are_refused_by_name() {
    let (_d, t, root, cwd) = setup();
    scenarios::nul_bytes_are_refused_by_name(t, &root, &cwd).await;
}

#[tokio::test]
async fn local_stop_refuses_process_groups_0_and_1() {
    let (_d, t, root, cwd) = setup();
    scenarios::stop_refuses_process_groups_0_and_1(t, &root, &cwd).await;
}
