//! Settings: the instance's experimental toggles (through the API's handler, so only an
//! instance admin may change them and the change is logged per company).

use axum::Extension;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use crate::json::StrictJson;
use crate::routes::settings as api;
use crate::state::SharedState;

use super::layout::{self, FormErrors, Nav, body, csrf};
use super::session::{COMPANY_COOKIE, CsrfForm, Https, Ui, set_cookie};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/settings", get(show).post(save))
        .route("/settings/company", post(switch_company))
}

#[derive(Debug, Default, Deserialize)]
struct Notice {
    done: Option<String>,
}

fn render(ui: &Ui, done: Option<&str>, errors: &FormErrors) -> Response {
    let body = html! {
        h1 { "Settings" }
        (layout::notice(done))
        (errors.summary())
        @if ui.companies.len() > 1 {
            form.inline method="post" action="/settings/company" {
                (csrf(ui))
                label for="f-company" { "Company" }
                select #f-company name="companyId" {
                    @for c in &ui.companies {
                        option value=(c.id) selected[c.id == ui.company.id] { (c.name) }
                    }
                }
                button.secondary type="submit" { "Switch" }
            }
        }
        dl.props {
            dt { "Company" } dd #company { (ui.company.name) }
            dt { "Auth mode" } dd { @if ui.token_mode { "token" } @else { "local_trusted (one local user, no login)" } }
        }
        h2 { "Experimental" }
        form method="post" action="/settings" {
            (csrf(ui))
            div.check {
                input #f-enableEnvironments type="checkbox" name="enableEnvironments" value="true"
                    checked[ui.environments_enabled] aria-describedby="h-enableEnvironments";
                label for="f-enableEnvironments" { "Environments" }
            }
            p.hint #h-enableEnvironments {
                "Shows the environment pages, their navigation entry and the agents' default-environment picker. "
                "The API and runs use environments either way."
            }
            button type="submit" { "Save" }
        }
    };
    layout::page(ui, "Settings", Nav::Settings, body)
}

async fn show(ui: Ui, Query(n): Query<Notice>) -> Response {
    render(&ui, n.done.as_deref(), &FormErrors::default())
}

async fn save(State(state): State<SharedState>, ui: Ui, form: CsrfForm) -> Response {
    let result = async {
        let b: api::PatchExperimental =
            body(json!({"enableEnvironments": form.checked("enableEnvironments")}))?;
        api::patch_experimental(State(state.clone()), ui.actor.clone(), StrictJson(b)).await
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/settings?done=saved").into_response(),
        Err(e) => {
            let mut resp = render(&ui, None, &FormErrors::from_api(&e, &[]));
            *resp.status_mut() = e.status_code();
            resp
        }
    }
}

/// Show another of the viewer's companies (a preference cookie; access is checked again on
/// every page).
async fn switch_company(ui: Ui, Extension(https): Extension<Https>, form: CsrfForm) -> Response {
    let wanted = form.trimmed("companyId");
    let Some(company) = ui.companies.iter().find(|c| c.id.to_string() == wanted) else {
        return layout::not_found();
    };
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::LOCATION,
                HeaderValue::from_static("/settings?done=saved"),
            ),
            (
                header::SET_COOKIE,
                set_cookie(COMPANY_COOKIE, &company.id.to_string(), https, None),
            ),
        ],
    )
        .into_response()
}
