//! SQLite specifics: connection setup, the write transaction, value encodings (ids and
//! timestamps as text) and the dialect's SQL fragments used by the shared implementation.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Pool, Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::codec::{Unique, parse_ts_text, ts_text};
use crate::waiters::Waiters;
use crate::{Backend, Result, StoreError};

pub(super) type Db = Sqlite;
pub(super) type DbRow = SqliteRow;
pub(super) type Conn = sqlx::SqliteConnection;
pub(super) type This = SqliteStore;
pub(super) type IdValue = String;
pub(super) type TsValue = String;

pub(super) const BACKEND: Backend = Backend::Sqlite;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite store. Cheap to clone (pools and queues are shared).
#[derive(Clone)]
pub struct SqliteStore {
    writer: Pool<Sqlite>,
    reader: Pool<Sqlite>,
    waiters: Arc<Waiters>,
}

impl SqliteStore {
    /// One process per database file: it is always the one that sweeps.
    pub(super) async fn reaper_lock(&self) -> Result<bool> {
        Ok(true)
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating the file if missing) and migrate. Accepts `sqlite://path`,
    /// `sqlite:path`, `sqlite::memory:` or a plain filesystem path.
    pub async fn open(url_or_path: &str) -> Result<Self> {
        let memory = url_or_path.contains(":memory:");
        let base = if url_or_path.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url_or_path)?
        } else {
            SqliteConnectOptions::new().filename(url_or_path)
        };
        if !memory
            && let Some(parent) = base.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Invalid(format!(
                    "cannot create the database directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let options = base
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(SqliteSynchronous::Normal);
        let options = if memory {
            options
        } else {
            options.journal_mode(SqliteJournalMode::Wal)
        };
        // The single writer connection is the in-process write lock.
        // Never recycled: an in-memory database lives exactly as long as its connection.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        // An in-memory database exists only on its one connection: read through it as well.
        let reader = if memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Self {
            writer,
            reader,
            waiters: Arc::new(Waiters::default()),
        })
    }

    pub(super) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A consistent read snapshot (a deferred transaction on a reader).
    pub(super) async fn snapshot_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.reader.begin().await?)
    }

    pub(super) fn writer(&self) -> &Pool<Sqlite> {
        &self.writer
    }

    pub(super) fn reader(&self) -> &Pool<Sqlite> {
        &self.reader
    }

    pub(super) fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// Leases of these environments left `active`: wake their waiters.
    pub(super) async fn announce_released(&self, environments: &[berth_core::EnvironmentId]) {
        for e in environments {
            self.waiters.wake(*e);
        }
    }

    /// How long a waiter sleeps before re-checking on its own (no other instance can release
    /// a lease of an embedded database, so only as a safety net).
    pub(super) const POLL: Duration = Duration::from_secs(5);
}

pub(super) fn id(u: Uuid) -> IdValue {
    u.hyphenated().to_string()
}

pub(super) fn get_id(row: &DbRow, col: &str) -> Result<Uuid> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: bad uuid {s:?}: {e}")))
}

pub(super) fn get_oid(row: &DbRow, col: &str) -> Result<Option<Uuid>> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| {
        Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: bad uuid {s:?}: {e}")))
    })
    .transpose()
}

pub(super) fn ts(t: DateTime<Utc>) -> TsValue {
    ts_text(t)
}

pub(super) fn get_ts(row: &DbRow, col: &str) -> Result<DateTime<Utc>> {
    let s: String = row.try_get(col)?;
    parse_ts_text(col, &s)
}

pub(super) fn get_ots(row: &DbRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| parse_ts_text(col, &s)).transpose()
}

/// The text of `key` in the JSON object column `col`.
pub(super) fn json_text(col: &str, key: &str) -> String {
    format!("json_extract({col}, '$.{key}')")
}

/// Writes are serialized by the single writer connection: no row locks exist or are needed.
/// A page of environments as ONE JSON array built by the database: decoding a thousand rows
/// one by one through the driver cost ~20 µs each; one document parses in a fraction of that.
/// Same filters and parameters as the row query ($1 company, $2 cursor, $3 status, $4 driver,
/// $5 limit).
pub(super) const ENVIRONMENTS_JSON: &str = "SELECT json_group_array(json_object(\
    'id', id, 'companyId', company_id, 'name', name, 'description', description, \
    'driver', driver, 'status', status, 'config', json(config), 'metadata', json(metadata), \
    'capacity', capacity, 'leasePolicy', lease_policy, 'createdAt', created_at, \
    'updatedAt', updated_at)) FROM (SELECT * FROM environments WHERE company_id = $1 \
    AND ($2 IS NULL OR id > $2) AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR driver = $4) \
    ORDER BY id LIMIT $5)";

pub(super) const LOCK_SHARE: &str = "";
pub(super) const LOCK_SHARE_BASE: &str = "";
pub(super) const LOCK_UPDATE: &str = "";
pub(super) const SKIP_LOCKED: &str = "";
pub(super) const BOOTSTRAP_LOCK: Option<&str> = None;
/// The next fence, read by the inserting statement; the `environment_leases_advance_fence`
/// trigger then advances the counter (writes are serialized, so nobody reads it in between).
pub(super) const FENCE_EXPR: &str = "(SELECT value + 1 FROM lease_fence WHERE id = 1)";
/// After an import: the next fence is above every imported one.
pub(super) const FENCE_FLOOR: &str = "UPDATE lease_fence SET value = MAX(value, $1) WHERE id = 1";

pub(super) fn unique_violation(e: &sqlx::Error) -> Option<Unique> {
    let db = e.as_database_error()?;
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    // SQLite names the columns, not the index: "UNIQUE constraint failed: t.a, t.b".
    let cols = db.message().rsplit(": ").next().unwrap_or_default();
    Some(match cols {
        "environments.company_id, environments.name" => Unique::EnvironmentName,
        "environments.company_id" => Unique::LocalEnvironment,
        "secrets.company_id, secrets.name" => Unique::SecretName,
        "environment_leases.environment_id, environment_leases.scope_key" => {
            Unique::ActiveLeaseScope
        }
        "run_events.run_id, run_events.seq" => Unique::RunEventSeq,
        "api_tokens.sha256" => Unique::TokenHash,
        _ => Unique::Other,
    })
}
