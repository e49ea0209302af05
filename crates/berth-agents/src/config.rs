//! The `adapterConfig` keys every CLI adapter shares (Paperclip-compatible names), and the parts
//! of a build that are the same for every adapter: env rules, `BERTH_*` variables, assets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_core::adapters::{default_command, is_forbidden_env_key, is_valid_env_key};
use serde_json::{Map, Value};

use crate::error::AdapterError;
use crate::invocation::{AssetSpec, BuildContext, Invocation};

/// `graceSec` when the config does not set it (SPEC §7).
pub const DEFAULT_GRACE_SEC: u64 = 20;
/// Largest `timeoutSec`: 7 days. 0 means no timeout.
pub const MAX_TIMEOUT_SEC: u64 = 7 * 24 * 3600;
/// Largest `graceSec` (the launcher caps the wait between TERM and KILL at the same hour).
pub const MAX_GRACE_SEC: u64 = 3600;
/// Largest `maxTurnsPerRun`.
pub const MAX_TURNS_PER_RUN: u64 = 10_000;

/// The asset key under which `instructionsFilePath` travels.
pub(crate) const INSTRUCTIONS_ASSET: &str = "instructions";

/// Keys shared by the CLI adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonConfig {
    /// Binary name or path; defaults to the CLI's own name.
    pub command: String,
    pub model: Option<String>,
    /// Validated: valid POSIX names, none forbidden, none `BERTH_*`.
    pub env: BTreeMap<String, String>,
    pub extra_args: Vec<String>,
    /// 0 = no timeout.
    pub timeout_sec: u64,
    pub grace_sec: u64,
    /// A file on the control plane with the agent's instructions.
    pub instructions_file_path: Option<String>,
    pub max_turns_per_run: Option<u64>,
    /// `adapterConfig.assets`: directories on the control plane synced to the environment
    /// before each run, by asset key (see [`crate::Adapter::asset_keys`]).
    pub assets: BTreeMap<String, PathBuf>,
}

impl CommonConfig {
    pub fn parse(adapter_type: &'static str, config: &Value) -> Result<Self, AdapterError> {
        let obj = object(config)?;
        let command = match str_opt(obj, "command")? {
            Some(c) => c,
            None => default_command(adapter_type)
                .ok_or(AdapterError::MissingConfig {
                    adapter: adapter_type,
                    key: "command",
                })?
                .to_string(),
        };
        check_command(&command)?;
        let extra_args = string_list(obj, "extraArgs")?.unwrap_or_default();
        for (i, arg) in extra_args.iter().enumerate() {
            check_word(&format!("extraArgs.{i}"), arg)?;
        }
        Ok(Self {
            command,
            model: str_opt(obj, "model")?,
            env: env_map(obj)?,
            extra_args,
            timeout_sec: timeout_sec(obj)?,
            grace_sec: grace_sec(obj)?,
            instructions_file_path: str_opt(obj, "instructionsFilePath")?,
            max_turns_per_run: int_in(obj, "maxTurnsPerRun", 1, MAX_TURNS_PER_RUN)?,
            assets: asset_dirs(obj)?,
        })
    }
}

/// `assets`: an object of asset key → absolute directory on the control plane.
fn asset_dirs(obj: &Map<String, Value>) -> Result<BTreeMap<String, PathBuf>, AdapterError> {
    let map = match obj.get("assets") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(AdapterError::config(
                "assets",
                "must be an object of asset key to absolute directory",
            ));
        }
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        match value.as_str() {
            Some(dir) if Path::new(dir).is_absolute() => {
                out.insert(key.clone(), PathBuf::from(dir));
            }
            _ => {
                return Err(AdapterError::config(
                    "assets",
                    "each asset must be an absolute directory path on the control plane",
                ));
            }
        }
    }
    Ok(out)
}

/// The adapter config as an object (`null` counts as `{}`).
pub(crate) fn object(config: &Value) -> Result<&Map<String, Value>, AdapterError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match config {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(EMPTY.get_or_init(Map::new)),
        _ => Err(AdapterError::config(
            "",
            "adapterConfig must be a JSON object",
        )),
    }
}

