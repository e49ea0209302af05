//! `berth`: parse the command line, load the configuration, dispatch to a command, and turn
//! the outcome into an exit code.
//!
//! Exit codes (also in `berth --help`; see `exit.rs`):
//! 0 success · 1 other failure · 2 usage error · 3 not found (404) · 4 conflict (409) ·
//! 5 invalid input (400/422) · 6 unauthorized/forbidden (401/403) · 7 server unreachable ·
//! 8 probe/check failed.

use std::process::ExitCode;

use berth::cli::{Cli, Command};
use berth::client::ApiError;
use berth::commands;
use berth::config::{self, LogFormat, Overrides, Settings};
use berth::context::Ctx;
use berth::exit::{Exit, Failed};
use berth::output::Output;
use clap::Parser;
use serde_json::Value;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version are not errors.
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = e.print();
            return ExitCode::from(code.code());
        }
    };
    if cli.global.token.is_some() {
        eprintln!(
            "error: --token is not accepted: a token on the command line is visible to every user \
             of this machine in `ps`\nhint: set BERTH_TOKEN, or put the token in a file only you \
             can read (chmod 600) and pass --token-file PATH (or BERTH_TOKEN_FILE, berth.toml tokenFile)"
        );
        return ExitCode::from(Exit::Usage.code());
    }
    if let Command::Completions(args) = cli.command {
        return finish(commands::completions::run(args));
    }

    let serving = matches!(cli.command, Command::Serve(_));
    let overrides = overrides(&cli);
    let settings = match config::load(&overrides) {
        Ok(settings) => settings,
        Err(e) => return finish(Err(e.context("failed to load the configuration"))),
    };
    init_logging(&settings, serving);
    if !serving && !matches!(cli.command, Command::Doctor) {
        for warning in &settings.warnings {
            eprintln!("warning: {warning}");
        }
    }

    let runtime = if serving {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => return finish(Err(anyhow::Error::new(e).context("failed to start tokio"))),
    };
    let ctx = Ctx::new(settings, Output::new(cli.global.json));
    finish(runtime.block_on(dispatch(&ctx, cli.command)))
}

async fn dispatch(ctx: &Ctx, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => commands::serve::run(ctx).await,
        Command::Env(c) => commands::env::run(ctx, c).await,
        Command::Agent(c) => commands::agent::run(ctx, c).await,
        Command::Project(c) => commands::project::run(ctx, c).await,
        Command::Issue(c) => commands::issue::run(ctx, c).await,
        Command::Workspace(c) => commands::workspace::run(ctx, c).await,
        Command::Company(c) => commands::company::run(ctx, c).await,
        Command::Secret(c) => commands::secret::run(ctx, c).await,
        Command::Activity(page) => commands::activity::run(ctx, page).await,
        Command::Token(c) => commands::token::run(ctx, c).await,
        Command::Settings(c) => commands::settings::run(ctx, c).await,
        Command::Db(c) => commands::db::run(ctx, c).await,
        Command::Completions(args) => commands::completions::run(args),
        Command::Doctor => commands::doctor::run(ctx).await,
        Command::Lab(c) => commands::lab::run(ctx, c).await,
        Command::Run(args) => commands::run::start(ctx, args).await,
        Command::Runs(c) => commands::run::runs(ctx, c).await,
    }
}

/// The flag layer of the configuration.
fn overrides(cli: &Cli) -> Overrides {
    let g = &cli.global;
    let mut o = Overrides {
        home: g.home.clone(),
        server: g.server.clone(),
        token_file: g.token_file.clone(),
        company: g.company.clone(),
        log_format: g.log_format,
        timeout_secs: g.timeout,
        ..Overrides::default()
    };
    if let Command::Serve(serve) = &cli.command {
        o.bind = serve.bind.clone();
        o.database_url = serve.database_url.clone();
        o.workspace_roots = serve.workspace_roots.clone();
    }
    o
}

/// Logs go to stderr. The filter comes from `BERTH_LOG`, else `RUST_LOG`; by default the
/// server logs at `info` and client commands only warnings.
fn init_logging(settings: &Settings, serving: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serving { "info" } else { "warn" };
    let filter = ["BERTH_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match settings.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: failed to set up logging: {e}");
    }
}

/// Print a failure (`error: …`, the server's details, a hint) and pick the exit code.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    let mut exit = Exit::Failure;
    let mut hint = None;
    let mut details = None;
    for cause in error.chain() {
        if let Some(failed) = cause.downcast_ref::<Failed>() {
            exit = failed.exit;
            hint = failed.hint.clone();
            break;
        }
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            exit = api.exit();
            hint = api.hint();
            details = api.details().cloned();
            break;
        }
    }
    eprintln!("error: {error:#}");
    if let Some(details) = details {
        for line in describe_details(&details) {
            eprintln!("  {line}");
        }
    }
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(exit.code())
}

/// The server's `details` as readable lines: validation issues as `path: message`.
fn describe_details(details: &Value) -> Vec<String> {
    let issues = details
        .get("issues")
        .and_then(Value::as_array)
        .or_else(|| details.as_array());
    if let Some(issues) = issues {
        let lines: Vec<String> = issues
            .iter()
            .map(|issue| {
                // `field` is the dotted path; `path` is Paperclip's segment array.
                let path = issue
                    .get("field")
                    .or_else(|| issue.get("path"))
                    .map(|p| match p {
                        Value::String(s) => s.clone(),
                        Value::Array(parts) => parts
                            .iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join("."),
                        other => other.to_string(),
                    });
                let message = issue
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| issue.to_string(), str::to_string);
                match path.filter(|p| !p.is_empty()) {
                    Some(path) => format!("- {path}: {message}"),
                    None => format!("- {message}"),
                }
            })
            .collect();
        if !lines.is_empty() {
            return lines;
        }
    }
    if let Value::Object(map) = details {
        return map
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => format!("{key}: {text}"),
                other => format!("{key}: {other}"),
            })
            .collect();
    }
    vec![format!("details: {details}")]
}
