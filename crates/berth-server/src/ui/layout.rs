//! The page frame (navigation, styles, the live-output script), error pages, and the small
//! helpers every page group shares: time formatting and turning API errors into messages
//! next to the fields they name.

use std::collections::BTreeMap;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::json::parse_body;
use crate::state::SharedState;

use super::session::{CSRF_FIELD, Ui};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/", get(index))
        .route("/ui.css", get(css))
        .route("/ui.js", get(js))
}

/// `/`: the environments when they are on, the runs otherwise.
async fn index(ui: Ui) -> Redirect {
    if ui.environments_enabled {
        Redirect::to("/environments")
    } else {
        Redirect::to("/runs")
    }
}

const CSS: &str = include_str!("ui.css");
const JS: &str = include_str!("ui.js");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

/// A body for one of the API's handlers, parsed exactly as the API parses a request's (same
/// types, same strictness, same error paths).
pub fn body<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
    parse_body(v.to_string().as_bytes())
}

/// The JSON of a handler's answer.
pub async fn json_of(resp: Response) -> Value {
    match axum::body::to_bytes(resp.into_body(), 4 << 20).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Environments,
    Agents,
    Runs,
    Settings,
}

fn frame(title: &str, nav: Option<(&Ui, Nav)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Berth" }
                link rel="stylesheet" href="/ui.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Berth" }
                    @if let Some((ui, current)) = nav {
                        nav aria-label="Main" {
                            ul {
                                @if ui.environments_enabled {
                                    li { a href="/environments" aria-current=[(current == Nav::Environments).then_some("page")] { "Environments" } }
                                }
                                li { a href="/agents" aria-current=[(current == Nav::Agents).then_some("page")] { "Agents" } }
                                li { a href="/runs" aria-current=[(current == Nav::Runs).then_some("page")] { "Runs" } }
                                li { a href="/settings" aria-current=[(current == Nav::Settings).then_some("page")] { "Settings" } }
                            }
                        }
                        @if ui.token_mode {
                            form.logout method="post" action="/logout" {
                                (csrf(ui))
                                button type="submit" { "Log out" }
                            }
                        } @else {
                            span.mode title="Bound to loopback with no tokens: one local user" { "local" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                }
            }
        }
    }
}

/// A page of the signed-in UI.
pub fn page(ui: &Ui, title: &str, current: Nav, body: Markup) -> Response {
    Html(frame(title, Some((ui, current)), body).into_string()).into_response()
}

/// A page outside the signed-in frame (login).
pub fn bare_page(title: &str, body: Markup) -> Response {
    Html(frame(title, None, body).into_string()).into_response()
}

/// An error as a page, with the API's status code and message (internal errors stay generic).
pub fn error_page(err: ApiError) -> Response {
    let status = err.status_code();
    let message = match &err {
        ApiError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            "Internal server error".to_string()
        }
        other => other.to_string(),
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        h1 { (title) }
        p role="alert" { (message) }
        p { a href="/" { "Back to Berth" } }
    };
    (status, Html(frame(title, None, body).into_string())).into_response()
}

/// 404 for an environment page while `enableEnvironments` is off: the pages are gone.
pub fn not_found() -> Response {
    error_page(ApiError::NotFound("Not found".into()))
}

/// The hidden field every form carries.
pub fn csrf(ui: &Ui) -> Markup {
    csrf_value(&ui.csrf)
}

pub fn csrf_value(token: &str) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(token); }
}

pub fn time(at: &DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (ago(at)) }
    }
}

