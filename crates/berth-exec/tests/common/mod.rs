#![allow(dead_code, reason = "each test binary uses a subset")]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test loudly"
)]

use berth_exec::{Secret, SshTarget};
use berth_testkit::sshd::Sshd;

/// Start the sshd fixture; `None` (with a loud message) only outside CI when sshd is missing.
pub fn sshd() -> Option<Sshd> {
    Sshd::start_unless_unavailable().expect("failed to start the sshd fixture")
}

pub fn target(sshd: &Sshd) -> SshTarget {
    let mut t = SshTarget::new(sshd.host.clone(), sshd.port, sshd.username.clone());
    t.private_key = Some(Secret::new(sshd.client_private_key.clone()));
    t.known_hosts = Some(sshd.known_hosts.clone());
    t.strict_host_key_checking = true;
    t
}

pub fn fresh_private_key() -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read_to_string(path).unwrap()
}
