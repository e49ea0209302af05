//! Health, Prometheus metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use berth_store::Backend;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Actor, AgentChannel};
use crate::error::{ApiError, ApiResult};
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

/// Prometheus metrics: HTTP counters and latencies, probe latencies, and gauges computed at
/// scrape time (runs by status, leases by status, pooled SSH connections, API tokens).
///
/// They count every company's work, so only an instance admin reads them (in `local_trusted`
/// mode, the local user). The agents' listener does not serve them at all: it is reachable
/// from every SSH host through the agents' forwards.
pub async fn metrics(
    State(state): State<SharedState>,
    channel: Option<axum::Extension<AgentChannel>>,
    actor: Result<Actor, ApiError>,
) -> ApiResult<impl IntoResponse> {
    if channel.is_some() {
        return Err(ApiError::NotFound("Not found".into()));
    }
    actor?.require_instance_admin()?;
    let mut gauges = vec![(
        "berth_api_tokens_active",
        "Unrevoked API tokens",
        vec![(
            String::new(),
            state
                .active_tokens
                .load(std::sync::atomic::Ordering::SeqCst) as f64,
        )],
    )];
    gauges.push((
        "berth_ssh_pool_connections",
        "Pooled SSH connections held open by this instance",
        vec![(
            String::new(),
            state.ssh_pool.connection_count().await as f64,
        )],
    ));
    if let Ok(counts) = state.store.run_status_counts().await {
        gauges.push((
            "berth_runs",
            "Runs by status",
            counts
                .iter()
                .map(|(s, n)| (format!("status=\"{s}\""), *n as f64))
                .collect(),
        ));
    }
    if let Ok(counts) = state.store.lease_status_counts().await {
        gauges.push((
            "berth_leases",
            "Environment leases by status",
            counts
                .iter()
                .map(|(s, n)| (format!("status=\"{s}\""), *n as f64))
                .collect(),
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    ))
}