pub(crate) fn str_opt(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, AdapterError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AdapterError::config(key, "must be a string")),
    }
}

pub(crate) fn bool_opt(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, AdapterError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(AdapterError::config(key, "must be true or false")),
    }
}

/// A JSON integer in `min..=max`. Only integers count: `5.0`, `-0.0` and `1e3` are floats in
/// JSON and are refused, as are strings and numbers outside the range (however large), so no
/// later arithmetic on the value can overflow.
pub(crate) fn int_in(
    obj: &Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, AdapterError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| (min..=max).contains(&v)) => {
            Ok(n.as_u64())
        }
        Some(_) => Err(AdapterError::config(
            key,
            format!("must be an integer from {min} to {max}"),
        )),
    }
}

/// `timeoutSec`: 0 (the default) means no timeout, else at most [`MAX_TIMEOUT_SEC`].
pub(crate) fn timeout_sec(obj: &Map<String, Value>) -> Result<u64, AdapterError> {
    int_in(obj, "timeoutSec", 0, MAX_TIMEOUT_SEC)
        .map(Option::unwrap_or_default)
        .map_err(|_| {
            AdapterError::config(
                "timeoutSec",
                format!(
                    "must be 0 (no timeout) or an integer from 1 to {MAX_TIMEOUT_SEC} (7 days)"
                ),
            )
        })
}

/// `graceSec`: seconds between TERM and KILL, at most [`MAX_GRACE_SEC`].
pub(crate) fn grace_sec(obj: &Map<String, Value>) -> Result<u64, AdapterError> {
    Ok(int_in(obj, "graceSec", 0, MAX_GRACE_SEC)?.unwrap_or(DEFAULT_GRACE_SEC))
}

/// An array of strings; with `comma_string`, a single `"a,b"` string is accepted too.
fn list(
    obj: &Map<String, Value>,
    key: &str,
    comma_string: bool,
) -> Result<Option<Vec<String>>, AdapterError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| AdapterError::config(key, "must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(Value::String(s)) if comma_string => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        )),
        Some(_) => Err(AdapterError::config(key, "must be an array of strings")),
    }
}

