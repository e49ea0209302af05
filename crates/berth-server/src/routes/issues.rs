//! Issues: may pin an execution workspace and carry an environment selection in
//! `executionWorkspaceSettings`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::model::Issue;
use berth_core::{AgentId, CompanyId, Driver, ExecutionWorkspaceId, IssueId, ProjectId};
use berth_store::{IssuePatch, NewIssue};
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
        .routes(routes!(list_issues, create_issue))
        .routes(routes!(get_issue, update_issue, delete_issue))
}

async fn issue_for(state: &AppState, actor: &Actor, id: IssueId) -> ApiResult<Issue> {
    match state.store.get_issue(id).await? {
        Some(i) if actor.can_see(i.company_id, Row::Issue(i.id)) => Ok(i),
        _ => Err(ApiError::NotFound("Issue not found".into())),
    }
}

/// Every id an issue points at must belong to the issue's company (422 otherwise — a 404
/// would name the wrong resource).
async fn check_refs(
    state: &AppState,
    company_id: CompanyId,
    project_id: Option<ProjectId>,
    agent_id: Option<AgentId>,
    workspace_id: Option<ExecutionWorkspaceId>,
    settings: Option<&Value>,
) -> ApiResult<()> {
    if let Some(p) = project_id
        && !matches!(state.store.get_project(p).await?, Some(p) if p.company_id == company_id)
    {
        return Err(ApiError::unprocessable("Project not found."));
    }
    if let Some(a) = agent_id
        && !matches!(state.store.get_agent(a).await?, Some(a) if a.company_id == company_id)
    {
        return Err(ApiError::unprocessable("Assignee agent not found."));
    }
    if let Some(w) = workspace_id
        && !matches!(state.store.get_execution_workspace(w).await?, Some(w) if w.company_id == company_id)
    {
        return Err(ApiError::unprocessable("Execution workspace not found."));
    }
    if let Some(settings) = settings {
        let id = guards::selection_id(Some(settings), "executionWorkspaceSettings")?;
        guards::environment_selection(state, company_id, id, Driver::ALL).await?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateIssue {
    title: String,
    #[serde(default)]
    project_id: Option<ProjectId>,
    #[serde(default)]
    assignee_agent_id: Option<AgentId>,
    #[serde(default)]
    execution_workspace_id: Option<ExecutionWorkspaceId>,
    #[serde(default)]
    execution_workspace_settings: Option<Value>,
}

#[utoipa::path(get, path = "/api/companies/{company_id}/issues", tag = "issues",
    params(("company_id" = CompanyId, Path)), responses((status = 200, body = [Issue]), (status = 404)))]
async fn list_issues(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    Ok(list_response(
        state.store.list_issues(company_id, &q.page()?).await?,
    ))
}

#[utoipa::path(post, path = "/api/companies/{company_id}/issues", tag = "issues",
    params(("company_id" = CompanyId, Path)), request_body = Object,
    responses((status = 201, body = Issue), (status = 400), (status = 403), (status = 422)))]
async fn create_issue(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<CreateIssue>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_board()?;
    let title = body.title.trim().to_string();
    if title.is_empty() {
        return Err(ApiError::field("title", "title must not be empty"));
    }
    let settings = body
        .execution_workspace_settings
        .unwrap_or_else(|| json!({}));
    check_refs(
        &state,
        company_id,
        body.project_id,
        body.assignee_agent_id,
        body.execution_workspace_id,
        Some(&settings),
    )
    .await?;
    let issue = state
        .store
        .create_issue(NewIssue {
            company_id,
            project_id: body.project_id,
            title,
            assignee_agent_id: body.assignee_agent_id,
            execution_workspace_id: body.execution_workspace_id,
            execution_workspace_settings: settings,
        })
        .await?;
    activity::record(
        &state,
        &actor,
        company_id,
        "issue.created",
        "issue",
        issue.id,
        json!({"title": issue.title}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(issue)).into_response())
}

#[utoipa::path(get, path = "/api/issues/{id}", tag = "issues",
    params(("id" = IssueId, Path)), responses((status = 200, body = Issue), (status = 404)))]
async fn get_issue(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<IssueId>,
) -> ApiResult<Json<Issue>> {
    Ok(Json(issue_for(&state, &actor, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchIssue {
    #[serde(default)]
    title: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    project_id: Option<Option<ProjectId>>,
    #[serde(default, deserialize_with = "double_option")]
    assignee_agent_id: Option<Option<AgentId>>,
    #[serde(default, deserialize_with = "double_option")]
    execution_workspace_id: Option<Option<ExecutionWorkspaceId>>,
    #[serde(default)]
    execution_workspace_settings: Option<Value>,
}

#[utoipa::path(patch, path = "/api/issues/{id}", tag = "issues",
    params(("id" = IssueId, Path)), request_body = Object,
    responses((status = 200, body = Issue), (status = 400), (status = 403), (status = 404), (status = 422)))]
async fn update_issue(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<IssueId>,
    StrictJson(body): StrictJson<PatchIssue>,
) -> ApiResult<Json<Issue>> {
    let issue = issue_for(&state, &actor, id).await?;
    actor.require_board()?;
    if let Some(t) = &body.title
        && t.trim().is_empty()
    {
        return Err(ApiError::field("title", "title must not be empty"));
    }
    check_refs(
        &state,
        issue.company_id,
        body.project_id.flatten(),
        body.assignee_agent_id.flatten(),
        body.execution_workspace_id.flatten(),
        body.execution_workspace_settings.as_ref(),
    )
    .await?;
    let updated = state
        .store
        .update_issue(
            id,
            IssuePatch {
                project_id: body.project_id,
                title: body.title.map(|t| t.trim().to_string()),
                assignee_agent_id: body.assignee_agent_id,
                execution_workspace_id: body.execution_workspace_id,
                execution_workspace_settings: body.execution_workspace_settings,
            },
        )
        .await?;
    activity::record(
        &state,
        &actor,
        issue.company_id,
        "issue.updated",
        "issue",
        id,
        json!({}),
    )
    .await?;
    Ok(Json(updated))
}

#[utoipa::path(delete, path = "/api/issues/{id}", tag = "issues",
    params(("id" = IssueId, Path)), responses((status = 200, body = Issue), (status = 403), (status = 404)))]
async fn delete_issue(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<IssueId>,
) -> ApiResult<Json<Issue>> {
    let issue = issue_for(&state, &actor, id).await?;
    actor.require_board()?;
    state.store.delete_issue(id).await?;
    activity::record(
        &state,
        &actor,
        issue.company_id,
        "issue.deleted",
        "issue",
        id,
        json!({"title": issue.title}),
    )
    .await?;
    Ok(Json(issue))
}
