//! Runs: the list (agent, environment and why it was chosen, status, duration) and a run's
//! page with its output (rendered up to now, then followed live over SSE with replay), the
//! conflicts its restore reported, and a cancel button.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use berth_core::model::{Run, RunEvent};
use berth_core::{EnvironmentId, RunId, RunStatus};
use berth_store::{EnvironmentFilter, Page};
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::StrictQuery;
use crate::routes::runs as api;
use crate::state::{AppState, SharedState};

use super::layout::{self, Nav, badge, csrf, time};
use super::session::{CsrfForm, Ui};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/runs", get(list))
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/cancel", post(cancel))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    cursor: Option<String>,
    status: Option<String>,
}

/// How much output the run page renders itself; the rest arrives over the stream.
const PAGE_EVENTS: u32 = 400;

async fn env_names(state: &AppState, ui: &Ui) -> Result<HashMap<EnvironmentId, String>, Response> {
    if !ui.environments_enabled {
        return Ok(HashMap::new());
    }
    state
        .store
        .list_environments(ui.company.id, &EnvironmentFilter::default(), &Page::all())
        .await
        .map(|p| p.items.into_iter().map(|e| (e.id, e.name)).collect())
        .map_err(|e| layout::error_page(e.into()))
}

fn run_duration(run: &Run) -> String {
    match run.started_at {
        Some(start) => {
            let end = run.finished_at.unwrap_or_else(Utc::now);
            layout::duration((end - start).num_seconds().max(0))
        }
        None => "—".into(),
    }
}

/// The environment cell: its name (a link while the pages are on) and why it was chosen.
fn environment_cell(run: &Run, ui: &Ui, names: &HashMap<EnvironmentId, String>) -> Markup {
    html! {
        @match run.environment_id {
            Some(id) => {
                @let name = names.get(&id).cloned().unwrap_or_else(|| "environment".into());
                @if ui.environments_enabled { a href={ "/environments/" (id) } { (name) } } @else { (name) }
                @if let Some(src) = &run.environment_source { br; small.hint { "chosen by: " (src) } }
            }
            None => { "—" }
        }
    }
}

async fn list(State(state): State<SharedState>, ui: Ui, Query(q): Query<ListQuery>) -> Response {
    let cursor = q.cursor.filter(|c| uuid::Uuid::parse_str(c).is_ok());
    let page = Page { limit: 50, cursor };
    // An unknown status shows every run (the select offers only real ones).
    let status = q
        .status
        .as_deref()
        .and_then(|v| v.parse::<RunStatus>().ok());
    let runs = match state.store.list_runs(ui.company.id, status, &page).await {
        Ok(p) => p,
        Err(e) => return layout::error_page(e.into()),
    };
    let agents: HashMap<_, _> = match state.store.list_agents(ui.company.id, &Page::all()).await {
        Ok(p) => p.items.into_iter().map(|a| (a.id, a.name)).collect(),
        Err(e) => return layout::error_page(e.into()),
    };
    let names = match env_names(&state, &ui).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let body = html! {
        h1 { "Runs" }
        form.inline method="get" action="/runs" {
            label for="f-status" { "Status" }
            select #f-status name="status" {
                option value="" selected[status.is_none()] { "any" }
                @for st in RunStatus::ALL {
                    option value=(st) selected[status == Some(*st)] { (st) }
                }
            }
            button.secondary type="submit" { "Show" }
        }
        @if runs.items.is_empty() {
            @match status {
                Some(st) => { p { "No " (st) " runs." } }
                None => { p { "No runs yet. Start one from " a href="/agents" { "an agent" } "." } }
            }
        }
        @else {
            div.scroll { table {
                caption.visually-hidden { "Runs, newest first" }
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Agent" } th scope="col" { "Environment" }
                    th scope="col" { "Status" } th scope="col" { "Queued" } th scope="col" { "Duration" }
                } }
                tbody {
                    @for r in &runs.items {
                        tr {
                            td { a href={ "/runs/" (r.id) } { code { (r.id.to_string().get(..8).unwrap_or("")) } } }
                            td { (agents.get(&r.agent_id).cloned().unwrap_or_else(|| "(deleted)".into())) }
                            td { (environment_cell(r, &ui, &names)) }
                            td { (badge(&r.status.to_string()))
                                @if let Some(code) = &r.error_code { br; small { (code) } } }
                            td { (time(&r.queued_at)) }
                            td { (run_duration(r)) }
                        }
                    }
                }
            } }
            @if let Some(next) = &runs.next_cursor {
                p { a href={ "/runs?cursor=" (next) @if let Some(st) = status { "&status=" (st) } } { "Older runs" } }
            }
        }
    };
    layout::page(&ui, "Runs", Nav::Runs, body)
}

