//! Environment routes (route-compatible with Paperclip's, see reference §5): list,
//! capabilities, create, get, patch (config merge), delete, probe, probe-config, trust.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::adapters::{
    ADAPTER_TYPES, RUNNABLE_DRIVERS, supported_drivers, unavailable_config_reason,
    unavailable_driver_reason,
};
use berth_core::config::{DriverConfig, ParseMode, SecretRef, parse_config};
use berth_core::lease::LeaseEvent;
use berth_core::model::{Environment, EnvironmentPatch, NewEnvironment};
use berth_core::{
    CleanupStatus, CompanyId, Driver, EnvironmentId, EnvironmentStatus, LeasePolicy, LeaseStatus,
    Secret, SecretId,
};
use berth_store::{EnvironmentFilter, NewSecret};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity;
use crate::auth::{Actor, company_for};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::json::{StrictJson, double_option};
use crate::probing;
use crate::state::{AppState, SharedState};

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_environments, create_environment))
        .routes(routes!(capabilities))
        .routes(routes!(
            get_environment,
            update_environment,
            delete_environment
        ))
        .routes(routes!(probe_environment))
        .routes(routes!(probe_config))
        .routes(routes!(trust_host_key))
}

/// The environment as this actor may see it: non-privileged readers get the redacted view
/// (`config: {}`, `metadata: null`, `configRedacted`, `metadataRedacted`).
pub fn view(env: &Environment, privileged: bool) -> Value {
    serde_json::to_value(View::of(env, privileged)).unwrap_or(Value::Null)
}

/// Serializes straight from the row (no intermediate JSON tree): lists of a thousand
/// environments are on the hot path.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum View<'a> {
    Full(&'a Environment),
    Redacted(RedactedEnvironment<'a>),
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedactedEnvironment<'a> {
    id: EnvironmentId,
    company_id: CompanyId,
    name: &'a str,
    description: &'a Option<String>,
    driver: Driver,
    status: EnvironmentStatus,
    config: Map<String, Value>,
    metadata: Option<()>,
    capacity: Option<i64>,
    lease_policy: LeasePolicy,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    config_redacted: bool,
    metadata_redacted: bool,
}

impl<'a> View<'a> {
    pub fn of(env: &'a Environment, privileged: bool) -> Self {
        if privileged {
            View::Full(env)
        } else {
            View::Redacted(RedactedEnvironment {
                id: env.id,
                company_id: env.company_id,
                name: &env.name,
                description: &env.description,
                driver: env.driver,
                status: env.status,
                config: Map::new(),
                metadata: None,
                capacity: env.capacity,
                lease_policy: env.lease_policy,
                created_at: env.created_at,
                updated_at: env.updated_at,
                config_redacted: true,
                metadata_redacted: true,
            })
        }
    }
}

/// The environment if it exists and the actor may see its company; 404 otherwise.
pub async fn environment_for(
    state: &AppState,
    actor: &Actor,
    id: EnvironmentId,
) -> ApiResult<Environment> {
    match state.store.get_environment(id).await? {
        Some(env) if actor.can_access_company(env.company_id) => Ok(env),
        _ => Err(ApiError::NotFound("Environment not found".into())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    status: Option<EnvironmentStatus>,
    driver: Option<Driver>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/companies/{company_id}/environments", tag = "environments",
    params(("company_id" = CompanyId, Path), ("status" = Option<EnvironmentStatus>, Query),
        ("driver" = Option<Driver>, Query), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = [Environment]), (status = 404)))]
async fn list_environments(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictQuery(q): StrictQuery<ListQuery>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    let pq = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let page = pq.page_or_all()?;
    let filter = EnvironmentFilter {
        status: q.status,
        driver: q.driver,
    };
    let mut result = state
        .store
        .list_environments(company_id, &filter, &page)
        .await?;
    if !pq.paginated() {
        // Paperclip's order: `updatedAt` desc, then `createdAt` desc (pages keep id order,
        // which a cursor needs).
        result.items.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then(b.created_at.cmp(&a.created_at))
        });
    }
    let privileged = actor.is_privileged(company_id);
    let items: Vec<View<'_>> = result
        .items
        .iter()
        .map(|e| View::of(e, privileged))
        .collect();
    Ok(list_response(berth_store::PageOf {
        items,
        next_cursor: result.next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/companies/{company_id}/environments/capabilities", tag = "environments",
    params(("company_id" = CompanyId, Path)), responses((status = 200, body = Object)))]
async fn capabilities(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
) -> ApiResult<Json<Value>> {
    company_for(&state, &actor, company_id).await?;
    let adapters: Vec<Value> = ADAPTER_TYPES
        .iter()
        .map(|a| {
            let supported = supported_drivers(a).unwrap_or(&[]);
            let supported: Vec<Driver> = supported
                .iter()
                .copied()
                .filter(|d| runs_here(*d))
                .collect();
            let drivers: Map<String, Value> = Driver::ALL
                .iter()
                .map(|d| {
                    let s = if supported.contains(d) {
                        "supported"
                    } else {
                        "unsupported"
                    };
                    (d.as_str().to_string(), json!(s))
                })
                .collect();
            json!({"adapterType": a, "drivers": drivers})
        })
        .collect();
    let drivers: Map<String, Value> = Driver::ALL
        .iter()
        .map(|d| {
            let s = if RUNNABLE_DRIVERS.contains(d) && runs_here(*d) {
                "supported"
            } else {
                "unsupported"
            };
            (d.as_str().to_string(), json!(s))
        })
        .collect();
    Ok(Json(json!({"adapters": adapters, "drivers": drivers})))
}

/// Whether a driver of this build can run on this host: `sandbox` needs a working `bwrap`.
fn runs_here(driver: Driver) -> bool {
    driver != Driver::Sandbox || berth_exec::sandbox::host_support().is_ok()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    driver: Driver,
    #[serde(default)]
    status: Option<EnvironmentStatus>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>, nullable)]
    metadata: Option<Value>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, nullable)]
    capacity: Option<Option<i64>>,
    #[serde(default)]
    lease_policy: Option<LeasePolicy>,
}

