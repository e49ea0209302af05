//! Settings: the instance's experimental toggles (through the API's handler, so only an
//! instance admin may change them and the change is logged per company).

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use crate::json::{StrictJson, parse_body};
use crate::routes::settings as api;
use crate::state::SharedState;

use super::layout::{self, FormErrors, Nav, csrf};
use super::session::{CsrfForm, Ui};

pub fn router() -> Router<SharedState> {
    Router::new().route("/settings", get(show).post(save))
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
        dl.props {
            dt { "Company" } dd { (ui.company.name) }
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
        let b: api::PatchExperimental = parse_body(
            json!({"enableEnvironments": form.checked("enableEnvironments")})
                .to_string()
                .as_bytes(),
        )?;
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
