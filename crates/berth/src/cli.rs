//! The command line, as clap derive definitions. Parsing only: what each command does lives in
//! `commands/<noun>.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::LogFormat;
use crate::exit::EXIT_CODES_HELP;

/// Berth leases execution environments (this machine, SSH hosts, sandboxes) to AI coding agent
/// runs.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    after_help = EXIT_CODES_HELP,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Base URL of the Berth API [env: BERTH_SERVER] [default: http://127.0.0.1:7411]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub server: Option<String>,

    /// File holding the API bearer token (mode 0600) [env: BERTH_TOKEN_FILE]; or set BERTH_TOKEN
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "PATH"
    )]
    pub token_file: Option<PathBuf>,

    /// Refused: a token on the command line is visible to every user in `ps`
    #[arg(long, global = true, hide = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Company id or name [env: BERTH_COMPANY] [default: the company named `default`]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "ID|NAME"
    )]
    pub company: Option<String>,

    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Berth home directory holding berth.toml [env: BERTH_HOME] [default: ~/.berth]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "DIR"
    )]
    pub home: Option<PathBuf>,

    /// Log format on stderr [env: BERTH_LOG_FORMAT]; the level comes from BERTH_LOG or RUST_LOG
    #[arg(long, global = true, help_heading = "Global options", value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,

    /// HTTP request timeout in seconds [env: BERTH_TIMEOUT] [default: 30]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "SECS"
    )]
    pub timeout: Option<u64>,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only obscure the definitions"
)]
pub enum Command {
    /// Run the Berth server (HTTP API and web UI)
    Serve(ServeArgs),
    /// Manage execution environments
    #[command(subcommand, visible_alias = "envs")]
    Env(EnvCommand),
    /// Manage agents
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage projects
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage issues
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Manage execution workspaces
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage companies (tenants)
    #[command(subcommand)]
    Company(CompanyCommand),
    /// Manage company secrets (values are write-only)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Show the company's activity log
    Activity(ListArgs),
    /// Manage API tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show or change instance settings
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Operate on databases directly (no server)
    #[command(subcommand)]
    Db(DbCommand),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Check the server and this machine's prerequisites
    Doctor,
    /// A real OpenSSH sshd on a random loopback port to try SSH environments against
    #[command(subcommand)]
    Lab(LabCommand),
    /// Run an agent on a prompt (on the environment its selection resolves to)
    Run(RunArgs),
    /// List, inspect, follow and cancel runs
    #[command(subcommand)]
    Runs(RunsCommand),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Agent id or name
    #[arg(long)]
    pub agent: String,
    /// The prompt (use `-` to read it from stdin)
    #[arg(long)]
    pub prompt: String,
    /// A local directory to work on (an execution workspace is created for it if needed)
    #[arg(long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
    /// The issue this run is for
    #[arg(long)]
    pub issue: Option<String>,
    /// Stream the run's output live and exit with its outcome
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List the company's runs
    List {
        /// Only runs with this status
        #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "timed_out", "cancelled"])]
        status: Option<String>,
        #[command(flatten)]
        page: ListArgs,
    },
    /// Show one run
    Show { id: String },
    /// Print a run's output and events (`--follow` keeps streaming until it ends)
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
        /// Only events after this sequence number
        #[arg(long)]
        after: Option<i64>,
    },
    /// Cancel a queued or running run
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start the lab (or show the running one) and print a ready SSH environment config
    Up {
        /// Also create the SSH environment `lab` on the server
        #[arg(long)]
        register: bool,
    },
    /// Show whether the lab is running
    Status,
    /// Stop the lab and remove its keys and workspace
    Down,
    /// Check the lab's prerequisites and state
    Doctor,
}

// ---- serve ------------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [env: BERTH_BIND] [default: 127.0.0.1:7411]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,

    /// sqlite://… or postgres://… [env: BERTH_DATABASE_URL] [default: sqlite://$BERTH_HOME/berth.db]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// A directory execution workspaces may live under (repeatable) [env: BERTH_WORKSPACE_ROOTS]
    #[arg(long = "workspace-root", value_name = "DIR")]
    pub workspace_roots: Vec<PathBuf>,
}

// ---- env --------------------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List the company's environments
    #[command(visible_alias = "ls")]
    List(EnvListArgs),
    /// Create an environment
    Create(EnvCreateArgs),
    /// Show one environment
    Show(EnvRef),
    /// Change an environment (only the given fields; config keys are merged)
    Update(EnvUpdateArgs),
    /// Delete an environment
    #[command(visible_alias = "rm")]
    Delete(EnvDeleteArgs),
    /// List an environment's leases
    Leases(EnvLeasesArgs),
    /// Probe an environment (or an unsaved config) and print its checks
    Probe(EnvProbeArgs),
    /// Pin the host key an SSH environment presents (trust on first use, with consent)
    Trust(EnvTrustArgs),
    /// Show which drivers and options the server supports
    Capabilities,
}

