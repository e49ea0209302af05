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
    let pq = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let mut result = state
        .store
        .list_leases(id, q.status, &pq.page_or_all()?)
        .await?;
    if !pq.paginated() {
        // Paperclip's order: `lastUsedAt` desc, then `createdAt` desc.
        result.items.sort_by(|a, b| {
            b.last_used_at
                .cmp(&a.last_used_at)
                .then(b.created_at.cmp(&a.created_at))
        });
    }
    Ok(list_response(berth_store::PageOf {
        items: result.items.iter().map(LeaseView::of).collect::<Vec<_>>(),
        next_cursor: result.next_cursor,
    }))
}

/// A lease as the API answers it: Paperclip's fields (`heartbeatRunId`, `expiresAt: null`
/// for local and SSH leases) plus `runId` for Berth's own clients.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseView<'a> {
    #[serde(flatten)]
    lease: &'a Lease,
    run_id: Option<berth_core::RunId>,
    expires_at: Option<()>,
}

impl<'a> LeaseView<'a> {
    pub fn of(lease: &'a Lease) -> Self {
        LeaseView {
            lease,
            run_id: lease.run_id,
            expires_at: None,
        }
    }
}

#[utoipa::path(get, path = "/api/environment-leases/{lease_id}", tag = "leases",
    params(("lease_id" = LeaseId, Path)),
    responses((status = 200, body = Lease), (status = 403), (status = 404)))]
async fn get_lease(
    State(state): State<SharedState>,
    actor: Actor,
    Path(lease_id): Path<LeaseId>,
) -> ApiResult<Json<serde_json::Value>> {
    let lease = match state.store.get_lease(lease_id).await? {
        Some(l) if actor.can_access_company(l.company_id) => l,
        _ => return Err(ApiError::NotFound("Environment lease not found".into())),
    };
    actor.require_privileged(lease.company_id)?;
    Ok(Json(
        serde_json::to_value(LeaseView::of(&lease)).map_err(ApiError::internal)?,
    ))
}
