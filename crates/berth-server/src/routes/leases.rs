//! Lease read routes. Leases are acquired and released by runs, not through the API.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_core::model::Lease;
use berth_core::{EnvironmentId, LeaseId, LeaseStatus};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Actor;
use crate::error::{ApiError, ApiResult};
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::routes::environments::environment_for;
use crate::state::SharedState;

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_leases))
        .routes(routes!(get_lease))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeasesQuery {
    status: Option<LeaseStatus>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/environments/{id}/leases", tag = "leases",
    params(("id" = EnvironmentId, Path), ("status" = Option<LeaseStatus>, Query)),
    responses((status = 200, body = [Lease]), (status = 403), (status = 404)))]
async fn list_leases(
    State(state): State<SharedState>,
    actor: Actor,
    Path(id): Path<EnvironmentId>,
    StrictQuery(q): StrictQuery<LeasesQuery>,
) -> ApiResult<Response> {
    let env = environment_for(&state, &actor, id).await?;
    actor.require_privileged(env.company_id)?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    Ok(list_response(
        state.store.list_leases(id, q.status, &page).await?,
    ))
}

#[utoipa::path(get, path = "/api/environment-leases/{lease_id}", tag = "leases",
    params(("lease_id" = LeaseId, Path)),
    responses((status = 200, body = Lease), (status = 403), (status = 404)))]
async fn get_lease(
    State(state): State<SharedState>,
    actor: Actor,
    Path(lease_id): Path<LeaseId>,
) -> ApiResult<Json<Lease>> {
    let lease = match state.store.get_lease(lease_id).await? {
        Some(l) if actor.can_access_company(l.company_id) => l,
        _ => return Err(ApiError::NotFound("Environment lease not found".into())),
    };
    actor.require_privileged(lease.company_id)?;
    Ok(Json(lease))
}
