//! Agents: their default environment (a picker, while `enableEnvironments` is on) and a form
//! to start a run. Both go through the API's handlers.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use berth_core::adapters::supported_drivers;
use berth_core::model::{Agent, Environment};
use berth_core::{AgentId, EnvironmentStatus};
use berth_store::{EnvironmentFilter, Page};
use maud::html;
use serde_json::json;

use crate::error::ApiError;
use crate::json::StrictJson;
use crate::routes::{agents as agents_api, runs as runs_api};
use crate::state::{AppState, SharedState};

use super::layout::{self, FormErrors, Nav, body, csrf, json_of};
use super::session::{CsrfForm, Ui};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/agents", get(list))
        .route("/agents/{id}/environment", post(set_environment))
        .route("/agents/{id}/runs", post(start_run))
}

async fn list(State(state): State<SharedState>, ui: Ui) -> Response {
    render(&state, &ui, None).await
}

/// The agents page; `problem` is a refusal for one agent's form, shown next to it.
async fn render(state: &AppState, ui: &Ui, problem: Option<(AgentId, FormErrors)>) -> Response {
    let agents = match state
        .store
        .list_agents(ui.company.id, &Page::first(Page::DEFAULT_LIMIT))
        .await
    {
        Ok(p) => p.items,
        Err(e) => return layout::error_page(e.into()),
    };
    // The pickers exist only with the environments feature on; the store is not even asked
    // otherwise (as in Paperclip).
    let envs: Vec<Environment> = if ui.environments_enabled {
        match state
            .store
            .list_environments(ui.company.id, &EnvironmentFilter::default(), &Page::all())
            .await
        {
            // Archived ones are no choice, but an agent's current default stays listed so
            // that saving another agent's form cannot look like it dropped it.
            Ok(p) => p
                .items
                .into_iter()
                .filter(|e| {
                    e.status == EnvironmentStatus::Active
                        || agents
                            .iter()
                            .any(|a| a.default_environment_id == Some(e.id))
                })
                .collect(),
            Err(e) => return layout::error_page(e.into()),
        }
    } else {
        Vec::new()
    };
    let env_name = |a: &Agent| {
        a.default_environment_id.map(|id| {
            envs.iter()
                .find(|e| e.id == id)
                .map(|e| e.name.clone())
                .unwrap_or_else(|| id.to_string())
        })
    };
    let mut resp = layout::page(
        ui,
        "Agents",
        Nav::Agents,
        html! {
            h1 { "Agents" }
            @if agents.is_empty() {
                p { "No agents yet. Create one with " code { "berth agent create" } " or the API." }
            }
            @for a in &agents {
                @let errors = problem.as_ref().filter(|(id, _)| *id == a.id).map(|(_, e)| e);
                section.agent aria-labelledby={ "a-" (a.id) } {
                    h2 id={ "a-" (a.id) } { (a.name) }
                    p { "Adapter: " code { (a.adapter_type) }
                        @if ui.environments_enabled {
                            " · Default environment: " (env_name(a).unwrap_or_else(|| "company default".into()))
                        }
                    }
                    @if let Some(e) = errors { (e.summary()) }
                    @if ui.environments_enabled {
                        @let allowed = supported_drivers(&a.adapter_type).unwrap_or(&[]);
                        form.inline method="post" action={ "/agents/" (a.id) "/environment" } {
                            (csrf(ui))
                            label for={ "env-" (a.id) } { "Default environment" }
                            select id={ "env-" (a.id) } name="environmentId" {
                                option value="" selected[a.default_environment_id.is_none()] { "(company default)" }
                                @for e in envs.iter().filter(|e| allowed.contains(&e.driver)) {
                                    @let current = a.default_environment_id == Some(e.id);
                                    @if e.status == EnvironmentStatus::Active || current {
                                        option value=(e.id) selected[current] {
                                            (e.name) " (" (e.driver) ")"
                                            @if e.status != EnvironmentStatus::Active { " — " (e.status) }
                                        }
                                    }
                                }
                            }
                            button.secondary type="submit" { "Set" }
                        }
                    }
                    form method="post" action={ "/agents/" (a.id) "/runs" } {
                        (csrf(ui))
                        div.field {
                            label for={ "prompt-" (a.id) } { "Prompt" }
                            textarea id={ "prompt-" (a.id) } name="prompt" rows="2" required {}
                        }
                        button type="submit" { "Start run" }
                    }
                }
            }
        },
    );
    if problem.is_some() {
        *resp.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    resp
}

async fn agent_for(state: &AppState, ui: &Ui, id: &str) -> Result<Agent, Response> {
    let Ok(id) = id.parse::<AgentId>() else {
        return Err(layout::not_found());
    };
    match agents_api::agent_for(state, &ui.actor, id).await {
        Ok(a) if a.company_id == ui.company.id => Ok(a),
        Ok(_) => Err(layout::not_found()),
        Err(e) => Err(layout::error_page(e)),
    }
}

async fn set_environment(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Response {
    if !ui.environments_enabled {
        return layout::not_found();
    }
    let agent = match agent_for(&state, &ui, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let env = form.trimmed("environmentId");
    let result = async {
        let b: agents_api::PatchAgent = body(json!({
            "defaultEnvironmentId": (!env.is_empty()).then_some(env),
        }))?;
        agents_api::update_agent(
            State(state.clone()),
            ui.actor.clone(),
            Path(agent.id),
            StrictJson(b),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/agents").into_response(),
        Err(e) => {
            let errors = FormErrors::from_api(&e, &[]);
            render(&state, &ui, Some((agent.id, errors))).await
        }
    }
}

async fn start_run(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Response {
    let agent = match agent_for(&state, &ui, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let result = async {
        let b: runs_api::CreateRun = body(json!({
            "agentId": agent.id,
            "prompt": form.get("prompt"),
        }))?;
        runs_api::create_run(
            State(state.clone()),
            ui.actor.clone(),
            Path(ui.company.id),
            StrictJson(b),
        )
        .await
    }
    .await;
    match result {
        Ok(resp) => {
            let v = json_of(resp).await;
            match v["id"].as_str() {
                Some(id) => Redirect::to(&format!("/runs/{id}")).into_response(),
                None => layout::error_page(ApiError::internal("the new run has no id")),
            }
        }
        Err(e) => {
            let errors = FormErrors::from_api(&e, &[]);
            render(&state, &ui, Some((agent.id, errors))).await
        }
    }
}
