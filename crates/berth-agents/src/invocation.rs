//! The input of a build ([`BuildContext`]) and its output ([`Invocation`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use berth_core::{RunId, Secret};
use serde_json::Value;

use crate::session::SessionParams;

/// Everything an adapter needs to build one attempt's command. All paths named
/// `*_on_environment` are paths on the execution environment (remote for ssh/sandbox).
/// `Debug` omits the config's `env` values and the prompt (they may hold secrets).
#[derive(Clone)]
pub struct BuildContext {
    /// The agent's `adapterConfig`, with secret refs in `env` already resolved to strings.
    pub adapter_config: Value,
    /// The prompt; every CLI adapter sends it on stdin, never on argv.
    pub prompt: String,
    /// The agent's working directory on the environment (exported as `BERTH_WORKSPACE_CWD`).
    pub cwd_on_environment: String,
    /// The session to continue, already approved by [`crate::should_resume`].
    pub resume: Option<SessionParams>,
    pub run_id: RunId,
    /// `<root>/.berth/assets/<adapter>` on the environment; asset `k` lands in `<this>/<k>`.
    pub assets_dir_on_environment: Option<String>,
    /// Local directories prepared by the control plane, by asset key (e.g. `skills`, `home`).
    pub local_assets: BTreeMap<String, PathBuf>,
    /// The agent runs as uid 0 on the environment (Claude Code refuses to skip permissions).
    pub is_root: bool,
    /// `BERTH_API_URL` as reachable from the environment (e.g. the reverse-forwarded port).
    pub api_url: Option<String>,
    /// `BERTH_API_TOKEN`: the run-scoped agent token.
    pub api_token: Option<Secret<String>>,
}

impl BuildContext {
    /// A context with no resume, no assets, no API access; tests and callers fill in the rest.
    pub fn new(adapter_config: Value, prompt: &str, cwd_on_environment: &str) -> Self {
        Self {
            adapter_config,
            prompt: prompt.to_string(),
            cwd_on_environment: cwd_on_environment.to_string(),
            resume: None,
            run_id: RunId::new(),
            assets_dir_on_environment: None,
            local_assets: BTreeMap::new(),
            is_root: false,
            api_url: None,
            api_token: None,
        }
    }

    pub(crate) fn resume_id(&self) -> Option<&str> {
        self.resume
            .as_ref()
            .map(|s| s.session_id.as_str())
            .filter(|s| !s.is_empty())
    }
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut config = self.adapter_config.clone();
        if let Some(env) = config.get_mut("env").and_then(Value::as_object_mut) {
            for v in env.values_mut() {
                *v = Value::String("***".into());
            }
        }
        f.debug_struct("BuildContext")
            .field("adapter_config", &config)
            .field("prompt_bytes", &self.prompt.len())
            .field("cwd_on_environment", &self.cwd_on_environment)
            .field("resume", &self.resume)
            .field("run_id", &self.run_id)
            .field("assets_dir_on_environment", &self.assets_dir_on_environment)
            .field("local_assets", &self.local_assets)
            .field("is_root", &self.is_root)
            .field("api_url", &self.api_url)
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A directory to sync to the environment before the run (SPEC §8 "Assets").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSpec {
    pub key: String,
    /// Source directory on the control plane.
    pub local_dir: PathBuf,
    /// Destination on the environment: `<assets_dir_on_environment>/<key>`.
    pub remote_dir: String,
    pub follow_symlinks: bool,
    /// File names relative to `local_dir` to copy; empty means the whole directory.
    pub only: Vec<String>,
    /// The CLI keeps its own state in this directory (a CLI home): write the files over it
    /// and keep the rest, instead of making it an exact copy.
    pub merge: bool,
}

/// The command for one attempt, ready for the remote launcher. `Debug` never prints env values
/// (they include the API token and the agent's secrets).
#[derive(Clone, PartialEq)]
pub struct Invocation {
    pub program: String,
    pub args: Vec<String>,
    /// Passed through the launcher's 0600 env file, never argv.
    pub env: BTreeMap<String, String>,
    pub stdin: Vec<u8>,
    pub assets: Vec<AssetSpec>,
    /// 0 means no timeout.
    pub timeout_sec: u64,
    pub grace_sec: u64,
    /// A session id the adapter chose before the run (Pi's session file); otherwise the CLI
    /// reports one in its output.
    pub session_id: Option<String>,
    /// The session this attempt asked the CLI to resume, if any.
    pub resume_session_id: Option<String>,
    /// Directories on the environment the launcher must create before starting the CLI.
    pub ensure_dirs: Vec<String>,
    /// Human-readable notes for the run's event stream (ignored settings, substitutions).
    pub notes: Vec<String>,
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invocation")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("stdin_bytes", &self.stdin.len())
            .field("assets", &self.assets)
            .field("timeout_sec", &self.timeout_sec)
            .field("grace_sec", &self.grace_sec)
            .field("session_id", &self.session_id)
            .field("resume_session_id", &self.resume_session_id)
            .field("ensure_dirs", &self.ensure_dirs)
            .field("notes", &self.notes)
            .finish()
    }
}
