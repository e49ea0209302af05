//! `berth db copy --from sqlite://… --to postgres://…`: a direct database operation, without a
//! server. Every row is exported from the source through the `Store` trait and imported into
//! the (empty) target in one transaction; the master key does not move, so secrets stay
//! readable only by a server that has the same key.

use anyhow::Context;
use berth_store::{Dump, Store, StoreError};
use serde::Serialize;

use crate::cli::{DbCommand, DbCopyArgs};
use crate::commands::serve::redact_url;
use crate::context::Ctx;
use crate::exit::{Exit, Failed};

pub async fn run(ctx: &Ctx, command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::Copy(args) => copy_command(ctx, args).await,
    }
}

/// Rows per table, in import order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCount {
    pub table: &'static str,
    pub rows: usize,
}

/// How many rows of each table a dump holds.
pub fn counts(dump: &Dump) -> Vec<TableCount> {
    let c = |table, rows| TableCount { table, rows };
    vec![
        c("companies", dump.companies.len()),
        c("environments", dump.environments.len()),
        c("secrets", dump.secrets.len()),
        c("agents", dump.agents.len()),
        c("projects", dump.projects.len()),
        c("execution_workspaces", dump.execution_workspaces.len()),
        c("issues", dump.issues.len()),
        c("environment_leases", dump.leases.len()),
        c("runs", dump.runs.len()),
        c("run_events", dump.run_events.len()),
        c("api_tokens", dump.tokens.len()),
        c("activity_log", dump.activity.len()),
    ]
}

/// Copy every row of `from` into `to` (which must be empty). Returns the counts copied.
pub async fn copy(from: &dyn Store, to: &dyn Store) -> anyhow::Result<Vec<TableCount>> {
    let dump = from
        .export_all()
        .await
        .map_err(store_failure)
        .context("failed to export the source database")?;
    let counts = counts(&dump);
    to.import_all(dump)
        .await
        .map_err(store_failure)
        .context("failed to import into the target database")?;
    Ok(counts)
}

async fn copy_command(ctx: &Ctx, args: DbCopyArgs) -> anyhow::Result<()> {
    let from = open_store(&args.from, true)
        .await
        .with_context(|| format!("failed to open the source {}", redact_url(&args.from)))?;
    let to = open_store(&args.to, false)
        .await
        .with_context(|| format!("failed to open the target {}", redact_url(&args.to)))?;
    let counts = copy(from.as_ref(), to.as_ref()).await?;
    if ctx.out.json {
        return ctx.out.print_json(&serde_json::json!({
            "from": redact_url(&args.from),
            "to": redact_url(&args.to),
            "tables": counts,
        }));
    }
    let total: usize = counts.iter().map(|c| c.rows).sum();
    ctx.out.table(
        &["TABLE", "ROWS"],
        counts
            .iter()
            .map(|c| vec![c.table.to_string(), c.rows.to_string()])
            .collect(),
        "",
    )?;
    ctx.out.done(format!(
        "copied {total} rows from {} to {} (instance settings included)",
        redact_url(&args.from),
        redact_url(&args.to)
    ))
}

/// A store error with the exit code its kind deserves.
fn store_failure(e: StoreError) -> anyhow::Error {
    let exit = match &e {
        StoreError::Conflict { .. } => Exit::Conflict,
        StoreError::NotFound { .. } => Exit::NotFound,
        StoreError::Invalid(_) => Exit::Invalid,
        _ => Exit::Failure,
    };
    let hint = match &e {
        StoreError::Conflict {
            code: berth_store::ConflictCode::NotEmpty,
            ..
        } => Some("the target must be an empty database (create a fresh one and retry)"),
        _ => None,
    };
    let failed = Failed::new(exit, e.to_string());
    match hint {
        Some(h) => failed.with_hint(h).into(),
        None => failed.into(),
    }
}

/// Open a store by URL scheme. The source must already exist (SQLite would otherwise create
/// an empty file and "copy" nothing).
async fn open_store(url: &str, must_exist: bool) -> anyhow::Result<Box<dyn Store>> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "sqlite" => {
            if must_exist
                && let Some(path) = sqlite_path(url)
                && !std::path::Path::new(&path).exists()
            {
                return Err(Failed::new(
                    Exit::NotFound,
                    format!("the SQLite database {path} does not exist"),
                )
                .with_hint("check the path (the default is $BERTH_HOME/berth.db)")
                .into());
            }
            let store = berth_store::sqlite::SqliteStore::open(url)
                .await
                .map_err(store_failure)?;
            Ok(Box::new(store))
        }
        "postgres" | "postgresql" => {
            let store = berth_store::postgres::PgStore::connect(url)
                .await
                .map_err(store_failure)?;
            Ok(Box::new(store))
        }
        _ => Err(Failed::usage(format!(
            "unsupported database URL {}: expected sqlite://… or postgres://…",
            redact_url(url)
        ))
        .into()),
    }
}

/// The file of a `sqlite://path?opts` / `sqlite:path` URL; `None` for in-memory databases.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.contains(":memory:") {
        None
    } else {
        Some(path.to_string())
    }
}
