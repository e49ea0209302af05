//! Projects: carry an optional environment selection in `executionWorkspacePolicy`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::model::Project;
use berth_core::{CompanyId, Driver, ProjectId};
use berth_store::{NewProject, ProjectPatch};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity;
use crate::auth::{Actor, Row, company_for};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::guards;
use crate::json::StrictJson;
use crate::state::{AppState, SharedState};

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(get_project, update_project, delete_project))
}

pub async fn project_for(state: &AppState, actor: &Actor, id: ProjectId) -> ApiResult<Project> {
    match state.store.get_project(id).await? {
        Some(p) if actor.can_see(p.company_id, Row::Project(p.id)) => Ok(p),
        _ => Err(ApiError::NotFound("Project not found".into())),
    }
}

async fn check_policy(state: &AppState, company_id: CompanyId, policy: &Value) -> ApiResult<()> {
    let id = guards::selection_id(Some(policy), "executionWorkspacePolicy")?;
    guards::environment_selection(state, company_id, id, Driver::ALL).await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateProject {
    name: String,
    #[serde(default)]
    execution_workspace_policy: Option<Value>,
}

#[utoipa::path(get, path = "/api/companies/{company_id}/projects", tag = "projects",
    params(("company_id" = CompanyId, Path)), responses((status = 200, body = [Project]), (status = 404)))]
async fn list_projects(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    Ok(list_response(
        state.store.list_projects(company_id, &q.page()?).await?,
    ))
}

#[utoipa::path(post, path = "/api/companies/{company_id}/projects", tag = "projects",
    params(("company_id" = CompanyId, Path)), request_body = Object,
    responses((status = 201, body = Project), (status = 400), (status = 403), (status = 422)))]
async fn create_project(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<CreateProject>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_board()?;
    let name = body.name.trim().to_string();
    if name.is_empty() {
        return Err(ApiError::field("name", "name must not be empty"));
    }
    let policy = body.execution_workspace_policy.unwrap_or_else(|| json!({}));
    check_policy(&state, company_id, &policy).await?;
    let project = state
        .store
        .create_project(NewProject {
            company_id,
            name,
            execution_workspace_policy: policy,
        })
        .await?;
    activity::record(
        &state,
        &actor,
        company_id,
        "project.created",
        "project",
        project.id,
        json!({"name": project.name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(project)).into_response())
}

#[utoipa::path(get, path = "/api/projects/{id}", tag = "projects",
    params(("id" = ProjectId, Path)), responses((status = 200, body = Project), (status = 404)))]
async fn get_project(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<ProjectId>,
) -> ApiResult<Json<Project>> {
    Ok(Json(project_for(&state, &actor, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchProject {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    execution_workspace_policy: Option<Value>,
}

#[utoipa::path(patch, path = "/api/projects/{id}", tag = "projects",
    params(("id" = ProjectId, Path)), request_body = Object,
    responses((status = 200, body = Project), (status = 400), (status = 403), (status = 404), (status = 422)))]
async fn update_project(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<ProjectId>,
    StrictJson(body): StrictJson<PatchProject>,
) -> ApiResult<Json<Project>> {
    let project = project_for(&state, &actor, id).await?;
    actor.require_board()?;
    if let Some(n) = &body.name
        && n.trim().is_empty()
    {
        return Err(ApiError::field("name", "name must not be empty"));
    }
    if let Some(policy) = &body.execution_workspace_policy {
        check_policy(&state, project.company_id, policy).await?;
    }
    let updated = state
        .store
        .update_project(
            id,
            ProjectPatch {
                name: body.name.map(|n| n.trim().to_string()),
                execution_workspace_policy: body.execution_workspace_policy,
            },
        )
        .await?;
    activity::record(
        &state,
        &actor,
        project.company_id,
        "project.updated",
        "project",
        id,
        json!({}),
    )
    .await?;
    Ok(Json(updated))
}

#[utoipa::path(delete, path = "/api/projects/{id}", tag = "projects",
    params(("id" = ProjectId, Path)), responses((status = 200, body = Project), (status = 403), (status = 404)))]
async fn delete_project(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<ProjectId>,
) -> ApiResult<Json<Project>> {
    let project = project_for(&state, &actor, id).await?;
    actor.require_board()?;
    state.store.delete_project(id).await?;
    activity::record(
        &state,
        &actor,
        project.company_id,
        "project.deleted",
        "project",
        id,
        json!({"name": project.name}),
    )
    .await?;
    Ok(Json(project))
}
