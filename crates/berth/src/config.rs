//! Configuration layering (SPEC §11): defaults < `$BERTH_HOME/berth.toml` < `BERTH_*`
//! environment variables < command-line flags.
//!
//! The file is strict about meaning but lenient about the future: a key Berth does not know is
//! reported (with its dotted path) as a warning and ignored, while a known key with a value of
//! the wrong type is an error naming the key. `masterKey` is refused in the file: the master
//! key must live outside anything that is likely to be copied around with the configuration
//! (`BERTH_MASTER_KEY` or `$BERTH_HOME/master.key`).
//!
//! Loading is a pure function of the flags, an environment lookup and the file system, so the
//! tests drive it with a map instead of the process environment.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use berth_core::Secret;
use berth_server::ServerConfig;
use serde::Deserialize;

/// The name of the configuration file inside `$BERTH_HOME`.
pub const CONFIG_FILE_NAME: &str = "berth.toml";
/// Where `berth serve` listens when nothing says otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:7411";
/// Where the CLI looks for the server when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7411";

/// Every environment variable Berth reads, for help texts and `doctor`.
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "BERTH_HOME",
        "directory holding berth.toml, berth.db, master.key (default ~/.berth)",
    ),
    ("BERTH_SERVER", "base URL of the Berth API for CLI commands"),
    ("BERTH_TOKEN", "bearer token sent to the API"),
    (
        "BERTH_TOKEN_FILE",
        "file holding the bearer token (mode 0600; berth.toml tokenFile)",
    ),
    (
        "BERTH_COMPANY",
        "company id or name (default: the company named `default`)",
    ),
    ("BERTH_BIND", "address `berth serve` listens on"),
    (
        "BERTH_RUNS_ROOT",
        "where local runs keep scratch and asset directories (default <BERTH_HOME>-runs)",
    ),
    (
        "BERTH_ALLOWED_HOSTS",
        "extra host names `berth serve` answers to (comma-separated; berth.toml server.allowedHosts)",
    ),
    (
        "BERTH_ALLOWED_ORIGINS",
        "extra origins allowed to change state (comma-separated; berth.toml server.allowedOrigins)",
    ),
    ("BERTH_DATABASE_URL", "sqlite://… or postgres://…"),
    (
        "BERTH_WORKSPACE_ROOTS",
        "directories execution workspaces may live under (PATH-style list)",
    ),
    (
        "BERTH_MASTER_KEY",
        "64 hex chars; the secrets master key (never read from berth.toml)",
    ),
    (
        "BERTH_LEASE_TTL",
        "seconds a lease lives without renewal (default 600; berth.toml leaseTtlSecs; at least 3)",
    ),
    ("BERTH_LOG_FORMAT", "`human` (default) or `json`"),
    (
        "BERTH_LOG",
        "log filter, e.g. `info` or `berth_server=debug` (falls back to RUST_LOG)",
    ),
    (
        "BERTH_TIMEOUT",
        "HTTP request timeout in seconds for CLI commands (default 30)",
    ),
];

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}; expected `human` or `json`"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// The keys `berth.toml` may hold. Every field is optional: absent means "next layer down".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileConfig {
    bind: Option<String>,
    database_url: Option<String>,
    workspace_roots: Option<Vec<PathBuf>>,
    runs_root: Option<PathBuf>,
    server: Option<ServerKey>,
    company: Option<String>,
    log_format: Option<LogFormat>,
    timeout_secs: Option<u64>,
    token_file: Option<PathBuf>,
    lease_ttl_secs: Option<i64>,
    /// Only here to be refused with a clear message (see the module docs).
    master_key: Option<toml::Value>,
}

/// `server = "http://…"` (where the CLI finds the API) or a `[server]` table that can also
/// hold what `berth serve` answers to: `url`, `allowedHosts`, `allowedOrigins`.
#[derive(Debug, Clone, Default)]
struct ServerKey {
    url: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerTable {
    url: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for ServerKey {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ServerKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL string or a table with url, allowedHosts, allowedOrigins")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ServerKey, E> {
                Ok(ServerKey {
                    url: Some(v.to_string()),
                    ..ServerKey::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ServerKey, A::Error> {
                let table =
                    ServerTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ServerKey {
                    url: table.url,
                    allowed_hosts: table.allowed_hosts,
                    allowed_origins: table.allowed_origins,
                })
            }
        }
        de.deserialize_any(Visitor)
    }
}

/// A comma- or whitespace-separated list from an environment variable.
fn env_list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub home: Option<PathBuf>,
    pub server: Option<String>,
    /// `--token-file`: the token is never taken from argv, where `ps` shows it.
    pub token_file: Option<PathBuf>,
    pub company: Option<String>,
    pub bind: Option<String>,
    pub database_url: Option<String>,
    pub workspace_roots: Vec<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub timeout_secs: Option<u64>,
}

