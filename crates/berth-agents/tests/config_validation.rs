//! `validate_config` refuses every value a run could not use safely — wrong types, numbers out
//! of range (however large), NUL or line breaks in a command or flag, bad env names — and names
//! the field, for every adapter.

use berth_agents::{AdapterError, validate_config};
use serde_json::{Value, json};

const CLI_ADAPTERS: &[&str] = &[
    "claude_local",
    "codex_local",
    "cursor",
    "gemini_local",
    "opencode_local",
    "pi_local",
];

fn refused(adapter: &str, config: Value) -> AdapterError {
    match validate_config(adapter, &config) {
        Ok(()) => AdapterError::InvalidRequest(format!("ACCEPTED {adapter} {config}")),
        Err(e) => e,
    }
}

fn assert_refused(adapter: &str, config: Value, path: &str) {
    let err = refused(adapter, config.clone());
    assert_eq!(err.field_path(), path, "{adapter} {config}: {err}");
    assert!(
        err.to_string()
            .contains(&path["adapterConfig.".len().min(path.len())..]),
        "{err}"
    );
}

#[test]
fn numbers_out_of_range_or_not_integers_are_refused_by_field() {
    for adapter in CLI_ADAPTERS.iter().chain(&["process"]) {
        for bad in [
            json!(18446744073709551615u64),
            json!(3601),
            json!(-1),
            json!(-0.0),
            json!(2.5),
            json!(5.0),
            json!(1e300),
            json!("20"),
            json!(true),
        ] {
            assert_refused(adapter, json!({"graceSec": bad}), "adapterConfig.graceSec");
        }
        for bad in [
            json!(604801),
            json!(u64::MAX),
            json!(-0.0),
            json!(60.5),
            json!("60"),
        ] {
            assert_refused(
                adapter,
                json!({"timeoutSec": bad}),
                "adapterConfig.timeoutSec",
            );
        }
        for ok in [
            json!({}),
            json!(null),
            json!({"timeoutSec": 0, "graceSec": 0}),
            json!({"timeoutSec": 604800, "graceSec": 3600}),
        ] {
            assert_eq!(validate_config(adapter, &ok), Ok(()), "{adapter} {ok}");
        }
    }
    for adapter in CLI_ADAPTERS {
        for bad in [
            json!(0),
            json!(10001),
            json!(u64::MAX),
            json!(3.0),
            json!(-0.0),
        ] {
            assert_refused(
                adapter,
                json!({"maxTurnsPerRun": bad}),
                "adapterConfig.maxTurnsPerRun",
            );
        }
        assert_eq!(
            validate_config(adapter, &json!({"maxTurnsPerRun": 10000})),
            Ok(())
        );
    }
}

#[test]
fn commands_and_flags_with_nul_or_line_breaks_are_refused() {
    for adapter in CLI_ADAPTERS.iter().chain(&["process"]) {
        for bad in ["claude\n", "a\rb", "x\0y", "-x"] {
            assert_refused(adapter, json!({"command": bad}), "adapterConfig.command");
        }
        assert_refused(adapter, json!({"command": 7}), "adapterConfig.command");
    }
    for adapter in CLI_ADAPTERS {
        assert_refused(
            adapter,
            json!({"extraArgs": true}),
            "adapterConfig.extraArgs",
        );
        assert_refused(
            adapter,
            json!({"extraArgs": [1]}),
            "adapterConfig.extraArgs",
        );
        assert_refused(
            adapter,
            json!({"extraArgs": ["--ok", "--bad\n--evil"]}),
            "adapterConfig.extraArgs.1",
        );
        assert_refused(
            adapter,
            json!({"extraArgs": ["a\0b"]}),
            "adapterConfig.extraArgs.0",
        );
    }
    // A process argument may be a multi-line script, but never carry a NUL.
    assert_eq!(
        validate_config("process", &json!({"command": "sh", "args": ["-c", "a\nb"]})),
        Ok(())
    );
    assert_refused(
        "process",
        json!({"command": "sh", "args": ["-c", "a\0b"]}),
        "adapterConfig.args.1",
    );
    assert_refused("process", json!({"args": true}), "adapterConfig.args");
}

#[test]
fn env_names_and_values_are_checked_and_secret_refs_pass() {
    for adapter in CLI_ADAPTERS.iter().chain(&["process"]) {
        assert_refused(adapter, json!({"env": {"1X": "v"}}), "adapterConfig.env.1X");
        assert_refused(
            adapter,
            json!({"env": {"A-B": "v"}}),
            "adapterConfig.env.A-B",
        );
        assert_refused(
            adapter,
            json!({"env": {"OK": "a\0b"}}),
            "adapterConfig.env.OK",
        );
        assert_refused(adapter, json!({"env": {"OK": 1}}), "adapterConfig.env.OK");
        assert_refused(
            adapter,
            json!({"env": {"LD_PRELOAD": "x"}}),
            "adapterConfig.env.LD_PRELOAD",
        );
        assert_refused(adapter, json!({"env": []}), "adapterConfig.env");
        let with_ref = json!({"env": {"TOKEN": {"type": "secret_ref", "secretId": "00000000-0000-0000-0000-000000000000", "version": "latest"}, "MODE": "a\nb"}});
        assert_eq!(validate_config(adapter, &with_ref), Ok(()), "{adapter}");
    }
}

#[test]
fn a_process_agent_without_a_command_yet_still_has_its_other_keys_judged() {
    assert_eq!(validate_config("process", &json!({})), Ok(()));
    assert_refused(
        "process",
        json!({"graceSec": 1e20}),
        "adapterConfig.graceSec",
    );
    assert_refused(
        "process",
        json!({"env": {"A B": "x"}}),
        "adapterConfig.env.A B",
    );
}

#[test]
fn the_config_itself_must_be_an_object() {
    let err = refused("claude_local", json!([1]));
    assert_eq!(err.field_path(), "adapterConfig");
    assert!(validate_config("no_such_adapter", &json!({})).is_err());
}
