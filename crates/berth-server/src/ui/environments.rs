//! Environment pages: list, SSH create/edit, probe (saved or draft), trust host key,
//! archive/delete, leases.
//! Every change goes through the API's handlers (`routes::environments`), so validation,
//! secrets and activity are the API's; this module only turns forms into their bodies and
//! their answers into pages.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use berth_core::config::{DriverConfig, WorkspaceMode};
use berth_core::model::{Environment, Lease};
use berth_core::{CompanyId, Driver, EnvironmentId, EnvironmentStatus, LeaseStatus};
use berth_store::{EnvironmentFilter, Page};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::StrictQuery;
use crate::json::StrictJson;
use crate::routes::environments as api;
use crate::state::{AppState, SharedState};

use super::layout::{self, Field, FormErrors, Nav, badge, body, csrf, json_of, time};
use super::session::{CsrfForm, Ui};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/environments", get(list).post(create))
        .route("/environments/new", get(new_form))
        .route("/environments/probe-draft", post(probe_draft))
        .route("/environments/{id}", get(show).post(update))
        .route("/environments/{id}/edit", get(edit_form))
        .route("/environments/{id}/probe", post(probe))
        .route("/environments/{id}/trust", post(trust_ask))
        .route("/environments/{id}/trust/confirm", post(trust_confirm))
        .route("/environments/{id}/status", post(set_status))
        .route("/environments/{id}/delete", post(delete))
}

/// The form's field names: the API's config keys, so its errors land next to them.
const FIELDS: &[&str] = &[
    "name",
    "description",
    "host",
    "port",
    "username",
    "remoteWorkspacePath",
    "privateKey",
    "privateKeyPassphrase",
    "knownHosts",
    "strictHostKeyChecking",
    "workspaceMode",
    "inPlacePath",
    "driver",
    "capacity",
];

/// The environment for a page; 404 when the pages are off, missing, or another company's.
async fn env_for(state: &AppState, ui: &Ui, id: &str) -> Result<Environment, Response> {
    if !ui.environments_enabled {
        return Err(layout::not_found());
    }
    let Ok(id) = id.parse::<EnvironmentId>() else {
        return Err(layout::not_found());
    };
    match api::environment_for(state, &ui.actor, id).await {
        Ok(env) if env.company_id == ui.company.id => Ok(env),
        Ok(_) => Err(layout::not_found()),
        Err(e) => Err(layout::error_page(e)),
    }
}

