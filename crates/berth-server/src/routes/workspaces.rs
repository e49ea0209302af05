//! Execution workspaces: a local directory a run works on, confined to `workspaceRoots`, with
//! an optional pinned `config.environmentId`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::model::ExecutionWorkspace;
use berth_core::{CompanyId, Driver, ExecutionWorkspaceId, ProjectId};
use berth_store::{ExecutionWorkspacePatch, NewExecutionWorkspace};
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
        .routes(routes!(list_workspaces, create_workspace))
        .routes(routes!(get_workspace, update_workspace, delete_workspace))
}

async fn workspace_for(
    state: &AppState,
    actor: &Actor,
    id: ExecutionWorkspaceId,
) -> ApiResult<ExecutionWorkspace> {
    match state.store.get_execution_workspace(id).await? {
        Some(w) if actor.can_see(w.company_id, Row::Workspace(w.id)) => Ok(w),
        _ => Err(ApiError::NotFound("Execution workspace not found".into())),
    }
}

const CONFIG_KEYS: &[&str] = &["environmentId", "syncIgnored", "exclude"];

/// `config` is `{environmentId?, syncIgnored?, exclude?}`; the environment passes the guard.
async fn check_config(state: &AppState, company_id: CompanyId, config: &Value) -> ApiResult<()> {
    let Some(map) = config.as_object() else {
        return Err(ApiError::field("config", "config must be an object"));
    };
    if let Some(k) = map.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
        return Err(ApiError::field(
            &format!("config.{k}"),
            format!("unknown key; allowed keys: {}", CONFIG_KEYS.join(", ")),
        ));
    }
    if map.get("syncIgnored").is_some_and(|v| !v.is_boolean()) {
        return Err(ApiError::field("config.syncIgnored", "must be a boolean"));
    }
    if let Some(ex) = map.get("exclude")
        && !ex
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err(ApiError::field(
            "config.exclude",
            "must be an array of strings",
        ));
    }
    let id = guards::selection_id(Some(config), "config")?;
    guards::environment_selection(state, company_id, id, Driver::ALL).await?;
    Ok(())
}

async fn check_project(
    state: &AppState,
    company_id: CompanyId,
    project_id: Option<ProjectId>,
) -> ApiResult<()> {
    if let Some(p) = project_id
        && !matches!(state.store.get_project(p).await?, Some(p) if p.company_id == company_id)
    {
        return Err(ApiError::unprocessable("Project not found."));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateWorkspace {
    local_path: String,
    #[serde(default)]
    project_id: Option<ProjectId>,
    #[serde(default)]
    config: Option<Value>,
}

#[utoipa::path(get, path = "/api/companies/{company_id}/execution-workspaces", tag = "execution-workspaces",
    params(("company_id" = CompanyId, Path)), responses((status = 200, body = [ExecutionWorkspace]), (status = 404)))]
async fn list_workspaces(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    Ok(list_response(
        state
            .store
            .list_execution_workspaces(company_id, &q.page()?)
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/companies/{company_id}/execution-workspaces", tag = "execution-workspaces",
    params(("company_id" = CompanyId, Path)), request_body = Object,
    responses((status = 201, body = ExecutionWorkspace), (status = 400), (status = 403), (status = 422)))]
async fn create_workspace(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<CreateWorkspace>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_board()?;
    let path = guards::workspace_path(&state, &body.local_path)?;
    let config = body.config.unwrap_or_else(|| json!({}));
    check_config(&state, company_id, &config).await?;
    check_project(&state, company_id, body.project_id).await?;
    let ws = state
        .store
        .create_execution_workspace(NewExecutionWorkspace {
            company_id,
            project_id: body.project_id,
            local_path: path.display().to_string(),
            config,
        })
        .await?;
    activity::record(
        &state,
        &actor,
        company_id,
        "execution_workspace.created",
        "execution_workspace",
        ws.id,
        json!({"localPath": ws.local_path}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(ws)).into_response())
}

#[utoipa::path(get, path = "/api/execution-workspaces/{id}", tag = "execution-workspaces",
    params(("id" = ExecutionWorkspaceId, Path)), responses((status = 200, body = ExecutionWorkspace), (status = 404)))]
async fn get_workspace(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<ExecutionWorkspaceId>,
) -> ApiResult<Json<ExecutionWorkspace>> {
    Ok(Json(workspace_for(&state, &actor, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchWorkspace {
    #[serde(default)]
    local_path: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    project_id: Option<Option<ProjectId>>,
    #[serde(default)]
    config: Option<Value>,
}

#[utoipa::path(patch, path = "/api/execution-workspaces/{id}", tag = "execution-workspaces",
    params(("id" = ExecutionWorkspaceId, Path)), request_body = Object,
    responses((status = 200, body = ExecutionWorkspace), (status = 400), (status = 403), (status = 404), (status = 422)))]
async fn update_workspace(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<ExecutionWorkspaceId>,
    StrictJson(body): StrictJson<PatchWorkspace>,
) -> ApiResult<Json<ExecutionWorkspace>> {
    let ws = workspace_for(&state, &actor, id).await?;
    actor.require_board()?;
    let local_path = match &body.local_path {
        Some(p) => Some(guards::workspace_path(&state, p)?.display().to_string()),
        None => None,
    };
    if let Some(c) = &body.config {
        check_config(&state, ws.company_id, c).await?;
    }
    check_project(&state, ws.company_id, body.project_id.flatten()).await?;
    let updated = state
        .store
        .update_execution_workspace(
            id,
            ExecutionWorkspacePatch {
                project_id: body.project_id,
                local_path,
                config: body.config,
            },
        )
        .await?;
    activity::record(
        &state,
        &actor,
        ws.company_id,
        "execution_workspace.updated",
        "execution_workspace",
        id,
        json!({}),
    )
    .await?;
    Ok(Json(updated))
}

#[utoipa::path(delete, path = "/api/execution-workspaces/{id}", tag = "execution-workspaces",
    params(("id" = ExecutionWorkspaceId, Path)), responses((status = 200, body = ExecutionWorkspace), (status = 403), (status = 404)))]
async fn delete_workspace(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<ExecutionWorkspaceId>,
) -> ApiResult<Json<ExecutionWorkspace>> {
    let ws = workspace_for(&state, &actor, id).await?;
    actor.require_board()?;
    state.store.delete_execution_workspace(id).await?;
    activity::record(
        &state,
        &actor,
        ws.company_id,
        "execution_workspace.deleted",
        "execution_workspace",
        id,
        json!({"localPath": ws.local_path}),
    )
    .await?;
    Ok(Json(ws))
}
