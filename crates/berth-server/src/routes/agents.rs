//! Agents: `{name, adapterType, adapterConfig, defaultEnvironmentId}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::adapters::{
    ADAPTER_TYPES, is_forbidden_env_key, is_valid_env_key, supported_drivers,
};
use berth_core::model::Agent;
use berth_core::{AgentId, CompanyId, EnvironmentId};
use berth_store::{AgentPatch, NewAgent};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity;
use crate::auth::{Actor, Row, company_for};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::guards;
use crate::json::{StrictJson, double_option};
use crate::state::{AppState, SharedState};

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
}

/// The agent if it exists and the actor may see its company; 404 otherwise.
pub async fn agent_for(state: &AppState, actor: &Actor, id: AgentId) -> ApiResult<Agent> {
    match state.store.get_agent(id).await? {
        Some(a) if actor.can_see(a.company_id, Row::Agent(a.id)) => Ok(a),
        _ => Err(ApiError::NotFound("Agent not found".into())),
    }
}

fn check_adapter(adapter_type: &str) -> ApiResult<()> {
    if supported_drivers(adapter_type).is_none() {
        return Err(ApiError::unprocessable(format!(
            "Unknown adapter type \"{adapter_type}\". Known adapter types: {}",
            ADAPTER_TYPES.join(", ")
        )));
    }
    Ok(())
}

