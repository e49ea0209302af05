//! The [`Store`] implementation, written once and compiled once per backend: this file is
//! included (`#[path]`) by `sqlite/mod.rs` and `postgres/mod.rs`, and `super::backend` supplies
//! the concrete database, its value encodings (ids as text or uuid, timestamps as fixed-width
//! text or timestamptz) and its dialect fragments (row locks, `SKIP LOCKED`, the fence
//! counter). Each compiled copy is fully concrete, so every query is type-checked against its
//! own driver; the SQL itself is the common subset both dialects accept (`$n` parameters,
//! `RETURNING`, `ON CONFLICT … DO NOTHING` on a partial index).

use std::time::Instant;

use async_trait::async_trait;
use berth_core::lease::{LeaseEvent, RunOutcome, release_target, transition};
use berth_core::model::*;
use berth_core::*;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};

use super::backend::{self as b, Conn, Db, DbRow, This};
use crate::codec::{self, Blocked, Unique, now};
use crate::waiters::{Ticket, Turn, Waiters};
use crate::*;

// ---- decoding -----------------------------------------------------------------------------

fn decode_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Database(other),
    }
}

fn get<'r, T>(row: &'r DbRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get(col).map_err(decode_err)
}

fn get_enum<E>(row: &DbRow, col: &str) -> Result<E>
where
    E: std::str::FromStr,
    E::Err: std::fmt::Display,
{
    let s: String = get(row, col)?;
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn get_oenum<E>(row: &DbRow, col: &str) -> Result<Option<E>>
where
    E: std::str::FromStr,
    E::Err: std::fmt::Display,
{
    let s: Option<String> = get(row, col)?;
    s.map(|s| {
        s.parse()
            .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
    })
    .transpose()
}

fn get_json(row: &DbRow, col: &str) -> Result<Value> {
    Ok(get::<Json<Value>>(row, col)?.0)
}

fn get_ojson(row: &DbRow, col: &str) -> Result<Option<Value>> {
    Ok(get::<Option<Json<Value>>>(row, col)?.map(|j| j.0))
}

fn get_json_as<T: serde::de::DeserializeOwned>(row: &DbRow, col: &str) -> Result<T> {
    let v = get_json(row, col)?;
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn company(r: &DbRow) -> Result<Company> {
    Ok(Company {
        id: CompanyId(b::get_id(r, "id")?),
        name: get(r, "name")?,
        default_environment_id: b::get_oid(r, "default_environment_id")?.map(EnvironmentId),
        host_execution: get(r, "host_execution")?,
        created_at: b::get_ts(r, "created_at")?,
    })
}

fn environment(r: &DbRow) -> Result<Environment> {
    Ok(Environment {
        id: EnvironmentId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        name: get(r, "name")?,
        description: get(r, "description")?,
        driver: get_enum(r, "driver")?,
        status: get_enum(r, "status")?,
        config: get_json(r, "config")?,
        metadata: get_ojson(r, "metadata")?,
        capacity: get(r, "capacity")?,
        lease_policy: get_enum(r, "lease_policy")?,
        created_at: b::get_ts(r, "created_at")?,
        updated_at: b::get_ts(r, "updated_at")?,
    })
}

fn lease(r: &DbRow) -> Result<Lease> {
    Ok(Lease {
        id: LeaseId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        environment_id: EnvironmentId(b::get_id(r, "environment_id")?),
        execution_workspace_id: b::get_oid(r, "execution_workspace_id")?.map(ExecutionWorkspaceId),
        issue_id: b::get_oid(r, "issue_id")?.map(IssueId),
        run_id: b::get_oid(r, "run_id")?.map(RunId),
        agent_id: b::get_oid(r, "agent_id")?.map(AgentId),
        status: get_enum(r, "status")?,
        lease_policy: get_enum(r, "lease_policy")?,
        scope_key: get(r, "scope_key")?,
        fence: get(r, "fence")?,
        provider: get(r, "provider")?,
        provider_lease_id: get(r, "provider_lease_id")?,
        resumed_from_lease_id: b::get_oid(r, "resumed_from_lease_id")?.map(LeaseId),
        acquired_at: b::get_ts(r, "acquired_at")?,
        last_used_at: b::get_ts(r, "last_used_at")?,
        heartbeat_at: b::get_ts(r, "heartbeat_at")?,
        expires_at: b::get_ts(r, "expires_at")?,
        released_at: b::get_ots(r, "released_at")?,
        failure_reason: get(r, "failure_reason")?,
        cleanup_status: get_oenum(r, "cleanup_status")?,
        metadata: get_ojson(r, "metadata")?,
        created_at: b::get_ts(r, "created_at")?,
        updated_at: b::get_ts(r, "updated_at")?,
    })
}

fn secret_meta(r: &DbRow) -> Result<SecretMeta> {
    Ok(SecretMeta {
        id: SecretId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        name: get(r, "name")?,
        description: get(r, "description")?,
        version: get(r, "version")?,
        created_at: b::get_ts(r, "created_at")?,
        updated_at: b::get_ts(r, "updated_at")?,
    })
}

fn secret_record(r: &DbRow) -> Result<SecretRecord> {
    Ok(SecretRecord {
        meta: secret_meta(r)?,
        ciphertext: get(r, "ciphertext")?,
        nonce: get(r, "nonce")?,
    })
}

fn agent(r: &DbRow) -> Result<Agent> {
    Ok(Agent {
        id: AgentId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        name: get(r, "name")?,
        adapter_type: get(r, "adapter_type")?,
        adapter_config: get_json(r, "adapter_config")?,
        default_environment_id: b::get_oid(r, "default_environment_id")?.map(EnvironmentId),
        grants: get_json_as(r, "grants")?,
        created_at: b::get_ts(r, "created_at")?,
        updated_at: b::get_ts(r, "updated_at")?,
    })
}

fn project(r: &DbRow) -> Result<Project> {
    Ok(Project {
        id: ProjectId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        name: get(r, "name")?,
        execution_workspace_policy: get_json(r, "execution_workspace_policy")?,
    })
}

fn issue(r: &DbRow) -> Result<Issue> {
    Ok(Issue {
        id: IssueId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        project_id: b::get_oid(r, "project_id")?.map(ProjectId),
        title: get(r, "title")?,
        assignee_agent_id: b::get_oid(r, "assignee_agent_id")?.map(AgentId),
        execution_workspace_id: b::get_oid(r, "execution_workspace_id")?.map(ExecutionWorkspaceId),
        execution_workspace_settings: get_json(r, "execution_workspace_settings")?,
    })
}

fn workspace(r: &DbRow) -> Result<ExecutionWorkspace> {
    Ok(ExecutionWorkspace {
        id: ExecutionWorkspaceId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        project_id: b::get_oid(r, "project_id")?.map(ProjectId),
        local_path: get(r, "local_path")?,
        config: get_json(r, "config")?,
    })
}

fn run(r: &DbRow) -> Result<Run> {
    Ok(Run {
        id: RunId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        agent_id: AgentId(b::get_id(r, "agent_id")?),
        issue_id: b::get_oid(r, "issue_id")?.map(IssueId),
        execution_workspace_id: b::get_oid(r, "execution_workspace_id")?.map(ExecutionWorkspaceId),
        environment_id: b::get_oid(r, "environment_id")?.map(EnvironmentId),
        environment_source: get_oenum(r, "environment_source")?,
        lease_id: b::get_oid(r, "lease_id")?.map(LeaseId),
        status: get_enum(r, "status")?,
        error_code: get(r, "error_code")?,
        error_message: get(r, "error_message")?,
        exit_code: get(r, "exit_code")?,
        prompt: get(r, "prompt")?,
        session_params: get_ojson(r, "session_params")?,
        result: get_ojson(r, "result")?,
        queued_at: b::get_ts(r, "queued_at")?,
        started_at: b::get_ots(r, "started_at")?,
        finished_at: b::get_ots(r, "finished_at")?,
        claimed_by: get(r, "claimed_by")?,
        phase: get(r, "phase")?,
    })
}

fn run_event(r: &DbRow) -> Result<RunEvent> {
    Ok(RunEvent {
        run_id: RunId(b::get_id(r, "run_id")?),
        seq: get(r, "seq")?,
        at: b::get_ts(r, "at")?,
        stream: get(r, "stream")?,
        payload: get_json(r, "payload")?,
    })
}

fn token(r: &DbRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: TokenId(b::get_id(r, "id")?),
        name: get(r, "name")?,
        prefix: get(r, "prefix")?,
        kind: get_enum(r, "kind")?,
        company_ids: get_json_as(r, "company_ids")?,
        agent_id: b::get_oid(r, "agent_id")?.map(AgentId),
        grants: get_json_as(r, "grants")?,
        instance_admin: get(r, "instance_admin")?,
        created_at: b::get_ts(r, "created_at")?,
        last_used_at: b::get_ots(r, "last_used_at")?,
        revoked_at: b::get_ots(r, "revoked_at")?,
    })
}

fn activity(r: &DbRow) -> Result<ActivityEntry> {
    Ok(ActivityEntry {
        id: ActivityId(b::get_id(r, "id")?),
        company_id: CompanyId(b::get_id(r, "company_id")?),
        actor_type: get(r, "actor_type")?,
        actor_id: get(r, "actor_id")?,
        action: get(r, "action")?,
        entity_type: get(r, "entity_type")?,
        entity_id: get(r, "entity_id")?,
        details: get_json(r, "details")?,
        created_at: b::get_ts(r, "created_at")?,
    })
}

