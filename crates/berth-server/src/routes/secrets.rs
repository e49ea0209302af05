//! Company secrets: metadata only ever leaves the server; values go in, never out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::config::agent_env_secret_refs;
use berth_core::model::SecretMeta;
use berth_core::{CompanyId, Secret, SecretId};
use berth_store::{NewSecret, Page};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity;
use crate::auth::{Actor, company_for};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::json::StrictJson;
use crate::state::SharedState;

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets, create_secret))
        .routes(routes!(delete_secret))
}

#[utoipa::path(get, path = "/api/companies/{company_id}/secrets", tag = "secrets",
    params(("company_id" = CompanyId, Path)),
    responses((status = 200, body = [SecretMeta]), (status = 403), (status = 404)))]
async fn list_secrets(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_privileged(company_id)?;
    Ok(list_response(
        state.store.list_secrets(company_id, &q.page()?).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSecret {
    name: String,
    #[serde(default)]
    description: Option<String>,
    value: String,
}

#[utoipa::path(post, path = "/api/companies/{company_id}/secrets", tag = "secrets",
    params(("company_id" = CompanyId, Path)), request_body = Object,
    responses((status = 201, body = SecretMeta), (status = 400), (status = 403), (status = 409)))]
async fn create_secret(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<CreateSecret>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_privileged(company_id)?;
    let name = body.name.trim().to_string();
    if name.is_empty() {
        return Err(ApiError::field("name", "name must not be empty"));
    }
    if body.value.is_empty() {
        return Err(ApiError::field("value", "value must not be empty"));
    }
    let id = SecretId::new();
    let (ciphertext, nonce) = state
        .secrets
        .encrypt(company_id, id, &Secret::new(body.value))
        .map_err(ApiError::internal)?;
    let meta = state
        .store
        .create_secret(NewSecret {
            id,
            company_id,
            name,
            description: body.description,
            ciphertext,
            nonce,
        })
        .await?;
    activity::record(
        &state,
        &actor,
        company_id,
        "secret.created",
        "secret",
        meta.id,
        json!({"name": meta.name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(meta)).into_response())
}

#[utoipa::path(delete, path = "/api/secrets/{id}", tag = "secrets",
    params(("id" = SecretId, Path)),
    responses((status = 200, body = SecretMeta), (status = 403), (status = 404), (status = 409)))]
async fn delete_secret(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<SecretId>,
) -> ApiResult<Json<SecretMeta>> {
    let secret = match state.store.get_secret(id).await? {
        Some(s) if actor.can_access_company(s.meta.company_id) => s,
        _ => return Err(ApiError::NotFound("Secret not found".into())),
    };
    let company_id = secret.meta.company_id;
    actor.require_privileged(company_id)?;
    let envs = state
        .store
        .list_environments(company_id, &Default::default(), &Page::all())
        .await?;
    let users: Vec<String> = envs
        .items
        .iter()
        .filter(|e| {
            e.typed_config()
                .map(|p| p.config.secret_refs().contains(&id))
                .unwrap_or(false)
        })
        .map(|e| e.name.clone())
        .collect();
    // Agents reference secrets from `adapterConfig.env`; deleting one of those would fail
    // every later run of the agent with a missing secret.
    let agents: Vec<String> = state
        .store
        .list_agents(company_id, &Page::all())
        .await?
        .items
        .iter()
        .filter(|a| agent_env_secret_refs(&a.adapter_config).contains(&id))
        .map(|a| a.name.clone())
        .collect();
    if !users.is_empty() || !agents.is_empty() {
        let mut holders = Vec::new();
        if !users.is_empty() {
            holders.push(format!("environment(s): {}", users.join(", ")));
        }
        if !agents.is_empty() {
            holders.push(format!("agent(s): {}", agents.join(", ")));
        }
        return Err(ApiError::Conflict {
            message: format!(
                "Secret is referenced by {}. Update them first.",
                holders.join("; ")
            ),
            details: json!({"code": "in_use", "environments": users, "agents": agents}),
        });
    }
    state.store.delete_secret(id).await?;
    activity::record(
        &state,
        &actor,
        company_id,
        "secret.deleted",
        "secret",
        id,
        json!({"name": secret.meta.name}),
    )
    .await?;
    Ok(Json(secret.meta))
}
