//! Runs: create (queued, 202), read, list, cancel, and the live event stream as Server-Sent
//! Events with `Last-Event-ID` replay from any point.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use berth_core::model::Run;
use berth_core::{AgentId, CompanyId, ExecutionWorkspaceId, IssueId, RunId, RunStatus};
use berth_store::{NewRun, RunPatch};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use berth_engine::run::select::{load_context, select_environment};

use crate::activity;
use crate::auth::{Actor, Row, company_for};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::json::StrictJson;
use crate::state::{AppState, SharedState};

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs, create_run))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(run_events))
}

async fn run_for(state: &AppState, actor: &Actor, id: RunId) -> ApiResult<Run> {
    match state.store.get_run(id).await? {
        Some(r) if actor.can_see(r.company_id, Row::Run(r.id)) => Ok(r),
        _ => Err(ApiError::NotFound("Run not found".into())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateRun {
    agent_id: AgentId,
    prompt: String,
    #[serde(default)]
    issue_id: Option<IssueId>,
    #[serde(default)]
    execution_workspace_id: Option<ExecutionWorkspaceId>,
}

#[utoipa::path(post, path = "/api/companies/{company_id}/runs", tag = "runs",
    params(("company_id" = CompanyId, Path)), request_body = Object,
    responses((status = 202, body = Run), (status = 400), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn create_run(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<CreateRun>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_board()?;
    if body.prompt.trim().is_empty() {
        return Err(ApiError::field("prompt", "prompt must not be empty"));
    }
    if !matches!(state.store.get_agent(body.agent_id).await?, Some(a) if a.company_id == company_id)
    {
        return Err(ApiError::unprocessable("Agent not found."));
    }
    if let Some(i) = body.issue_id
        && !matches!(state.store.get_issue(i).await?, Some(i) if i.company_id == company_id)
    {
        return Err(ApiError::unprocessable("Issue not found."));
    }
    if let Some(w) = body.execution_workspace_id
        && !matches!(state.store.get_execution_workspace(w).await?, Some(w) if w.company_id == company_id)
    {
        return Err(ApiError::unprocessable("Execution workspace not found."));
    }
    check_host_execution(&state, company_id, &body).await?;
    let run = state
        .store
        .create_run(NewRun {
            company_id,
            agent_id: body.agent_id,
            issue_id: body.issue_id,
            execution_workspace_id: body.execution_workspace_id,
            prompt: body.prompt,
        })
        .await?;
    activity::record(
        &state,
        &actor,
        company_id,
        "run.created",
        "run",
        run.id,
        json!({"agentId": run.agent_id}),
    )
    .await?;
    state.worker.wake();
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

/// In token mode a run that would execute on this host needs its company's `hostExecution`
/// grant: refused here with a 403, before anything is queued. (The worker checks again, since
/// the selection can change before the run starts.) A selection that fails now is left to
/// fail the run with its own error code.
async fn check_host_execution(
    state: &AppState,
    company_id: CompanyId,
    body: &CreateRun,
) -> ApiResult<()> {
    if state.local_trusted() {
        return Ok(());
    }
    let ctx = match load_context(
        state.store.as_ref(),
        company_id,
        body.agent_id,
        body.issue_id,
        body.execution_workspace_id,
    )
    .await
    {
        Ok(ctx) => ctx,
        Err(_) => return Ok(()),
    };
    let Ok((env, _)) = select_environment(state.store.as_ref(), company_id, &ctx).await else {
        return Ok(());
    };
    match berth_engine::host::check_host_execution(state.store.as_ref(), company_id, &env, true)
        .await?
    {
        Ok(()) => Ok(()),
        Err(denied) => Err(ApiError::Forbidden(denied.to_string())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRuns {
    status: Option<RunStatus>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/companies/{company_id}/runs", tag = "runs",
    params(("company_id" = CompanyId, Path), ("status" = Option<RunStatus>, Query)),
    responses((status = 200, body = [Run]), (status = 404)))]
async fn list_runs(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictQuery(q): StrictQuery<ListRuns>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    Ok(list_response(
        state.store.list_runs(company_id, q.status, &page).await?,
    ))
}

#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs",
    params(("id" = RunId, Path)), responses((status = 200, body = Run), (status = 404)))]
async fn get_run(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<RunId>,
) -> ApiResult<Json<Run>> {
    Ok(Json(run_for(&state, &actor, id).await?))
}

#[utoipa::path(post, path = "/api/runs/{id}/cancel", tag = "runs",
    params(("id" = RunId, Path)),
    responses((status = 202, body = Run), (status = 404), (status = 409)))]
pub(crate) async fn cancel_run(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<RunId>,
) -> ApiResult<Response> {
    let run = run_for(&state, &actor, id).await?;
    actor.require_board()?;
    if run.status.is_terminal() {
        return Err(ApiError::Conflict {
            message: format!("Run already ended ({}).", run.status),
            details: json!({"code": "run_finished", "status": run.status}),
        });
    }
    // A run executing here stops through its token (restore and release still run); one
    // executing on another instance sharing the database sees the request within a second; a
    // queued one never starts.
    state.store.request_run_cancel(id).await?;
    if !state.worker.cancel(id) && run.status == RunStatus::Queued {
        let _ = state
            .store
            .update_run(
                id,
                RunPatch {
                    status: Some(RunStatus::Cancelled),
                    error_code: Some(Some("cancelled".into())),
                    error_message: Some(Some("cancelled before it started".into())),
                    finished_at: Some(Some(chrono::Utc::now())),
                    ..RunPatch::default()
                },
            )
            .await;
    }
    activity::record(
        &state,
        &actor,
        run.company_id,
        "run.cancel_requested",
        "run",
        id,
        json!({}),
    )
    .await?;
    let run = run_for(&state, &actor, id).await?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Replay events after this sequence number (like `Last-Event-ID`).
    pub(crate) after: Option<i64>,
}

#[utoipa::path(get, path = "/api/runs/{id}/events", tag = "runs",
    params(("id" = RunId, Path), ("after" = Option<i64>, Query)),
    responses((status = 200, description = "text/event-stream of run events; `id` is the event's seq"), (status = 404)))]
pub(crate) async fn run_events(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<RunId>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<EventsQuery>,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>>> {
    run_for(&state, &actor, id).await?;
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = from_header.or(q.after).unwrap_or(0);
    let store = state.store.clone();
    // Poll the durable log: works across instances and after restarts; 50 ms keeps the live
    // latency well under the 300 ms target.
    let stream = futures::stream::unfold(
        (store, after, false),
        move |(store, mut after, done)| async move {
            if done {
                return None;
            }
            loop {
                let events = match store.list_run_events(id, after, 500).await {
                    Ok(e) => e,
                    Err(e) => {
                        let ev = SseEvent::default().event("error").data(e.to_string());
                        return Some((vec![Ok(ev)], (store, after, true)));
                    }
                };
                if !events.is_empty() {
                    let out: Vec<Result<SseEvent, Infallible>> = events
                        .iter()
                        .map(|e| {
                            Ok(SseEvent::default()
                                .id(e.seq.to_string())
                                .event(e.stream.clone())
                                .data(json!({"seq": e.seq, "at": e.at, "stream": e.stream, "payload": e.payload}).to_string()))
                        })
                        .collect();
                    after = events.last().map(|e| e.seq).unwrap_or(after);
                    return Some((out, (store, after, false)));
                }
                match store.get_run(id).await {
                    Ok(Some(run)) if run.status.is_terminal() => {
                        // One more look: the final events land before the status.
                        if let Ok(rest) = store.list_run_events(id, after, 1).await
                            && !rest.is_empty()
                        {
                            continue;
                        }
                        let end = SseEvent::default()
                            .event("end")
                            .data(json!({"status": run.status, "errorCode": run.error_code, "exitCode": run.exit_code}).to_string());
                        return Some((vec![Ok(end)], (store, after, true)));
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(_) => return None,
                }
            }
        },
    )
    .flat_map(futures::stream::iter);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
