//! The web UI (SPEC §11): server-rendered pages (maud templates, no Node toolchain) over the
//! same handlers and store as the API, so business rules live in one place (`routes::*`).
//!
//! Environment pages, navigation entries and pickers appear only while the experimental
//! `enableEnvironments` setting is on; the API works regardless. Forms post
//! `application/x-www-form-urlencoded`: the HTTP boundary lets such a post through only from a
//! same-origin page (`boundary`), and every form carries the browser's CSRF token
//! (`session`). In token mode the login page keeps the token in an HttpOnly, SameSite=Strict
//! cookie. Only the live run output needs JavaScript (`/ui.js`, an `EventSource`).

mod agents;
mod environments;
mod layout;
mod login;
mod runs;
mod session;
mod settings;

use axum::Router;
use axum::middleware;

use crate::state::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new()
        .merge(layout::router())
        .merge(login::router())
        .merge(environments::router())
        .merge(agents::router())
        .merge(runs::router())
        .merge(settings::router())
        .layer(middleware::from_fn(session::browser_session))
}