/// `adapterConfig` must be an object; its `env` keys must be valid names and must not change
/// how the shell or the loader behaves (SPEC §9); a value is a string or a secret reference
/// (`{"type": "secret_ref", "secretId": …, "version": "latest"}`) to a secret of this company,
/// resolved into memory only when a run starts.
async fn check_adapter_config(
    state: &AppState,
    company_id: CompanyId,
    adapter_type: &str,
    config: &Value,
) -> ApiResult<()> {
    check_adapter_config_shape(config)?;
    check_assets(state, adapter_type, config)?;
    check_buildable(adapter_type, config)?;
    if let Some(env) = config.get("env").and_then(Value::as_object) {
        for (key, value) in env {
            match value {
                Value::String(_) => {}
                Value::Object(_) => {
                    let reference: berth_core::config::SecretRef =
                        serde_json::from_value(value.clone()).map_err(|_| {
                            ApiError::field(
                                &format!("adapterConfig.env.{key}"),
                                "must be a string or a secret reference {\"type\": \"secret_ref\", \"secretId\": <uuid>, \"version\": \"latest\"}",
                            )
                        })?;
                    match state.store.get_secret(reference.secret_id).await? {
                        Some(s) if s.meta.company_id == company_id => {}
                        _ => {
                            return Err(ApiError::unprocessable(format!(
                                "Secret reference in adapterConfig.env.{key} not found."
                            )));
                        }
                    }
                }
                _ => {
                    return Err(ApiError::field(
                        &format!("adapterConfig.env.{key}"),
                        "must be a string or a secret reference",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `adapterConfig.assets`: `{<key>: <absolute directory on this machine>}`, with keys the
/// adapter knows (its CLI config home, skills, …), synced to the environment before each run.
/// Each directory — and the one holding `instructionsFilePath` — must lie under the
/// workspace roots and outside `BERTH_HOME` ([`guards::host_dir`]): what is there is copied
/// to environments.
fn check_assets(state: &AppState, adapter_type: &str, config: &Value) -> ApiResult<()> {
    if let Some(path) = config.get("instructionsFilePath").and_then(Value::as_str) {
        let dir = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| {
                ApiError::unprocessable_field(
                    "adapterConfig.instructionsFilePath",
                    "must be an absolute file path on the control plane",
                )
            })?;
        guards::host_dir(
            state,
            "adapterConfig.instructionsFilePath",
            "The instructions file's directory",
            &dir.to_string_lossy(),
        )?;
    }
    let Some(assets) = config.get("assets").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let Some(assets) = assets.as_object() else {
        return Err(ApiError::field(
            "adapterConfig.assets",
            "assets must be an object of asset key to absolute directory",
        ));
    };
    let known = berth_agents::adapter(adapter_type).map_or(&[][..], |a| a.asset_keys());
    for (key, dir) in assets {
        if !known.contains(&key.as_str()) {
            return Err(ApiError::field(
                &format!("adapterConfig.assets.{key}"),
                format!(
                    "unknown asset for {adapter_type}; known: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        if !dir
            .as_str()
            .is_some_and(|d| std::path::Path::new(d).is_absolute())
        {
            return Err(ApiError::field(
                &format!("adapterConfig.assets.{key}"),
                "must be an absolute directory path on the control plane",
            ));
        }
        if let Some(dir) = dir.as_str() {
            let field = format!("adapterConfig.assets.{key}");
            guards::host_dir(state, &field, &format!("Asset {key}"), dir)?;
        }
    }
    Ok(())
}

/// The adapter itself judges its config, exactly as a run would
/// ([`berth_agents::validate_config`]): a value a run would refuse or could not run safely (a
/// NUL or newline in a command, `extraArgs: true`, a `graceSec` of 2^64-1, …) is a 422 naming
/// `adapterConfig.<key>` now rather than a failed run later. A missing required key is not: an
/// agent may be configured later.
fn check_buildable(adapter_type: &str, config: &Value) -> ApiResult<()> {
    berth_agents::validate_config(adapter_type, config)
        .map_err(|e| ApiError::unprocessable_field(&e.field_path(), e.to_string()))
}

fn check_adapter_config_shape(config: &Value) -> ApiResult<()> {
    let Some(map) = config.as_object() else {
        return Err(ApiError::field(
            "adapterConfig",
            "adapterConfig must be an object",
        ));
    };
    if let Some(env) = map.get("env") {
        let Some(env) = env.as_object() else {
            return Err(ApiError::field(
                "adapterConfig.env",
                "env must be an object",
            ));
        };
        for key in env.keys() {
            let field = format!("adapterConfig.env.{key}");
            if !is_valid_env_key(key) {
                return Err(ApiError::unprocessable_field(
                    &field,
                    format!("Invalid environment variable name \"{key}\" in adapterConfig.env."),
                ));
            }
            if is_forbidden_env_key(key) {
                return Err(ApiError::unprocessable_field(
                    &field,
                    format!(
                        "Environment variable \"{key}\" is not allowed in adapterConfig.env: it changes how the shell or dynamic loader behaves."
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateAgent {
    name: String,
    adapter_type: String,
    #[serde(default)]
    adapter_config: Option<Value>,
    #[serde(default)]
    default_environment_id: Option<EnvironmentId>,
    #[serde(default)]
    grants: Vec<String>,
}

#[utoipa::path(get, path = "/api/companies/{company_id}/agents", tag = "agents",
    params(("company_id" = CompanyId, Path)), responses((status = 200, body = [Agent]), (status = 404)))]
async fn list_agents(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    let mut page = state.store.list_agents(company_id, &q.page()?).await?;
    for agent in &mut page.items {
        redact_for(&actor, agent);
    }
    Ok(list_response(page))
}

/// Plain `adapterConfig.env` values are for the board: an agent's own token (or its run's)
/// reads the names and secret references, never the values.
fn redact_for(actor: &Actor, agent: &mut Agent) {
    if actor.is_board() {
        return;
    }
    if let Some(Value::Object(env)) = agent.adapter_config.get_mut("env") {
        for value in env.values_mut() {
            if value.is_string() {
                *value = Value::String(REDACTED.into());
            }
        }
    }
}

/// What a redacted plain env value reads as.
pub const REDACTED: &str = "***";

#[utoipa::path(post, path = "/api/companies/{company_id}/agents", tag = "agents",
    params(("company_id" = CompanyId, Path)), request_body = Object,
    responses((status = 201, body = Agent), (status = 400), (status = 403), (status = 422)))]
async fn create_agent(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<CreateAgent>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_board()?;
    let name = body.name.trim().to_string();
    if name.is_empty() {
        return Err(ApiError::field("name", "name must not be empty"));
    }
    check_adapter(&body.adapter_type)?;
    let adapter_config = body.adapter_config.unwrap_or_else(|| json!({}));
    check_adapter_config(&state, company_id, &body.adapter_type, &adapter_config).await?;
    let allowed = supported_drivers(&body.adapter_type).unwrap_or(&[]);
    guards::environment_selection(&state, company_id, body.default_environment_id, allowed).await?;
    let agent = state
        .store
        .create_agent(NewAgent {
            company_id,
            name,
            adapter_type: body.adapter_type,
            adapter_config,
            default_environment_id: body.default_environment_id,
            grants: body.grants,
        })
        .await?;
    activity::record(
        &state,
        &actor,
        company_id,
        "agent.created",
        "agent",
        agent.id,
        json!({"name": agent.name, "adapterType": agent.adapter_type}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(agent)).into_response())
}

#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents",
    params(("id" = AgentId, Path)), responses((status = 200, body = Agent), (status = 404)))]
async fn get_agent(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<AgentId>,
) -> ApiResult<Json<Agent>> {
    let mut agent = agent_for(&state, &actor, id).await?;
    redact_for(&actor, &mut agent);
    Ok(Json(agent))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchAgent {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    adapter_type: Option<String>,
    #[serde(default)]
    adapter_config: Option<Value>,
    #[serde(default, deserialize_with = "double_option")]
    default_environment_id: Option<Option<EnvironmentId>>,
    #[serde(default)]
    grants: Option<Vec<String>>,
}

#[utoipa::path(patch, path = "/api/agents/{id}", tag = "agents",
    params(("id" = AgentId, Path)), request_body = Object,
    responses((status = 200, body = Agent), (status = 400), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn update_agent(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<AgentId>,
    StrictJson(body): StrictJson<PatchAgent>,
) -> ApiResult<Json<Agent>> {
    let agent = agent_for(&state, &actor, id).await?;
    actor.require_board()?;
    if let Some(t) = &body.adapter_type {
        check_adapter(t)?;
    }
    if let Some(c) = &body.adapter_config {
        let adapter = body.adapter_type.as_deref().unwrap_or(&agent.adapter_type);
        check_adapter_config(&state, agent.company_id, adapter, c).await?;
    }
    if let Some(n) = &body.name
        && n.trim().is_empty()
    {
        return Err(ApiError::field("name", "name must not be empty"));
    }
    // The guard runs with the drivers of the *requested* adapter whenever the adapter or the
    // default environment changes, so switching adapters cannot strand an incompatible default.
    if body.adapter_type.is_some()
        || body.adapter_config.is_some()
        || body.default_environment_id.is_some()
    {
        let adapter = body.adapter_type.as_deref().unwrap_or(&agent.adapter_type);
        let allowed = supported_drivers(adapter).unwrap_or(&[]);
        let env = body
            .default_environment_id
            .unwrap_or(agent.default_environment_id);
        guards::environment_selection(&state, agent.company_id, env, allowed).await?;
    }
    let mut fields: Vec<&str> = Vec::new();
    for (present, name) in [
        (body.name.is_some(), "name"),
        (body.adapter_type.is_some(), "adapterType"),
        (body.adapter_config.is_some(), "adapterConfig"),
        (
            body.default_environment_id.is_some(),
            "defaultEnvironmentId",
        ),
        (body.grants.is_some(), "grants"),
    ] {
        if present {
            fields.push(name);
        }
    }
    let updated = state
        .store
        .update_agent(
            id,
            AgentPatch {
                name: body.name.map(|n| n.trim().to_string()),
                adapter_type: body.adapter_type,
                adapter_config: body.adapter_config,
                default_environment_id: body.default_environment_id,
                grants: body.grants,
            },
        )
        .await?;
    activity::record(
        &state,
        &actor,
        agent.company_id,
        "agent.updated",
        "agent",
        id,
        json!({"changedFields": fields}),
    )
    .await?;
    Ok(Json(updated))
}

#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents",
    params(("id" = AgentId, Path)), responses((status = 200, body = Agent), (status = 403), (status = 404)))]
async fn delete_agent(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<AgentId>,
) -> ApiResult<Json<Agent>> {
    let agent = agent_for(&state, &actor, id).await?;
    actor.require_board()?;
    state.store.delete_agent(id).await?;
    activity::record(
        &state,
        &actor,
        agent.company_id,
        "agent.deleted",
        "agent",
        id,
        json!({"name": agent.name}),
    )
    .await?;
    Ok(Json(agent))
}