/// A problem with the configuration that does not stop Berth (printed on stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A key of `berth.toml` that Berth does not know; `path` is dotted (`log.format`).
    UnknownKey { file: PathBuf, path: String },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::UnknownKey { file, path } => write!(
                f,
                "unknown key `{path}` in {} (ignored; check its spelling)",
                file.display()
            ),
        }
    }
}

/// The fully layered configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `$BERTH_HOME`.
    pub home: PathBuf,
    /// `$BERTH_HOME/berth.toml` (it may not exist).
    pub config_file: PathBuf,
    pub config_file_exists: bool,
    pub bind: String,
    pub database_url: String,
    pub workspace_roots: Vec<PathBuf>,
    /// Where local runs keep scratch and assets (`runsRoot`; default `<BERTH_HOME>-runs`).
    pub runs_root: Option<PathBuf>,
    /// Names besides loopback names `berth serve` answers to (`server.allowedHosts`).
    pub allowed_hosts: Vec<String>,
    /// Origins besides its own that may change state (`server.allowedOrigins`).
    pub allowed_origins: Vec<String>,
    pub server: String,
    pub token: Option<Secret<String>>,
    pub company: Option<String>,
    pub master_key: Option<Secret<String>>,
    pub log_format: LogFormat,
    pub timeout_secs: u64,
    /// Lease TTL for `berth serve` (`leaseTtlSecs`); `None` keeps the server's default.
    pub lease_ttl_secs: Option<i64>,
    pub warnings: Vec<ConfigWarning>,
}

impl Settings {
    /// What `berth serve` hands to the server.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            database_url: self.database_url.clone(),
            berth_home: self.home.clone(),
            master_key_hex: self.master_key.as_ref().map(|k| k.expose().clone()),
            workspace_roots: self.workspace_roots.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            allowed_origins: self.allowed_origins.clone(),
            runs_root: self.runs_root.clone(),
            lease_ttl_secs: self.lease_ttl_secs,
        }
    }
}

/// Load the configuration from the real process environment.
pub fn load(overrides: &Overrides) -> anyhow::Result<Settings> {
    load_with(overrides, |name| std::env::var(name).ok())
}

/// Load the configuration with `env` as the environment lookup (tests pass a map).
pub fn load_with(
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Settings> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    let home = match (&overrides.home, env("BERTH_HOME")) {
        (Some(home), _) => home.clone(),
        (None, Some(home)) => PathBuf::from(home),
        (None, None) => match env("HOME") {
            Some(user_home) => Path::new(&user_home).join(".berth"),
            None => bail!(
                "failed to find the Berth home directory: neither BERTH_HOME nor HOME is set \
                 (pass --home DIR or set BERTH_HOME)"
            ),
        },
    };
    let config_file = home.join(CONFIG_FILE_NAME);
    let (file, warnings, config_file_exists) = read_file(&config_file)?;

    let bind = overrides
        .bind
        .clone()
        .or_else(|| env("BERTH_BIND"))
        .or_else(|| file.bind.clone());
    let server = overrides
        .server
        .clone()
        .or_else(|| env("BERTH_SERVER"))
        .or_else(|| file.server.as_ref().and_then(|s| s.url.clone()))
        // A configured bind address is where the local server listens, so it is also where
        // the CLI should look for it.
        .or_else(|| bind.as_deref().map(server_url_for_bind))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let bind = bind.unwrap_or_else(|| DEFAULT_BIND.to_string());

    let database_url = overrides
        .database_url
        .clone()
        .or_else(|| env("BERTH_DATABASE_URL"))
        .or_else(|| file.database_url.clone())
        .unwrap_or_else(|| format!("sqlite://{}", home.join("berth.db").display()));

    let workspace_roots = if !overrides.workspace_roots.is_empty() {
        overrides.workspace_roots.clone()
    } else if let Some(roots) = env("BERTH_WORKSPACE_ROOTS") {
        std::env::split_paths(&roots).collect()
    } else {
        file.workspace_roots.clone().unwrap_or_default()
    };

    let runs_root = env("BERTH_RUNS_ROOT")
        .map(PathBuf::from)
        .or_else(|| file.runs_root.clone());
    let file_server = file.server.clone().unwrap_or_default();
    let allowed_hosts = env("BERTH_ALLOWED_HOSTS")
        .map(|v| env_list(&v))
        .or(file_server.allowed_hosts)
        .unwrap_or_default();
    let allowed_origins = env("BERTH_ALLOWED_ORIGINS")
        .map(|v| env_list(&v))
        .or(file_server.allowed_origins)
        .unwrap_or_default();

    // --token-file, then BERTH_TOKEN, then BERTH_TOKEN_FILE, then berth.toml `tokenFile`.
    let token = match (&overrides.token_file, env("BERTH_TOKEN")) {
        (Some(path), _) => Some(read_token_file(path)?),
        (None, Some(token)) => Some(Secret::new(token.trim().to_string())),
        (None, None) => match env("BERTH_TOKEN_FILE")
            .map(PathBuf::from)
            .or_else(|| file.token_file.clone())
        {
            Some(path) => Some(read_token_file(&path)?),
            None => None,
        },
    };

    let log_format = match (overrides.log_format, env("BERTH_LOG_FORMAT")) {
        (Some(format), _) => format,
        (None, Some(text)) => text
            .parse()
            .map_err(|e: String| anyhow::anyhow!("invalid BERTH_LOG_FORMAT: {e}"))?,
        (None, None) => file.log_format.unwrap_or_default(),
    };

    let timeout_secs = match (overrides.timeout_secs, env("BERTH_TIMEOUT")) {
        (Some(secs), _) => secs,
        (None, Some(text)) => text.trim().parse().with_context(|| {
            format!("invalid BERTH_TIMEOUT {text:?}: expected a number of seconds")
        })?,
        (None, None) => file.timeout_secs.unwrap_or(30),
    };

    let lease_ttl_secs = match env("BERTH_LEASE_TTL") {
        Some(text) => Some(
            text.trim()
                .parse::<i64>()
                .ok()
                .filter(|s| (3..=86_400 * 30).contains(s))
                .with_context(|| {
                    format!("invalid BERTH_LEASE_TTL {text:?}: expected seconds from 3 to 2592000")
                })?,
        ),
        None => match file.lease_ttl_secs {
            Some(s) if !(3..=86_400 * 30).contains(&s) => bail!(
                "invalid leaseTtlSecs {s} in {}: expected seconds from 3 to 2592000",
                config_file.display()
            ),
            other => other,
        },
    };

    Ok(Settings {
        home,
        config_file,
        config_file_exists,
        bind,
        database_url,
        workspace_roots,
        runs_root,
        allowed_hosts,
        allowed_origins,
        server: server.trim_end_matches('/').to_string(),
        token,
        company: overrides
            .company
            .clone()
            .or_else(|| env("BERTH_COMPANY"))
            .or_else(|| file.company.clone()),
        master_key: env("BERTH_MASTER_KEY").map(Secret::new),
        log_format,
        timeout_secs,
        lease_ttl_secs,
        warnings,
    })
}