fn check_name(name: &str) -> ApiResult<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(ApiError::field("name", "name must not be empty"));
    }
    if trimmed.chars().count() > 200 {
        return Err(ApiError::field(
            "name",
            "name must be at most 200 characters",
        ));
    }
    Ok(trimmed.to_string())
}

fn check_metadata(metadata: &Option<Value>) -> ApiResult<()> {
    match metadata {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::field(
            "metadata",
            "metadata must be an object or null",
        )),
    }
}

/// A well-formed number out of range is a 422 naming the field, like every other bound.
fn check_capacity(capacity: Option<i64>) -> ApiResult<()> {
    match capacity {
        Some(c) if !(1..=10_000).contains(&c) => Err(ApiError::unprocessable_field(
            "capacity",
            "capacity must be an integer between 1 and 10000, or null for unlimited",
        )),
        _ => Ok(()),
    }
}

fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    trimmed
        .chars()
        .take(48)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// Encrypt a write-only config value into a new company secret.
fn new_secret(
    state: &AppState,
    company_id: CompanyId,
    env_name: &str,
    driver: Driver,
    purpose: &str,
    value: &Secret<String>,
) -> ApiResult<NewSecret> {
    let id = SecretId::new();
    let (ciphertext, nonce) = state
        .secrets
        .encrypt(company_id, id, value)
        .map_err(ApiError::internal)?;
    let tag = &id.to_string().replace('-', "")[24..32];
    Ok(NewSecret {
        id,
        company_id,
        name: format!("environment-{driver}-{}-{purpose}-{tag}", slug(env_name)),
        description: Some(format!("Secret for {env_name} {purpose}.")),
        ciphertext,
        nonce,
    })
}

