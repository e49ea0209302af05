//! Companies: the tenants. Every other row belongs to exactly one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::model::Company;
use berth_core::{CompanyId, Driver, EnvironmentId};
use berth_store::Page;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity;
use crate::auth::{Actor, company_for};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PageQuery, StrictQuery, list_response};
use crate::guards;
use crate::json::{StrictJson, double_option};
use crate::state::SharedState;

pub fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_companies, create_company))
        .routes(routes!(get_company, update_company))
}

#[utoipa::path(get, path = "/api/companies", tag = "companies",
    responses((status = 200, body = [Company]), (status = 401)))]
async fn list_companies(
    State(state): State<SharedState>,
    actor: Actor,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> ApiResult<Response> {
    actor.require_not_run()?;
    let page = q.page()?;
    let mut result = state.store.list_companies(&page).await?;
    if !actor.is_instance_admin() {
        // Non-admins see only their companies; page through everything to filter.
        let all = state.store.list_companies(&Page::all()).await?;
        result.items = all
            .items
            .into_iter()
            .filter(|c| actor.can_access_company(c.id))
            .collect();
        result.next_cursor = None;
    }
    Ok(list_response(result))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCompany {
    name: String,
}

#[utoipa::path(post, path = "/api/companies", tag = "companies", request_body = Object,
    responses((status = 201, body = Company), (status = 400), (status = 403)))]
async fn create_company(
    State(state): State<SharedState>,
    actor: Actor,
    StrictJson(body): StrictJson<CreateCompany>,
) -> ApiResult<Response> {
    actor.require_instance_admin()?;
    let name = body.name.trim();
    if name.is_empty() {
        return Err(ApiError::field("name", "name must not be empty"));
    }
    let company = state.store.create_company(name).await?;
    activity::record(
        &state,
        &actor,
        company.id,
        "company.created",
        "company",
        company.id,
        json!({"name": company.name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(company)).into_response())
}

#[utoipa::path(get, path = "/api/companies/{company_id}", tag = "companies",
    params(("company_id" = CompanyId, Path)), responses((status = 200, body = Company), (status = 404)))]
async fn get_company(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
) -> ApiResult<Json<Company>> {
    Ok(Json(company_for(&state, &actor, company_id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateCompany {
    #[serde(default, deserialize_with = "double_option")]
    default_environment_id: Option<Option<EnvironmentId>>,
    /// Instance admins only: may this company's agents run on the control-plane host?
    #[serde(default)]
    host_execution: Option<bool>,
}

#[utoipa::path(patch, path = "/api/companies/{company_id}", tag = "companies",
    params(("company_id" = CompanyId, Path)), request_body = Object,
    responses((status = 200, body = Company), (status = 403), (status = 404), (status = 422)))]
async fn update_company(
    State(state): State<SharedState>,
    actor: Actor,
    Path(company_id): Path<CompanyId>,
    StrictJson(body): StrictJson<UpdateCompany>,
) -> ApiResult<Json<Company>> {
    let mut company = company_for(&state, &actor, company_id).await?;
    actor.require_privileged(company_id)?;
    if body.host_execution.is_some() {
        // Checked before anything is written: a refused request changes nothing.
        actor.require_instance_admin()?;
    }
    if let Some(default) = body.default_environment_id {
        guards::environment_selection(&state, company_id, default, Driver::ALL).await?;
        company = state
            .store
            .set_company_default_environment(company_id, default)
            .await?;
        activity::record(
            &state,
            &actor,
            company_id,
            "company.default_environment_changed",
            "company",
            company_id,
            json!({"defaultEnvironmentId": default}),
        )
        .await?;
    }
    if let Some(allowed) = body.host_execution
        && allowed != company.host_execution
    {
        company = state
            .store
            .set_company_host_execution(company_id, allowed)
            .await?;
        activity::record(
            &state,
            &actor,
            company_id,
            if allowed {
                "company.host_execution_granted"
            } else {
                "company.host_execution_revoked"
            },
            "company",
            company_id,
            json!({"hostExecution": allowed}),
        )
        .await?;
    }
    Ok(Json(company))
}