/// The last probe of each environment, from the activity log (`environment.probed`).
async fn last_probes(
    state: &AppState,
    company: CompanyId,
) -> ApiResult<HashMap<String, (bool, String, DateTime<Utc>)>> {
    let mut out: HashMap<String, (bool, String, DateTime<Utc>)> = HashMap::new();
    for entry in state
        .store
        .list_activity(company, &Page::first(Page::MAX_LIMIT))
        .await?
        .items
    {
        if entry.action != "environment.probed" {
            continue;
        }
        let newer = out
            .get(&entry.entity_id)
            .is_none_or(|(_, _, at)| *at < entry.created_at);
        if newer {
            out.insert(
                entry.entity_id.clone(),
                (
                    entry.details["ok"].as_bool().unwrap_or(false),
                    entry.details["summary"].as_str().unwrap_or("").to_string(),
                    entry.created_at,
                ),
            );
        }
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
struct Notice {
    done: Option<String>,
}

async fn list(State(state): State<SharedState>, ui: Ui, Query(n): Query<Notice>) -> Response {
    if !ui.environments_enabled {
        return layout::not_found();
    }
    match list_page(&state, &ui, n.done.as_deref()).await {
        Ok(r) => r,
        Err(e) => layout::error_page(e),
    }
}

async fn list_page(state: &AppState, ui: &Ui, done: Option<&str>) -> ApiResult<Response> {
    let envs = state
        .store
        .list_environments(
            ui.company.id,
            &EnvironmentFilter::default(),
            &Page::first(Page::DEFAULT_LIMIT),
        )
        .await?;
    // Without `environments:manage` a reader sees what the API shows them: no leases, and
    // probe outcomes without their summaries (which name users, hosts and failures).
    let privileged = ui.actor.is_privileged(ui.company.id);
    let probes = last_probes(state, ui.company.id).await?;
    let mut rows = Vec::new();
    for env in &envs.items {
        let active = if privileged {
            state
                .store
                .list_leases(env.id, Some(LeaseStatus::Active), &Page::all())
                .await?
                .items
                .len()
        } else {
            0
        };
        rows.push((env, active, probes.get(&env.id.to_string())));
    }
    let body = html! {
        h1 { "Environments" }
        (layout::notice(done))
        @if privileged { div.actions { a.button href="/environments/new" { "New SSH environment" } } }
        div.scroll {
            table {
                caption.visually-hidden { "Environments of " (ui.company.name) }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Driver" } th scope="col" { "Status" }
                    th scope="col" { "Last probe" }
                    @if privileged { th scope="col" { "Active leases" } th scope="col" { "Capacity use" } }
                } }
                tbody {
                    @for (env, active, probe) in &rows {
                        tr {
                            td { a href={ "/environments/" (env.id) } { (env.name) } }
                            td { (env.driver) }
                            td { (badge(&env.status.to_string())) }
                            td {
                                @match probe {
                                    Some((ok, summary, at)) => {
                                        (badge(if *ok { "ok" } else { "failed" }))
                                        @if privileged { " " (summary) }
                                        " · " (time(at))
                                    }
                                    None => { "never" }
                                }
                            }
                            @if privileged {
                                td { (active) }
                                td {
                                    @match env.capacity {
                                        Some(cap) if cap > 0 => {
                                            (active) " of " (cap) " (" ((*active as i64 * 100) / cap) "%)"
                                        }
                                        _ => { (active) " (unbounded)" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if envs.items.is_empty() { p { "No environments yet." } }
    };
    Ok(layout::page(ui, "Environments", Nav::Environments, body))
}

/// What the SSH form shows (never the private key or its passphrase).
#[derive(Debug, Default)]
struct SshForm {
    name: String,
    description: String,
    host: String,
    port: String,
    username: String,
    remote_workspace_path: String,
    known_hosts: String,
    strict: bool,
    workspace_mode: String,
    in_place_path: String,
    has_key: bool,
}

impl SshForm {
    fn blank() -> Self {
        SshForm {
            port: "22".into(),
            strict: true,
            workspace_mode: "copy".into(),
            ..SshForm::default()
        }
    }

    fn of(env: &Environment) -> Self {
        let mut f = SshForm {
            name: env.name.clone(),
            description: env.description.clone().unwrap_or_default(),
            ..SshForm::blank()
        };
        if let Ok(parsed) = env.typed_config()
            && let DriverConfig::Ssh(c) = parsed.config
        {
            f.host = c.host;
            f.port = c.port.to_string();
            f.username = c.username;
            f.remote_workspace_path = c.remote_workspace_path;
            f.known_hosts = c.known_hosts.unwrap_or_default();
            f.strict = c.strict_host_key_checking;
            f.workspace_mode = match c.workspace_mode {
                WorkspaceMode::Copy => "copy".into(),
                WorkspaceMode::InPlace => "in_place".into(),
            };
            f.in_place_path = c.in_place_path.unwrap_or_default();
            f.has_key = c.private_key_secret_ref.is_some();
        }
        f
    }

    fn posted(form: &CsrfForm, has_key: bool) -> Self {
        SshForm {
            name: form.trimmed("name"),
            description: form.trimmed("description"),
            host: form.trimmed("host"),
            port: form.trimmed("port"),
            username: form.trimmed("username"),
            remote_workspace_path: form.trimmed("remoteWorkspacePath"),
            known_hosts: form.get("knownHosts").to_string(),
            strict: form.checked("strictHostKeyChecking"),
            workspace_mode: form.trimmed("workspaceMode"),
            in_place_path: form.trimmed("inPlacePath"),
            has_key,
        }
    }
}

/// The config the API receives from the form: a new key only when one was pasted (an empty
/// field keeps the stored one).
fn ssh_config(form: &CsrfForm) -> Value {
    let port = form.trimmed("port");
    let mut c = json!({
        "host": form.trimmed("host"),
        "port": port.parse::<u64>().map(Value::from).unwrap_or(Value::String(port)),
        "username": form.trimmed("username"),
        "remoteWorkspacePath": form.trimmed("remoteWorkspacePath"),
        "knownHosts": form.get("knownHosts"),
        "strictHostKeyChecking": form.checked("strictHostKeyChecking"),
        "workspaceMode": form.trimmed("workspaceMode"),
    });
    let in_place = form.trimmed("inPlacePath");
    c["inPlacePath"] = if in_place.is_empty() {
        Value::Null
    } else {
        Value::String(in_place)
    };
    if !form.get("privateKey").trim().is_empty() {
        c["privateKey"] = Value::String(form.get("privateKey").to_string());
    }
    if !form.get("privateKeyPassphrase").is_empty() {
        c["privateKeyPassphrase"] = Value::String(form.get("privateKeyPassphrase").to_string());
    }
    c
}

fn ssh_form_page(
    ui: &Ui,
    env: Option<&Environment>,
    f: &SshForm,
    errors: &FormErrors,
    probed: Option<Markup>,
) -> Response {
    let (title, action) = match env {
        Some(e) => (
            format!("Edit {}", e.name),
            format!("/environments/{}", e.id),
        ),
        None => (
            "New SSH environment".to_string(),
            "/environments".to_string(),
        ),
    };
    let key_hint = if f.has_key {
        "A key is stored (encrypted, as a company secret) and is never shown again. Paste a new one to replace it; leave empty to keep it."
    } else {
        "Paste the whole OpenSSH private key. It is stored encrypted as a company secret and never shown again."
    };
    let body = html! {
        h1 { (title) }
        (errors.summary())
        @if let Some(p) = probed { (p) }
        form method="post" action=(action) novalidate {
            (csrf(ui))
            (Field::new("name", "Name", &f.name).required().render(errors))
            (Field::new("description", "Description", &f.description).render(errors))
            fieldset {
                legend { "Connection" }
                (Field::new("host", "Host", &f.host).required().hint("Name or address of the SSH server.").render(errors))
                (Field::new("port", "Port", &f.port).kind("number").required().render(errors))
                (Field::new("username", "User", &f.username).required().render(errors))
                (Field::new("remoteWorkspacePath", "Remote workspace path", &f.remote_workspace_path).required()
                    .hint("Absolute path on the host under which runs work.").render(errors))
                (Field::new("privateKey", "Private key", "").kind("textarea").hint(key_hint).render(errors))
                (Field::new("privateKeyPassphrase", "Key passphrase", "").kind("password")
                    .hint("Only if the key has one; stored like the key.").render(errors))
            }
            fieldset {
                legend { "Host key" }
                (Field::new("knownHosts", "Known hosts", &f.known_hosts).kind("textarea")
                    .hint("OpenSSH known_hosts lines for this host. Leave empty and use “Trust host key” after saving to pin what the host presents.").render(errors))
                div.check {
                    input #f-strictHostKeyChecking type="checkbox" name="strictHostKeyChecking" value="true" checked[f.strict];
                    label for="f-strictHostKeyChecking" { "Strict host key checking (refuse unknown or changed keys)" }
                }
                @if let Some(e) = errors.field("strictHostKeyChecking") { strong.field-error { (e) } }
            }
            fieldset {
                legend { "Workspace" }
                div.field.invalid[errors.field("workspaceMode").is_some()] {
                    label for="f-workspaceMode" { "Workspace mode" }
                    select #f-workspaceMode name="workspaceMode" aria-describedby="h-workspaceMode" {
                        option value="copy" selected[f.workspace_mode == "copy"] { "copy — sync the workspace out and back" }
                        option value="in_place" selected[f.workspace_mode == "in_place"] { "in_place — work in a directory on the host" }
                    }
                    small.hint #h-workspaceMode { "How a run's workspace reaches the host." }
                    @if let Some(e) = errors.field("workspaceMode") { strong.field-error { (e) } }
                }
                (Field::new("inPlacePath", "In-place path", &f.in_place_path).hint("For in_place mode: the directory on the host.").render(errors))
            }
            div.actions {
                button type="submit" { "Save" }
                @if env.is_none() {
                    button.secondary type="submit" formaction="/environments/probe-draft" { "Probe without saving" }
                }
                a href=(env.map(|e| format!("/environments/{}", e.id)).unwrap_or_else(|| "/environments".into())) { "Cancel" }
            }
        }
    };
    let mut resp = layout::page(ui, &title, Nav::Environments, body);
    if !errors.is_empty() {
        *resp.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    resp
}

async fn new_form(ui: Ui) -> Response {
    if !ui.environments_enabled {
        return layout::not_found();
    }
    ssh_form_page(&ui, None, &SshForm::blank(), &FormErrors::default(), None)
}

async fn create(State(state): State<SharedState>, ui: Ui, form: CsrfForm) -> Response {
    if !ui.environments_enabled {
        return layout::not_found();
    }
    let description = form.trimmed("description");
    let result = async {
        let b: api::CreateBody = body(json!({
            "name": form.get("name"),
            "description": (!description.is_empty()).then_some(description),
            "driver": "ssh",
            "config": ssh_config(&form),
        }))?;
        api::create_environment(
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
            let id = v["id"].as_str().unwrap_or("");
            Redirect::to(&format!("/environments/{id}?done=created")).into_response()
        }
        Err(e) => ssh_form_page(
            &ui,
            None,
            &SshForm::posted(&form, false),
            &FormErrors::from_api(&e, FIELDS),
            None,
        ),
    }
}

async fn edit_form(State(state): State<SharedState>, ui: Ui, Path(id): Path<String>) -> Response {
    let env = match env_for(&state, &ui, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    if env.driver != Driver::Ssh {
        return layout::error_page(ApiError::unprocessable(
            "Only SSH environments are edited here; use the API or CLI for the others.",
        ));
    }
    if let Err(e) = ui.actor.require_privileged(env.company_id) {
        return layout::error_page(e);
    }
    ssh_form_page(
        &ui,
        Some(&env),
        &SshForm::of(&env),
        &FormErrors::default(),
        None,
    )
}

async fn update(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Response {
    let env = match env_for(&state, &ui, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let description = form.trimmed("description");
    let result = async {
        let b: api::PatchBody = body(json!({
            "name": form.get("name"),
            "description": (!description.is_empty()).then_some(description),
            "config": ssh_config(&form),
        }))?;
        api::update_environment(
            State(state.clone()),
            ui.actor.clone(),
            Path(env.id),
            StrictJson(b),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Redirect::to(&format!("/environments/{}?done=saved", env.id)).into_response(),
        Err(e) => {
            let has_key = SshForm::of(&env).has_key;
            ssh_form_page(
                &ui,
                Some(&env),
                &SshForm::posted(&form, has_key),
                &FormErrors::from_api(&e, FIELDS),
                None,
            )
        }
    }
}

async fn show(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> Response {
    let env = match env_for(&state, &ui, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    detail(&state, &ui, &env, n.done.as_deref(), None, None).await
}

/// The environment page; `extra` is a result shown above the details (probe checks, a
/// refusal).
async fn detail(
    state: &AppState,
    ui: &Ui,
    env: &Environment,
    done: Option<&str>,
    extra: Option<Markup>,
    refusal: Option<&ApiError>,
) -> Response {
    let privileged = ui.actor.is_privileged(env.company_id);
    let leases = if privileged {
        match state
            .store
            .list_leases(env.id, None, &Page::first(50))
            .await
        {
            Ok(p) => p.items,
            Err(e) => return layout::error_page(e.into()),
        }
    } else {
        Vec::new()
    };
    let ssh = match env.typed_config().map(|p| p.config) {
        Ok(DriverConfig::Ssh(c)) if privileged => Some(c),
        _ => None,
    };
    let last_probe = match last_probes(state, env.company_id).await {
        Ok(mut all) => all.remove(&env.id.to_string()),
        Err(e) => return layout::error_page(e),
    };
    let body = html! {
        p { a href="/environments" { "← Environments" } }
        h1 { (env.name) " " (badge(&env.status.to_string())) }
        (layout::notice(done))
        @if let Some(err) = refusal {
            div.errors role="alert" { h2 { "Refused" } p { (err.to_string()) } }
        }
        @if let Some(x) = extra { (x) }
        @if let Some(d) = &env.description { p { (d) } }
        dl.props {
            dt { "Driver" } dd { (env.driver) }
            dt { "Capacity" } dd { @match env.capacity { Some(c) => { (c) " concurrent leases" } None => { "unbounded" } } }
            dt { "Lease policy" } dd { (env.lease_policy) }
            @if let Some(c) = &ssh {
                dt { "Host" } dd { (c.username) "@" (c.host) ":" (c.port) }
                dt { "Remote workspace path" } dd { code { (c.remote_workspace_path) } }
                dt { "Private key" } dd { @if c.private_key_secret_ref.is_some() { "stored as a company secret (never shown)" } @else { "none" } }
                dt { "Known hosts" } dd {
                    @match &c.known_hosts {
                        Some(k) if !k.trim().is_empty() => { (k.lines().filter(|l| !l.trim().is_empty()).count()) " pinned key(s)" }
                        _ => { "none pinned" }
                    }
                }
                dt { "Strict host key checking" } dd { @if c.strict_host_key_checking { "on" } @else { "off" } }
                dt { "Workspace mode" } dd { @match c.workspace_mode { WorkspaceMode::Copy => { "copy" } WorkspaceMode::InPlace => { "in_place" } } }
            }
            dt { "Last probe" } dd {
                @match &last_probe {
                    Some((ok, summary, at)) => {
                        (badge(if *ok { "ok" } else { "failed" }))
                        @if privileged { " " (summary) }
                        " · " (time(at))
                    }
                    None => { "never" }
                }
            }
            dt { "Created" } dd { (time(&env.created_at)) }
        }
        @if privileged {
            div.actions {
                @if env.driver == Driver::Ssh {
                    a.button href={ "/environments/" (env.id) "/edit" } { "Edit" }
                }
                form method="post" action={ "/environments/" (env.id) "/probe" } {
                    (csrf(ui)) button type="submit" { "Probe" }
                }
                @if env.driver == Driver::Ssh {
                    form method="post" action={ "/environments/" (env.id) "/trust" } {
                        (csrf(ui)) button.secondary type="submit" { "Trust host key…" }
                    }
                }
                form method="post" action={ "/environments/" (env.id) "/status" } {
                    (csrf(ui))
                    @if env.status == EnvironmentStatus::Archived {
                        input type="hidden" name="status" value="active";
                        button.secondary type="submit" { "Unarchive" }
                    } @else {
                        input type="hidden" name="status" value="archived";
                        button.secondary type="submit" { "Archive" }
                    }
                }
                form.inline method="post" action={ "/environments/" (env.id) "/delete" } {
                    (csrf(ui))
                    button.danger type="submit" { "Delete" }
                    input #force type="checkbox" name="force" value="true";
                    label for="force" { "even with active leases (their runs stop)" }
                }
            }
            h2 #leases { "Leases" }
            (leases_table(&leases))
        } @else {
            p { "You may read this environment but not manage it (missing permission environments:manage)." }
        }
    };
    let mut resp = layout::page(ui, &env.name, Nav::Environments, body);
    if let Some(err) = refusal {
        *resp.status_mut() = err.status_code();
    }
    resp
}

fn leases_table(leases: &[Lease]) -> Markup {
    html! {
        @if leases.is_empty() {
            p { "No leases yet." }
        } @else {
            div.scroll { table {
                caption.visually-hidden { "Leases of this environment" }
                thead { tr {
                    th scope="col" { "Status" } th scope="col" { "Fence" } th scope="col" { "Holder run" }
                    th scope="col" { "Acquired" } th scope="col" { "Expires" } th scope="col" { "Cleanup" }
                } }
                tbody {
                    @for l in leases {
                        tr {
                            td { (badge(&l.status.to_string()))
                                @if let Some(r) = &l.failure_reason { br; small { (r) } } }
                            td { (l.fence) }
                            td { @match l.run_id { Some(r) => { a href={ "/runs/" (r) } { code { (r.to_string().get(..8).unwrap_or("")) } } } None => { "—" } } }
                            td { (time(&l.acquired_at)) }
                            td { @if l.status == LeaseStatus::Active { (time(&l.expires_at)) } @else { "—" } }
                            td { @match &l.cleanup_status { Some(c) => { (badge(&c.to_string())) } None => { "—" } } }
                        }
                    }
                }
            } }
        }
    }
}

async fn probe(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    _form: CsrfForm,
) -> Response {
    let env = match env_for(&state, &ui, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let result = api::probe_environment(State(state.clone()), ui.actor.clone(), Path(env.id)).await;
    match result {
        Ok(axum::Json(v)) => {
            let trust = html! {
                form method="post" action={ "/environments/" (env.id) "/trust" } {
                    (csrf(&ui)) button type="submit" { "Review and trust the host key…" }
                }
            };
            let extra = probe_section(&v, (env.driver == Driver::Ssh).then_some(trust));
            detail(&state, &ui, &env, None, Some(extra), None).await
        }
        Err(e) => detail(&state, &ui, &env, None, None, Some(&e)).await,
    }
}

/// A probe's answer: its summary and every check with its detail and hint. `trust`: the
/// form offered when the host key check did not pass.
fn probe_section(v: &Value, trust: Option<Markup>) -> Markup {
    let ok = v["ok"].as_bool().unwrap_or(false);
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let host_key_unverified = checks
        .iter()
        .any(|c| c["code"] == "host_key" && c["level"] != "info");
    html! {
        section #probe aria-labelledby="probe-h" {
            h2 #probe-h { "Probe " (badge(if ok { "ok" } else { "failed" })) }
            p role="status" { (v["summary"].as_str().unwrap_or("")) " (" (v["durationMs"].as_u64().unwrap_or(0)) " ms)" }
            ul.checks {
                @for c in &checks {
                    li {
                        (badge(c["level"].as_str().unwrap_or("info"))) " "
                        strong { (c["message"].as_str().unwrap_or("")) }
                        @if let Some(d) = c["detail"].as_str() { " " code { (d) } }
                        @if let Some(h) = c["hint"].as_str() { br; small.hint { "Hint: " (h) } }
                    }
                }
            }
            @if host_key_unverified { @if let Some(t) = trust { (t) } }
        }
    }
}

/// Probe the form's config without saving anything (the key stays in memory, as in the
/// API's probe-config).
async fn probe_draft(State(state): State<SharedState>, ui: Ui, form: CsrfForm) -> Response {
    if !ui.environments_enabled {
        return layout::not_found();
    }
    let result = async {
        let b: api::ProbeConfigBody = body(json!({"driver": "ssh", "config": ssh_config(&form)}))?;
        api::probe_config(
            State(state.clone()),
            ui.actor.clone(),
            Path(ui.company.id),
            StrictJson(b),
        )
        .await
    }
    .await;
    let f = SshForm::posted(&form, false);
    match result {
        Ok(axum::Json(v)) => {
            let note =
                html! { p.hint { "Nothing was saved. Paste the private key again to save." } };
            let section = html! { (probe_section(&v, None)) (note) };
            ssh_form_page(&ui, None, &f, &FormErrors::default(), Some(section))
        }
        Err(e) => ssh_form_page(&ui, None, &f, &FormErrors::from_api(&e, FIELDS), None),
    }
}

/// Step one of trusting: show what the host presents and ask. Nothing is pinned yet.
async fn trust_ask(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    _form: CsrfForm,
) -> Response {
    let env = match env_for(&state, &ui, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Err(e) = ui.actor.require_privileged(env.company_id) {
        return layout::error_page(e);
    }
    let ssh = match env.typed_config().map(|p| p.config) {
        Ok(DriverConfig::Ssh(c)) => c,
        Ok(_) => {
            return layout::error_page(ApiError::unprocessable(
                "Only SSH environments have host keys to trust.",
            ));
        }
        Err(issues) => return layout::error_page(ApiError::config_issues(issues)),
    };
    let presented = match berth_exec::ssh::fetch_host_key(
        &ssh.host,
        ssh.port,
        &berth_engine::probe::probe_timeouts(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            let err = ApiError::unprocessable(format!("Could not read the host key: {e}"));
            return detail(&state, &ui, &env, None, None, Some(&err)).await;
        }
    };
    let body = html! {
        p { a href={ "/environments/" (env.id) } { "← " (env.name) } }
        h1 { "Trust the host key of " (env.name) "?" }
        p { (ssh.host) ":" (ssh.port) " presents this " (presented.key_type) " key:" }
        p { code.fp #fingerprint { (presented.fingerprint_sha256) } }
        p { "Compare it with the fingerprint the host's owner gives you (for example "
            code { "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" } " on the host). Pinning it turns strict host key checking on; a host presenting another key is then refused." }
        div.actions {
            form method="post" action={ "/environments/" (env.id) "/trust/confirm" } {
                (csrf(&ui))
                input type="hidden" name="fingerprint" value=(presented.fingerprint_sha256);
                button type="submit" { "Yes, pin this key" }
            }
            a href={ "/environments/" (env.id) } { "No, go back" }
        }
    };
    layout::page(&ui, "Trust host key", Nav::Environments, body)
}

async fn trust_confirm(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Response {
    let env = match env_for(&state, &ui, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let result = async {
        let b: api::TrustBody = body(json!({"fingerprint": form.trimmed("fingerprint")}))?;
        api::trust_host_key(
            State(state.clone()),
            ui.actor.clone(),
            Path(env.id),
            StrictJson(b),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Redirect::to(&format!("/environments/{}?done=trusted", env.id)).into_response(),
        Err(e) => detail(&state, &ui, &env, None, None, Some(&e)).await,
    }
}

async fn set_status(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Response {
    let env = match env_for(&state, &ui, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let status = form.trimmed("status");
    let result = async {
        let b: api::PatchBody = body(json!({"status": status}))?;
        api::update_environment(
            State(state.clone()),
            ui.actor.clone(),
            Path(env.id),
            StrictJson(b),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => {
            let done = if status == "archived" {
                "archived"
            } else {
                "activated"
            };
            Redirect::to(&format!("/environments/{}?done={done}", env.id)).into_response()
        }
        Err(e) => detail(&state, &ui, &env, None, None, Some(&e)).await,
    }
}

async fn delete(
    State(state): State<SharedState>,
    ui: Ui,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Response {
    let env = match env_for(&state, &ui, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let result = async {
        let q: api::DeleteQuery = body(json!({"force": form.checked("force")}))?;
        api::delete_environment(
            State(state.clone()),
            ui.actor.clone(),
            Path(env.id),
            StrictQuery(q),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/environments?done=deleted").into_response(),
        Err(e) => detail(&state, &ui, &env, None, None, Some(&e)).await,
    }
}
