//! Health, Prometheus metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use berth_store::Backend;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::SharedState;

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(health))
}

#[utoipa::path(get, path = "/api/health", tag = "system", responses((status = 200, body = Object)))]
async fn health(State(state): State<SharedState>) -> Json<Value> {
    let database = match state.store.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "database": database,
        "authMode": state.auth_mode(),
    }))
}

pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    let gauges = vec![(
        "berth_api_tokens_active",
        "Unrevoked API tokens",
        vec![(
            String::new(),
            state
                .active_tokens
                .load(std::sync::atomic::Ordering::SeqCst) as f64,
        )],
    )];
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    )
}