pub(crate) fn string_list(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, AdapterError> {
    list(obj, key, false)
}

pub(crate) fn string_list_or_csv(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, AdapterError> {
    list(obj, key, true)
}

/// One of `allowed`, or an error naming the key and the choices.
pub(crate) fn choice(
    obj: &Map<String, Value>,
    key: &str,
    allowed: &[&str],
) -> Result<Option<String>, AdapterError> {
    match str_opt(obj, key)? {
        Some(v) if !allowed.contains(&v.as_str()) => Err(AdapterError::config(
            key,
            format!("must be one of {}", allowed.join(", ")),
        )),
        other => Ok(other),
    }
}

/// One argv word that is also shown on one line (a command, an extra flag): no NUL (no argv
/// can carry it) and no line break.
pub(crate) fn check_word(key: &str, value: &str) -> Result<(), AdapterError> {
    if value.contains(['\0', '\n', '\r']) {
        return Err(AdapterError::config(
            key,
            "must not contain NUL or line breaks",
        ));
    }
    Ok(())
}

/// The program: a word (see [`check_word`]) that does not start with `-`, which `exec` would
/// read as an option rather than a program.
pub(crate) fn check_command(command: &str) -> Result<(), AdapterError> {
    check_word("command", command)?;
    if command.starts_with('-') {
        return Err(AdapterError::config(
            "command",
            "must not start with '-' (give a program name or path)",
        ));
    }
    Ok(())
}

/// `adapterConfig.env`: an object of strings (or `{"type":"plain","value":…}`, Paperclip's
/// resolved form). Keys are validated here so a bad one fails the build with its name.
pub(crate) fn env_map(obj: &Map<String, Value>) -> Result<BTreeMap<String, String>, AdapterError> {
    let mut out = BTreeMap::new();
    let Some(env) = obj.get("env") else {
        return Ok(out);
    };
    let env = match env {
        Value::Null => return Ok(out),
        Value::Object(m) => m,
        _ => return Err(AdapterError::config("env", "must be an object of strings")),
    };
    for (key, value) in env {
        if is_forbidden_env_key(key) {
            return Err(AdapterError::ForbiddenEnvKey { key: key.clone() });
        }
        if !is_valid_env_key(key) {
            return Err(AdapterError::config(
                format!("env.{key}"),
                "is not a valid environment variable name",
            ));
        }
        if key.to_ascii_uppercase().starts_with("BERTH_") {
            return Err(AdapterError::ReservedEnvKey { key: key.clone() });
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Object(m) if m.get("type").and_then(Value::as_str) == Some("plain") => m
                .get("value")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    AdapterError::config(format!("env.{key}"), "plain value must be a string")
                })?,
            Value::Object(m) if m.get("type").and_then(Value::as_str) == Some("secret_ref") => {
                return Err(AdapterError::config(
                    format!("env.{key}"),
                    "secret reference was not resolved before the build",
                ));
            }
            _ => {
                return Err(AdapterError::config(
                    format!("env.{key}"),
                    "must be a string",
                ));
            }
        };
        if value.contains('\0') {
            return Err(AdapterError::config(
                format!("env.{key}"),
                "must not contain NUL",
            ));
        }
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// Where each asset lands on the environment, keyed by asset key.
#[derive(Debug, Default)]
pub(crate) struct PlacedAssets {
    pub remote: BTreeMap<String, String>,
    pub specs: Vec<AssetSpec>,
    /// Remote path of the instructions file, when `instructionsFilePath` is set.
    pub instructions_file: Option<String>,
}

/// Validates `ctx.local_assets` against `known` and places them (and the instructions file)
/// under `ctx.assets_dir_on_environment`.
pub(crate) fn place_assets(
    adapter: &'static str,
    known: &[&str],
    common: &CommonConfig,
    ctx: &BuildContext,
) -> Result<PlacedAssets, AdapterError> {
    let mut placed = PlacedAssets::default();
    // Prepared by the control plane for this run, else configured on the agent.
    let mut local_assets = common.assets.clone();
    local_assets.extend(ctx.local_assets.clone());
    let wants_any = !local_assets.is_empty() || common.instructions_file_path.is_some();
    if !wants_any {
        return Ok(placed);
    }
    let Some(base) = ctx
        .assets_dir_on_environment
        .as_deref()
        .map(|b| b.trim_end_matches('/'))
    else {
        return Err(AdapterError::NoAssetDir {
            adapter,
            why: "assets or instructionsFilePath were given but there is nowhere to sync them"
                .to_string(),
        });
    };
    for (key, local_dir) in &local_assets {
        if !known.contains(&key.as_str()) || key == INSTRUCTIONS_ASSET {
            return Err(AdapterError::UnknownAsset {
                adapter,
                key: key.clone(),
                known: known.join(", "),
            });
        }
        let remote_dir = format!("{base}/{key}");
        placed.remote.insert(key.clone(), remote_dir.clone());
        placed.specs.push(AssetSpec {
            key: key.clone(),
            local_dir: local_dir.clone(),
            remote_dir,
            follow_symlinks: true,
            only: Vec::new(),
            merge: false,
        });
    }
    if let Some(path) = &common.instructions_file_path {
        let p = Path::new(path);
        let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
            return Err(AdapterError::config(
                "instructionsFilePath",
                "must name a file",
            ));
        };
        let remote_dir = format!("{base}/{INSTRUCTIONS_ASSET}");
        placed.instructions_file = Some(format!("{remote_dir}/{name}"));
        placed.specs.push(AssetSpec {
            key: INSTRUCTIONS_ASSET.to_string(),
            local_dir: dir.to_path_buf(),
            remote_dir,
            follow_symlinks: true,
            only: vec![name.to_string()],
            merge: false,
        });
    }
    Ok(placed)
}

/// The parts of an invocation every CLI adapter shares: program, the prompt on stdin, env
/// (adapter defaults, then `adapterConfig.env`, then Berth's own variables), limits.
pub(crate) fn base_invocation(
    common: &CommonConfig,
    ctx: &BuildContext,
    env_defaults: &[(&str, &str)],
    prompt: String,
) -> Result<Invocation, AdapterError> {
    if ctx.cwd_on_environment.trim().is_empty() {
        return Err(AdapterError::InvalidRequest(
            "the working directory is empty".into(),
        ));
    }
    let mut env: BTreeMap<String, String> = env_defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(common.env.clone());
    berth_env(&mut env, ctx);
    Ok(Invocation {
        program: common.command.clone(),
        args: Vec::new(),
        env,
        stdin: prompt.into_bytes(),
        assets: Vec::new(),
        timeout_sec: common.timeout_sec,
        grace_sec: common.grace_sec,
        session_id: None,
        resume_session_id: ctx.resume_id().map(str::to_string),
        ensure_dirs: Vec::new(),
        notes: Vec::new(),
    })
}

pub(crate) fn berth_env(env: &mut BTreeMap<String, String>, ctx: &BuildContext) {
    env.insert("BERTH_RUN_ID".into(), ctx.run_id.to_string());
    env.insert("BERTH_WORKSPACE_CWD".into(), ctx.cwd_on_environment.clone());
    if let Some(url) = &ctx.api_url {
        env.insert("BERTH_API_URL".into(), url.clone());
        // Skills written for Paperclip look for its names; same values (docs/paperclip-compat.md).
        env.insert("PAPERCLIP_API_URL".into(), url.clone());
    }
    if let Some(token) = &ctx.api_token {
        env.insert("BERTH_API_TOKEN".into(), token.expose().clone());
        env.insert("PAPERCLIP_API_KEY".into(), token.expose().clone());
    }
}

/// For CLIs without a system-prompt file flag: tell the agent where its instructions are.
pub(crate) fn prompt_with_instructions(prompt: &str, instructions_file: Option<&str>) -> String {
    match instructions_file {
        Some(f) => format!(
            "Read and follow the agent instructions in {f} before starting. Resolve relative \
             references in them from that file's directory.\n\n{prompt}"
        ),
        None => prompt.to_string(),
    }
}

pub(crate) fn note_unsupported(inv: &mut Invocation, adapter: &str, key: &str, value: bool) {
    if value {
        inv.notes.push(format!(
            "adapterConfig.{key} is not supported by {adapter}; ignored"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configured_assets_are_placed_and_a_prepared_one_wins() {
        let config = json!({"assets": {"home": "/srv/codex", "skills": "/srv/skills"}});
        let common = CommonConfig::parse("codex_local", &config).expect("valid config");
        let mut ctx = BuildContext::new(config, "p", "/ws");
        ctx.assets_dir_on_environment = Some("/r/.berth/assets/codex_local".into());
        ctx.local_assets
            .insert("skills".into(), PathBuf::from("/prepared/skills"));
        let placed =
            place_assets("codex_local", &["home", "skills"], &common, &ctx).expect("known keys");
        assert_eq!(placed.remote["home"], "/r/.berth/assets/codex_local/home");
        let local: BTreeMap<_, _> = placed
            .specs
            .iter()
            .map(|s| (s.key.as_str(), s.local_dir.clone()))
            .collect();
        assert_eq!(local["home"], PathBuf::from("/srv/codex"));
        assert_eq!(local["skills"], PathBuf::from("/prepared/skills"));
        // An unknown key is refused by name.
        let err = place_assets("codex_local", &["home"], &common, &ctx).unwrap_err();
        assert!(err.to_string().contains("skills"), "{err}");
    }

    #[test]
    fn relative_asset_directories_are_refused() {
        let err =
            CommonConfig::parse("codex_local", &json!({"assets": {"home": "rel"}})).unwrap_err();
        assert!(err.to_string().contains("assets"), "{err}");
    }
}
