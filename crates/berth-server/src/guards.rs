//! Checks shared by several routes: the environment selection guard (SPEC §6) and the
//! workspace-roots rule (SPEC §11).

use std::path::{Path, PathBuf};

use berth_core::model::Environment;
use berth_core::{CompanyId, Driver, EnvironmentId, EnvironmentStatus};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The selected environment must exist in this company, be active, and have a driver from
/// `allowed`. Clearing a selection (`None`) is always allowed.
pub async fn environment_selection(
    state: &AppState,
    company_id: CompanyId,
    environment_id: Option<EnvironmentId>,
    allowed: &[Driver],
) -> ApiResult<Option<Environment>> {
    let Some(id) = environment_id else {
        return Ok(None);
    };
    let env = match state.store.get_environment(id).await? {
        Some(env) if env.company_id == company_id => env,
        _ => return Err(ApiError::unprocessable("Environment not found.")),
    };
    if env.status == EnvironmentStatus::Archived {
        return Err(ApiError::unprocessable("Environment is archived."));
    }
    if !allowed.contains(&env.driver) {
        let list: Vec<&str> = allowed.iter().map(|d| d.as_str()).collect();
        return Err(ApiError::unprocessable(format!(
            "Environment driver \"{}\" is not allowed here. Allowed drivers: {}",
            env.driver,
            list.join(", ")
        )));
    }
    Ok(Some(env))
}

/// Read `environmentId` from a JSON selection object: absent/null → `None`, a UUID string →
/// the id, anything else → 400 naming `field`.
pub fn selection_id(object: Option<&Value>, field: &str) -> ApiResult<Option<EnvironmentId>> {
    let Some(object) = object else {
        return Ok(None);
    };
    let Some(map) = object.as_object() else {
        return Err(ApiError::field(field, "must be an object"));
    };
    match map.get("environmentId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
            ApiError::field(&format!("{field}.environmentId"), "must be a UUID or null")
        }),
        Some(_) => Err(ApiError::field(
            &format!("{field}.environmentId"),
            "must be a UUID or null",
        )),
    }
}

/// Canonicalize `path` (symlinks resolved) and require it under one of the workspace roots.
pub fn workspace_path(state: &AppState, path: &str) -> ApiResult<PathBuf> {
    host_dir(state, "localPath", "Execution workspace localPath", path)
}

/// A directory on the control-plane host that Berth reads for a company (an execution
/// workspace, an agent's asset directory): absolute, existing, under a workspace root once
/// symlinks are resolved, and neither inside nor above `BERTH_HOME` — whatever lies below it
/// may be copied to an environment or read by an agent. Refusals are 422s naming `field`.
pub fn host_dir(state: &AppState, field: &str, what: &str, path: &str) -> ApiResult<PathBuf> {
    let raw = Path::new(path);
    if !raw.is_absolute() {
        return Err(ApiError::unprocessable_field(
            field,
            format!("{what} must be an absolute path."),
        ));
    }
    let canonical = std::fs::canonicalize(raw).map_err(|e| {
        ApiError::unprocessable_field(
            field,
            format!("{what} {path} cannot be resolved: {e}. Create the directory first."),
        )
    })?;
    if !canonical.is_dir() {
        return Err(ApiError::unprocessable_field(
            field,
            format!("{what} {path} is not a directory."),
        ));
    }
    if !state
        .workspace_roots
        .iter()
        .any(|root| canonical.starts_with(root))
    {
        let roots: Vec<String> = state
            .workspace_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        return Err(ApiError::unprocessable_field(
            field,
            format!(
                "{what} {} is outside every workspace root ({}). Configure workspaceRoots to allow it.",
                canonical.display(),
                roots.join(", ")
            ),
        ));
    }
    if berth_engine::host::overlaps_home(&canonical, &state.berth_home) {
        return Err(ApiError::unprocessable_field(
            field,
            format!(
                "{what}: {}",
                berth_engine::host::home_overlap_message(&canonical, &state.berth_home)
            ),
        ));
    }
    Ok(canonical)
}
