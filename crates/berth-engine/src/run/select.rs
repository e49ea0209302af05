//! Step 1: which environment a run executes on (SPEC §6), validated at run time.

use berth_core::adapters::supported_drivers;
use berth_core::model::{Agent, Environment, ExecutionWorkspace, Issue, Project};
use berth_core::selection::{Resolved, Selection, SelectionInputs, resolve};
use berth_core::{
    AgentId, CompanyId, EnvironmentSource, EnvironmentStatus, ExecutionWorkspaceId, IssueId,
};
use berth_store::Store;

use super::error::{ErrorCode, RunError};

/// Everything the precedence looks at for one run.
#[derive(Debug, Default)]
pub struct RunContext {
    pub agent: Option<Agent>,
    pub issue: Option<Issue>,
    pub project: Option<Project>,
    pub workspace: Option<ExecutionWorkspace>,
}

/// The rows the precedence reads for a run of `agent_id` (of `company_id`), with an optional
/// issue and execution workspace; the project comes from the issue or the workspace.
pub async fn load_context(
    store: &dyn Store,
    company_id: CompanyId,
    agent_id: AgentId,
    issue_id: Option<IssueId>,
    workspace_id: Option<ExecutionWorkspaceId>,
) -> Result<RunContext, RunError> {
    let agent = store
        .get_agent(agent_id)
        .await?
        .filter(|a| a.company_id == company_id)
        .ok_or_else(|| {
            RunError::new(
                ErrorCode::AgentStartFailed,
                "the run's agent no longer exists",
            )
        })?;
    let issue = match issue_id {
        Some(id) => store
            .get_issue(id)
            .await?
            .filter(|i| i.company_id == company_id),
        None => None,
    };
    let workspace_id =
        workspace_id.or_else(|| issue.as_ref().and_then(|i| i.execution_workspace_id));
    let workspace = match workspace_id {
        Some(id) => store
            .get_execution_workspace(id)
            .await?
            .filter(|w| w.company_id == company_id),
        None => None,
    };
    let project_id = issue
        .as_ref()
        .and_then(|i| i.project_id)
        .or_else(|| workspace.as_ref().and_then(|w| w.project_id));
    let project = match project_id {
        Some(id) => store
            .get_project(id)
            .await?
            .filter(|p| p.company_id == company_id),
        None => None,
    };
    Ok(RunContext {
        agent: Some(agent),
        issue,
        project,
        workspace,
    })
}

/// Resolve and validate the environment; `environment_not_found`, `environment_inactive` and
/// `unsupported_adapter_environment` are the run's error codes.
pub async fn select_environment(
    store: &dyn Store,
    company_id: CompanyId,
    ctx: &RunContext,
) -> Result<(Environment, EnvironmentSource), RunError> {
    let company = store.get_company(company_id).await?.ok_or_else(|| {
        RunError::new(
            ErrorCode::EnvironmentNotFound,
            "the run's company no longer exists",
        )
    })?;
    let inputs = SelectionInputs {
        workspace: Selection::from_json(ctx.workspace.as_ref().map(|w| &w.config)),
        issue: Selection::from_json(ctx.issue.as_ref().map(|i| &i.execution_workspace_settings)),
        project: Selection::from_json(ctx.project.as_ref().map(|p| &p.execution_workspace_policy)),
        agent_default: ctx.agent.as_ref().and_then(|a| a.default_environment_id),
        company_default: company.default_environment_id,
    };
    let Resolved {
        environment_id,
        source,
    } = resolve(&inputs);
    let env = match environment_id {
        // The managed local environment is re-ensured before every run (safe under
        // concurrency: exactly one row ever exists).
        None => store.ensure_local_environment(company_id).await?,
        Some(id) => match store.get_environment(id).await? {
            Some(env) if env.company_id == company_id => env,
            _ => {
                return Err(RunError::new(
                    ErrorCode::EnvironmentNotFound,
                    format!("Environment \"{id}\" not found (selected by the {source} rule)."),
                ));
            }
        },
    };
    if env.status != EnvironmentStatus::Active {
        return Err(RunError::new(
            ErrorCode::EnvironmentInactive,
            format!("Environment \"{}\" is not active.", env.name),
        ));
    }
    if let Some(agent) = &ctx.agent {
        let allowed = supported_drivers(&agent.adapter_type).unwrap_or(&[]);
        if !allowed.contains(&env.driver) {
            return Err(RunError::new(
                ErrorCode::UnsupportedAdapterEnvironment,
                format!(
                    "Adapter \"{}\" does not support \"{}\" environments.",
                    agent.adapter_type, env.driver
                ),
            ));
        }
    }
    Ok((env, source))
}