/// Read a bearer token from a file only its owner can read (like ssh with private keys).
fn read_token_file(path: &Path) -> anyhow::Result<Secret<String>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("failed to read the token file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the token file {} is readable by other users (mode {mode:03o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!(
            "the token file {} must hold exactly one token (it is empty or holds several words)",
            path.display()
        );
    }
    Ok(Secret::new(token.to_string()))
}

/// `0.0.0.0:7411` listens everywhere but is not an address to connect to.
fn server_url_for_bind(bind: &str) -> String {
    let connect = if let Some(port) = bind.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = bind.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        bind.to_string()
    };
    format!("http://{connect}")
}

/// Read and check `berth.toml`. A missing file is an empty layer.
fn read_file(path: &Path) -> anyhow::Result<(FileConfig, Vec<ConfigWarning>, bool)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((FileConfig::default(), Vec::new(), false));
        }
        Err(e) => {
            return Err(e).with_context(|| format!("failed to read {}", path.display()));
        }
    };
    let (file, warnings) = parse_file(path, &text)?;
    Ok((file, warnings, true))
}

fn parse_file(path: &Path, text: &str) -> anyhow::Result<(FileConfig, Vec<ConfigWarning>)> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let deserializer = toml::Deserializer::new(text);
    let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
    let parsed: Result<FileConfig, toml::de::Error> =
        serde_ignored::deserialize(tracked, |ignored| unknown.push(ignored.to_string()));
    let file = match parsed {
        Ok(file) => file,
        Err(e) => {
            let key = track.path().to_string();
            let message = e.message().trim().to_string();
            let location = e
                .span()
                .map(|span| line_of(text, span.start))
                .map(|line| format!(" (line {line})"))
                .unwrap_or_default();
            if key.is_empty() || key == "?" {
                bail!("failed to parse {}{location}: {message}", path.display());
            }
            bail!(
                "invalid value for key `{key}` in {}{location}: {message}",
                path.display()
            );
        }
    };
    if file.master_key.is_some() {
        bail!(
            "key `masterKey` is not allowed in {}: the master key must not live in the \
             configuration file; remove it and set BERTH_MASTER_KEY (or let `berth serve` \
             create $BERTH_HOME/master.key)",
            path.display()
        );
    }
    let warnings = unknown
        .into_iter()
        .map(|key| ConfigWarning::UnknownKey {
            file: path.to_path_buf(),
            path: key,
        })
        .collect();
    Ok((file, warnings))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|before| before.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// Build an environment lookup from pairs (for tests and for `doctor`'s explanations).
pub fn env_from_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}