/// The privileges a config asks for beyond `environments:manage` (SPEC §11):
/// - `useAgentAuth` lends the server operator's SSH agent identities: instance admins only;
/// - a local `workspaceRoot` must stay out of `BERTH_HOME` (422 naming the field).
fn check_config_privileges(
    state: &AppState,
    actor: &Actor,
    config: &DriverConfig,
) -> ApiResult<()> {
    match config {
        DriverConfig::Ssh(ssh) if ssh.use_agent_auth && !actor.is_instance_admin() => {
            Err(ApiError::Forbidden(
                "Only an instance admin may set useAgentAuth: it lends the server operator's \
                 SSH agent identities to this environment. Set privateKey instead."
                    .into(),
            ))
        }
        DriverConfig::Local(local) => match &local.workspace_root {
            Some(root)
                if berth_engine::host::overlaps_home(
                    std::path::Path::new(root),
                    &state.berth_home,
                ) =>
            {
                Err(ApiError::unprocessable_field(
                    "config.workspaceRoot",
                    berth_engine::host::home_overlap_message(
                        std::path::Path::new(root),
                        &state.berth_home,
                    ),
                ))
            }
            _ => Ok(()),
        },
        // readOnlyPaths shows host directories to a tenant's agents (another company's
        // workspace, if named): an operator's decision. Nothing of BERTH_HOME, and nothing of
        // the runs root (every sandbox's copies, every local run's scratch), is ever bound.
        DriverConfig::Sandbox(sandbox) => {
            if !sandbox.read_only_paths.is_empty() && !actor.is_instance_admin() {
                return Err(ApiError::Forbidden(
                    "Only an instance admin may set readOnlyPaths: they show host directories \
                     to the sandbox's agents."
                        .into(),
                ));
            }
            for path in &sandbox.read_only_paths {
                let dir = std::path::Path::new(path);
                if berth_engine::host::overlaps_home(dir, &state.berth_home) {
                    return Err(ApiError::unprocessable_field(
                        "config.readOnlyPaths",
                        berth_engine::host::home_overlap_message(dir, &state.berth_home),
                    ));
                }
                if berth_engine::host::overlaps_home(dir, &state.local_root) {
                    return Err(ApiError::unprocessable_field(
                        "config.readOnlyPaths",
                        format!(
                            "{} overlaps the runs root ({}), which holds every sandbox's \
                             workspace copies and every local run's scratch.",
                            dir.display(),
                            state.local_root.display()
                        ),
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A config that validates but cannot run on this host is refused when it is saved, with the
/// reason and what to do, never accepted and then failed at run time (a sandbox provider other
/// than bubblewrap; a host where `bwrap` cannot create a sandbox).
fn check_runnable_here(config: &DriverConfig) -> ApiResult<()> {
    if let Some((path, reason)) = unavailable_config_reason(config) {
        return Err(ApiError::unprocessable_field(path, reason));
    }
    if let DriverConfig::Sandbox(_) = config
        && let Err(why) = berth_exec::sandbox::host_support()
    {
        return Err(ApiError::unprocessable_field(
            "driver",
            format!(
                "Sandbox environments cannot run on this host: {}. {}",
                why.reason, why.hint
            ),
        ));
    }
    Ok(())
}

/// Validate a config in persist mode and move raw secrets into new secret rows. Secret refs
/// the request names must be secrets of this company.
async fn persist_config(
    state: &AppState,
    actor: &Actor,
    company_id: CompanyId,
    env_name: &str,
    driver: Driver,
    config: &Value,
) -> ApiResult<(DriverConfig, Vec<NewSecret>)> {
    let parsed =
        parse_config(driver, config, ParseMode::Persist).map_err(ApiError::config_issues)?;
    check_config_privileges(state, actor, &parsed.config)?;
    check_runnable_here(&parsed.config)?;
    let mut config = parsed.config;
    for id in config.secret_refs() {
        match state.store.get_secret(id).await? {
            Some(s) if s.meta.company_id == company_id => {}
            _ => return Err(ApiError::unprocessable("Secret reference not found.")),
        }
    }
    let mut secrets = Vec::new();
    if let DriverConfig::Ssh(ssh) = &mut config {
        if let Some(key) = &parsed.private_key {
            let s = new_secret(state, company_id, env_name, driver, "private-key", key)?;
            ssh.private_key_secret_ref = Some(SecretRef::latest(s.id));
            secrets.push(s);
        }
        if let Some(pass) = &parsed.private_key_passphrase {
            let s = new_secret(
                state,
                company_id,
                env_name,
                driver,
                "private-key-passphrase",
                pass,
            )?;
            ssh.private_key_passphrase_secret_ref = Some(SecretRef::latest(s.id));
            secrets.push(s);
        }
    }
    Ok((config, secrets))
}

#[utoipa::path(post, path = "/api/companies/{company_id}/environments", tag = "environments",
    params(("company_id" = CompanyId, Path)), request_body = CreateBody,
    responses((status = 201, body = Environment), (status = 400), (status = 403), (status = 409), (status = 422)))]
pub(crate) async fn create_environment(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<CreateBody>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_privileged(company_id)?;
    let name = check_name(&body.name)?;
    check_metadata(&body.metadata)?;
    if let Some(reason) = unavailable_driver_reason(body.driver) {
        return Err(ApiError::unprocessable_field("driver", reason));
    }
    let capacity = match body.capacity {
        None => body.driver.default_capacity(),
        Some(c) => c,
    };
    check_capacity(capacity)?;
    let config = body.config.unwrap_or_else(|| json!({}));
    let (config, secrets) =
        persist_config(&state, &actor, company_id, &name, body.driver, &config).await?;
    let status = body.status.unwrap_or(EnvironmentStatus::Active);
    let env = state
        .store
        .create_environment(
            NewEnvironment {
                company_id,
                name,
                description: body.description.map(|d| d.trim().to_string()),
                driver: body.driver,
                status,
                config: config.to_json(),
                metadata: body.metadata,
                capacity,
                lease_policy: body
                    .lease_policy
                    .unwrap_or_else(|| body.driver.default_lease_policy()),
            },
            secrets,
        )
        .await?;
    activity::record(
        &state,
        &actor,
        company_id,
        "environment.created",
        "environment",
        env.id,
        json!({"name": env.name, "driver": env.driver, "status": env.status}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&env, true))).into_response())
}

#[utoipa::path(get, path = "/api/environments/{id}", tag = "environments",
    params(("id" = EnvironmentId, Path)), responses((status = 200, body = Environment), (status = 404)))]
async fn get_environment(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<EnvironmentId>,
) -> ApiResult<Json<Value>> {
    let env = environment_for(&state, &actor, id).await?;
    Ok(Json(view(&env, actor.is_privileged(env.company_id))))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    description: Option<Option<String>>,
    #[serde(default)]
    driver: Option<Driver>,
    #[serde(default)]
    status: Option<EnvironmentStatus>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>, nullable)]
    metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, nullable)]
    capacity: Option<Option<i64>>,
    #[serde(default)]
    lease_policy: Option<LeasePolicy>,
}

