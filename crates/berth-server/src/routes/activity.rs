//! The company activity log (read-only).

use axum::extract::{Path, State};
use axum::response::Response;
use berth_core::CompanyId;
use berth_core::model::ActivityEntry;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Actor, company_for};
use crate::error::ApiResult;
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::state::SharedState;

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(list_activity))
}

#[utoipa::path(get, path = "/api/companies/{company_id}/activity", tag = "activity",
    params(("company_id" = CompanyId, Path)),
    responses((status = 200, body = [ActivityEntry]), (status = 403), (status = 404)))]
async fn list_activity(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> ApiResult<Response> {
    company_for(&state, &actor, company_id).await?;
    actor.require_board()?;
    Ok(list_response(
        state.store.list_activity(company_id, &q.page()?).await?,
    ))
}
