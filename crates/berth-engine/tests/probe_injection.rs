//! An agent's `adapterConfig.command` is user input that the probe looks up on the probed
//! environment's login PATH. It once went into `sh -lc "command -v '$c'"`, so a command with a
//! `'` ran arbitrary shell on whatever was probed. Now it is a positional parameter: hostile
//! commands are reported missing and run nothing, locally and over a real sshd.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_engine::probe::{Level, ProbeResult, ProbeTarget, probe};
use berth_exec::{Secret, SshPool, SshTarget};
use berth_testkit::sshd::Sshd;

/// Commands that each try to create `sentinel` through a different shell construct.
fn hostile_commands(sentinel: &Path) -> Vec<String> {
    let s = sentinel.display();
    vec![
        format!("x'; touch {s}; '"),
        format!("x'\"; touch {s}; \"'"),
        format!("$(touch {s})"),
        format!("`touch {s}`"),
        format!("x' || touch {s} || '"),
        format!("-x'; touch {s}; '"),
    ]
}

fn sentinel() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join(format!("PWNED-{}", uuid::Uuid::new_v4().simple()));
    (dir, path)
}

/// Every hostile command is reported missing (a warning naming it), `sh` is still found, and
/// the sentinel does not exist.
fn assert_not_executed(result: &ProbeResult, hostile: &[String], sentinel: &Path) {
    assert!(
        !sentinel.exists(),
        "the probe executed an agent command: {sentinel:?} exists"
    );
    for command in hostile {
        let check = result
            .checks
            .iter()
            .find(|c| c.code == "agent_cli" && c.message.contains(command.as_str()))
            .unwrap_or_else(|| panic!("no agent_cli check for {command:?}: {:#?}", result.checks));
        assert_eq!(check.level, Level::Warn, "{check:?}");
        assert!(
            check.message.contains("is not on the login PATH"),
            "{check:?}"
        );
    }
    let sh = result
        .checks
        .iter()
        .find(|c| c.code == "agent_cli" && c.message.contains("`sh`"))
        .expect("the probe still finds a real command");
    assert_eq!(sh.level, Level::Info, "{sh:?}");
}

#[tokio::test]
async fn local_probe_never_executes_an_agent_command() {
    let (_dir, sentinel) = sentinel();
    let workspace = tempfile::tempdir().unwrap();
    let hostile = hostile_commands(&sentinel);
    let mut commands = hostile.clone();
    commands.push("sh".into());
    let result = probe(
        &SshPool::new(),
        ProbeTarget::Local {
            workspace_root: workspace.path().to_path_buf(),
        },
        &commands,
        Duration::from_secs(60),
    )
    .await;
    assert_not_executed(&result, &hostile, &sentinel);
}

#[tokio::test]
async fn ssh_probe_never_executes_an_agent_command() {
    let Some(sshd) = Sshd::start_unless_unavailable().expect("failed to start the sshd fixture")
    else {
        return;
    };
    let (_dir, sentinel) = sentinel();
    let hostile = hostile_commands(&sentinel);
    let mut commands = hostile.clone();
    commands.push("sh".into());
    let mut target = SshTarget::new(sshd.host.clone(), sshd.port, sshd.username.clone());
    target.private_key = Some(Secret::new(sshd.client_private_key.clone()));
    target.known_hosts = Some(sshd.known_hosts.clone());
    target.strict_host_key_checking = true;
    let result = probe(
        &SshPool::new(),
        ProbeTarget::Ssh {
            target,
            remote_workspace_path: sshd.workspace.join("ws").display().to_string(),
        },
        &commands,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        result
            .checks
            .iter()
            .any(|c| c.code == "auth" && c.level == Level::Info),
        "the probe reached the sshd: {:#?}",
        result.checks
    );
    assert_not_executed(&result, &hostile, &sentinel);
}