/// An environment by id, or by name within the company.
#[derive(Debug, Args)]
pub struct EnvRef {
    /// Environment id or name
    #[arg(value_name = "ID|NAME")]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Page size; with it only one page is fetched (the next cursor is printed on stderr)
    #[arg(long)]
    pub limit: Option<u32>,
    /// Continue after this cursor
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Args)]
pub struct EnvListArgs {
    /// Only environments with this status
    #[arg(long, value_parser = ["active", "archived"])]
    pub status: Option<String>,
    /// Only environments of this driver
    #[arg(long, value_parser = ["local", "ssh", "sandbox", "plugin"])]
    pub driver: Option<String>,
    #[command(flatten)]
    pub page: ListArgs,
}

/// A driver config: a JSON document and/or individual SSH flags layered on top of it.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// Driver config as JSON (prefer --config-file or --private-key-file for anything secret)
    #[arg(long, value_name = "JSON", conflicts_with = "config_file")]
    pub config: Option<String>,
    /// Read the driver config JSON from a file (`-` for stdin)
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// host name or address
    #[arg(long, help_heading = "SSH config")]
    pub host: Option<String>,
    /// port
    #[arg(long, help_heading = "SSH config")]
    pub port: Option<u16>,
    /// user name
    #[arg(long, help_heading = "SSH config")]
    pub username: Option<String>,
    /// absolute directory on the host where workspaces are placed
    #[arg(long, value_name = "PATH", help_heading = "SSH config")]
    pub remote_workspace_path: Option<String>,
    /// private key file; its content is sent to the server and stored as a secret
    #[arg(long, value_name = "PATH", help_heading = "SSH config")]
    pub private_key_file: Option<PathBuf>,
    /// file holding the private key's passphrase
    #[arg(long, value_name = "PATH", help_heading = "SSH config")]
    pub private_key_passphrase_file: Option<PathBuf>,
    /// OpenSSH known_hosts file whose entries pin the host key
    #[arg(long, value_name = "PATH", help_heading = "SSH config")]
    pub known_hosts_file: Option<PathBuf>,
    /// verify the host key (default true; `false` accepts any key, with a warning)
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        help_heading = "SSH config"
    )]
    pub strict_host_key_checking: Option<bool>,
    /// `copy` (default) or `in_place`
    #[arg(long, value_parser = ["copy", "in_place"], help_heading = "SSH config")]
    pub workspace_mode: Option<String>,
    /// the existing remote checkout used with --workspace-mode in_place
    #[arg(long, value_name = "PATH", help_heading = "SSH config")]
    pub in_place_path: Option<String>,
    /// channels per pooled connection
    #[arg(long, help_heading = "SSH config")]
    pub max_sessions: Option<u32>,
}

