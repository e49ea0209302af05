//! PostgreSQL specifics: the pool, migrations under the migrator's advisory lock, the
//! `LISTEN/NOTIFY` channel that wakes waiters of other instances, native value encodings and
//! the dialect's SQL fragments used by the shared implementation.

use std::sync::Arc;
use std::time::Duration;

use berth_core::EnvironmentId;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions, PgRow};
use sqlx::{Pool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::codec::Unique;
use crate::waiters::Waiters;
use crate::{Backend, Result, StoreError};

pub(super) type Db = Postgres;
pub(super) type DbRow = PgRow;
pub(super) type Conn = sqlx::PgConnection;
pub(super) type This = PgStore;
pub(super) type IdValue = Uuid;
pub(super) type TsValue = DateTime<Utc>;

/// A page of environments as ONE JSON array built by the database (see the SQLite twin).
pub(super) const ENVIRONMENTS_JSON: &str = "SELECT COALESCE(json_agg(json_build_object(\
    'id', id, 'companyId', company_id, 'name', name, 'description', description, \
    'driver', driver, 'status', status, 'config', config, 'metadata', metadata, \
    'capacity', capacity, 'leasePolicy', lease_policy, 'createdAt', created_at, \
    'updatedAt', updated_at) ORDER BY id), '[]'::json)::text FROM (SELECT * FROM environments \
    WHERE company_id = $1 AND ($2::uuid IS NULL OR id > $2) AND ($3::text IS NULL OR status = $3) \
    AND ($4::text IS NULL OR driver = $4) ORDER BY id LIMIT $5) e";

pub(super) const BACKEND: Backend = Backend::Postgres;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel announcing "a lease of environment X left `active`" (payload
/// `<environment id> <instance id>`).
const CHANNEL: &str = "berth_lease_released";

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Postgres>,
    waiters: Arc<Waiters>,
    instance: Uuid,
    announcer: tokio::sync::mpsc::UnboundedSender<EnvironmentId>,
    _tasks: Arc<[BackgroundTask; 2]>,
    /// The connection holding the reaper's advisory lock while this instance is the one that
    /// sweeps (a session lock: it goes with the connection if the instance dies).
    reaper_lock: Arc<tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<Postgres>>>>,
}

/// The advisory lock key of the lease reaper (`berth-reaper` folded into an i64).
const REAPER_LOCK_KEY: i64 = 0x6265_7274_685f_7270;

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Stops a background task when the last clone of the store goes away.
struct BackgroundTask(tokio::task::JoinHandle<()>);

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    /// Connect, run migrations (serialized across instances by an advisory lock) and start
    /// listening for lease releases of other instances.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, 16).await
    }

    /// As [`PgStore::connect`] with an explicit pool size.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let waiters = Arc::new(Waiters::default());
        let instance = Uuid::new_v4();
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let listening = tokio::spawn(listen(listener, waiters.clone(), instance));
        let (announcer, queue) = tokio::sync::mpsc::unbounded_channel();
        let announcing = tokio::spawn(announce(pool.clone(), queue, instance));
        Ok(Self {
            pool,
            waiters,
            instance,
            announcer,
            _tasks: Arc::new([BackgroundTask(listening), BackgroundTask(announcing)]),
            reaper_lock: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// Hold (or take) the reaper's advisory lock: `true` while this instance is the one
    /// that sweeps. A lost connection gives the lock up, and another instance takes it.
    pub(super) async fn reaper_lock(&self) -> Result<bool> {
        let mut held = self.reaper_lock.lock().await;
        if let Some(conn) = held.as_mut() {
            if sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok() {
                return Ok(true);
            }
            // The connection (and with it the lock) is gone.
            *held = None;
        }
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(REAPER_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        if got {
            *held = Some(conn);
        }
        Ok(got)
    }

    pub fn pool(&self) -> &Pool<Postgres> {
        &self.pool
    }

    pub(super) async fn write_tx(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    pub(super) async fn snapshot_tx(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?)
    }

    pub(super) fn writer(&self) -> &Pool<Postgres> {
        &self.pool
    }

    pub(super) fn reader(&self) -> &Pool<Postgres> {
        &self.pool
    }

    pub(super) fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// Wake local waiters now, and other instances' waiters through `NOTIFY` sent by a
    /// background task. A transaction that notifies takes PostgreSQL's global notification
    /// lock at commit, which serializes such commits: releases therefore never notify
    /// themselves; the announcer batches what happened since its last round into one
    /// notifying statement.
    pub(super) async fn announce_released(&self, environments: &[EnvironmentId]) {
        for e in environments {
            self.waiters.wake(*e);
            // Only fails when the announcer is gone (store shutting down).
            let _ = self.announcer.send(*e);
        }
    }

    /// Waiters re-check this often even without a notification (a lost `NOTIFY` while the
    /// listener reconnects must not strand them until their deadline).
    pub(super) const POLL: Duration = Duration::from_millis(1000);
}

async fn announce(
    pool: Pool<Postgres>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<EnvironmentId>,
    instance: Uuid,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(e) = queue.try_recv() {
            if !batch.contains(&e) {
                batch.push(e);
            }
        }
        let payloads: Vec<String> = batch.iter().map(|e| format!("{e} {instance}")).collect();
        if let Err(err) = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&pool)
            .await
        {
            // Remote waiters still poll; a lost announcement only delays them.
            tracing::warn!(error = %err, "failed to announce lease releases");
        }
    }
}

