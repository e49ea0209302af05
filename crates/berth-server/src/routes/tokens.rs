//! API tokens (instance admins only). The value is returned once at creation and stored as a
//! SHA-256 hash.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::model::ApiToken;
use berth_core::{AgentId, CompanyId, TokenId, TokenKind};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Actor, hash_token, new_token_value};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::json::StrictJson;
use crate::state::SharedState;

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

#[utoipa::path(get, path = "/api/tokens", tag = "tokens",
    responses((status = 200, body = [ApiToken]), (status = 403)))]
async fn list_tokens(
    State(state): State<SharedState>,
    actor: Actor,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> ApiResult<Response> {
    actor.require_instance_admin()?;
    Ok(list_response(state.store.list_tokens(&q.page()?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateToken {
    name: String,
    kind: TokenKind,
    #[serde(default)]
    company_ids: Vec<CompanyId>,
    #[serde(default)]
    agent_id: Option<AgentId>,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    instance_admin: bool,
}

const KNOWN_GRANTS: &[&str] = &["environments:manage"];

#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = Object,
    responses((status = 201, body = Object), (status = 400), (status = 403), (status = 422)))]
async fn create_token(
    State(state): State<SharedState>,
    actor: Actor,
    StrictJson(body): StrictJson<CreateToken>,
) -> ApiResult<Response> {
    actor.require_instance_admin()?;
    let name = body.name.trim().to_string();
    if name.is_empty() {
        return Err(ApiError::field("name", "name must not be empty"));
    }
    if let Some(g) = body
        .grants
        .iter()
        .find(|g| !KNOWN_GRANTS.contains(&g.as_str()))
    {
        return Err(ApiError::unprocessable(format!(
            "Unknown grant \"{g}\". Known grants: {}",
            KNOWN_GRANTS.join(", ")
        )));
    }
    for c in &body.company_ids {
        if state.store.get_company(*c).await?.is_none() {
            return Err(ApiError::unprocessable(format!("Company {c} not found.")));
        }
    }
    let company_ids = match body.kind {
        TokenKind::Board => body.company_ids,
        TokenKind::Agent => {
            let agent_id = body
                .agent_id
                .ok_or_else(|| ApiError::unprocessable("Agent tokens require an agentId."))?;
            let agent = state
                .store
                .get_agent(agent_id)
                .await?
                .ok_or_else(|| ApiError::unprocessable("Agent not found."))?;
            if body.instance_admin {
                return Err(ApiError::unprocessable(
                    "Agent tokens cannot be instance admins.",
                ));
            }
            vec![agent.company_id]
        }
    };
    let value = new_token_value();
    let token = ApiToken {
        id: TokenId::new(),
        name,
        prefix: value.chars().take(12).collect(),
        kind: body.kind,
        company_ids,
        agent_id: body.agent_id,
        grants: body.grants,
        instance_admin: body.instance_admin,
        created_at: chrono::Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    let token = state.store.create_token(token, &hash_token(&value)).await?;
    state.active_tokens.fetch_add(1, Ordering::SeqCst);
    let mut body = serde_json::to_value(&token).map_err(ApiError::internal)?;
    if let Value::Object(map) = &mut body {
        map.insert("token".into(), json!(value));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens",
    params(("id" = TokenId, Path)), responses((status = 200, body = Object), (status = 403), (status = 404)))]
async fn revoke_token(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<TokenId>,
) -> ApiResult<Json<Value>> {
    actor.require_instance_admin()?;
    if !state.store.revoke_token(id).await? {
        return Err(ApiError::NotFound("Token not found".into()));
    }
    let count = state.store.count_active_tokens().await?;
    state.active_tokens.store(count, Ordering::SeqCst);
    Ok(Json(json!({"id": id, "revoked": true})))
}