async fn run_for(state: &AppState, ui: &Ui, id: &str) -> Result<Run, Response> {
    let not_found = || layout::error_page(ApiError::NotFound("Run not found".into()));
    let Ok(id) = id.parse::<RunId>() else {
        return Err(not_found());
    };
    match state.store.get_run(id).await {
        Ok(Some(r))
            if r.company_id == ui.company.id && ui.actor.can_access_company(r.company_id) =>
        {
            Ok(r)
        }
        Ok(_) => Err(not_found()),
        Err(e) => Err(layout::error_page(e.into())),
    }
}

fn event_line(e: &RunEvent) -> Markup {
    let text = match e.payload.get("text").and_then(|t| t.as_str()) {
        Some(t) => t.to_string(),
        None => match e.payload.get("message").and_then(|t| t.as_str()) {
            Some(m) => format!("{m}\n"),
            None => format!("{}\n", e.payload),
        },
    };
    html! {
        @match e.stream.as_str() {
            "stdout" => { span.stdout { (text) } }
            "stderr" => { span.stderr { (text) } }
            other => { span.meta { "[" (other) "] " (text) } }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Notice {
    done: Option<String>,
}

async fn show(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> Response {
    let run = match run_for(&state, &ui, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let events = match state.store.list_run_events(run.id, 0, PAGE_EVENTS).await {
        Ok(e) => e,
        Err(e) => return layout::error_page(e.into()),
    };
    let after = events.last().map(|e| e.seq).unwrap_or(0);
    let agent = state.store.get_agent(run.agent_id).await.ok().flatten();
    let names = match env_names(&state, &ui).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let terminal = run.status.is_terminal();
    let truncated = events.len() >= PAGE_EVENTS as usize;
    let conflicts: Vec<String> = run
        .result
        .as_ref()
        .and_then(|r| r.get("conflicts"))
        .and_then(|c| c.as_array())
        .map(|c| {
            c.iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let body = html! {
        p { a href="/runs" { "← Runs" } }
        h1 { "Run " code { (run.id.to_string().get(..8).unwrap_or("")) } " "
            span #run-status class={ "badge b-" (run.status) } { (run.status) } }
        (layout::notice(n.done.as_deref()))
        dl.props {
            dt { "Agent" } dd { (agent.map(|a| a.name).unwrap_or_else(|| "(deleted)".into())) }
            dt { "Environment" } dd { (environment_cell(&run, &ui, &names)) }
            dt { "Queued" } dd { (time(&run.queued_at)) }
            dt { "Duration" } dd { (run_duration(&run)) }
            @if let Some(code) = &run.error_code { dt { "Error" } dd { code { (code) } @if let Some(m) = &run.error_message { " — " (m) } } }
            @if let Some(x) = run.exit_code { dt { "Exit code" } dd { (x) } }
            dt { "Prompt" } dd { (run.prompt) }
        }
        @if !conflicts.is_empty() {
            section.errors aria-labelledby="conflicts-h" {
                h2 #conflicts-h { "Restore conflicts" }
                p { "These paths changed both here and on the environment during the run. The local version was kept; the environment's is next to it as " code { "<path>.berth-remote" } "." }
                ul { @for c in &conflicts { li { code { (c) } } } }
            }
        }
        @if !terminal {
            form #cancel method="post" action={ "/runs/" (run.id) "/cancel" } {
                (csrf(&ui)) button.danger type="submit" { "Cancel run" }
            }
        }
        h2 { "Output" }
        p #live role="status" aria-live="polite" {
            @if terminal { "The run ended." } @else { "Reload to see new output, or enable JavaScript to follow it live." }
        }
        @if truncated { p.hint { "Showing the first " (PAGE_EVENTS) " events; the rest follows below when JavaScript is on." } }
        pre #output .output tabindex="0" aria-label="Run output"
            data-events={ "/runs/" (run.id) "/events" } data-after=(after)
            data-done=(if terminal && !truncated { "true" } else { "false" }) {
            @for e in &events { (event_line(e)) }
        }
        script src="/ui.js" defer {}
    };
    layout::page(&ui, "Run", Nav::Runs, body)
}

#[derive(Debug, Default, Deserialize)]
struct EventsQuery {
    after: Option<i64>,
}

/// The API's event stream, for the signed-in browser (an `EventSource` sends no bearer
/// token, only the cookie).
async fn events(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    let run = match run_for(&state, &ui, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let query = api::EventsQuery { after: q.after };
    match api::run_events(
        State(state.clone()),
        ui.actor.clone(),
        Path(run.id),
        headers,
        StrictQuery(query),
    )
    .await
    {
        Ok(sse) => sse.into_response(),
        Err(e) => layout::error_page(e),
    }
}

async fn cancel(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    _form: CsrfForm,
) -> Response {
    let run = match run_for(&state, &ui, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match api::cancel_run(State(state.clone()), ui.actor.clone(), Path(run.id)).await {
        Ok(_) => Redirect::to(&format!("/runs/{}?done=cancel", run.id)).into_response(),
        Err(e) => layout::error_page(e),
    }
}