async fn listen(mut listener: PgListener, waiters: Arc<Waiters>, instance: Uuid) {
    loop {
        match listener.recv().await {
            Ok(n) => {
                let mut parts = n.payload().split(' ');
                let env = parts.next().and_then(|s| s.parse::<EnvironmentId>().ok());
                let from = parts.next().and_then(|s| s.parse::<Uuid>().ok());
                if let Some(env) = env
                    && from != Some(instance)
                {
                    waiters.wake(env);
                }
            }
            Err(err) => {
                // recv reconnects on the next call; waiters poll meanwhile.
                tracing::warn!(error = %err, "lease release listener interrupted");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

pub(super) fn id(u: Uuid) -> IdValue {
    u
}

pub(super) fn get_id(row: &DbRow, col: &str) -> Result<Uuid> {
    Ok(row.try_get(col)?)
}

pub(super) fn get_oid(row: &DbRow, col: &str) -> Result<Option<Uuid>> {
    Ok(row.try_get(col)?)
}

pub(super) fn ts(t: DateTime<Utc>) -> TsValue {
    t
}

pub(super) fn get_ts(row: &DbRow, col: &str) -> Result<DateTime<Utc>> {
    Ok(row.try_get(col)?)
}

pub(super) fn get_ots(row: &DbRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(row.try_get(col)?)
}

pub(super) fn json_text(col: &str, key: &str) -> String {
    format!("({col} ->> '{key}')")
}

pub(super) const LOCK_SHARE: &str = " FOR SHARE";
/// The environment row of a one-statement acquisition (`base`), held against capacity changes.
pub(super) const LOCK_SHARE_BASE: &str = " FOR SHARE OF base";
pub(super) const LOCK_UPDATE: &str = " FOR UPDATE";
pub(super) const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";
/// Serializes first-start bootstrap across instances.
pub(super) const BOOTSTRAP_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(7411000001)");
pub(super) const FENCE_EXPR: &str = "nextval('lease_fence_seq')";
pub(super) const FENCE_FLOOR: &str =
    "SELECT setval('lease_fence_seq', GREATEST($1, (SELECT last_value FROM lease_fence_seq)))";

pub(super) fn unique_violation(e: &sqlx::Error) -> Option<Unique> {
    let db = e.as_database_error()?;
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    Some(match db.constraint().unwrap_or_default() {
        "environments_company_name_key" => Unique::EnvironmentName,
        "environments_one_local_per_company" => Unique::LocalEnvironment,
        "secrets_company_name_key" => Unique::SecretName,
        "environment_leases_active_scope" => Unique::ActiveLeaseScope,
        "run_events_pkey" => Unique::RunEventSeq,
        "api_tokens_sha256_key" => Unique::TokenHash,
        _ => Unique::Other,
    })
}
