//! Activity log entries written by the routes. Details never carry secret values.

use berth_core::CompanyId;
use berth_store::NewActivity;
use serde_json::Value;

use crate::auth::Actor;
use crate::error::ApiResult;
use crate::state::AppState;

pub async fn record(
    state: &AppState,
    actor: &Actor,
    company_id: CompanyId,
    action: &str,
    entity_type: &str,
    entity_id: impl ToString,
    details: Value,
) -> ApiResult<()> {
    state
        .store
        .log_activity(NewActivity {
            company_id,
            actor_type: actor.actor_type().to_string(),
            actor_id: actor.actor_id(),
            action: action.to_string(),
            entity_type: entity_type.to_string(),
            entity_id: entity_id.to_string(),
            details,
        })
        .await?;
    Ok(())
}