/// "12 s ago", "3 min ago", "2 h ago", or the date.
pub fn ago(at: &DateTime<Utc>) -> String {
    let secs = (Utc::now() - *at).num_seconds();
    match secs {
        s if s < 0 => at.format("%Y-%m-%d %H:%M UTC").to_string(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        _ => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// "4.2 s", "3 min 5 s", "1 h 2 min".
pub fn duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// An API error split into messages per form field (by the API's `path`) and the rest.
#[derive(Debug, Default)]
pub struct FormErrors {
    pub general: Vec<String>,
    pub fields: BTreeMap<String, String>,
}

impl FormErrors {
    /// `known`: the form's field names; errors naming others are shown at the top.
    pub fn from_api(err: &ApiError, known: &[&str]) -> Self {
        let mut out = FormErrors::default();
        let mut named = Vec::new();
        match err {
            ApiError::Validation(details) => named.extend(details.iter().cloned()),
            ApiError::Unprocessable { message, details }
            | ApiError::Conflict { message, details } => {
                match details {
                    Value::Array(items) => named.extend(items.iter().cloned()),
                    Value::Object(map) => {
                        if let Some(Value::Array(items)) = map.get("issues") {
                            named.extend(items.iter().cloned());
                        }
                    }
                    _ => {}
                }
                if named.is_empty() {
                    out.general.push(message.clone());
                }
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                out.general.push("Internal server error".into());
            }
            other => out.general.push(other.to_string()),
        }
        for item in named {
            let path = item["path"].as_str().unwrap_or("");
            let path = path.strip_prefix("config.").unwrap_or(path);
            let message = item["message"].as_str().unwrap_or("is invalid").to_string();
            if known.contains(&path) && !out.fields.contains_key(path) {
                out.fields.insert(path.to_string(), message);
            } else {
                out.general.push(message);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.general.is_empty() && self.fields.is_empty()
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The summary at the top of a form: every problem, fields linked to their inputs.
    pub fn summary(&self) -> Markup {
        html! {
            @if !self.is_empty() {
                div.errors role="alert" tabindex="-1" {
                    h2 { "The change was not saved" }
                    ul {
                        @for m in &self.general { li { (m) } }
                        @for (field, m) in &self.fields {
                            li { a href={ "#f-" (field) } { (field) ": " (m) } }
                        }
                    }
                }
            }
        }
    }
}

/// A labelled input with its hint and the API's error for it (linked with
/// `aria-describedby`).
pub struct Field<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub value: &'a str,
    pub kind: &'a str,
    pub hint: Option<&'a str>,
    pub required: bool,
}

impl<'a> Field<'a> {
    pub fn new(name: &'a str, label: &'a str, value: &'a str) -> Self {
        Self {
            name,
            label,
            value,
            kind: "text",
            hint: None,
            required: false,
        }
    }

    pub fn kind(mut self, kind: &'a str) -> Self {
        self.kind = kind;
        self
    }

    pub fn hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    fn described_by(&self, error: Option<&str>) -> Option<String> {
        let mut ids = Vec::new();
        if self.hint.is_some() {
            ids.push(format!("h-{}", self.name));
        }
        if error.is_some() {
            ids.push(format!("e-{}", self.name));
        }
        (!ids.is_empty()).then(|| ids.join(" "))
    }

    fn notes(&self, error: Option<&str>) -> Markup {
        html! {
            @if let Some(h) = self.hint { small.hint id={ "h-" (self.name) } { (h) } }
            @if let Some(e) = error { strong.field-error id={ "e-" (self.name) } { (e) } }
        }
    }

    pub fn render(&self, errors: &FormErrors) -> Markup {
        let error = errors.field(self.name);
        let id = format!("f-{}", self.name);
        html! {
            div.field.invalid[error.is_some()] {
                label for=(id) { (self.label) @if self.required { " " abbr title="required" { "*" } } }
                @if self.kind == "textarea" {
                    textarea id=(id) name=(self.name) rows="4" required[self.required]
                        aria-invalid=[error.map(|_| "true")]
                        aria-describedby=[self.described_by(error)] { (self.value) }
                } @else {
                    input id=(id) type=(self.kind) name=(self.name) value=(self.value)
                        required[self.required] autocomplete="off"
                        aria-invalid=[error.map(|_| "true")]
                        aria-describedby=[self.described_by(error)];
                }
                (self.notes(error))
            }
        }
    }
}

/// A status word as a badge (its text says it all; the colour only repeats it).
pub fn badge(word: &str) -> Markup {
    html! { span class={ "badge b-" (word) } { (word) } }
}

/// A notice after a redirect, from a fixed set (no text from the URL reaches the page).
pub fn notice(code: Option<&str>) -> Markup {
    let text = match code {
        Some("created") => "Environment created.",
        Some("saved") => "Saved.",
        Some("trusted") => "Host key pinned; strict host key checking is on.",
        Some("archived") => "Environment archived.",
        Some("activated") => "Environment active again.",
        Some("deleted") => "Environment deleted.",
        Some("cancel") => "Cancel requested.",
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}
