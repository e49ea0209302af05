//! `berth lab up --register` → probe the registered environment → `lab down`, through the real
//! binary, a real server and a real sshd. Fails (never skips) without sshd under `CI=true`.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on any problem"
)]

mod support;

use support::TestServer;

#[test]
fn lab_up_registers_a_probeable_environment_and_down_removes_it() {
    if !berth_lab::sshd_binary().exists() {
        if berth_testkit::in_ci() {
            panic!("sshd is required under CI=true");
        }
        eprintln!("SKIPPING: no sshd");
        return;
    }
    let server = TestServer::start();
    let up = server
        .berth()
        .run(["lab", "up", "--register", "--json"])
        .ok()
        .json();
    assert_eq!(up["reused"], false);
    let id = up["registered"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        up["registered"]["config"]["privateKey"],
        serde_json::Value::Null
    );
    let port = up["state"]["port"].as_u64().unwrap();

    let status = server.berth().run(["lab", "status", "--json"]).ok().json();
    assert_eq!(status["running"], true);
    assert_eq!(status["state"]["port"].as_u64(), Some(port));

    let probe = server
        .berth()
        .run(["env", "probe", &id, "--json"])
        .ok()
        .json();
    assert_eq!(probe["ok"], true, "{probe}");

    let human = server.berth().run(["lab", "up"]).ok();
    assert!(human.stdout.contains("is running"), "{}", human.stdout);
    assert!(
        !human.stdout.contains("PRIVATE KEY"),
        "the human output does not print the key: {}",
        human.stdout
    );

    let down = server.berth().run(["lab", "down", "--json"]).ok().json();
    assert_eq!(down["stopped"], true);
    let status = server.berth().run(["lab", "status", "--json"]).ok().json();
    assert_eq!(status["running"], false);
    let probe = server
        .berth()
        .run(["env", "probe", &id, "--json"])
        .code(8)
        .json();
    assert_eq!(probe["checks"][0]["code"], "connect", "{probe}");
}
