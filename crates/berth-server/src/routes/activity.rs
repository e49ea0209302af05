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
    let mut page = state.store.list_activity(company_id, &q.page()?).await?;
    if !actor.is_privileged(company_id) {
        for entry in &mut page.items {
            redact(entry);
        }
    }
    Ok(list_response(page))
}

/// Probe summaries name the environment's user, host and what failed there: configuration
/// that readers without `environments:manage` see redacted everywhere else.
fn redact(entry: &mut ActivityEntry) {
    if entry.entity_type == "environment"
        && entry.action.starts_with("environment.probed")
        && let Some(map) = entry.details.as_object_mut()
        && map.remove("summary").is_some()
    {
        map.insert("detailsRedacted".into(), serde_json::Value::Bool(true));
    }
}
