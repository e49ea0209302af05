//! `berth doctor`: is the server reachable and healthy, and does this machine have what the
//! drivers need? Printed as a checklist; exit code 8 when a required check fails.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::context::Ctx;
use crate::exit::{Exit, Failed};
use crate::output::Level;

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    level: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    #[serde(skip)]
    severity: Level,
}

impl Check {
    fn new(name: &str, severity: Level, message: String, hint: Option<String>) -> Self {
        let level = match severity {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        Self {
            name: name.into(),
            level,
            message,
            hint,
            severity,
        }
    }
}

/// Programs on this machine and what needs them; `required` ones fail the doctor.
const TOOLS: &[(&str, bool, &str)] = &[
    (
        "git",
        true,
        "workspace sync (git history travels with the workspace)",
    ),
    ("tar", false, "workspace sync fallbacks and debugging"),
    (
        "sshd",
        false,
        "`berth lab` (a throwaway local SSH host for trying the ssh driver)",
    ),
    (
        "rsync",
        false,
        "sync benchmarks (Berth's own sync does not need it)",
    ),
    ("bwrap", false, "the sandbox driver (bubblewrap)"),
];

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    let settings = &ctx.settings;

    let file_state = if settings.config_file_exists {
        "loaded"
    } else {
        "not present, using defaults"
    };
    checks.push(Check::new(
        "config",
        Level::Ok,
        format!(
            "configuration {} ({file_state})",
            settings.config_file.display()
        ),
        None,
    ));
    for warning in &settings.warnings {
        checks.push(Check::new(
            "config",
            Level::Warn,
            warning.to_string(),
            Some("remove or rename the key".into()),
        ));
    }

    // Which variables shape this run (names only: BERTH_TOKEN's value is a secret).
    let set: Vec<&str> = crate::config::ENV_VARS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
        .collect();
    if !set.is_empty() {
        checks.push(Check::new(
            "environment",
            Level::Ok,
            format!("set in the environment: {}", set.join(", ")),
            None,
        ));
    }

    checks.push(server_check(ctx).await);

    for (tool, required, why) in TOOLS {
        let found = find_program(tool);
        let check = match (found, required) {
            (Some(path), _) => Check::new(
                tool,
                Level::Ok,
                format!("{tool} found at {}", path.display()),
                None,
            ),
            (None, true) => Check::new(
                tool,
                Level::Error,
                format!("{tool} not found on PATH; needed for {why}"),
                Some(format!("install {tool} (e.g. `apt-get install {tool}`)")),
            ),
            (None, false) => Check::new(
                tool,
                Level::Warn,
                format!("{tool} not found; only needed for {why}"),
                Some(format!("install {} if you need that", package_of(tool))),
            ),
        };
        checks.push(check);
    }

    let ok = checks.iter().all(|c| c.severity != Level::Error);
    if ctx.out.json {
        ctx.out
            .print_json(&serde_json::json!({ "ok": ok, "checks": checks }))?;
    } else {
        for check in &checks {
            ctx.out
                .check(check.severity, &check.message, None, check.hint.as_deref())?;
        }
    }
    if ok {
        Ok(())
    } else {
        Err(Failed::new(Exit::CheckFailed, "some checks failed")
            .with_hint("fix the items marked ✗ above")
            .into())
    }
}

async fn server_check(ctx: &Ctx) -> Check {
    let client = match ctx.client() {
        Ok(client) => client,
        Err(e) => {
            return Check::new(
                "server",
                Level::Error,
                format!("{e:#}"),
                Some("pass an http:// URL with --server or BERTH_SERVER".into()),
            );
        }
    };
    match client.get("/api/health").await {
        Ok(health) => {
            let field = |k: &str| health.get(k).and_then(Value::as_str).unwrap_or("?");
            let status = field("status");
            let mut hint = None;
            let mut level = if status == "ok" {
                Level::Ok
            } else {
                Level::Error
            };
            if field("authMode") == "token" && ctx.settings.token.is_none() {
                level = level.max_warn();
                hint = Some(
                    "the server requires a token: set BERTH_TOKEN or pass --token-file PATH".into(),
                );
            }
            let version = field("version");
            if version != env!("CARGO_PKG_VERSION") {
                level = level.max_warn();
                hint = Some(format!(
                    "this CLI is {}; mismatched versions may disagree on the API",
                    env!("CARGO_PKG_VERSION")
                ));
            }
            Check::new(
                "server",
                level,
                format!(
                    "server {} is {status} (version {version}, database {}, auth {})",
                    client.base_url(),
                    field("database"),
                    field("authMode")
                ),
                hint,
            )
        }
        Err(e) => Check::new("server", Level::Error, e.to_string(), e.hint()),
    }
}

fn package_of(tool: &str) -> &str {
    match tool {
        "sshd" => "openssh-server",
        "bwrap" => "bubblewrap",
        other => other,
    }
}

/// The first executable named `name` on PATH (plus the sbin directories, where sshd lives
/// but which are not on every user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}
