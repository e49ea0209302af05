//! Instance experimental settings (`enableEnvironments` gates the UI only; the API works
//! regardless).

use axum::Json;
use axum::extract::State;
use berth_core::model::ExperimentalSettings;
use berth_store::Page;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity;
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::json::StrictJson;
use crate::state::SharedState;

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(get_experimental, patch_experimental))
}

#[utoipa::path(get, path = "/api/instance/settings/experimental", tag = "settings",
    responses((status = 200, body = ExperimentalSettings), (status = 401), (status = 403)))]
async fn get_experimental(
    State(state): State<SharedState>,
    actor: Actor,
) -> ApiResult<Json<ExperimentalSettings>> {
    actor.require_board()?;
    Ok(Json(state.store.get_experimental_settings().await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchExperimental {
    #[serde(default)]
    enable_environments: Option<bool>,
    #[serde(default)]
    enable_isolated_workspaces: Option<bool>,
    #[serde(default)]
    auto_restart_dev_server_when_idle: Option<bool>,
}

#[utoipa::path(patch, path = "/api/instance/settings/experimental", tag = "settings",
    request_body = PatchExperimental,
    responses((status = 200, body = ExperimentalSettings), (status = 400), (status = 403)))]
pub(crate) async fn patch_experimental(
    State(state): State<SharedState>,
    actor: Actor,
    StrictJson(body): StrictJson<PatchExperimental>,
) -> ApiResult<Json<ExperimentalSettings>> {
    actor.require_instance_admin()?;
    let mut settings = state.store.get_experimental_settings().await?;
    let mut changed = Vec::new();
    for (key, value, slot) in [
        (
            "enableEnvironments",
            body.enable_environments,
            &mut settings.enable_environments,
        ),
        (
            "enableIsolatedWorkspaces",
            body.enable_isolated_workspaces,
            &mut settings.enable_isolated_workspaces,
        ),
        (
            "autoRestartDevServerWhenIdle",
            body.auto_restart_dev_server_when_idle,
            &mut settings.auto_restart_dev_server_when_idle,
        ),
    ] {
        if let Some(v) = value {
            if v != *slot {
                changed.push(key);
            }
            *slot = v;
        }
    }
    let saved = state.store.set_experimental_settings(&settings).await?;
    // Logged once per company so each company's activity shows the change.
    for company in state.store.list_companies(&Page::all()).await?.items {
        activity::record(
            &state,
            &actor,
            company.id,
            "instance.settings.experimental_updated",
            "instance_settings",
            "experimental",
            json!({"experimental": saved, "changedKeys": changed}),
        )
        .await?;
    }
    Ok(Json(saved))
}
