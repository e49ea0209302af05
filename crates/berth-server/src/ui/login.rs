//! Login and logout for token mode. The token is checked like any bearer token (hash lookup,
//! revocation), must be a board token, and is kept in an HttpOnly, SameSite=Strict cookie the
//! page's scripts cannot read. In `local_trusted` mode there is nothing to log in to.

use axum::Extension;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use berth_core::TokenKind;
use maud::html;
use serde::Deserialize;

use crate::auth::hash_token;
use crate::state::SharedState;

use super::layout;
use super::session::{CSRF_FIELD, CsrfForm, CsrfToken, Https, TOKEN_COOKIE, set_cookie};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/login", get(show).post(login))
        .route("/logout", post(logout))
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

fn render(csrf: &str, error: Option<&str>) -> Response {
    let body = html! {
        h1 { "Log in to Berth" }
        p { "This server requires an API token. Paste a board token (create one with "
            code { "berth token create" } ")." }
        form method="post" action="/login" {
            input type="hidden" name=(CSRF_FIELD) value=(csrf);
            div.field.invalid[error.is_some()] {
                label for="f-token" { "Token" }
                input #f-token type="password" name="token" required autocomplete="current-password"
                    aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "e-token")];
                @if let Some(e) = error { strong.field-error #e-token role="alert" { (e) } }
            }
            button type="submit" { "Log in" }
        }
    };
    layout::bare_page("Log in", body)
}

async fn show(
    State(state): State<SharedState>,
    Extension(csrf): Extension<CsrfToken>,
    Query(q): Query<LoginQuery>,
) -> Response {
    if state.local_trusted() {
        return Redirect::to("/").into_response();
    }
    let note = q
        .expired
        .is_some()
        .then_some("Your session ended or its token was revoked; log in again.");
    render(&csrf.0, note)
}

async fn login(
    State(state): State<SharedState>,
    Extension(csrf): Extension<CsrfToken>,
    Extension(https): Extension<Https>,
    form: CsrfForm,
) -> Response {
    if state.local_trusted() {
        return Redirect::to("/").into_response();
    }
    let token = form.trimmed("token");
    let found = match state.store.find_token_by_hash(&hash_token(&token)).await {
        Ok(t) => t,
        Err(e) => return layout::error_page(e.into()),
    };
    match found {
        Some(t) if t.kind == TokenKind::Board && !token.is_empty() => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, HeaderValue::from_static("/")),
                (
                    header::SET_COOKIE,
                    set_cookie(TOKEN_COOKIE, &token, https, None),
                ),
            ],
        )
            .into_response(),
        Some(_) => {
            let mut r = render(&csrf.0, Some("Only board tokens may use the web UI."));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        }
        None => {
            let mut r = render(&csrf.0, Some("Invalid or revoked token."));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

async fn logout(Extension(https): Extension<Https>, _form: CsrfForm) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, HeaderValue::from_static("/login")),
            (
                header::SET_COOKIE,
                set_cookie(TOKEN_COOKIE, "", https, Some(0)),
            ),
        ],
    )
        .into_response()
}
