//! Which agent adapters exist and which drivers each can run on (the capability map behind
//! `GET /companies/:cid/environments/capabilities` and the selection guards).

use crate::config::DriverConfig;
use crate::enums::Driver;

/// Every adapter type Berth knows.
pub const ADAPTER_TYPES: &[&str] = &[
    "claude_local",
    "codex_local",
    "cursor",
    "gemini_local",
    "opencode_local",
    "pi_local",
    "process",
];

/// The drivers that can run agents in this build. `plugin` is accepted in the data model
/// (SPEC §4) but not built yet: capabilities, creation and every selection guard say so,
/// instead of a run failing later. `sandbox` runs with the `bubblewrap` provider where the
/// host can run `bwrap`; the server checks the host (this crate does no I/O).
pub const RUNNABLE_DRIVERS: &[Driver] = &[Driver::Local, Driver::Ssh, Driver::Sandbox];

/// Why a driver cannot be used yet, for error messages; `None` when it runs.
pub fn unavailable_driver_reason(driver: Driver) -> Option<String> {
    (!RUNNABLE_DRIVERS.contains(&driver)).then(|| {
        format!(
            "The {driver} driver cannot run agents in this build yet; use local, ssh or sandbox.",
            driver = driver.as_str()
        )
    })
}

/// Why a config of a runnable driver still cannot run in this build (a sandbox provider other
/// than `bubblewrap` needs the plugin host); `None` when it can. The field path comes with it.
pub fn unavailable_config_reason(config: &DriverConfig) -> Option<(&'static str, String)> {
    match config {
        DriverConfig::Sandbox(s) if s.provider != "bubblewrap" => Some((
            "config.provider",
            format!(
                "Sandbox provider \"{}\" would be served by a plugin, and plugins cannot run in \
                 this build yet; use provider \"bubblewrap\".",
                s.provider
            ),
        )),
        _ => None,
    }
}

/// The drivers an adapter can run on; `None` for an unknown adapter type. Every adapter,
/// `process` included, runs on every runnable driver: they all reduce to the same transport.
pub fn supported_drivers(adapter_type: &str) -> Option<&'static [Driver]> {
    ADAPTER_TYPES
        .contains(&adapter_type)
        .then_some(RUNNABLE_DRIVERS)
}

/// The CLI an adapter runs when `adapterConfig.command` is not set (`None` for `process`,
/// whose command is mandatory).
pub fn default_command(adapter_type: &str) -> Option<&'static str> {
    match adapter_type {
        "claude_local" => Some("claude"),
        "codex_local" => Some("codex"),
        "cursor" => Some("agent"),
        "gemini_local" => Some("gemini"),
        "opencode_local" => Some("opencode"),
        "pi_local" => Some("pi"),
        _ => None,
    }
}

/// Environment variables an agent config may not set, because they change how the remote
/// shell or the dynamic loader behaves (SPEC §9).
pub fn is_forbidden_env_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    upper.starts_with("LD_")
        || upper.starts_with("DYLD_")
        || [
            "BASH_ENV",
            "ENV",
            "BASHOPTS",
            "SHELLOPTS",
            "PS4",
            "ZDOTDIR",
            "GCONV_PATH",
            "KSH_ENV",
            "IFS",
        ]
        .contains(&upper.as_str())
}

/// A valid POSIX environment variable name.
pub fn is_valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_adapter_runs_on_every_runnable_driver_and_only_those() {
        for a in ADAPTER_TYPES {
            assert_eq!(supported_drivers(a), Some(RUNNABLE_DRIVERS));
        }
        assert_eq!(supported_drivers("http"), None);
        for d in Driver::ALL {
            assert_eq!(
                unavailable_driver_reason(*d).is_none(),
                RUNNABLE_DRIVERS.contains(d),
                "{d:?}"
            );
        }
    }

    #[test]
    fn loader_and_shell_startup_variables_are_forbidden() {
        for k in [
            "LD_PRELOAD",
            "ld_library_path",
            "BASH_ENV",
            "ENV",
            "DYLD_INSERT_LIBRARIES",
        ] {
            assert!(is_forbidden_env_key(k), "{k}");
        }
        for k in ["ANTHROPIC_API_KEY", "PATHS", "ENVIRONMENT"] {
            assert!(!is_forbidden_env_key(k), "{k}");
        }
        assert!(is_valid_env_key("A_1"));
        assert!(!is_valid_env_key("1A"));
        assert!(!is_valid_env_key("BAD KEY"));
    }
}