fn rows<T>(rows: Vec<DbRow>, f: fn(&DbRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

// ---- encoding helpers ---------------------------------------------------------------------

fn oid<I: Into<uuid::Uuid>>(v: Option<I>) -> Option<b::IdValue> {
    v.map(|i| b::id(i.into()))
}

fn ots(v: Option<DateTime<Utc>>) -> Option<b::TsValue> {
    v.map(b::ts)
}

fn sql(s: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(s)
}

/// The row `id` of `table`, locked for update inside `tx` (tables named by the code, never
/// input); `NotFound` naming `entity` when it is missing.
async fn locked_by_id<T>(
    tx: &mut Conn,
    table: &'static str,
    entity: &'static str,
    id: uuid::Uuid,
    decode: fn(&DbRow) -> Result<T>,
) -> Result<T> {
    let row = sqlx::query(sql(format!(
        "SELECT * FROM {table} WHERE id = $1{}",
        b::LOCK_UPDATE
    )))
    .bind(b::id(id))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::not_found(entity, id))?;
    decode(&row)
}

fn is_fk_violation(e: &sqlx::Error) -> bool {
    // SQLite reports `ON DELETE RESTRICT` with SQLITE_CONSTRAINT_TRIGGER, not _FOREIGNKEY.
    e.as_database_error().is_some_and(|d| {
        d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
            || d.message() == "FOREIGN KEY constraint failed"
    })
}

/// A foreign key names a row that does not exist.
fn fk_or(e: sqlx::Error, what: &str) -> StoreError {
    if is_fk_violation(&e) {
        StoreError::Invalid(format!("{what} refers to a row that does not exist"))
    } else {
        StoreError::Database(e)
    }
}

fn env_write_err(e: sqlx::Error, name: &str) -> StoreError {
    match b::unique_violation(&e) {
        Some(Unique::EnvironmentName) => codec::environment_name_taken(name),
        Some(Unique::LocalEnvironment) => codec::local_exists(),
        _ if is_fk_violation(&e) => StoreError::not_found("company", "of the environment"),
        _ => StoreError::Database(e),
    }
}

fn lease_id_of(l: &Lease) -> String {
    l.id.to_string()
}

// ---- inserts shared by create_* and import_all --------------------------------------------

async fn insert_company(c: &mut Conn, v: &Company) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO companies (id, name, default_environment_id, host_execution, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(b::id(v.id.0))
    .bind(&v.name)
    .bind(oid(v.default_environment_id.map(|e| e.0)))
    .bind(v.host_execution)
    .bind(b::ts(v.created_at))
    .execute(c)
    .await
    .map(drop)
}

async fn insert_environment(c: &mut Conn, v: &Environment) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO environments (id, company_id, name, description, driver, status, config, \
         metadata, capacity, lease_policy, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(b::id(v.id.0))
    .bind(b::id(v.company_id.0))
    .bind(&v.name)
    .bind(&v.description)
    .bind(v.driver.as_str())
    .bind(v.status.as_str())
    .bind(Json(&v.config))
    .bind(v.metadata.as_ref().map(Json))
    .bind(v.capacity)
    .bind(v.lease_policy.as_str())
    .bind(b::ts(v.created_at))
    .bind(b::ts(v.updated_at))
    .execute(c)
    .await
    .map(drop)
}

async fn insert_secret(
    c: &mut Conn,
    m: &SecretMeta,
    ciphertext: &[u8],
    nonce: &[u8],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO secrets (id, company_id, name, description, ciphertext, nonce, version, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(b::id(m.id.0))
    .bind(b::id(m.company_id.0))
    .bind(&m.name)
    .bind(&m.description)
    .bind(ciphertext)
    .bind(nonce)
    .bind(m.version)
    .bind(b::ts(m.created_at))
    .bind(b::ts(m.updated_at))
    .execute(c)
    .await
    .map_err(|e| match b::unique_violation(&e) {
        Some(Unique::SecretName) => codec::secret_name_taken(&m.name),
        _ => fk_or(e, "secret"),
    })
    .map(drop)
}

async fn insert_new_secrets(c: &mut Conn, secrets: &[NewSecret]) -> Result<()> {
    let now = now();
    for s in secrets {
        let meta = SecretMeta {
            id: s.id,
            company_id: s.company_id,
            name: s.name.clone(),
            description: s.description.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        insert_secret(c, &meta, &s.ciphertext, &s.nonce).await?;
    }
    Ok(())
}

async fn insert_agent(c: &mut Conn, v: &Agent) -> Result<()> {
    sqlx::query(
        "INSERT INTO agents (id, company_id, name, adapter_type, adapter_config, \
         default_environment_id, grants, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(b::id(v.id.0))
    .bind(b::id(v.company_id.0))
    .bind(&v.name)
    .bind(&v.adapter_type)
    .bind(Json(&v.adapter_config))
    .bind(oid(v.default_environment_id.map(|e| e.0)))
    .bind(Json(&v.grants))
    .bind(b::ts(v.created_at))
    .bind(b::ts(v.updated_at))
    .execute(c)
    .await
    .map_err(|e| fk_or(e, "agent"))
    .map(drop)
}

async fn insert_project(c: &mut Conn, v: &Project) -> Result<()> {
    sqlx::query(
        "INSERT INTO projects (id, company_id, name, execution_workspace_policy) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(b::id(v.id.0))
    .bind(b::id(v.company_id.0))
    .bind(&v.name)
    .bind(Json(&v.execution_workspace_policy))
    .execute(c)
    .await
    .map_err(|e| fk_or(e, "project"))
    .map(drop)
}

async fn insert_workspace(c: &mut Conn, v: &ExecutionWorkspace) -> Result<()> {
    sqlx::query(
        "INSERT INTO execution_workspaces (id, company_id, project_id, local_path, config) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(b::id(v.id.0))
    .bind(b::id(v.company_id.0))
    .bind(oid(v.project_id.map(|p| p.0)))
    .bind(&v.local_path)
    .bind(Json(&v.config))
    .execute(c)
    .await
    .map_err(|e| fk_or(e, "execution workspace"))
    .map(drop)
}

async fn insert_issue(c: &mut Conn, v: &Issue) -> Result<()> {
    sqlx::query(
        "INSERT INTO issues (id, company_id, project_id, title, assignee_agent_id, \
         execution_workspace_id, execution_workspace_settings) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(b::id(v.id.0))
    .bind(b::id(v.company_id.0))
    .bind(oid(v.project_id.map(|p| p.0)))
    .bind(&v.title)
    .bind(oid(v.assignee_agent_id.map(|a| a.0)))
    .bind(oid(v.execution_workspace_id.map(|w| w.0)))
    .bind(Json(&v.execution_workspace_settings))
    .execute(c)
    .await
    .map_err(|e| fk_or(e, "issue"))
    .map(drop)
}

async fn insert_lease(c: &mut Conn, v: &Lease) -> Result<()> {
    sqlx::query(
        "INSERT INTO environment_leases (id, company_id, environment_id, \
         execution_workspace_id, issue_id, run_id, agent_id, status, lease_policy, scope_key, \
         fence, provider, provider_lease_id, resumed_from_lease_id, acquired_at, last_used_at, \
         heartbeat_at, expires_at, released_at, failure_reason, cleanup_status, metadata, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
         $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
    )
    .bind(b::id(v.id.0))
    .bind(b::id(v.company_id.0))
    .bind(b::id(v.environment_id.0))
    .bind(oid(v.execution_workspace_id.map(|x| x.0)))
    .bind(oid(v.issue_id.map(|x| x.0)))
    .bind(oid(v.run_id.map(|x| x.0)))
    .bind(oid(v.agent_id.map(|x| x.0)))
    .bind(v.status.as_str())
    .bind(v.lease_policy.as_str())
    .bind(&v.scope_key)
    .bind(v.fence)
    .bind(&v.provider)
    .bind(&v.provider_lease_id)
    .bind(oid(v.resumed_from_lease_id.map(|x| x.0)))
    .bind(b::ts(v.acquired_at))
    .bind(b::ts(v.last_used_at))
    .bind(b::ts(v.heartbeat_at))
    .bind(b::ts(v.expires_at))
    .bind(ots(v.released_at))
    .bind(&v.failure_reason)
    .bind(v.cleanup_status.map(|s| s.as_str()))
    .bind(v.metadata.as_ref().map(Json))
    .bind(b::ts(v.created_at))
    .bind(b::ts(v.updated_at))
    .execute(c)
    .await
    .map_err(|e| fk_or(e, "lease"))
    .map(drop)
}

async fn insert_run(c: &mut Conn, v: &Run) -> Result<()> {
    sqlx::query(
        "INSERT INTO runs (id, company_id, agent_id, issue_id, execution_workspace_id, \
         environment_id, environment_source, lease_id, status, error_code, error_message, \
         exit_code, prompt, session_params, result, queued_at, started_at, finished_at, \
         claimed_by, phase) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
         $15, $16, $17, $18, $19, $20)",
    )
    .bind(b::id(v.id.0))
    .bind(b::id(v.company_id.0))
    .bind(b::id(v.agent_id.0))
    .bind(oid(v.issue_id.map(|x| x.0)))
    .bind(oid(v.execution_workspace_id.map(|x| x.0)))
    .bind(oid(v.environment_id.map(|x| x.0)))
    .bind(v.environment_source.map(|s| s.as_str()))
    .bind(oid(v.lease_id.map(|x| x.0)))
    .bind(v.status.as_str())
    .bind(&v.error_code)
    .bind(&v.error_message)
    .bind(v.exit_code)
    .bind(&v.prompt)
    .bind(v.session_params.as_ref().map(Json))
    .bind(v.result.as_ref().map(Json))
    .bind(b::ts(v.queued_at))
    .bind(ots(v.started_at))
    .bind(ots(v.finished_at))
    .bind(&v.claimed_by)
    .bind(&v.phase)
    .execute(c)
    .await
    .map_err(|e| fk_or(e, "run"))
    .map(drop)
}

async fn insert_run_event(c: &mut Conn, v: &RunEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO run_events (run_id, seq, at, stream, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(b::id(v.run_id.0))
    .bind(v.seq)
    .bind(b::ts(v.at))
    .bind(&v.stream)
    .bind(Json(&v.payload))
    .execute(c)
    .await
    .map_err(|e| fk_or(e, "run event"))
    .map(drop)
}

async fn insert_token(c: &mut Conn, v: &ApiToken, sha256_hex: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_tokens (id, name, prefix, sha256, kind, company_ids, agent_id, grants, \
         instance_admin, created_at, last_used_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(b::id(v.id.0))
    .bind(&v.name)
    .bind(&v.prefix)
    .bind(sha256_hex)
    .bind(v.kind.as_str())
    .bind(Json(&v.company_ids))
    .bind(oid(v.agent_id.map(|x| x.0)))
    .bind(Json(&v.grants))
    .bind(v.instance_admin)
    .bind(b::ts(v.created_at))
    .bind(ots(v.last_used_at))
    .bind(ots(v.revoked_at))
    .execute(c)
    .await
    .map_err(|e| match b::unique_violation(&e) {
        Some(Unique::TokenHash) => StoreError::Invalid("a token with this hash exists".into()),
        _ => StoreError::Database(e),
    })
    .map(drop)
}

async fn insert_activity(c: &mut Conn, v: &ActivityEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO activity_log (id, company_id, actor_type, actor_id, action, entity_type, \
         entity_id, details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(b::id(v.id.0))
    .bind(b::id(v.company_id.0))
    .bind(&v.actor_type)
    .bind(&v.actor_id)
    .bind(&v.action)
    .bind(&v.entity_type)
    .bind(&v.entity_id)
    .bind(Json(&v.details))
    .bind(b::ts(v.created_at))
    .execute(c)
    .await
    .map_err(|e| fk_or(e, "activity"))
    .map(drop)
}

fn managed_local(company_id: CompanyId) -> Environment {
    let now = now();
    Environment {
        id: EnvironmentId::new(),
        company_id,
        name: "Local".into(),
        description: None,
        driver: Driver::Local,
        status: EnvironmentStatus::Active,
        config: json!({}),
        metadata: Some(json!({"managedByBerth": true, "defaultForCompany": true})),
        capacity: None,
        lease_policy: Driver::Local.default_lease_policy(),
        created_at: now,
        updated_at: now,
    }
}

async fn create_company_in(c: &mut Conn, name: &str, host_execution: bool) -> Result<Company> {
    let company = Company {
        id: CompanyId::new(),
        name: name.to_owned(),
        default_environment_id: None,
        host_execution,
        created_at: now(),
    };
    insert_company(c, &company).await?;
    let local = managed_local(company.id);
    insert_environment(c, &local)
        .await
        .map_err(|e| env_write_err(e, &local.name))?;
    Ok(company)
}

async fn fetch_environment(c: &mut Conn, id: EnvironmentId, lock: &str) -> Result<Environment> {
    let row = sqlx::query(sql(format!(
        "SELECT * FROM environments WHERE id = $1{lock}"
    )))
    .bind(b::id(id.0))
    .fetch_optional(c)
    .await?;
    match row {
        Some(r) => environment(&r),
        None => Err(StoreError::not_found("environment", id)),
    }
}

/// Delete each secret unless some environment config of its company still references it.
async fn drop_unreferenced_secrets(
    c: &mut Conn,
    company_id: CompanyId,
    candidates: &[SecretId],
) -> Result<()> {
    if candidates.is_empty() {
        return Ok(());
    }
    let configs = sqlx::query("SELECT config FROM environments WHERE company_id = $1")
        .bind(b::id(company_id.0))
        .fetch_all(&mut *c)
        .await?;
    let mut referenced = Vec::new();
    for r in &configs {
        referenced.extend(codec::secret_refs(&get_json(r, "config")?));
    }
    for s in candidates {
        if !referenced.contains(s) {
            sqlx::query("DELETE FROM secrets WHERE id = $1 AND company_id = $2")
                .bind(b::id(s.0))
                .bind(b::id(company_id.0))
                .execute(&mut *c)
                .await?;
        }
    }
    Ok(())
}

/// Tables whose JSON selection may name an environment: (table, JSON column).
const SELECTIONS: [(&str, &str); 3] = [
    ("issues", "execution_workspace_settings"),
    ("projects", "execution_workspace_policy"),
    ("execution_workspaces", "config"),
];

/// How the environment id is compared in a count: as the id column type, or as the text a
/// JSON selection holds.
#[derive(Clone, Copy)]
enum EnvParam {
    Id,
    Text,
}

async fn count(c: &mut Conn, query: String, env: EnvironmentId, param: EnvParam) -> Result<u64> {
    let q = sqlx::query_scalar::<Db, i64>(sql(query));
    let q = match param {
        EnvParam::Id => q.bind(b::id(env.0)),
        EnvParam::Text => q.bind(env.to_string()),
    };
    let n = q.fetch_one(c).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

// ---- leases -------------------------------------------------------------------------------

/// Removes a waiter from its queue (passing the turn on) however the wait ends.
struct QueuePlace<'a> {
    waiters: &'a Waiters,
    ticket: Ticket,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.waiters.after_attempt(&self.ticket, Turn::Done);
    }
}

impl This {
    /// `SELECT * FROM <table> WHERE id = $1`, decoded (tables named by the code, never input).
    async fn row_by_id<T>(
        &self,
        table: &'static str,
        id: uuid::Uuid,
        decode: fn(&DbRow) -> Result<T>,
    ) -> Result<Option<T>> {
        sqlx::query(sql(format!("SELECT * FROM {table} WHERE id = $1")))
            .bind(b::id(id))
            .fetch_optional(self.reader())
            .await?
            .as_ref()
            .map(decode)
            .transpose()
    }

    /// One keyset page of a company's rows of `table`, ordered by id.
    async fn company_page<T>(
        &self,
        table: &'static str,
        company_id: CompanyId,
        page: &Page,
        decode: fn(&DbRow) -> Result<T>,
        id_of: fn(&T) -> String,
    ) -> Result<PageOf<T>> {
        let q = codec::page_query(page)?;
        let r = sqlx::query(sql(format!(
            "SELECT * FROM {table} WHERE company_id = $1 AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        )))
        .bind(b::id(company_id.0))
        .bind(oid(q.cursor))
        .bind(q.fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(codec::finish_page(rows(r, decode)?, &q, id_of))
    }
    /// One attempt to acquire, in one write transaction. `Ok(Err(_))` = blocked right now.
    async fn try_acquire(&self, req: &AcquireLease) -> Result<Result<Lease, Blocked>> {
        let now = now();
        let expires_at = TimeDelta::try_seconds(req.ttl_secs)
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| StoreError::Invalid("lease ttl out of range".into()))?;
        {
            let mut c = self.writer().acquire().await?;
            if let Some(lease) = self.insert_unlimited(&mut c, req, now, expires_at).await? {
                return Ok(Ok(lease));
            }
        }
        self.try_acquire_in_tx(req).await
    }

    /// The general acquisition: one write transaction that checks the environment, its
    /// capacity and overdue holders before inserting.
    async fn try_acquire_in_tx(&self, req: &AcquireLease) -> Result<Result<Lease, Blocked>> {
        // Unlimited environments only need the row held against concurrent capacity changes
        // (a shared lock); a capacity count needs acquisitions serialized (an exclusive one).
        let mut exclusive = false;
        loop {
            let now = now();
            let expires_at = TimeDelta::try_seconds(req.ttl_secs)
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| StoreError::Invalid("lease ttl out of range".into()))?;
            let mut tx = self.write_tx().await?;
            let lock = if exclusive {
                b::LOCK_UPDATE
            } else {
                b::LOCK_SHARE
            };
            let env = sqlx::query(sql(format!(
                "SELECT company_id, capacity FROM environments WHERE id = $1{lock}"
            )))
            .bind(b::id(req.environment_id.0))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(env) = env else {
                return Err(StoreError::not_found("environment", req.environment_id));
            };
            if b::get_id(&env, "company_id")? != req.company_id.0 {
                return Err(StoreError::not_found("environment", req.environment_id));
            }
            let capacity: Option<i64> = get(&env, "capacity")?;
            if capacity.is_some() && !exclusive {
                tx.rollback().await?;
                exclusive = true;
                continue;
            }
            // A lease past its expiry blocks nobody: expire it as the reaper would. With a
            // capacity every overdue lease of the environment matters before counting; without
            // one only an overdue holder of our scope does, found when the insert conflicts.
            let mut expired = 0;
            if let Some(cap) = capacity {
                expired += self.expire_overdue(&mut tx, req, now, false).await?;
                // A lease the reaper expired while its run still runs awaits adoption by
                // another instance (its agent is still on the host): it keeps its slot.
                let active: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM environment_leases l \
                     WHERE l.environment_id = $1 AND (l.status = 'active' \
                     OR (l.status = 'expired' AND l.failure_reason = 'expired' \
                     AND l.cleanup_status = 'pending' AND EXISTS (SELECT 1 FROM runs r \
                     WHERE r.id = l.run_id AND r.status = 'running')))",
                )
                .bind(b::id(req.environment_id.0))
                .fetch_one(&mut *tx)
                .await?;
                if active >= cap {
                    tx.commit().await?;
                    if expired > 0 {
                        self.announce_released(&[req.environment_id]).await;
                    }
                    return Ok(Err(Blocked::Capacity));
                }
            }
            let mut inserted = self.insert_active(&mut tx, req, now, expires_at).await?;
            if inserted.is_none() && capacity.is_none() {
                let n = self.expire_overdue(&mut tx, req, now, true).await?;
                if n > 0 {
                    expired += n;
                    inserted = self.insert_active(&mut tx, req, now, expires_at).await?;
                }
            }
            let Some(granted) = inserted else {
                tx.rollback().await?;
                return Ok(Err(Blocked::SingleFlight));
            };
            // A resumed retained lease is released by the insert's trigger (migration 0002).
            tx.commit().await?;
            if expired > 0 {
                self.announce_released(&[req.environment_id]).await;
            }
            return Ok(Ok(granted));
        }
    }

    /// Insert the new active lease unless the scope is held (`None`).
    async fn insert_active(
        &self,
        tx: &mut Conn,
        req: &AcquireLease,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<Lease>> {
        self.insert_lease_from(
            tx,
            req,
            now,
            expires_at,
            "(SELECT 1 AS one) AS base",
            "TRUE",
        )
        .await
    }

    /// The fast path of an acquisition, one statement: insert the lease if the environment
    /// exists in the company with unlimited capacity and the scope is free. `None` sends the
    /// caller down the transactional path, which tells those cases apart.
    async fn insert_unlimited(
        &self,
        c: &mut Conn,
        req: &AcquireLease,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<Lease>> {
        let filter = format!(
            "base.id = $3 AND base.company_id = $2 AND base.capacity IS NULL{}",
            b::LOCK_SHARE_BASE
        );
        self.insert_lease_from(c, req, now, expires_at, "environments AS base", &filter)
            .await
    }

    /// `INSERT … SELECT` of a new active lease from `source` filtered by `filter`, resuming
    /// the newest retained lease of the scope, unless the scope is held (`None`).
    async fn insert_lease_from(
        &self,
        tx: &mut Conn,
        req: &AcquireLease,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        source: &str,
        filter: &str,
    ) -> Result<Option<Lease>> {
        // The newest retained lease of the scope, if any, is resumed: the new lease records it
        // and inherits what the request does not give.
        let inserted = sqlx::query(sql(format!(
            "INSERT INTO environment_leases (id, company_id, environment_id, \
             execution_workspace_id, issue_id, run_id, agent_id, status, lease_policy, \
             scope_key, fence, provider, provider_lease_id, resumed_from_lease_id, \
             acquired_at, last_used_at, heartbeat_at, expires_at, released_at, \
             failure_reason, cleanup_status, metadata, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, {fence}, \
             COALESCE($10, r.provider), COALESCE($11, r.provider_lease_id), r.id, \
             $12, $12, $12, $13, NULL, NULL, NULL, COALESCE($14, r.metadata), $12, $12 \
             FROM {source} LEFT JOIN (SELECT id, provider, \
             provider_lease_id, metadata FROM environment_leases WHERE environment_id = $3 \
             AND scope_key = $9 AND status = 'retained' ORDER BY fence DESC LIMIT 1) AS r \
             ON TRUE WHERE {filter} \
             ON CONFLICT (environment_id, scope_key) WHERE status = 'active' DO NOTHING \
             RETURNING *",
            fence = b::FENCE_EXPR
        )))
        .bind(b::id(LeaseId::new().0))
        .bind(b::id(req.company_id.0))
        .bind(b::id(req.environment_id.0))
        .bind(oid(req.execution_workspace_id.map(|x| x.0)))
        .bind(oid(req.issue_id.map(|x| x.0)))
        .bind(oid(req.run_id.map(|x| x.0)))
        .bind(oid(req.agent_id.map(|x| x.0)))
        .bind(req.policy.as_str())
        .bind(&req.scope_key)
        .bind(&req.provider)
        .bind(&req.provider_lease_id)
        .bind(b::ts(now))
        .bind(b::ts(expires_at))
        .bind(req.metadata.as_ref().map(Json))
        .fetch_optional(&mut *tx)
        .await;
        match inserted {
            Ok(row) => row.as_ref().map(lease).transpose(),
            // The index itself (rather than ON CONFLICT) caught a concurrent holder.
            Err(e) if b::unique_violation(&e) == Some(Unique::ActiveLeaseScope) => Ok(None),
            Err(e) => Err(StoreError::Database(e)),
        }
    }

    /// Expire overdue active leases of the request's environment (only of its scope when
    /// `scope_only`). Returns how many.
    async fn expire_overdue(
        &self,
        tx: &mut Conn,
        req: &AcquireLease,
        now: DateTime<Utc>,
        scope_only: bool,
    ) -> Result<u64> {
        let scope_filter = if scope_only {
            " AND scope_key = $3"
        } else {
            ""
        };
        Ok(sqlx::query(sql(format!(
            "UPDATE environment_leases SET status = 'expired', failure_reason = 'expired', \
             cleanup_status = 'pending', updated_at = $2 WHERE environment_id = $1 \
             AND status = 'active' AND expires_at <= $2{scope_filter}"
        )))
        .bind(b::id(req.environment_id.0))
        .bind(b::ts(now))
        .bind(&req.scope_key)
        .execute(&mut *tx)
        .await?
        .rows_affected())
    }

    /// Why a fenced update of lease `id` matched nothing.
    async fn lost(&self, id: LeaseId, fence: i64, now: DateTime<Utc>) -> StoreError {
        let reason = match self.get_lease(id).await {
            Err(e) => return e,
            Ok(None) => "the lease does not exist".to_owned(),
            Ok(Some(l)) if l.fence != fence => {
                format!("fence {fence} is stale; the current fence is {}", l.fence)
            }
            Ok(Some(l)) if l.status != LeaseStatus::Active => format!("the lease is {}", l.status),
            Ok(Some(l)) if l.expires_at <= now => {
                format!("the lease expired at {}", codec::ts_text(l.expires_at))
            }
            Ok(Some(_)) => "the lease changed concurrently".to_owned(),
        };
        StoreError::LeaseLost {
            lease_id: id,
            reason,
        }
    }

    async fn fetch_run(c: &mut Conn, id: RunId, lock: &str) -> Result<Run> {
        let row = sqlx::query(sql(format!("SELECT * FROM runs WHERE id = $1{lock}")))
            .bind(b::id(id.0))
            .fetch_optional(c)
            .await?;
        match row {
            Some(r) => run(&r),
            None => Err(StoreError::not_found("run", id)),
        }
    }
}

#[async_trait]
impl Store for This {
    fn backend(&self) -> Backend {
        b::BACKEND
    }

    // ---- companies ------------------------------------------------------------------------

    async fn create_company(&self, name: &str) -> Result<Company> {
        let mut tx = self.write_tx().await?;
        let company = create_company_in(&mut tx, name, false).await?;
        tx.commit().await?;
        Ok(company)
    }

    async fn ensure_default_company(&self) -> Result<Company> {
        let mut tx = self.write_tx().await?;
        if let Some(lock) = b::BOOTSTRAP_LOCK {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let oldest = sqlx::query("SELECT * FROM companies ORDER BY created_at, id LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let company = match oldest {
            Some(r) => company(&r)?,
            // The install's first company belongs to its operator: it may run on this host.
            None => create_company_in(&mut tx, "default", true).await?,
        };
        tx.commit().await?;
        Ok(company)
    }

    async fn get_company(&self, id: CompanyId) -> Result<Option<Company>> {
        sqlx::query("SELECT * FROM companies WHERE id = $1")
            .bind(b::id(id.0))
            .fetch_optional(self.reader())
            .await?
            .as_ref()
            .map(company)
            .transpose()
    }

    async fn list_companies(&self, page: &Page) -> Result<PageOf<Company>> {
        let q = codec::page_query(page)?;
        let r = sqlx::query(
            "SELECT * FROM companies WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(oid(q.cursor))
        .bind(q.fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(codec::finish_page(rows(r, company)?, &q, |c| {
            c.id.to_string()
        }))
    }

    async fn set_company_default_environment(
        &self,
        id: CompanyId,
        environment_id: Option<EnvironmentId>,
    ) -> Result<Company> {
        let mut tx = self.write_tx().await?;
        if let Some(env) = environment_id {
            let owner = sqlx::query("SELECT company_id FROM environments WHERE id = $1")
                .bind(b::id(env.0))
                .fetch_optional(&mut *tx)
                .await?;
            match owner {
                Some(r) if b::get_id(&r, "company_id")? == id.0 => {}
                _ => return Err(StoreError::not_found("environment", env)),
            }
        }
        let row = sqlx::query(
            "UPDATE companies SET default_environment_id = $2 WHERE id = $1 RETURNING *",
        )
        .bind(b::id(id.0))
        .bind(oid(environment_id.map(|e| e.0)))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::not_found("company", id))?;
        let c = company(&row)?;
        tx.commit().await?;
        Ok(c)
    }

    async fn set_company_host_execution(&self, id: CompanyId, allowed: bool) -> Result<Company> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("UPDATE companies SET host_execution = $2 WHERE id = $1 RETURNING *")
            .bind(b::id(id.0))
            .bind(allowed)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found("company", id))?;
        let c = company(&row)?;
        tx.commit().await?;
        Ok(c)
    }

    // ---- environments ---------------------------------------------------------------------

    async fn ensure_local_environment(&self, company_id: CompanyId) -> Result<Environment> {
        let local = managed_local(company_id);
        let mut c = self.writer().acquire().await?;
        let inserted = sqlx::query(
            "INSERT INTO environments (id, company_id, name, description, driver, status, \
             config, metadata, capacity, lease_policy, created_at, updated_at) \
             VALUES ($1, $2, $3, NULL, 'local', 'active', $4, $5, NULL, $6, $7, $7) \
             ON CONFLICT DO NOTHING",
        )
        .bind(b::id(local.id.0))
        .bind(b::id(company_id.0))
        .bind(&local.name)
        .bind(Json(&local.config))
        .bind(local.metadata.as_ref().map(Json))
        .bind(local.lease_policy.as_str())
        .bind(b::ts(local.created_at))
        .execute(&mut *c)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_fk_violation(&e) => {
                return Err(StoreError::not_found("company", company_id));
            }
            Err(e) => return Err(env_write_err(e, &local.name)),
        }
        // Any conflict does nothing (a concurrent caller may trip the name index before the
        // local one); afterwards exactly one local row exists, unless the name `Local` is
        // taken by an environment of another driver.
        let row =
            sqlx::query("SELECT * FROM environments WHERE company_id = $1 AND driver = 'local'")
                .bind(b::id(company_id.0))
                .fetch_optional(&mut *c)
                .await?;
        match row {
            Some(r) => environment(&r),
            None => Err(codec::environment_name_taken(&local.name)),
        }
    }

    async fn create_environment(
        &self,
        new: NewEnvironment,
        secrets: Vec<NewSecret>,
    ) -> Result<Environment> {
        let now = now();
        let env = Environment {
            id: EnvironmentId::new(),
            company_id: new.company_id,
            name: new.name,
            description: new.description,
            driver: new.driver,
            status: new.status,
            config: new.config,
            metadata: new.metadata,
            capacity: new.capacity,
            lease_policy: new.lease_policy,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.write_tx().await?;
        insert_new_secrets(&mut tx, &secrets).await?;
        insert_environment(&mut tx, &env)
            .await
            .map_err(|e| env_write_err(e, &env.name))?;
        tx.commit().await?;
        Ok(env)
    }

    async fn get_environment(&self, id: EnvironmentId) -> Result<Option<Environment>> {
        sqlx::query("SELECT * FROM environments WHERE id = $1")
            .bind(b::id(id.0))
            .fetch_optional(self.reader())
            .await?
            .as_ref()
            .map(environment)
            .transpose()
    }

    async fn list_environments(
        &self,
        company_id: CompanyId,
        filter: &EnvironmentFilter,
        page: &Page,
    ) -> Result<PageOf<Environment>> {
        let q = codec::page_query(page)?;
        let text: Option<String> = sqlx::query_scalar(b::ENVIRONMENTS_JSON)
            .bind(b::id(company_id.0))
            .bind(oid(q.cursor))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.driver.map(|d| d.as_str()))
            .bind(q.fetch)
            .fetch_one(self.reader())
            .await?;
        let mut items: Vec<Environment> = serde_json::from_str(text.as_deref().unwrap_or("[]"))
            .map_err(|e| StoreError::Corrupt(format!("environments: {e}")))?;
        items.sort_by_key(|e| e.id);
        Ok(codec::finish_page(items, &q, |e| e.id.to_string()))
    }

    async fn update_environment(
        &self,
        id: EnvironmentId,
        patch: EnvironmentPatch,
        new_secrets: Vec<NewSecret>,
        drop_secrets: Vec<SecretId>,
    ) -> Result<Environment> {
        let mut tx = self.write_tx().await?;
        let mut env = fetch_environment(&mut tx, id, b::LOCK_UPDATE).await?;
        if env.is_managed_local() {
            if patch.status == Some(EnvironmentStatus::Archived) {
                return Err(StoreError::conflict(
                    ConflictCode::ManagedLocal,
                    "Cannot archive the managed local environment.",
                ));
            }
            if patch.driver.is_some_and(|d| d != Driver::Local) {
                return Err(StoreError::conflict(
                    ConflictCode::ManagedLocal,
                    "Cannot change the driver of the managed local environment.",
                ));
            }
        }
        if let Some(v) = patch.name {
            env.name = v;
        }
        if let Some(v) = patch.description {
            env.description = v;
        }
        if let Some(v) = patch.driver {
            env.driver = v;
        }
        if let Some(v) = patch.status {
            env.status = v;
        }
        if let Some(v) = patch.config {
            env.config = v;
        }
        if let Some(v) = patch.metadata {
            env.metadata = v;
        }
        if let Some(v) = patch.capacity {
            env.capacity = v;
        }
        if let Some(v) = patch.lease_policy {
            env.lease_policy = v;
        }
        env.updated_at = now().max(env.updated_at);
        insert_new_secrets(&mut tx, &new_secrets).await?;
        sqlx::query(
            "UPDATE environments SET name = $2, description = $3, driver = $4, status = $5, \
             config = $6, metadata = $7, capacity = $8, lease_policy = $9, updated_at = $10 \
             WHERE id = $1",
        )
        .bind(b::id(env.id.0))
        .bind(&env.name)
        .bind(&env.description)
        .bind(env.driver.as_str())
        .bind(env.status.as_str())
        .bind(Json(&env.config))
        .bind(env.metadata.as_ref().map(Json))
        .bind(env.capacity)
        .bind(env.lease_policy.as_str())
        .bind(b::ts(env.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| env_write_err(e, &env.name))?;
        drop_unreferenced_secrets(&mut tx, env.company_id, &drop_secrets).await?;
        tx.commit().await?;
        // The capacity may have grown.
        self.announce_released(&[env.id]).await;
        Ok(env)
    }

    async fn delete_environment(&self, id: EnvironmentId, force: bool) -> Result<Environment> {
        let mut tx = self.write_tx().await?;
        let env = fetch_environment(&mut tx, id, b::LOCK_UPDATE).await?;
        if env.is_managed_local() {
            return Err(StoreError::conflict(
                ConflictCode::ManagedLocal,
                "Cannot delete the managed local environment.",
            ));
        }
        let is_default: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM companies WHERE id = $1 AND default_environment_id = $2",
        )
        .bind(b::id(env.company_id.0))
        .bind(b::id(id.0))
        .fetch_one(&mut *tx)
        .await?;
        if is_default > 0 {
            return Err(StoreError::conflict(
                ConflictCode::CompanyDefault,
                "Cannot delete the company's default environment.",
            ));
        }
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM environment_leases \
             WHERE environment_id = $1 AND status = 'active'",
        )
        .bind(b::id(id.0))
        .fetch_one(&mut *tx)
        .await?;
        if active > 0 {
            if !force {
                return Err(StoreError::Conflict {
                    code: ConflictCode::ActiveLeases,
                    message: "Environment has active leases; release them or delete with \
                              force=true."
                        .into(),
                    details: json!({ "activeLeaseCount": active }),
                });
            }
            sqlx::query(
                "UPDATE environment_leases SET status = 'expired', \
                 failure_reason = 'environment_deleted', cleanup_status = 'pending', \
                 updated_at = $2 WHERE environment_id = $1 AND status = 'active'",
            )
            .bind(b::id(id.0))
            .bind(b::ts(now()))
            .execute(&mut *tx)
            .await?;
        }
        let id_text = id.to_string();
        for (table, col) in SELECTIONS {
            let found = sqlx::query(sql(format!(
                "SELECT id, {col} FROM {table} WHERE company_id = $1 AND {} = $2",
                b::json_text(col, "environmentId")
            )))
            .bind(b::id(env.company_id.0))
            .bind(&id_text)
            .fetch_all(&mut *tx)
            .await?;
            for r in &found {
                let row_id = b::get_id(r, "id")?;
                let mut v = get_json(r, col)?;
                if codec::clear_environment_selection(&mut v, &id_text) {
                    sqlx::query(sql(format!("UPDATE {table} SET {col} = $2 WHERE id = $1")))
                        .bind(b::id(row_id))
                        .bind(Json(&v))
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        let now = now();
        sqlx::query(
            "UPDATE agents SET default_environment_id = NULL, updated_at = $2 \
             WHERE default_environment_id = $1",
        )
        .bind(b::id(id.0))
        .bind(b::ts(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM environments WHERE id = $1")
            .bind(b::id(id.0))
            .execute(&mut *tx)
            .await?;
        drop_unreferenced_secrets(&mut tx, env.company_id, &codec::secret_refs(&env.config))
            .await?;
        tx.commit().await?;
        // Waiters retry and learn the environment is gone.
        self.announce_released(&[id]).await;
        Ok(env)
    }

    async fn environment_references(&self, id: EnvironmentId) -> Result<EnvironmentReferences> {
        let mut tx = self.snapshot_tx().await?;
        let env = fetch_environment(&mut tx, id, "").await?;
        let is_default: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM companies WHERE id = $1 AND default_environment_id = $2",
        )
        .bind(b::id(env.company_id.0))
        .bind(b::id(id.0))
        .fetch_one(&mut *tx)
        .await?;
        let mut refs = EnvironmentReferences {
            is_managed_local: env.is_managed_local(),
            is_company_default: is_default > 0,
            agent_default_count: count(
                &mut tx,
                "SELECT COUNT(*) FROM agents WHERE default_environment_id = $1".into(),
                id,
                EnvParam::Id,
            )
            .await?,
            active_lease_count: count(
                &mut tx,
                "SELECT COUNT(*) FROM environment_leases WHERE environment_id = $1 \
                 AND status = 'active'"
                    .into(),
                id,
                EnvParam::Id,
            )
            .await?,
            ..Default::default()
        };
        for (table, col) in SELECTIONS {
            let n = count(
                &mut tx,
                format!(
                    "SELECT COUNT(*) FROM {table} WHERE {} = $1",
                    b::json_text(col, "environmentId")
                ),
                id,
                EnvParam::Text,
            )
            .await?;
            match table {
                "issues" => refs.issue_selection_count = n,
                "projects" => refs.project_selection_count = n,
                _ => refs.execution_workspace_selection_count = n,
            }
        }
        tx.commit().await?;
        Ok(refs)
    }

    // ---- leases ---------------------------------------------------------------------------

    async fn acquire_lease(&self, request: AcquireLease) -> Result<Lease> {
        if request.ttl_secs < 1 {
            return Err(StoreError::Invalid(
                "lease ttl must be at least 1 second".into(),
            ));
        }
        if request.scope_key.is_empty() {
            return Err(StoreError::Invalid(
                "lease scope key must not be empty".into(),
            ));
        }
        let Some(wait) = request.wait else {
            return self
                .try_acquire(&request)
                .await?
                .map_err(Blocked::into_error);
        };
        let started = Instant::now();
        let deadline = started + wait;
        // Queue first, then try: a release between our attempt and our wait leaves a permit.
        let place = QueuePlace {
            waiters: self.waiters(),
            ticket: self
                .waiters()
                .enqueue(request.environment_id, &request.scope_key),
        };
        loop {
            match self.try_acquire(&request).await? {
                Ok(lease) => return Ok(lease),
                Err(blocked) => place
                    .waiters
                    .after_attempt(&place.ticket, Turn::Blocked(&blocked, &request.scope_key)),
            }
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StoreError::LeaseWaitTimeout {
                        environment: request.environment_id.to_string(),
                        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    });
                }
                let slice = left.min(This::POLL);
                match tokio::time::timeout(slice, place.ticket.notify.notified()).await {
                    Ok(()) => break,
                    // Without a wake-up only the head re-checks, so polling keeps FIFO order.
                    Err(_) if place.waiters.is_head(&place.ticket) => break,
                    Err(_) => {}
                }
            }
        }
    }

    async fn renew_lease(&self, id: LeaseId, fence: i64, ttl_secs: i64) -> Result<Lease> {
        if ttl_secs < 1 {
            return Err(StoreError::Invalid(
                "lease ttl must be at least 1 second".into(),
            ));
        }
        let now = now();
        let expires_at = TimeDelta::try_seconds(ttl_secs)
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| StoreError::Invalid("lease ttl out of range".into()))?;
        let row = sqlx::query(
            "UPDATE environment_leases SET expires_at = $3, heartbeat_at = $4, \
             last_used_at = $4, updated_at = $4 WHERE id = $1 AND fence = $2 \
             AND status = 'active' AND expires_at > $4 RETURNING *",
        )
        .bind(b::id(id.0))
        .bind(fence)
        .bind(b::ts(expires_at))
        .bind(b::ts(now))
        .fetch_optional(self.writer())
        .await?;
        match row {
            Some(r) => lease(&r),
            None => Err(self.lost(id, fence, now).await),
        }
    }

    async fn release_lease(
        &self,
        id: LeaseId,
        fence: i64,
        outcome: RunOutcome,
        cleanup_status: Option<CleanupStatus>,
    ) -> Result<Lease> {
        let now = now();
        // One guarded statement: the policy table of `release_target`, spelled out per policy.
        let mut status = String::from("CASE lease_policy");
        let mut reason = String::from("CASE lease_policy");
        let mut retained = Vec::new();
        for p in LeasePolicy::ALL {
            let t = release_target(*p, outcome);
            status.push_str(&format!(" WHEN '{}' THEN '{}'", p.as_str(), t.to.as_str()));
            match t.failure_reason {
                Some(r) => reason.push_str(&format!(" WHEN '{}' THEN '{r}'", p.as_str())),
                None => reason.push_str(&format!(" WHEN '{}' THEN NULL", p.as_str())),
            }
            if t.to == LeaseStatus::Retained {
                retained.push(format!("'{}'", p.as_str()));
            }
        }
        let retained = if retained.is_empty() {
            "NULL".to_owned()
        } else {
            retained.join(", ")
        };
        let policies = LeasePolicy::ALL
            .iter()
            .map(|p| format!("'{}'", p.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let row = sqlx::query(sql(format!(
            "UPDATE environment_leases SET status = {status} END, \
             failure_reason = {reason} END, \
             released_at = CASE WHEN lease_policy IN ({retained}) THEN NULL ELSE $3 END, \
             cleanup_status = $4, last_used_at = $3, updated_at = $3 WHERE id = $1 \
             AND fence = $2 AND status = 'active' AND lease_policy IN ({policies}) \
             RETURNING *"
        )))
        .bind(b::id(id.0))
        .bind(fence)
        .bind(b::ts(now))
        .bind(cleanup_status.map(|s| s.as_str()))
        .fetch_optional(self.writer())
        .await?;
        match row {
            Some(r) => {
                let l = lease(&r)?;
                self.announce_released(&[l.environment_id]).await;
                Ok(l)
            }
            None => Err(self.lost(id, fence, now).await),
        }
    }

    async fn transition_lease(
        &self,
        id: LeaseId,
        event: LeaseEvent,
        cleanup_status: Option<CleanupStatus>,
    ) -> Result<Lease> {
        if matches!(event, LeaseEvent::Release(_)) {
            return Err(StoreError::Invalid(
                "a lease is released with release_lease, which needs the holder's fence".into(),
            ));
        }
        // Guarded on the status read: a concurrent change makes us re-read and re-decide.
        loop {
            let current = self
                .get_lease(id)
                .await?
                .ok_or_else(|| StoreError::not_found("lease", id))?;
            let t = transition(current.status, current.lease_policy, event)?;
            let now = now();
            let cleanup = cleanup_status.or(match event {
                LeaseEvent::Expire | LeaseEvent::Destroy => Some(CleanupStatus::Pending),
                LeaseEvent::CleanupFailed => Some(CleanupStatus::Failed),
                LeaseEvent::CleanupSucceeded => Some(CleanupStatus::Success),
                LeaseEvent::Resume | LeaseEvent::Release(_) => current.cleanup_status,
            });
            let failure_reason = t
                .failure_reason
                .map(str::to_owned)
                .or(current.failure_reason.clone());
            let released_at = current.released_at.or(match event {
                LeaseEvent::Resume => Some(now),
                _ => None,
            });
            let row = sqlx::query(
                "UPDATE environment_leases SET status = $3, failure_reason = $4, \
                 cleanup_status = $5, released_at = $6, updated_at = $7 \
                 WHERE id = $1 AND status = $2 RETURNING *",
            )
            .bind(b::id(id.0))
            .bind(current.status.as_str())
            .bind(t.to.as_str())
            .bind(failure_reason)
            .bind(cleanup.map(|s| s.as_str()))
            .bind(ots(released_at))
            .bind(b::ts(now))
            .fetch_optional(self.writer())
            .await?;
            if let Some(r) = row {
                let l = lease(&r)?;
                if current.status == LeaseStatus::Active {
                    self.announce_released(&[l.environment_id]).await;
                }
                return Ok(l);
            }
        }
    }

    async fn expire_due_leases(&self, now: DateTime<Utc>) -> Result<Vec<Lease>> {
        let now = codec::at_stored_precision(now);
        let r = sqlx::query(
            "UPDATE environment_leases SET status = 'expired', failure_reason = 'expired', \
             cleanup_status = 'pending', updated_at = $2 \
             WHERE status = 'active' AND expires_at <= $1 RETURNING *",
        )
        .bind(b::ts(now))
        .bind(b::ts(codec::now()))
        .fetch_all(self.writer())
        .await?;
        let mut expired = rows(r, lease)?;
        expired.sort_by_key(|l| l.fence);
        let mut envs: Vec<EnvironmentId> = expired.iter().map(|l| l.environment_id).collect();
        envs.sort();
        envs.dedup();
        self.announce_released(&envs).await;
        Ok(expired)
    }

    async fn leases_needing_cleanup(
        &self,
        retained_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Lease>> {
        let r = sqlx::query(
            "SELECT * FROM environment_leases WHERE status = 'pending_cleanup' \
             OR (status IN ('expired', 'failed', 'released') AND cleanup_status = 'pending') \
             OR (status = 'retained' AND last_used_at < $1) ORDER BY fence LIMIT $2",
        )
        .bind(b::ts(codec::at_stored_precision(retained_before)))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        rows(r, lease)
    }

    async fn set_lease_metadata(&self, id: LeaseId, fence: i64, metadata: Value) -> Result<Lease> {
        let now = now();
        let row = sqlx::query(
            "UPDATE environment_leases SET metadata = $3, updated_at = $4 \
             WHERE id = $1 AND fence = $2 AND status = 'active' RETURNING *",
        )
        .bind(b::id(id.0))
        .bind(fence)
        .bind(Json(&metadata))
        .bind(b::ts(now))
        .fetch_optional(self.writer())
        .await?;
        match row {
            Some(r) => lease(&r),
            None => Err(self.lost(id, fence, DateTime::<Utc>::MIN_UTC).await),
        }
    }

    async fn get_lease(&self, id: LeaseId) -> Result<Option<Lease>> {
        sqlx::query("SELECT * FROM environment_leases WHERE id = $1")
            .bind(b::id(id.0))
            .fetch_optional(self.reader())
            .await?
            .as_ref()
            .map(lease)
            .transpose()
    }

    async fn list_leases(
        &self,
        environment_id: EnvironmentId,
        status: Option<LeaseStatus>,
        page: &Page,
    ) -> Result<PageOf<Lease>> {
        let q = codec::page_query(page)?;
        let r = sqlx::query(
            "SELECT * FROM environment_leases WHERE environment_id = $1 \
             AND ($2 IS NULL OR id > $2) AND ($3 IS NULL OR status = $3) ORDER BY id LIMIT $4",
        )
        .bind(b::id(environment_id.0))
        .bind(oid(q.cursor))
        .bind(status.map(|s| s.as_str()))
        .bind(q.fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(codec::finish_page(rows(r, lease)?, &q, lease_id_of))
    }

    // ---- secrets --------------------------------------------------------------------------

    async fn create_secret(&self, secret: NewSecret) -> Result<SecretMeta> {
        let mut c = self.writer().acquire().await?;
        insert_new_secrets(&mut c, std::slice::from_ref(&secret)).await?;
        let row = sqlx::query("SELECT * FROM secrets WHERE id = $1")
            .bind(b::id(secret.id.0))
            .fetch_one(&mut *c)
            .await?;
        secret_meta(&row)
    }

    async fn get_secret(&self, id: SecretId) -> Result<Option<SecretRecord>> {
        sqlx::query("SELECT * FROM secrets WHERE id = $1")
            .bind(b::id(id.0))
            .fetch_optional(self.reader())
            .await?
            .as_ref()
            .map(secret_record)
            .transpose()
    }

    async fn list_secrets(&self, company_id: CompanyId, page: &Page) -> Result<PageOf<SecretMeta>> {
        let q = codec::page_query(page)?;
        let r = sqlx::query(
            "SELECT id, company_id, name, description, version, created_at, updated_at \
             FROM secrets WHERE company_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(b::id(company_id.0))
        .bind(oid(q.cursor))
        .bind(q.fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(codec::finish_page(rows(r, secret_meta)?, &q, |s| {
            s.id.to_string()
        }))
    }

    async fn delete_secret(&self, id: SecretId) -> Result<bool> {
        let n = sqlx::query("DELETE FROM secrets WHERE id = $1")
            .bind(b::id(id.0))
            .execute(self.writer())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    // ---- agents ---------------------------------------------------------------------------

    async fn create_agent(&self, new: NewAgent) -> Result<Agent> {
        let now = now();
        let a = Agent {
            id: AgentId::new(),
            company_id: new.company_id,
            name: new.name,
            adapter_type: new.adapter_type,
            adapter_config: new.adapter_config,
            default_environment_id: new.default_environment_id,
            grants: new.grants,
            created_at: now,
            updated_at: now,
        };
        let mut c = self.writer().acquire().await?;
        insert_agent(&mut c, &a).await?;
        Ok(a)
    }

    async fn get_agent(&self, id: AgentId) -> Result<Option<Agent>> {
        self.row_by_id("agents", id.0, agent).await
    }

    async fn list_agents(&self, company_id: CompanyId, page: &Page) -> Result<PageOf<Agent>> {
        self.company_page("agents", company_id, page, agent, |a| a.id.to_string())
            .await
    }

    async fn update_agent(&self, id: AgentId, patch: AgentPatch) -> Result<Agent> {
        let mut tx = self.write_tx().await?;
        let mut a = locked_by_id(&mut tx, "agents", "agent", id.0, agent).await?;
        if let Some(v) = patch.name {
            a.name = v;
        }
        if let Some(v) = patch.adapter_type {
            a.adapter_type = v;
        }
        if let Some(v) = patch.adapter_config {
            a.adapter_config = v;
        }
        if let Some(v) = patch.default_environment_id {
            a.default_environment_id = v;
        }
        if let Some(v) = patch.grants {
            a.grants = v;
        }
        a.updated_at = now().max(a.updated_at);
        sqlx::query(
            "UPDATE agents SET name = $2, adapter_type = $3, adapter_config = $4, \
             default_environment_id = $5, grants = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(b::id(a.id.0))
        .bind(&a.name)
        .bind(&a.adapter_type)
        .bind(Json(&a.adapter_config))
        .bind(oid(a.default_environment_id.map(|e| e.0)))
        .bind(Json(&a.grants))
        .bind(b::ts(a.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| fk_or(e, "agent"))?;
        tx.commit().await?;
        Ok(a)
    }

    async fn delete_agent(&self, id: AgentId) -> Result<bool> {
        match sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(b::id(id.0))
            .execute(self.writer())
            .await
        {
            Ok(r) => Ok(r.rows_affected() > 0),
            Err(e) if is_fk_violation(&e) => Err(StoreError::conflict(
                ConflictCode::InUse,
                "The agent has runs; it cannot be deleted.",
            )),
            Err(e) => Err(e.into()),
        }
    }

    // ---- projects -------------------------------------------------------------------------

    async fn create_project(&self, new: NewProject) -> Result<Project> {
        let p = Project {
            id: ProjectId::new(),
            company_id: new.company_id,
            name: new.name,
            execution_workspace_policy: new.execution_workspace_policy,
        };
        let mut c = self.writer().acquire().await?;
        insert_project(&mut c, &p).await?;
        Ok(p)
    }

    async fn get_project(&self, id: ProjectId) -> Result<Option<Project>> {
        self.row_by_id("projects", id.0, project).await
    }

    async fn list_projects(&self, company_id: CompanyId, page: &Page) -> Result<PageOf<Project>> {
        self.company_page("projects", company_id, page, project, |p| p.id.to_string())
            .await
    }

    async fn update_project(&self, id: ProjectId, patch: ProjectPatch) -> Result<Project> {
        let mut tx = self.write_tx().await?;
        let mut p = locked_by_id(&mut tx, "projects", "project", id.0, project).await?;
        if let Some(v) = patch.name {
            p.name = v;
        }
        if let Some(v) = patch.execution_workspace_policy {
            p.execution_workspace_policy = v;
        }
        sqlx::query("UPDATE projects SET name = $2, execution_workspace_policy = $3 WHERE id = $1")
            .bind(b::id(p.id.0))
            .bind(&p.name)
            .bind(Json(&p.execution_workspace_policy))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(p)
    }

    async fn delete_project(&self, id: ProjectId) -> Result<bool> {
        let n = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(b::id(id.0))
            .execute(self.writer())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    // ---- issues ---------------------------------------------------------------------------

    async fn create_issue(&self, new: NewIssue) -> Result<Issue> {
        let i = Issue {
            id: IssueId::new(),
            company_id: new.company_id,
            project_id: new.project_id,
            title: new.title,
            assignee_agent_id: new.assignee_agent_id,
            execution_workspace_id: new.execution_workspace_id,
            execution_workspace_settings: new.execution_workspace_settings,
        };
        let mut c = self.writer().acquire().await?;
        insert_issue(&mut c, &i).await?;
        Ok(i)
    }

    async fn get_issue(&self, id: IssueId) -> Result<Option<Issue>> {
        self.row_by_id("issues", id.0, issue).await
    }

    async fn list_issues(&self, company_id: CompanyId, page: &Page) -> Result<PageOf<Issue>> {
        self.company_page("issues", company_id, page, issue, |i| i.id.to_string())
            .await
    }

    async fn update_issue(&self, id: IssueId, patch: IssuePatch) -> Result<Issue> {
        let mut tx = self.write_tx().await?;
        let mut i = locked_by_id(&mut tx, "issues", "issue", id.0, issue).await?;
        if let Some(v) = patch.project_id {
            i.project_id = v;
        }
        if let Some(v) = patch.title {
            i.title = v;
        }
        if let Some(v) = patch.assignee_agent_id {
            i.assignee_agent_id = v;
        }
        if let Some(v) = patch.execution_workspace_id {
            i.execution_workspace_id = v;
        }
        if let Some(v) = patch.execution_workspace_settings {
            i.execution_workspace_settings = v;
        }
        sqlx::query(
            "UPDATE issues SET project_id = $2, title = $3, assignee_agent_id = $4, \
             execution_workspace_id = $5, execution_workspace_settings = $6 WHERE id = $1",
        )
        .bind(b::id(i.id.0))
        .bind(oid(i.project_id.map(|x| x.0)))
        .bind(&i.title)
        .bind(oid(i.assignee_agent_id.map(|x| x.0)))
        .bind(oid(i.execution_workspace_id.map(|x| x.0)))
        .bind(Json(&i.execution_workspace_settings))
        .execute(&mut *tx)
        .await
        .map_err(|e| fk_or(e, "issue"))?;
        tx.commit().await?;
        Ok(i)
    }

    async fn delete_issue(&self, id: IssueId) -> Result<bool> {
        let n = sqlx::query("DELETE FROM issues WHERE id = $1")
            .bind(b::id(id.0))
            .execute(self.writer())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    // ---- execution workspaces -------------------------------------------------------------

    async fn create_execution_workspace(
        &self,
        new: NewExecutionWorkspace,
    ) -> Result<ExecutionWorkspace> {
        let w = ExecutionWorkspace {
            id: ExecutionWorkspaceId::new(),
            company_id: new.company_id,
            project_id: new.project_id,
            local_path: new.local_path,
            config: new.config,
        };
        let mut c = self.writer().acquire().await?;
        insert_workspace(&mut c, &w).await?;
        Ok(w)
    }

    async fn get_execution_workspace(
        &self,
        id: ExecutionWorkspaceId,
    ) -> Result<Option<ExecutionWorkspace>> {
        self.row_by_id("execution_workspaces", id.0, workspace)
            .await
    }

    async fn list_execution_workspaces(
        &self,
        company_id: CompanyId,
        page: &Page,
    ) -> Result<PageOf<ExecutionWorkspace>> {
        self.company_page("execution_workspaces", company_id, page, workspace, |w| {
            w.id.to_string()
        })
        .await
    }

    async fn update_execution_workspace(
        &self,
        id: ExecutionWorkspaceId,
        patch: ExecutionWorkspacePatch,
    ) -> Result<ExecutionWorkspace> {
        let mut tx = self.write_tx().await?;
        let mut w = locked_by_id(
            &mut tx,
            "execution_workspaces",
            "execution workspace",
            id.0,
            workspace,
        )
        .await?;
        if let Some(v) = patch.project_id {
            w.project_id = v;
        }
        if let Some(v) = patch.local_path {
            w.local_path = v;
        }
        if let Some(v) = patch.config {
            w.config = v;
        }
        sqlx::query(
            "UPDATE execution_workspaces SET project_id = $2, local_path = $3, config = $4 \
             WHERE id = $1",
        )
        .bind(b::id(w.id.0))
        .bind(oid(w.project_id.map(|x| x.0)))
        .bind(&w.local_path)
        .bind(Json(&w.config))
        .execute(&mut *tx)
        .await
        .map_err(|e| fk_or(e, "execution workspace"))?;
        tx.commit().await?;
        Ok(w)
    }

    async fn delete_execution_workspace(&self, id: ExecutionWorkspaceId) -> Result<bool> {
        let n = sqlx::query("DELETE FROM execution_workspaces WHERE id = $1")
            .bind(b::id(id.0))
            .execute(self.writer())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    // ---- runs -----------------------------------------------------------------------------

    async fn create_run(&self, new: NewRun) -> Result<Run> {
        let r = Run {
            id: RunId::new(),
            company_id: new.company_id,
            agent_id: new.agent_id,
            issue_id: new.issue_id,
            execution_workspace_id: new.execution_workspace_id,
            environment_id: None,
            environment_source: None,
            lease_id: None,
            status: RunStatus::Queued,
            error_code: None,
            error_message: None,
            exit_code: None,
            prompt: new.prompt,
            session_params: None,
            result: None,
            queued_at: now(),
            started_at: None,
            finished_at: None,
            claimed_by: None,
            phase: None,
        };
        let mut c = self.writer().acquire().await?;
        insert_run(&mut c, &r).await?;
        Ok(r)
    }

    async fn get_run(&self, id: RunId) -> Result<Option<Run>> {
        sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(b::id(id.0))
            .fetch_optional(self.reader())
            .await?
            .as_ref()
            .map(run)
            .transpose()
    }

    async fn list_runs(
        &self,
        company_id: CompanyId,
        status: Option<RunStatus>,
        page: &Page,
    ) -> Result<PageOf<Run>> {
        let q = codec::page_query(page)?;
        let r = sqlx::query(
            "SELECT * FROM runs WHERE company_id = $1 AND ($2 IS NULL OR id > $2) \
             AND ($3 IS NULL OR status = $3) ORDER BY id LIMIT $4",
        )
        .bind(b::id(company_id.0))
        .bind(oid(q.cursor))
        .bind(status.map(|s| s.as_str()))
        .bind(q.fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(codec::finish_page(rows(r, run)?, &q, |r| r.id.to_string()))
    }

    async fn latest_session_params(
        &self,
        company_id: CompanyId,
        agent_id: AgentId,
        workspace_id: Option<ExecutionWorkspaceId>,
        except: RunId,
    ) -> Result<Option<Value>> {
        let row = sqlx::query(
            "SELECT session_params FROM runs WHERE company_id = $1 AND agent_id = $2 \
             AND (($3 IS NULL AND execution_workspace_id IS NULL) OR execution_workspace_id = $3) \
             AND id <> $4 AND session_params IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(b::id(company_id.0))
        .bind(b::id(agent_id.0))
        .bind(oid(workspace_id.map(|w| w.0)))
        .bind(b::id(except.0))
        .fetch_optional(self.reader())
        .await?;
        match row {
            Some(r) => get_ojson(&r, "session_params"),
            None => Ok(None),
        }
    }

    async fn update_run(&self, id: RunId, patch: RunPatch) -> Result<Run> {
        let mut tx = self.write_tx().await?;
        let mut r = This::fetch_run(&mut tx, id, b::LOCK_UPDATE).await?;
        if let Some(to) = patch.status
            && r.status.is_terminal()
            && to != r.status
        {
            return Err(StoreError::IllegalRunTransition { from: r.status, to });
        }
        if let Some(v) = patch.status {
            r.status = v;
        }
        if let Some(v) = patch.environment_id {
            r.environment_id = v;
        }
        if let Some(v) = patch.environment_source {
            r.environment_source = v;
        }
        if let Some(v) = patch.lease_id {
            r.lease_id = v;
        }
        if let Some(v) = patch.error_code {
            r.error_code = v;
        }
        if let Some(v) = patch.error_message {
            r.error_message = v;
        }
        if let Some(v) = patch.exit_code {
            r.exit_code = v;
        }
        if let Some(v) = patch.session_params {
            r.session_params = v;
        }
        if let Some(v) = patch.result {
            r.result = v;
        }
        if let Some(v) = patch.started_at {
            r.started_at = v.map(codec::at_stored_precision);
        }
        if let Some(v) = patch.finished_at {
            r.finished_at = v.map(codec::at_stored_precision);
        }
        if let Some(v) = patch.execution_workspace_id {
            r.execution_workspace_id = v;
        }
        sqlx::query(
            "UPDATE runs SET status = $2, environment_id = $3, environment_source = $4, \
             lease_id = $5, error_code = $6, error_message = $7, exit_code = $8, \
             session_params = $9, result = $10, started_at = $11, finished_at = $12, \
             execution_workspace_id = $13 WHERE id = $1",
        )
        .bind(b::id(r.id.0))
        .bind(r.status.as_str())
        .bind(oid(r.environment_id.map(|x| x.0)))
        .bind(r.environment_source.map(|s| s.as_str()))
        .bind(oid(r.lease_id.map(|x| x.0)))
        .bind(&r.error_code)
        .bind(&r.error_message)
        .bind(r.exit_code)
        .bind(r.session_params.as_ref().map(Json))
        .bind(r.result.as_ref().map(Json))
        .bind(ots(r.started_at))
        .bind(ots(r.finished_at))
        .bind(oid(r.execution_workspace_id.map(|x| x.0)))
        .execute(&mut *tx)
        .await
        .map_err(|e| fk_or(e, "run"))?;
        tx.commit().await?;
        Ok(r)
    }

    async fn claim_next_run(&self, claimer: &str) -> Result<Option<Run>> {
        let row = sqlx::query(sql(format!(
            "UPDATE runs SET status = 'running', claimed_by = $1, started_at = $2 \
             WHERE id = (SELECT id FROM runs WHERE status = 'queued' \
             AND cancel_requested_at IS NULL ORDER BY queued_at, id LIMIT 1{}) \
             AND status = 'queued' AND cancel_requested_at IS NULL RETURNING *",
            b::SKIP_LOCKED
        )))
        .bind(claimer)
        .bind(b::ts(now()))
        .fetch_optional(self.writer())
        .await?;
        row.as_ref().map(run).transpose()
    }

    async fn request_run_cancel(&self, id: RunId) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, $2) \
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(b::id(id.0))
        .bind(b::ts(now()))
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn fail_runs_not_claimed_by(
        &self,
        claimer: &str,
        error_code: &str,
        message: &str,
    ) -> Result<Vec<RunId>> {
        let rows = sqlx::query(
            "UPDATE runs SET status = 'failed', error_code = $2, error_message = $3, \
             finished_at = $4 WHERE status = 'running' \
             AND (claimed_by IS NULL OR claimed_by <> $1) RETURNING id",
        )
        .bind(claimer)
        .bind(error_code)
        .bind(message)
        .bind(b::ts(now()))
        .fetch_all(self.writer())
        .await?;
        rows.iter()
            .map(|r| Ok(RunId(b::get_id(r, "id")?)))
            .collect()
    }

    async fn reclaim_runs_not_claimed_by(&self, claimer: &str) -> Result<Vec<Run>> {
        let r = sqlx::query(
            "UPDATE runs SET claimed_by = $1 WHERE status = 'running' \
             AND (claimed_by IS NULL OR claimed_by <> $1) RETURNING *",
        )
        .bind(claimer)
        .fetch_all(self.writer())
        .await?;
        rows(r, run)
    }

    async fn adopt_orphaned_runs(
        &self,
        claimer: &str,
        ttl_secs: i64,
        limit: u32,
    ) -> Result<Vec<(Run, Lease)>> {
        let candidates = sqlx::query(
            "SELECT r.id AS run_id, l.id AS lease_id FROM runs r \
             JOIN environment_leases l ON l.id = r.lease_id \
             JOIN remote_sessions s ON s.run_id = r.id \
             WHERE r.status = 'running' AND (r.claimed_by IS NULL OR r.claimed_by <> $1) \
             AND r.cancel_requested_at IS NULL AND s.session IS NOT NULL \
             AND l.status = 'expired' AND l.failure_reason = 'expired' \
             AND l.cleanup_status = 'pending' ORDER BY r.id LIMIT $2",
        )
        .bind(claimer)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        let mut adopted = Vec::new();
        for c in &candidates {
            let run_id = b::get_id(c, "run_id")?;
            let lease_id = b::get_id(c, "lease_id")?;
            let now = now();
            let mut tx = self.write_tx().await?;
            let lease_row = sqlx::query(sql(format!(
                "UPDATE environment_leases SET status = 'active', fence = {fence}, \
                 expires_at = $2, heartbeat_at = $3, last_used_at = $3, updated_at = $3, \
                 failure_reason = NULL, cleanup_status = NULL, released_at = NULL \
                 WHERE id = $1 AND status = 'expired' AND cleanup_status = 'pending' \
                 AND NOT EXISTS (SELECT 1 FROM environment_leases o \
                 WHERE o.environment_id = environment_leases.environment_id \
                 AND o.scope_key = environment_leases.scope_key AND o.status = 'active') \
                 RETURNING *",
                fence = b::FENCE_EXPR
            )))
            .bind(b::id(lease_id))
            .bind(b::ts(now + TimeDelta::seconds(ttl_secs.max(3))))
            .bind(b::ts(now))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(lease_row) = lease_row else {
                continue;
            };
            let taken = lease(&lease_row)?;
            // SQLite advances its fence counter on insert only.
            sqlx::query(b::FENCE_FLOOR)
                .bind(taken.fence)
                .execute(&mut *tx)
                .await?;
            let run_row = sqlx::query(
                "UPDATE runs SET claimed_by = $2 WHERE id = $1 AND status = 'running' \
                 RETURNING *",
            )
            .bind(b::id(run_id))
            .bind(claimer)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(run_row) = run_row else {
                continue;
            };
            let taken_run = run(&run_row)?;
            tx.commit().await?;
            adopted.push((taken_run, taken));
        }
        Ok(adopted)
    }

    async fn heartbeat_instance(&self, id: &str) -> Result<()> {
        let now = now();
        sqlx::query(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(id)
        .bind(b::ts(now))
        .execute(self.writer())
        .await?;
        sqlx::query("DELETE FROM instances WHERE heartbeat_at < $1")
            .bind(b::ts(now - TimeDelta::days(1)))
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn claim_runs_of_silent_instances(
        &self,
        claimer: &str,
        silent_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Run>> {
        let r = sqlx::query(
            "UPDATE runs SET claimed_by = $1 WHERE status = 'running' \
             AND claimed_by IN (SELECT id FROM instances WHERE heartbeat_at < $2 AND id <> $1) \
             AND (phase IS NULL OR phase IN ('select', 'lease', 'realize')) \
             AND NOT EXISTS (SELECT 1 FROM remote_sessions s \
                 WHERE s.run_id = runs.id AND s.session IS NOT NULL) \
             RETURNING *",
        )
        .bind(claimer)
        .bind(b::ts(silent_before))
        .fetch_all(self.writer())
        .await?;
        rows(r, run)
    }

    async fn set_run_phase(&self, id: RunId, phase: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET phase = $2 WHERE id = $1 AND status = 'running'")
            .bind(b::id(id.0))
            .bind(phase)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn requeue_run(&self, id: RunId, claimer: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET \
             status = CASE WHEN cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END, \
             finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE $3 END, \
             claimed_by = NULL, started_at = NULL, lease_id = NULL, phase = NULL \
             WHERE id = $1 AND status = 'running' AND claimed_by = $2",
        )
        .bind(b::id(id.0))
        .bind(claimer)
        .bind(b::ts(now()))
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn save_remote_session(
        &self,
        run_id: RunId,
        lease_id: Option<LeaseId>,
        session: Value,
    ) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO remote_sessions (run_id, lease_id, session, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (run_id) DO UPDATE SET \
             lease_id = excluded.lease_id, session = excluded.session, \
             updated_at = excluded.updated_at",
        )
        .bind(b::id(run_id.0))
        .bind(oid(lease_id.map(|l| l.0)))
        .bind(Json(&session))
        .bind(b::ts(now()))
        .execute(self.writer())
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_fk_violation(&e) => Err(StoreError::not_found("run", run_id)),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_remote_session(&self, run_id: RunId) -> Result<Option<Value>> {
        let row = sqlx::query("SELECT session FROM remote_sessions WHERE run_id = $1")
            .bind(b::id(run_id.0))
            .fetch_optional(self.reader())
            .await?;
        match row {
            Some(r) => get_ojson(&r, "session"),
            None => Ok(None),
        }
    }

    async fn fail_runs_of_expired_leases(
        &self,
        expired_before: DateTime<Utc>,
        error_code: &str,
        message: &str,
    ) -> Result<Vec<RunId>> {
        let rows = sqlx::query(
            "UPDATE runs SET status = 'failed', error_code = $1, error_message = $2, \
             finished_at = $3 WHERE status = 'running' AND lease_id IN (SELECT id FROM \
             environment_leases WHERE failure_reason = 'expired' AND updated_at < $4) \
             RETURNING id",
        )
        .bind(error_code)
        .bind(message)
        .bind(b::ts(now()))
        .bind(b::ts(codec::at_stored_precision(expired_before)))
        .fetch_all(self.writer())
        .await?;
        rows.iter()
            .map(|r| Ok(RunId(b::get_id(r, "id")?)))
            .collect()
    }

    async fn cancel_requested_runs(&self, claimer: &str) -> Result<Vec<RunId>> {
        let rows = sqlx::query(
            "SELECT id FROM runs WHERE claimed_by = $1 AND status = 'running' \
             AND cancel_requested_at IS NOT NULL",
        )
        .bind(claimer)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| Ok(RunId(b::get_id(r, "id")?)))
            .collect()
    }

    async fn append_run_event(
        &self,
        run_id: RunId,
        stream: &str,
        payload: Value,
    ) -> Result<RunEvent> {
        // seq = max + 1 in one statement; two concurrent appenders (Postgres) collide on the
        // primary key and the loser retries with the next number.
        for _ in 0..64 {
            let res = sqlx::query(
                "INSERT INTO run_events (run_id, seq, at, stream, payload) VALUES ($1, \
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM run_events WHERE run_id = $1), \
                 $2, $3, $4) RETURNING *",
            )
            .bind(b::id(run_id.0))
            .bind(b::ts(now()))
            .bind(stream)
            .bind(Json(&payload))
            .fetch_one(self.writer())
            .await;
            match res {
                Ok(r) => return run_event(&r),
                Err(e) if b::unique_violation(&e) == Some(Unique::RunEventSeq) => continue,
                Err(e) if is_fk_violation(&e) => return Err(StoreError::not_found("run", run_id)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Database(sqlx::Error::Protocol(
            "could not allocate a run event sequence number under contention".into(),
        )))
    }

    async fn list_run_events(
        &self,
        run_id: RunId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<RunEvent>> {
        let r = sqlx::query(
            "SELECT * FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(b::id(run_id.0))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        rows(r, run_event)
    }

    // ---- tokens ---------------------------------------------------------------------------

    async fn create_token(&self, token: ApiToken, sha256_hex: &str) -> Result<ApiToken> {
        let mut t = token;
        t.created_at = codec::at_stored_precision(t.created_at);
        t.last_used_at = t.last_used_at.map(codec::at_stored_precision);
        t.revoked_at = t.revoked_at.map(codec::at_stored_precision);
        let mut c = self.writer().acquire().await?;
        insert_token(&mut c, &t, sha256_hex).await?;
        Ok(t)
    }

    async fn find_token_by_hash(&self, sha256_hex: &str) -> Result<Option<ApiToken>> {
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = $2 WHERE sha256 = $1 AND revoked_at IS NULL \
             RETURNING *",
        )
        .bind(sha256_hex)
        .bind(b::ts(now()))
        .fetch_optional(self.writer())
        .await?
        .as_ref()
        .map(token)
        .transpose()
    }

    async fn list_tokens(&self, page: &Page) -> Result<PageOf<ApiToken>> {
        let q = codec::page_query(page)?;
        let r = sqlx::query(
            "SELECT * FROM api_tokens WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(oid(q.cursor))
        .bind(q.fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(codec::finish_page(rows(r, token)?, &q, |t| {
            t.id.to_string()
        }))
    }

    async fn revoke_token(&self, id: TokenId) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(b::id(id.0))
        .bind(b::ts(now()))
        .execute(self.writer())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn count_active_tokens(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")
            .fetch_one(self.reader())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn run_status_counts(&self) -> Result<Vec<(RunStatus, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status")
                .fetch_all(self.reader())
                .await?;
        rows.into_iter()
            .map(|(s, n)| {
                let status = s
                    .parse::<RunStatus>()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    async fn lease_status_counts(&self) -> Result<Vec<(LeaseStatus, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM environment_leases GROUP BY status ORDER BY status",
        )
        .fetch_all(self.reader())
        .await?;
        rows.into_iter()
            .map(|(s, n)| {
                let status = s
                    .parse::<LeaseStatus>()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    // ---- settings and activity ------------------------------------------------------------

    async fn get_experimental_settings(&self) -> Result<ExperimentalSettings> {
        let row = sqlx::query("SELECT experimental FROM instance_settings WHERE id = 1")
            .fetch_optional(self.reader())
            .await?;
        match row {
            Some(r) => get_json_as(&r, "experimental"),
            None => Ok(ExperimentalSettings::default()),
        }
    }

    async fn set_experimental_settings(
        &self,
        settings: &ExperimentalSettings,
    ) -> Result<ExperimentalSettings> {
        sqlx::query(
            "INSERT INTO instance_settings (id, experimental) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET experimental = excluded.experimental",
        )
        .bind(Json(settings))
        .execute(self.writer())
        .await?;
        Ok(settings.clone())
    }

    async fn log_activity(&self, entry: NewActivity) -> Result<ActivityEntry> {
        let a = ActivityEntry {
            id: ActivityId::new(),
            company_id: entry.company_id,
            actor_type: entry.actor_type,
            actor_id: entry.actor_id,
            action: entry.action,
            entity_type: entry.entity_type,
            entity_id: entry.entity_id,
            details: entry.details,
            created_at: now(),
        };
        let mut c = self.writer().acquire().await?;
        insert_activity(&mut c, &a).await?;
        Ok(a)
    }

    async fn list_activity(
        &self,
        company_id: CompanyId,
        page: &Page,
    ) -> Result<PageOf<ActivityEntry>> {
        let q = codec::page_query(page)?;
        let r = sqlx::query(
            "SELECT * FROM activity_log WHERE company_id = $1 AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3",
        )
        .bind(b::id(company_id.0))
        .bind(oid(q.cursor))
        .bind(q.fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(codec::finish_page(rows(r, activity)?, &q, |a| {
            a.id.to_string()
        }))
    }

    // ---- whole-database copy --------------------------------------------------------------

    async fn hold_reaper_lock(&self) -> Result<bool> {
        self.reaper_lock().await
    }

    async fn export_all(&self) -> Result<Dump> {
        let mut tx = self.snapshot_tx().await?;
        macro_rules! all {
            ($sql:literal, $f:expr) => {
                rows(sqlx::query($sql).fetch_all(&mut *tx).await?, $f)?
            };
        }
        let secrets: Vec<SecretRecord> = all!("SELECT * FROM secrets ORDER BY id", secret_record);
        let mut tokens = Vec::new();
        for r in sqlx::query("SELECT * FROM api_tokens ORDER BY id")
            .fetch_all(&mut *tx)
            .await?
        {
            tokens.push(DumpToken {
                token: token(&r)?,
                sha256: get(&r, "sha256")?,
            });
        }
        let experimental =
            match sqlx::query("SELECT experimental FROM instance_settings WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?
            {
                Some(r) => get_json_as(&r, "experimental")?,
                None => ExperimentalSettings::default(),
            };
        let dump = Dump {
            companies: all!("SELECT * FROM companies ORDER BY id", company),
            environments: all!("SELECT * FROM environments ORDER BY id", environment),
            secrets: secrets
                .into_iter()
                .map(|s| DumpSecret {
                    meta: s.meta,
                    ciphertext: s.ciphertext,
                    nonce: s.nonce,
                })
                .collect(),
            agents: all!("SELECT * FROM agents ORDER BY id", agent),
            projects: all!("SELECT * FROM projects ORDER BY id", project),
            execution_workspaces: all!("SELECT * FROM execution_workspaces ORDER BY id", workspace),
            issues: all!("SELECT * FROM issues ORDER BY id", issue),
            leases: all!("SELECT * FROM environment_leases ORDER BY id", lease),
            runs: all!("SELECT * FROM runs ORDER BY id", run),
            run_events: all!("SELECT * FROM run_events ORDER BY run_id, seq", run_event),
            tokens,
            experimental,
            activity: all!("SELECT * FROM activity_log ORDER BY id", activity),
        };
        tx.commit().await?;
        Ok(dump)
    }

    async fn import_all(&self, dump: Dump) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let existing: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM companies) + (SELECT COUNT(*) FROM api_tokens)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if existing > 0 {
            return Err(StoreError::conflict(
                ConflictCode::NotEmpty,
                "The target database is not empty; import needs an empty database.",
            ));
        }
        // Companies first without their default (it points at an environment not yet there).
        for c in &dump.companies {
            let mut bare = c.clone();
            bare.default_environment_id = None;
            insert_company(&mut tx, &bare).await?;
        }
        for e in &dump.environments {
            insert_environment(&mut tx, e)
                .await
                .map_err(|err| env_write_err(err, &e.name))?;
        }
        for c in dump
            .companies
            .iter()
            .filter(|c| c.default_environment_id.is_some())
        {
            sqlx::query("UPDATE companies SET default_environment_id = $2 WHERE id = $1")
                .bind(b::id(c.id.0))
                .bind(oid(c.default_environment_id.map(|e| e.0)))
                .execute(&mut *tx)
                .await?;
        }
        for s in &dump.secrets {
            insert_secret(&mut tx, &s.meta, &s.ciphertext, &s.nonce).await?;
        }
        for a in &dump.agents {
            insert_agent(&mut tx, a).await?;
        }
        for p in &dump.projects {
            insert_project(&mut tx, p).await?;
        }
        for w in &dump.execution_workspaces {
            insert_workspace(&mut tx, w).await?;
        }
        for i in &dump.issues {
            insert_issue(&mut tx, i).await?;
        }
        for l in &dump.leases {
            insert_lease(&mut tx, l).await?;
        }
        for r in &dump.runs {
            insert_run(&mut tx, r).await?;
        }
        for e in &dump.run_events {
            insert_run_event(&mut tx, e).await?;
        }
        for t in &dump.tokens {
            insert_token(&mut tx, &t.token, &t.sha256).await?;
        }
        for a in &dump.activity {
            insert_activity(&mut tx, a).await?;
        }
        sqlx::query(
            "INSERT INTO instance_settings (id, experimental) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET experimental = excluded.experimental",
        )
        .bind(Json(&dump.experimental))
        .execute(&mut *tx)
        .await?;
        let max_fence = dump.leases.iter().map(|l| l.fence).max().unwrap_or(0);
        sqlx::query(b::FENCE_FLOOR)
            .bind(max_fence)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
