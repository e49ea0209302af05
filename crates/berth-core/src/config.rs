//! Typed per-driver environment configurations and their validation (SPEC §4).
//!
//! Configs are strict: an unknown key is an issue naming its dotted path. Validation returns
//! every issue it finds; the API answers 422 with the first message and the full list.
//!
//! A private key is write-only: in [`ParseMode::Probe`] and [`ParseMode::Persist`] a raw
//! `privateKey` is accepted and handed back separately as a [`Secret`]; the typed config itself
//! only ever holds a [`SecretRef`]. In [`ParseMode::Stored`] a raw key is refused, because a
//! stored config must never contain one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::enums::Driver;
use crate::ids::SecretId;
use crate::secret::Secret;

/// One validation problem, with the dotted path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

/// Which input a config comes from; decides whether raw secrets are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    /// A config read back from the database: raw secrets are refused.
    Stored,
    /// An unsaved config being probed: raw secrets are used in memory only.
    Probe,
    /// A create or update: raw secrets are moved into the secret store by the caller.
    Persist,
}

/// A reference to a company secret: `{type: "secret_ref", secretId, version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[serde(rename = "type")]
    pub kind: SecretRefKind,
    pub secret_id: SecretId,
    pub version: SecretVersion,
}

/// The secrets an agent's `adapterConfig.env` references (values that are
/// `{type: "secret_ref", …}` objects; plain strings reference nothing).
pub fn agent_env_secret_refs(adapter_config: &serde_json::Value) -> Vec<SecretId> {
    adapter_config
        .get("env")
        .and_then(serde_json::Value::as_object)
        .map(|env| {
            env.values()
                .filter_map(|v| serde_json::from_value::<SecretRef>(v.clone()).ok())
                .map(|r| r.secret_id)
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretRefKind {
    #[serde(rename = "secret_ref")]
    SecretRef,
}

/// `"latest"` or a positive version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SecretVersion {
    Number(u32),
    Latest(Latest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Latest {
    #[serde(rename = "latest")]
    Latest,
}

impl SecretRef {
    pub fn latest(secret_id: SecretId) -> Self {
        Self {
            kind: SecretRefKind::SecretRef,
            secret_id,
            version: SecretVersion::Latest(Latest::Latest),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WorkspaceMode {
    #[default]
    #[serde(rename = "copy")]
    Copy,
    #[serde(rename = "in_place")]
    InPlace,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalConfig {
    /// Where per-run scratch lives; defaults to `$BERTH_HOME`.
    pub workspace_root: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub remote_workspace_path: String,
    pub private_key_secret_ref: Option<SecretRef>,
    pub private_key_passphrase_secret_ref: Option<SecretRef>,
    pub known_hosts: Option<String>,
    pub strict_host_key_checking: bool,
    pub workspace_mode: WorkspaceMode,
    pub in_place_path: Option<String>,
    pub max_sessions: u32,
    /// Authenticate with the server operator's SSH agent (`SSH_AUTH_SOCK`) when no private
    /// key is set. Only an instance admin may turn it on (those identities are the
    /// operator's, not a company's).
    pub use_agent_auth: bool,
}

/// What a sandbox may reach on the network (SPEC §4). Berth's own API stays reachable in
/// every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxNetwork {
    /// A network namespace of its own with only a loopback interface.
    #[default]
    None,
    /// Only `allowHosts`, through a proxy Berth runs for the lease.
    Allowlist,
    /// The host's network, loopback services included.
    Open,
}

impl SandboxNetwork {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Allowlist => "allowlist",
            Self::Open => "open",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    pub provider: String,
    pub network: SandboxNetwork,
    /// `host:port` entries admitted when `network` is `allowlist`.
    pub allow_hosts: Vec<String>,
    pub read_only_paths: Vec<String>,
    pub memory_limit_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    /// Keys of plugin-served providers, validated by the provider itself.
    pub provider_config: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub command: Vec<String>,
    pub driver_config: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DriverConfig {
    Local(LocalConfig),
    Ssh(SshConfig),
    Sandbox(SandboxConfig),
    Plugin(PluginConfig),
}

/// A validated config plus the raw secrets that came with it (probe and persist modes only).
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    pub config: DriverConfig,
    pub private_key: Option<Secret<String>>,
    pub private_key_passphrase: Option<Secret<String>>,
}

pub const SSH_DEFAULT_PORT: u16 = 22;
pub const SSH_DEFAULT_MAX_SESSIONS: u32 = 8;
const SANDBOX_PROVIDER_RULE: &str = "^[a-z0-9][a-z0-9._-]*$";

impl DriverConfig {
    pub fn driver(&self) -> Driver {
        match self {
            DriverConfig::Local(_) => Driver::Local,
            DriverConfig::Ssh(_) => Driver::Ssh,
            DriverConfig::Sandbox(_) => Driver::Sandbox,
            DriverConfig::Plugin(_) => Driver::Plugin,
        }
    }

    /// The canonical stored JSON. Never contains a raw secret.
    pub fn to_json(&self) -> Value {
        match self {
            DriverConfig::Local(c) => match &c.workspace_root {
                Some(root) => json!({ "workspaceRoot": root }),
                None => json!({}),
            },
            DriverConfig::Ssh(c) => json!({
                "host": c.host,
                "port": c.port,
                "username": c.username,
                "remoteWorkspacePath": c.remote_workspace_path,
                "privateKey": null,
                "privateKeySecretRef": c.private_key_secret_ref,
                "privateKeyPassphrase": null,
                "privateKeyPassphraseSecretRef": c.private_key_passphrase_secret_ref,
                "knownHosts": c.known_hosts,
                "strictHostKeyChecking": c.strict_host_key_checking,
                "workspaceMode": c.workspace_mode,
                "inPlacePath": c.in_place_path,
                "maxSessions": c.max_sessions,
            })
            .as_object()
            .cloned()
            .map(|mut map| {
                // Berth-only and off by default: absent keeps Paperclip's shape.
                if c.use_agent_auth {
                    map.insert("useAgentAuth".into(), json!(true));
                }
                Value::Object(map)
            })
            .unwrap_or_default(),
            DriverConfig::Sandbox(c) => {
                let mut map = c.provider_config.clone();
                map.insert("provider".into(), json!(c.provider));
                map.insert("network".into(), json!(c.network));
                map.insert("allowHosts".into(), json!(c.allow_hosts));
                map.insert("readOnlyPaths".into(), json!(c.read_only_paths));
                map.insert("memoryLimitMb".into(), json!(c.memory_limit_mb));
                map.insert("timeoutMs".into(), json!(c.timeout_ms));
                Value::Object(map)
            }
            DriverConfig::Plugin(c) => json!({
                "command": c.command,
                "driverConfig": c.driver_config,
            }),
        }
    }

    /// Secrets this config references (to delete them once unreferenced).
    pub fn secret_refs(&self) -> Vec<SecretId> {
        match self {
            DriverConfig::Ssh(c) => c
                .private_key_secret_ref
                .iter()
                .chain(c.private_key_passphrase_secret_ref.iter())
                .map(|r| r.secret_id)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Validate `value` as the config of `driver`.
pub fn parse_config(
    driver: Driver,
    value: &Value,
    mode: ParseMode,
) -> Result<ParsedConfig, Vec<ConfigIssue>> {
    let empty = Map::new();
    let map = match value {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => {
            return Err(vec![issue(
                "config",
                "Environment config must be an object.",
            )]);
        }
    };
    let mut r = Reader::new(map, "config");
    let mut secrets = (None, None);
    let config = match driver {
        Driver::Local => DriverConfig::Local(parse_local(&mut r)),
        Driver::Ssh => {
            let (c, key, pass) = parse_ssh(&mut r, mode);
            secrets = (key, pass);
            DriverConfig::Ssh(c)
        }
        Driver::Sandbox => DriverConfig::Sandbox(parse_sandbox(&mut r)),
        Driver::Plugin => DriverConfig::Plugin(parse_plugin(&mut r)),
    };
    let issues = r.finish();
    if issues.is_empty() {
        Ok(ParsedConfig {
            config,
            private_key: secrets.0,
            private_key_passphrase: secrets.1,
        })
    } else {
        Err(issues)
    }
}

fn issue(path: &str, message: &str) -> ConfigIssue {
    ConfigIssue {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// Reads keys out of a JSON object, remembering which were consumed so that the rest can be
/// reported as unknown.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
    seen: Vec<&'static str>,
    issues: Vec<ConfigIssue>,
    /// Keys that pass through unvalidated (plugin-served sandbox providers).
    allow_unknown: bool,
}

impl<'a> Reader<'a> {
    fn new(map: &'a Map<String, Value>, prefix: &'a str) -> Self {
        Self {
            map,
            prefix,
            seen: Vec::new(),
            issues: Vec::new(),
            allow_unknown: false,
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{}", self.prefix, key)
    }

    fn fail(&mut self, key: &str, message: &str) {
        let path = self.path(key);
        self.issues.push(ConfigIssue {
            path,
            message: message.to_string(),
        });
    }

    /// The value of `key`, treating JSON `null` as absent.
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A trimmed string; empty counts as absent. Non-strings are reported with `message`.
    fn string(&mut self, key: &'static str, message: &str) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => {
                let t = s.trim();
                (!t.is_empty()).then(|| t.to_string())
            }
            Some(_) => {
                self.fail(key, message);
                None
            }
        }
    }

    fn boolean(&mut self, key: &'static str, default: bool, message: &str) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.fail(key, message);
                default
            }
        }
    }

    /// An integer in `range`; numeric strings are accepted (`"2222"`).
    fn integer(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
        message: &str,
    ) -> Option<u64> {
        let n = match self.get(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.fail(key, message);
                None
            }
        }
    }

    fn finish(mut self) -> Vec<ConfigIssue> {
        if !self.allow_unknown {
            let mut unknown: Vec<&String> = self
                .map
                .keys()
                .filter(|k| !self.seen.contains(&k.as_str()))
                .collect();
            unknown.sort();
            for key in unknown {
                let path = self.path(key);
                self.issues.push(ConfigIssue {
                    message: format!("Unknown key \"{path}\"."),
                    path,
                });
            }
        }
        self.issues
    }
}

fn is_absolute_posix(path: &str) -> bool {
    path.starts_with('/')
}

fn parse_local(r: &mut Reader<'_>) -> LocalConfig {
    let root = r.string(
        "workspaceRoot",
        "Local workspace root must be an absolute path.",
    );
    if let Some(root) = &root
        && !is_absolute_posix(root)
    {
        r.fail(
            "workspaceRoot",
            "Local workspace root must be an absolute path.",
        );
    }
    LocalConfig {
        workspace_root: root,
    }
}

fn parse_secret_ref(r: &mut Reader<'_>, key: &'static str, what: &str) -> Option<SecretRef> {
    let value = r.get(key)?;
    match serde_json::from_value::<SecretRef>(value.clone()) {
        Ok(SecretRef {
            version: SecretVersion::Number(0),
            ..
        })
        | Err(_) => {
            r.fail(
                key,
                &format!(
                    "{what} must be a secret reference {{\"type\": \"secret_ref\", \"secretId\": <uuid>, \"version\": \"latest\" or a positive integer}}."
                ),
            );
            None
        }
        Ok(reference) => {
            if let Value::Object(m) = value {
                for extra in m
                    .keys()
                    .filter(|k| !["type", "secretId", "version"].contains(&k.as_str()))
                {
                    let path = format!("{}.{}.{}", r.prefix, key, extra);
                    r.issues.push(ConfigIssue {
                        message: format!("Unknown key \"{path}\"."),
                        path,
                    });
                }
            }
            Some(reference)
        }
    }
}

fn parse_raw_secret(
    r: &mut Reader<'_>,
    key: &'static str,
    mode: ParseMode,
    what: &str,
) -> Option<Secret<String>> {
    let raw = r.string(key, &format!("{what} must be a string."))?;
    if mode == ParseMode::Stored {
        r.fail(
            key,
            &format!("{what} must be stored as a secret reference, never inline."),
        );
        return None;
    }
    Some(Secret::new(raw))
}

fn parse_ssh(
    r: &mut Reader<'_>,
    mode: ParseMode,
) -> (SshConfig, Option<Secret<String>>, Option<Secret<String>>) {
    const HOST: &str = "SSH environments require a host.";
    const USER: &str = "SSH environments require a username.";
    const PATH_MISSING: &str = "SSH environments require a remote workspace path.";
    const PATH_ABSOLUTE: &str = "SSH remote workspace path must be absolute.";

    let host = r.string("host", HOST);
    if host.is_none() && !r.issues.iter().any(|i| i.path == "config.host") {
        r.fail("host", HOST);
    }
    let port = r
        .integer(
            "port",
            1..=65535,
            "SSH port must be an integer between 1 and 65535.",
        )
        .map(|p| p as u16)
        .unwrap_or(SSH_DEFAULT_PORT);
    let username = r.string("username", USER);
    if username.is_none() && !r.issues.iter().any(|i| i.path == "config.username") {
        r.fail("username", USER);
    }
    let remote_workspace_path = r.string("remoteWorkspacePath", PATH_MISSING);
    match &remote_workspace_path {
        None => {
            if !r
                .issues
                .iter()
                .any(|i| i.path == "config.remoteWorkspacePath")
            {
                r.fail("remoteWorkspacePath", PATH_MISSING);
            }
        }
        Some(p) if !is_absolute_posix(p) => r.fail("remoteWorkspacePath", PATH_ABSOLUTE),
        Some(_) => {}
    }
    let private_key = parse_raw_secret(r, "privateKey", mode, "SSH private key");
    let private_key_passphrase = parse_raw_secret(
        r,
        "privateKeyPassphrase",
        mode,
        "SSH private key passphrase",
    );
    let private_key_secret_ref =
        parse_secret_ref(r, "privateKeySecretRef", "SSH privateKeySecretRef");
    let private_key_passphrase_secret_ref = parse_secret_ref(
        r,
        "privateKeyPassphraseSecretRef",
        "SSH privateKeyPassphraseSecretRef",
    );
    let known_hosts = r.string("knownHosts", "SSH knownHosts must be a string.");
    let strict_host_key_checking = r.boolean(
        "strictHostKeyChecking",
        true,
        "SSH strictHostKeyChecking must be a boolean.",
    );
    const MODE: &str = "SSH workspaceMode must be \"copy\" or \"in_place\".";
    let workspace_mode = match r.get("workspaceMode") {
        None => WorkspaceMode::Copy,
        Some(v) => match serde_json::from_value::<WorkspaceMode>(v.clone()) {
            Ok(m) => m,
            Err(_) => {
                r.fail("workspaceMode", MODE);
                WorkspaceMode::Copy
            }
        },
    };
    const IN_PLACE: &str = "SSH in-place workspaces require an absolute inPlacePath.";
    let in_place_path = r.string("inPlacePath", IN_PLACE);
    match (workspace_mode, &in_place_path) {
        (WorkspaceMode::InPlace, None) => r.fail("inPlacePath", IN_PLACE),
        (WorkspaceMode::InPlace, Some(p)) if !is_absolute_posix(p) => {
            r.fail("inPlacePath", IN_PLACE)
        }
        (WorkspaceMode::Copy, Some(_)) => r.fail(
            "inPlacePath",
            "SSH inPlacePath is only allowed when workspaceMode is \"in_place\".",
        ),
        _ => {}
    }
    let max_sessions = r
        .integer(
            "maxSessions",
            1..=1024,
            "SSH maxSessions must be an integer between 1 and 1024.",
        )
        .map(|n| n as u32)
        .unwrap_or(SSH_DEFAULT_MAX_SESSIONS);
    let use_agent_auth = r.boolean("useAgentAuth", false, "SSH useAgentAuth must be a boolean.");
    (
        SshConfig {
            host: host.unwrap_or_default(),
            port,
            username: username.unwrap_or_default(),
            remote_workspace_path: remote_workspace_path.unwrap_or_default(),
            private_key_secret_ref,
            private_key_passphrase_secret_ref,
            known_hosts,
            strict_host_key_checking,
            workspace_mode,
            in_place_path,
            max_sessions,
            use_agent_auth,
        },
        private_key,
        private_key_passphrase,
    )
}

fn valid_provider(p: &str) -> bool {
    let mut chars = p.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// `host:port` with a non-empty host of `[A-Za-z0-9.-]` (or `*.` wildcard prefix) and a port.
fn valid_host_port(entry: &str) -> bool {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return false;
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn parse_sandbox(r: &mut Reader<'_>) -> SandboxConfig {
    let provider_message = format!("Sandbox provider must match {SANDBOX_PROVIDER_RULE}.");
    let provider = r
        .string("provider", &provider_message)
        .unwrap_or_else(|| "bubblewrap".to_string());
    if !valid_provider(&provider) {
        r.fail("provider", &provider_message);
    }
    const NETWORK: &str = "Sandbox network must be \"none\", \"allowlist\" or \"open\".";
    let network = match r.get("network") {
        None => SandboxNetwork::None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => SandboxNetwork::None,
            "allowlist" => SandboxNetwork::Allowlist,
            "open" => SandboxNetwork::Open,
            _ => {
                r.fail("network", NETWORK);
                SandboxNetwork::None
            }
        },
        // Configs stored before the egress policy said `network: true|false`.
        Some(Value::Bool(true)) => SandboxNetwork::Open,
        Some(Value::Bool(false)) => SandboxNetwork::None,
        Some(_) => {
            r.fail("network", NETWORK);
            SandboxNetwork::None
        }
    };
    const HOSTS: &str = "Sandbox allowHosts must be an array of \"host:port\" strings.";
    let allow_hosts = match r.get("allowHosts") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let hosts: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if hosts.len() != items.len() || !hosts.iter().all(|h| valid_host_port(h)) {
                r.fail("allowHosts", HOSTS);
            }
            hosts
        }
        Some(_) => {
            r.fail("allowHosts", HOSTS);
            Vec::new()
        }
    };
    const PATHS: &str = "Sandbox readOnlyPaths must be an array of absolute paths.";
    let read_only_paths = match r.get("readOnlyPaths") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let paths: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if paths.len() != items.len() || !paths.iter().all(|p| is_absolute_posix(p)) {
                r.fail("readOnlyPaths", PATHS);
            }
            paths
        }
        Some(_) => {
            r.fail("readOnlyPaths", PATHS);
            Vec::new()
        }
    };
    let memory_limit_mb = r.integer(
        "memoryLimitMb",
        16..=1_048_576,
        "Sandbox memoryLimitMb must be an integer between 16 and 1048576.",
    );
    let timeout_ms = r.integer(
        "timeoutMs",
        1..=86_400_000,
        "Sandbox timeoutMs must be an integer between 1 and 86400000.",
    );
    let mut provider_config = Map::new();
    if provider != "bubblewrap" {
        r.allow_unknown = true;
        for (k, v) in r.map.iter() {
            if !r.seen.contains(&k.as_str()) {
                provider_config.insert(k.clone(), v.clone());
            }
        }
    }
    SandboxConfig {
        provider,
        network,
        allow_hosts,
        read_only_paths,
        memory_limit_mb,
        timeout_ms,
        provider_config,
    }
}

fn parse_plugin(r: &mut Reader<'_>) -> PluginConfig {
    const COMMAND: &str =
        "Plugin environments require a command: an array whose first element is an absolute path.";
    let command = match r.get("command") {
        Some(Value::Array(items)) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if parts.len() != items.len() || !parts.first().is_some_and(|p| is_absolute_posix(p)) {
                r.fail("command", COMMAND);
            }
            parts
        }
        _ => {
            r.fail("command", COMMAND);
            Vec::new()
        }
    };
    let driver_config = match r.get("driverConfig") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            r.fail("driverConfig", "Plugin driverConfig must be an object.");
            Map::new()
        }
    };
    PluginConfig {
        command,
        driver_config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(value: Value, mode: ParseMode) -> Result<ParsedConfig, Vec<ConfigIssue>> {
        parse_config(Driver::Ssh, &value, mode)
    }

    fn first_message(r: Result<ParsedConfig, Vec<ConfigIssue>>) -> String {
        r.unwrap_err()[0].message.clone()
    }

    fn valid_ssh() -> Value {
        json!({"host": " box.example ", "username": "agent", "remoteWorkspacePath": "/srv/berth"})
    }

    #[test]
    fn ssh_defaults_are_filled_in() {
        let parsed = ssh(valid_ssh(), ParseMode::Persist).unwrap();
        let DriverConfig::Ssh(c) = parsed.config else {
            panic!("not ssh")
        };
        assert_eq!(c.host, "box.example");
        assert_eq!(c.port, 22);
        assert!(c.strict_host_key_checking);
        assert_eq!(c.workspace_mode, WorkspaceMode::Copy);
        assert_eq!(c.max_sessions, 8);
        assert!(parsed.private_key.is_none());
    }

    #[test]
    fn ssh_required_fields_have_exact_messages() {
        assert_eq!(
            first_message(ssh(json!({}), ParseMode::Persist)),
            "SSH environments require a host."
        );
        assert_eq!(
            first_message(ssh(
                json!({"host": "h", "remoteWorkspacePath": "/x"}),
                ParseMode::Persist
            )),
            "SSH environments require a username."
        );
        assert_eq!(
            first_message(ssh(
                json!({"host": "h", "username": "u"}),
                ParseMode::Persist
            )),
            "SSH environments require a remote workspace path."
        );
        assert_eq!(
            first_message(ssh(
                json!({"host": "h", "username": "u", "remoteWorkspacePath": "rel/path"}),
                ParseMode::Persist
            )),
            "SSH remote workspace path must be absolute."
        );
        assert_eq!(
            first_message(ssh(json!({"host": "   "}), ParseMode::Persist)),
            "SSH environments require a host."
        );
    }

    #[test]
    fn ssh_port_accepts_numeric_strings_and_rejects_out_of_range() {
        let mut v = valid_ssh();
        v["port"] = json!("2222");
        let DriverConfig::Ssh(c) = ssh(v.clone(), ParseMode::Persist).unwrap().config else {
            panic!()
        };
        assert_eq!(c.port, 2222);
        for bad in [
            json!(0),
            json!(65536),
            json!("abc"),
            json!(22.5),
            json!(true),
        ] {
            v["port"] = bad;
            assert_eq!(
                first_message(ssh(v.clone(), ParseMode::Persist)),
                "SSH port must be an integer between 1 and 65535."
            );
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_dotted_path() {
        let mut v = valid_ssh();
        v["hostname"] = json!("x");
        let issues = ssh(v, ParseMode::Persist).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "config.hostname");
        assert_eq!(issues[0].message, "Unknown key \"config.hostname\".");

        let mut v = valid_ssh();
        v["privateKeySecretRef"] =
            json!({"type": "secret_ref", "secretId": SecretId::new(), "version": "latest", "x": 1});
        let issues = ssh(v, ParseMode::Stored).unwrap_err();
        assert_eq!(issues[0].path, "config.privateKeySecretRef.x");

        let issues =
            parse_config(Driver::Local, &json!({"foo": 1}), ParseMode::Persist).unwrap_err();
        assert_eq!(issues[0].path, "config.foo");
    }

    #[test]
    fn raw_private_key_is_separated_and_refused_when_stored() {
        let mut v = valid_ssh();
        v["privateKey"] = json!("  -----BEGIN KEY-----  ");
        let parsed = ssh(v.clone(), ParseMode::Persist).unwrap();
        assert_eq!(
            parsed.private_key.as_ref().map(|k| k.expose().as_str()),
            Some("-----BEGIN KEY-----")
        );
        let stored = parsed.config.to_json();
        assert_eq!(stored["privateKey"], Value::Null);
        assert!(!stored.to_string().contains("BEGIN KEY"));
        assert!(
            ssh(v.clone(), ParseMode::Probe)
                .unwrap()
                .private_key
                .is_some()
        );
        let issues = ssh(v, ParseMode::Stored).unwrap_err();
        assert_eq!(issues[0].path, "config.privateKey");
    }

    #[test]
    fn stored_config_round_trips() {
        let mut v = valid_ssh();
        v["privateKeySecretRef"] =
            serde_json::to_value(SecretRef::latest(SecretId::new())).unwrap();
        v["knownHosts"] = json!("");
        let parsed = ssh(v, ParseMode::Persist).unwrap();
        let json = parsed.config.to_json();
        assert_eq!(json["knownHosts"], Value::Null);
        assert_eq!(json["privateKeySecretRef"]["version"], json!("latest"));
        let again = ssh(json, ParseMode::Stored).unwrap();
        assert_eq!(again.config, parsed.config);
    }

    #[test]
    fn in_place_requires_an_absolute_path_and_copy_refuses_one() {
        let mut v = valid_ssh();
        v["workspaceMode"] = json!("in_place");
        assert_eq!(
            first_message(ssh(v.clone(), ParseMode::Persist)),
            "SSH in-place workspaces require an absolute inPlacePath."
        );
        v["inPlacePath"] = json!("/home/dev/repo");
        assert!(ssh(v.clone(), ParseMode::Persist).is_ok());
        v["workspaceMode"] = json!("copy");
        assert!(ssh(v.clone(), ParseMode::Persist).is_err());
        v["workspaceMode"] = json!("mirror");
        assert!(ssh(v, ParseMode::Persist).is_err());
    }

    #[test]
    fn sandbox_and_plugin_configs_validate() {
        let ok = parse_config(
            Driver::Sandbox,
            &json!({"provider": "bubblewrap", "network": false, "readOnlyPaths": ["/opt"]}),
            ParseMode::Persist,
        );
        let DriverConfig::Sandbox(old) = ok.unwrap().config else {
            panic!("not a sandbox config");
        };
        assert_eq!(
            old.network,
            SandboxNetwork::None,
            "a stored boolean still reads"
        );
        for (network, expected) in [
            ("none", SandboxNetwork::None),
            ("open", SandboxNetwork::Open),
        ] {
            let parsed = parse_config(
                Driver::Sandbox,
                &json!({"network": network}),
                ParseMode::Persist,
            )
            .unwrap();
            let DriverConfig::Sandbox(c) = &parsed.config else {
                panic!("not a sandbox config");
            };
            assert_eq!(c.network, expected);
            assert_eq!(c.provider, "bubblewrap");
            assert_eq!(parsed.config.to_json()["network"], json!(network));
        }
        let allowlist = parse_config(
            Driver::Sandbox,
            &json!({"network": "allowlist", "allowHosts": ["api.anthropic.com:443", "*.github.com:443"]}),
            ParseMode::Persist,
        )
        .unwrap();
        assert_eq!(
            allowlist.config.to_json()["allowHosts"],
            json!(["api.anthropic.com:443", "*.github.com:443"])
        );
        assert!(
            parse_config(
                Driver::Sandbox,
                &json!({"network": "sometimes"}),
                ParseMode::Persist
            )
            .is_err()
        );
        assert!(
            parse_config(
                Driver::Sandbox,
                &json!({"allowHosts": ["no-port"]}),
                ParseMode::Persist
            )
            .is_err()
        );
        assert!(
            parse_config(
                Driver::Sandbox,
                &json!({"provider": "Bad!"}),
                ParseMode::Persist
            )
            .is_err()
        );
        assert!(parse_config(Driver::Sandbox, &json!({"bogus": 1}), ParseMode::Persist).is_err());
        let other = parse_config(
            Driver::Sandbox,
            &json!({"provider": "e2b", "template": "base"}),
            ParseMode::Persist,
        )
        .unwrap();
        assert_eq!(other.config.to_json()["template"], json!("base"));
        assert!(
            parse_config(
                Driver::Plugin,
                &json!({"command": ["relative"]}),
                ParseMode::Persist
            )
            .is_err()
        );
        assert!(
            parse_config(
                Driver::Plugin,
                &json!({"command": ["/usr/bin/provider", "--stdio"], "driverConfig": {"a": 1}}),
                ParseMode::Persist
            )
            .is_ok()
        );
    }
}