#[derive(Debug, Args)]
pub struct EnvCreateArgs {
    /// Unique name within the company
    #[arg(long)]
    pub name: String,
    /// local, ssh, sandbox or plugin
    #[arg(long, value_parser = ["local", "ssh", "sandbox", "plugin"])]
    pub driver: String,
    /// Free-text description
    #[arg(long)]
    pub description: Option<String>,
    /// active or archived
    #[arg(long, value_parser = ["active", "archived"])]
    pub status: Option<String>,
    /// Free-form metadata as a JSON object
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Concurrent active leases allowed (default: ssh 4, others unlimited)
    #[arg(long)]
    pub capacity: Option<i64>,
    /// ephemeral, reuse_by_environment, reuse_by_execution_workspace or retain_on_failure
    #[arg(long, value_parser = ["ephemeral", "reuse_by_environment", "reuse_by_execution_workspace", "retain_on_failure"])]
    pub lease_policy: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct EnvUpdateArgs {
    /// Environment id or name
    #[arg(value_name = "ID|NAME")]
    pub env: String,
    /// New name
    #[arg(long)]
    pub name: Option<String>,
    /// New description (empty string clears it)
    #[arg(long)]
    pub description: Option<String>,
    /// New driver (the config must then suit it)
    #[arg(long, value_parser = ["local", "ssh", "sandbox", "plugin"])]
    pub driver: Option<String>,
    /// active or archived
    #[arg(long, value_parser = ["active", "archived"])]
    pub status: Option<String>,
    /// Metadata as a JSON object (`null` clears it)
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Concurrent active leases allowed
    #[arg(long, conflicts_with = "unlimited_capacity")]
    pub capacity: Option<i64>,
    /// Remove the capacity limit
    #[arg(long)]
    pub unlimited_capacity: bool,
    /// ephemeral, reuse_by_environment, reuse_by_execution_workspace or retain_on_failure
    #[arg(long, value_parser = ["ephemeral", "reuse_by_environment", "reuse_by_execution_workspace", "retain_on_failure"])]
    pub lease_policy: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct EnvDeleteArgs {
    /// Environment id or name
    #[arg(value_name = "ID|NAME")]
    pub env: String,
    /// Delete even with active leases (they are expired first)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EnvLeasesArgs {
    /// Environment id or name
    #[arg(value_name = "ID|NAME")]
    pub env: String,
    /// Only leases with this status
    #[arg(long, value_parser = ["active", "released", "expired", "failed", "retained", "pending_cleanup"])]
    pub status: Option<String>,
}

#[derive(Debug, Args)]
pub struct EnvProbeArgs {
    /// Environment id or name; omit to probe an unsaved config given with --driver and config flags
    #[arg(value_name = "ID|NAME", required_unless_present = "driver")]
    pub env: Option<String>,
    /// Driver of the unsaved config to probe
    #[arg(long, value_parser = ["local", "ssh", "sandbox", "plugin"], conflicts_with = "env")]
    pub driver: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct EnvTrustArgs {
    /// Environment id or name
    #[arg(value_name = "ID|NAME")]
    pub env: String,
    /// The fingerprint you verified out of band (SHA256:…); trusted only if the host presents it
    #[arg(long, value_name = "SHA256:…")]
    pub fingerprint: Option<String>,
    /// Trust whatever key the host presents, without asking
    #[arg(long, short = 'y')]
    pub yes: bool,
}

// ---- agents, projects, issues, workspaces -----------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List the company's agents
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Create an agent
    Create(AgentCreateArgs),
    /// Show an agent
    Show(IdArg),
    /// Change an agent (only the given fields)
    Update(AgentUpdateArgs),
    /// Delete an agent
    #[command(visible_alias = "rm")]
    Delete(IdArg),
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// The id (a UUID)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct AgentCreateArgs {
    /// Name
    #[arg(long)]
    pub name: String,
    /// Adapter type, e.g. claude_local, codex_local, process
    #[arg(long)]
    pub adapter_type: String,
    /// Adapter config as a JSON object
    #[arg(long, value_name = "JSON")]
    pub adapter_config: Option<String>,
    /// Default environment (id or name)
    #[arg(long, value_name = "ID|NAME")]
    pub default_environment: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentUpdateArgs {
    /// The id (a UUID)
    pub id: String,
    /// New name
    #[arg(long)]
    pub name: Option<String>,
    /// New adapter type
    #[arg(long)]
    pub adapter_type: Option<String>,
    /// New adapter config (a JSON object, replaces the old one)
    #[arg(long, value_name = "JSON")]
    pub adapter_config: Option<String>,
    /// Default environment (id or name; `none` clears it)
    #[arg(long, value_name = "ID|NAME|none")]
    pub default_environment: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// List the company's projects
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Create a project
    Create(ProjectCreateArgs),
    /// Show a project
    Show(IdArg),
    /// Change a project (only the given fields)
    Update(ProjectUpdateArgs),
    /// Delete a project
    #[command(visible_alias = "rm")]
    Delete(IdArg),
}

#[derive(Debug, Args)]
pub struct ProjectCreateArgs {
    /// Name
    #[arg(long)]
    pub name: String,
    /// Environment for the project's runs (id or name; `default` = the company default)
    #[arg(long, value_name = "ID|NAME|default")]
    pub environment: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProjectUpdateArgs {
    /// The id (a UUID)
    pub id: String,
    /// New name
    #[arg(long)]
    pub name: Option<String>,
    /// Environment (id or name; `default` = the company default; `none` removes the selection)
    #[arg(long, value_name = "ID|NAME|default|none")]
    pub environment: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum IssueCommand {
    /// List the company's issues
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Create an issue
    Create(IssueCreateArgs),
    /// Show an issue
    Show(IdArg),
    /// Change an issue (only the given fields)
    Update(IssueUpdateArgs),
    /// Delete an issue
    #[command(visible_alias = "rm")]
    Delete(IdArg),
}

#[derive(Debug, Args)]
pub struct IssueCreateArgs {
    /// Title
    #[arg(long)]
    pub title: String,
    /// Project id
    #[arg(long, value_name = "ID")]
    pub project: Option<String>,
    /// Agent id
    #[arg(long, value_name = "ID")]
    pub assignee: Option<String>,
    /// Pinned execution workspace id
    #[arg(long, value_name = "ID")]
    pub workspace: Option<String>,
    /// Environment for the issue's runs (id or name; `default` = the company default)
    #[arg(long, value_name = "ID|NAME|default")]
    pub environment: Option<String>,
}

#[derive(Debug, Args)]
pub struct IssueUpdateArgs {
    /// The id (a UUID)
    pub id: String,
    /// New title
    #[arg(long)]
    pub title: Option<String>,
    /// Project id (`none` clears it)
    #[arg(long, value_name = "ID|none")]
    pub project: Option<String>,
    /// Agent id (`none` clears it)
    #[arg(long, value_name = "ID|none")]
    pub assignee: Option<String>,
    /// Pinned execution workspace id (`none` clears it)
    #[arg(long, value_name = "ID|none")]
    pub workspace: Option<String>,
    /// Environment (id or name; `default` = the company default; `none` removes the selection)
    #[arg(long, value_name = "ID|NAME|default|none")]
    pub environment: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// List the company's execution workspaces
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Create an execution workspace
    Create(WorkspaceCreateArgs),
    /// Show an execution workspace
    Show(IdArg),
    /// Change an execution workspace (only the given fields)
    Update(WorkspaceUpdateArgs),
    /// Delete an execution workspace
    #[command(visible_alias = "rm")]
    Delete(IdArg),
}

#[derive(Debug, Args)]
pub struct WorkspaceCreateArgs {
    /// Directory on the control-plane host (relative paths are made absolute)
    #[arg(long, value_name = "DIR")]
    pub path: PathBuf,
    /// Project id
    #[arg(long, value_name = "ID")]
    pub project: Option<String>,
    /// Pin an environment (id or name; `default` = the company default)
    #[arg(long, value_name = "ID|NAME|default")]
    pub environment: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkspaceUpdateArgs {
    /// The id (a UUID)
    pub id: String,
    /// New directory
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Project id (`none` clears it)
    #[arg(long, value_name = "ID|none")]
    pub project: Option<String>,
    /// Environment (id or name; `default` = the company default; `none` removes the pin)
    #[arg(long, value_name = "ID|NAME|default|none")]
    pub environment: Option<String>,
}

// ---- companies, tokens, settings --------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum CompanyCommand {
    /// List companies
    #[command(visible_alias = "ls")]
    List,
    /// Create a company (with its managed local environment)
    Create(CompanyCreateArgs),
}

#[derive(Debug, Args)]
pub struct CompanyCreateArgs {
    /// Unique company name
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// List the company's secrets (metadata only)
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Store a secret; its value is read from a file or stdin, never from the command line
    Create(SecretCreateArgs),
}

#[derive(Debug, Args)]
pub struct SecretCreateArgs {
    /// Unique name within the company
    #[arg(long)]
    pub name: String,
    /// Free-text description
    #[arg(long)]
    pub description: Option<String>,
    /// File holding the value (`-` for stdin); one trailing newline is dropped
    #[arg(long, value_name = "PATH")]
    pub value_file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its value is printed once
    Create(TokenCreateArgs),
    /// List tokens (never their values)
    #[command(visible_alias = "ls")]
    List,
    /// Revoke a token
    Revoke(IdArg),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenKindArg {
    Board,
    Agent,
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Name
    /// A name to tell the token apart
    #[arg(long)]
    pub name: String,
    /// board (people, CI) or agent (one agent of one company)
    #[arg(long, value_enum, default_value = "board")]
    pub kind: TokenKindArg,
    /// Companies the token may act in (ids or names; repeatable) [default: --company or `default`]
    #[arg(long = "for-company", value_name = "ID|NAME")]
    pub companies: Vec<String>,
    /// The agent of an agent token
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// A grant such as environments:manage (repeatable)
    #[arg(long = "grant", value_name = "GRANT")]
    pub grants: Vec<String>,
    /// Make the token an instance administrator
    #[arg(long)]
    pub instance_admin: bool,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show or change the experimental flags
    Experimental(ExperimentalArgs),
}

#[derive(Debug, Args)]
pub struct ExperimentalArgs {
    /// Show the environment pages and pickers in the web UI
    #[arg(long, value_name = "BOOL")]
    pub enable_environments: Option<bool>,
}

// ---- db, completions --------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy every row from one database into an empty one (e.g. SQLite → PostgreSQL)
    Copy(DbCopyArgs),
}

#[derive(Debug, Args)]
pub struct DbCopyArgs {
    /// Source database URL (sqlite://…)
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Target database URL (postgres://…); must be empty
    #[arg(long, value_name = "URL")]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