fn top_level_keys(v: &Value) -> usize {
    v.as_object().map(Map::len).unwrap_or(0)
}

#[utoipa::path(patch, path = "/api/environments/{id}", tag = "environments",
    params(("id" = EnvironmentId, Path)), request_body = PatchBody,
    responses((status = 200, body = Environment), (status = 400), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub(crate) async fn update_environment(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<EnvironmentId>,
    StrictJson(body): StrictJson<PatchBody>,
) -> ApiResult<Json<Value>> {
    let env = environment_for(&state, &actor, id).await?;
    actor.require_privileged(env.company_id)?;
    let mut changed: Vec<&str> = Vec::new();
    let mut summary = Map::new();
    let mut patch = EnvironmentPatch::default();

    let name = match &body.name {
        Some(n) => {
            let n = check_name(n)?;
            changed.push("name");
            if n != env.name {
                summary.insert("name".into(), json!(n));
            }
            patch.name = Some(n.clone());
            n
        }
        None => env.name.clone(),
    };
    if let Some(d) = &body.description {
        changed.push("description");
        let d = d.as_ref().map(|s| s.trim().to_string());
        if d != env.description {
            summary.insert("descriptionChanged".into(), json!(true));
        }
        patch.description = Some(d);
    }
    if env.is_managed_local() {
        if body.status == Some(EnvironmentStatus::Archived) {
            return Err(ApiError::Conflict {
                message: "Cannot archive the managed local environment.".into(),
                details: json!({"code": "managed_local"}),
            });
        }
        if body.driver.is_some_and(|d| d != Driver::Local) {
            return Err(ApiError::Conflict {
                message: "Cannot change the driver of the managed local environment.".into(),
                details: json!({"code": "managed_local"}),
            });
        }
    }
    if let Some(s) = body.status {
        changed.push("status");
        if s != env.status {
            summary.insert("status".into(), json!(s));
        }
        patch.status = Some(s);
    }
    if let Some(m) = &body.metadata {
        check_metadata(m)?;
        changed.push("metadata");
        summary.insert("metadataChanged".into(), json!(true));
        summary.insert(
            "metadataTopLevelKeyCount".into(),
            json!(m.as_ref().map(top_level_keys).unwrap_or(0)),
        );
        patch.metadata = Some(m.clone());
    }
    if let Some(c) = body.capacity {
        check_capacity(c)?;
        changed.push("capacity");
        patch.capacity = Some(c);
    }
    if let Some(p) = body.lease_policy {
        changed.push("leasePolicy");
        patch.lease_policy = Some(p);
    }

    // Config merge semantics (reference §5.3).
    let new_driver = body.driver.unwrap_or(env.driver);
    let driver_changed = new_driver != env.driver;
    if driver_changed && let Some(reason) = unavailable_driver_reason(new_driver) {
        return Err(ApiError::unprocessable_field("driver", reason));
    }
    if body.driver.is_some() {
        changed.push("driver");
        if driver_changed {
            summary.insert("driver".into(), json!(new_driver));
        }
        patch.driver = Some(new_driver);
    }
    let merged: Option<Value> = match (&body.config, driver_changed) {
        (Some(Value::Object(req)), false) => {
            let mut base = env.config.as_object().cloned().unwrap_or_default();
            for (k, v) in req {
                base.insert(k.clone(), v.clone());
            }
            Some(Value::Object(base))
        }
        (Some(Value::Object(req)), true) => Some(Value::Object(req.clone())),
        (Some(_), _) => return Err(ApiError::field("config", "config must be an object")),
        (None, true) => Some(json!({})),
        (None, false) => None,
    };
    let mut new_secrets = Vec::new();
    let mut drop_secrets: Vec<SecretId> = Vec::new();
    if let Some(merged) = merged {
        let (config, secrets) =
            persist_config(&state, &actor, env.company_id, &name, new_driver, &merged).await?;
        let old_refs = env
            .typed_config()
            .map(|p| p.config.secret_refs())
            .unwrap_or_default();
        let new_refs = config.secret_refs();
        drop_secrets = old_refs
            .into_iter()
            .filter(|r| !new_refs.contains(r))
            .collect();
        let json = config.to_json();
        changed.push("config");
        summary.insert("configChanged".into(), json!(true));
        summary.insert(
            "configTopLevelKeyCount".into(),
            json!(top_level_keys(&json)),
        );
        patch.config = Some(json);
        new_secrets = secrets;
    }
    let updated = state
        .store
        .update_environment(id, patch, new_secrets, drop_secrets)
        .await?;
    changed.sort_unstable();
    changed.dedup();
    summary.insert("changedFields".into(), json!(changed));
    activity::record(
        &state,
        &actor,
        env.company_id,
        "environment.updated",
        "environment",
        id,
        Value::Object(summary),
    )
    .await?;
    Ok(Json(view(&updated, true)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct DeleteQuery {
    /// Expire active leases (their runs stop) instead of refusing.
    #[serde(default)]
    force: bool,
    /// Delete even when the environment's side could not be cleaned (it stays on the host).
    #[serde(default)]
    abandon_remote_state: bool,
}

#[utoipa::path(delete, path = "/api/environments/{id}", tag = "environments",
    params(("id" = EnvironmentId, Path), ("force" = Option<bool>, Query)),
    responses((status = 200, body = Environment), (status = 403), (status = 404), (status = 409)))]
pub(crate) async fn delete_environment(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<EnvironmentId>,
    StrictQuery(q): StrictQuery<DeleteQuery>,
) -> ApiResult<Json<Value>> {
    let env = environment_for(&state, &actor, id).await?;
    actor.require_privileged(env.company_id)?;
    if env.is_managed_local() {
        // The store refuses it with its own message; nothing to clean first.
        state.store.delete_environment(id, q.force).await?;
    }
    // Leases' remote state (run directories, workspace copies, processes) is cleaned before
    // the lease rows go: afterwards nothing would know it is there.
    let active = state
        .store
        .list_leases(id, Some(LeaseStatus::Active), &berth_store::Page::all())
        .await?
        .items;
    if !active.is_empty() {
        if !q.force {
            return Err(ApiError::Conflict {
                message: "Environment has active leases; release them or delete with force=true."
                    .into(),
                details: json!({"activeLeaseCount": active.len()}),
            });
        }
        for lease in &active {
            match state
                .store
                .transition_lease(lease.id, LeaseEvent::Expire, Some(CleanupStatus::Pending))
                .await
            {
                Ok(_) | Err(berth_store::StoreError::IllegalTransition(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let stranded = state.cleaner().clean_environment(&env).await?;
    if !stranded.is_empty() && !q.abandon_remote_state {
        return Err(ApiError::Conflict {
            message: format!(
                "Environment \"{}\" still has remote state that could not be cleaned up ({} lease(s)): {}. \
                 Retry when the host answers, archive the environment instead, or delete with \
                 abandonRemoteState=true to leave it on the host.",
                env.name,
                stranded.len(),
                stranded[0].reason
            ),
            details: json!({"pendingCleanup": stranded}),
        });
    }
    let removed = state.store.delete_environment(id, q.force).await?;
    activity::record(
        &state,
        &actor,
        env.company_id,
        "environment.deleted",
        "environment",
        id,
        json!({"name": removed.name, "driver": removed.driver, "status": removed.status,
            "forced": q.force, "abandonedRemoteState": stranded}),
    )
    .await?;
    Ok(Json(view(&removed, true)))
}

#[utoipa::path(post, path = "/api/environments/{id}/probe", tag = "environments",
    params(("id" = EnvironmentId, Path)), responses((status = 200, body = Object), (status = 404)))]
pub(crate) async fn probe_environment(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<EnvironmentId>,
) -> ApiResult<Json<Value>> {
    let env = environment_for(&state, &actor, id).await?;
    actor.require_privileged(env.company_id)?;
    let parsed = env.typed_config().map_err(ApiError::config_issues)?;
    let result = probing::probe_config(
        &state,
        env.company_id,
        Some(env.id),
        &parsed.config,
        None,
        None,
    )
    .await?;
    observe_probe(&state, &result);
    activity::record(
        &state,
        &actor,
        env.company_id,
        "environment.probed",
        "environment",
        id,
        json!({"driver": env.driver, "ok": result.ok, "summary": result.summary}),
    )
    .await?;
    Ok(Json(
        serde_json::to_value(result).map_err(ApiError::internal)?,
    ))
}

fn observe_probe(state: &AppState, result: &berth_engine::probe::ProbeResult) {
    state.metrics.observe(
        "berth_probe_duration_seconds",
        &[
            ("driver", result.driver.as_str()),
            ("ok", if result.ok { "true" } else { "false" }),
        ],
        result.duration_ms as f64 / 1000.0,
    );
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ProbeConfigBody {
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "accepted for compatibility; the probe names the environment"
    )]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility")]
    description: Option<String>,
    driver: Driver,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility")]
    #[schema(value_type = Option<Object>, nullable)]
    metadata: Option<Value>,
}

#[utoipa::path(post, path = "/api/companies/{company_id}/environments/probe-config", tag = "environments",
    params(("company_id" = CompanyId, Path)), request_body = ProbeConfigBody,
    responses((status = 200, body = Object), (status = 400), (status = 422)))]
pub(crate) async fn probe_config(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<ProbeConfigBody>,
) -> ApiResult<Json<Value>> {
    company_for(&state, &actor, company_id).await?;
    actor.require_privileged(company_id)?;
    let config = body.config.unwrap_or_else(|| json!({}));
    let keys = top_level_keys(&config);
    let parsed =
        parse_config(body.driver, &config, ParseMode::Probe).map_err(ApiError::config_issues)?;
    check_config_privileges(&state, &actor, &parsed.config)?;
    // The raw key is used in memory only: nothing of this config is persisted.
    let result = probing::probe_config(
        &state,
        company_id,
        None,
        &parsed.config,
        parsed.private_key,
        parsed.private_key_passphrase,
    )
    .await?;
    observe_probe(&state, &result);
    activity::record(
        &state,
        &actor,
        company_id,
        "environment.probed_unsaved",
        "environment",
        "unsaved",
        json!({"driver": body.driver, "ok": result.ok, "summary": result.summary, "configTopLevelKeyCount": keys}),
    )
    .await?;
    Ok(Json(
        serde_json::to_value(result).map_err(ApiError::internal)?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TrustBody {
    fingerprint: String,
}

#[utoipa::path(post, path = "/api/environments/{id}/trust-host-key", tag = "environments",
    params(("id" = EnvironmentId, Path)), request_body = Object,
    responses((status = 200, body = Environment), (status = 404), (status = 409), (status = 422)))]
pub(crate) async fn trust_host_key(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<EnvironmentId>,
    StrictJson(body): StrictJson<TrustBody>,
) -> ApiResult<Json<Value>> {
    let env = environment_for(&state, &actor, id).await?;
    actor.require_privileged(env.company_id)?;
    if env.driver != Driver::Ssh {
        return Err(ApiError::unprocessable(
            "Only SSH environments have host keys to trust.",
        ));
    }
    if !body.fingerprint.starts_with("SHA256:") {
        return Err(ApiError::field(
            "fingerprint",
            "fingerprint must be an OpenSSH SHA256 fingerprint (SHA256:…)",
        ));
    }
    let parsed = env.typed_config().map_err(ApiError::config_issues)?;
    let DriverConfig::Ssh(mut ssh) = parsed.config else {
        return Err(ApiError::unprocessable(
            "Only SSH environments have host keys to trust.",
        ));
    };
    let presented = berth_exec::ssh::fetch_host_key(
        &ssh.host,
        ssh.port,
        &berth_engine::probe::probe_timeouts(),
    )
    .await
    .map_err(|e| ApiError::Unprocessable {
        message: format!("Could not read the host key: {e}"),
        details: json!({"code": "host_unreachable"}),
    })?;
    if presented.fingerprint_sha256 != body.fingerprint.trim() {
        return Err(ApiError::Conflict {
            message: format!(
                "The host presents {} {}, not the fingerprint you confirmed ({}). Nothing was pinned.",
                presented.key_type,
                presented.fingerprint_sha256,
                body.fingerprint.trim()
            ),
            details: json!({"code": "fingerprint_mismatch", "presentedFingerprint": presented.fingerprint_sha256}),
        });
    }
    let mut known = ssh.known_hosts.clone().unwrap_or_default();
    if !known
        .lines()
        .any(|l| l.trim() == presented.known_hosts_line)
    {
        if !known.is_empty() && !known.ends_with('\n') {
            known.push('\n');
        }
        known.push_str(&presented.known_hosts_line);
        known.push('\n');
    }
    ssh.known_hosts = Some(known);
    ssh.strict_host_key_checking = true;
    let patch = EnvironmentPatch {
        config: Some(DriverConfig::Ssh(ssh).to_json()),
        ..EnvironmentPatch::default()
    };
    let updated = state
        .store
        .update_environment(id, patch, Vec::new(), Vec::new())
        .await?;
    activity::record(
        &state,
        &actor,
        env.company_id,
        "environment.host_key_trusted",
        "environment",
        id,
        json!({"keyType": presented.key_type, "fingerprint": presented.fingerprint_sha256}),
    )
    .await?;
    Ok(Json(view(&updated, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_lowercase_dashed_and_bounded() {
        assert_eq!(slug("My  SSH Box!"), "my-ssh-box");
        assert_eq!(slug(&"x".repeat(100)).len(), 48);
        assert_eq!(slug("--a--"), "a");
    }
}
