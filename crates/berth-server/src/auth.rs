//! Who is calling, and what they may do.
//!
//! - `local_trusted`: a loopback server with no tokens has one implicit admin.
//! - Board tokens: companies, grants (`environments:manage`), instance admin.
//! - Agent tokens: one agent of one company.
//!
//! Tokens are stored as SHA-256 hashes. Another company's resource answers exactly like a
//! missing one (404), so the API is no existence oracle.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use berth_core::model::{Company, GRANT_ENVIRONMENTS_MANAGE};
use berth_core::{
    AgentId, CompanyId, ExecutionWorkspaceId, IssueId, ProjectId, RunId, TokenId, TokenKind,
};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, SharedState};

#[derive(Debug, Clone, PartialEq)]
pub enum Actor {
    LocalTrusted,
    Board {
        token_id: TokenId,
        company_ids: Vec<CompanyId>,
        grants: Vec<String>,
        instance_admin: bool,
    },
    Agent {
        token_id: TokenId,
        agent_id: AgentId,
        company_id: CompanyId,
        grants: Vec<String>,
    },
    /// The agent of one active run, by its `BERTH_API_TOKEN` (no grants). It reads only its
    /// own run, agent, issue, project and execution workspace (SPEC §11), and changes nothing.
    Run(RunScope),
}

/// What a run token may read: the run and the rows it names.
#[derive(Debug, Clone, PartialEq)]
pub struct RunScope {
    pub run_id: RunId,
    pub agent_id: AgentId,
    pub company_id: CompanyId,
    pub issue_id: Option<IssueId>,
    pub project_id: Option<ProjectId>,
    pub workspace_id: Option<ExecutionWorkspaceId>,
}

/// One row a run token might ask for (see [`Actor::can_see`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Row {
    Run(RunId),
    Agent(AgentId),
    Issue(IssueId),
    Project(ProjectId),
    Workspace(ExecutionWorkspaceId),
}

impl Actor {
    pub fn can_access_company(&self, company_id: CompanyId) -> bool {
        match self {
            Actor::LocalTrusted => true,
            Actor::Board {
                company_ids,
                instance_admin,
                ..
            } => *instance_admin || company_ids.contains(&company_id),
            Actor::Agent {
                company_id: own, ..
            } => *own == company_id,
            // A run token sees no company-wide list and no row beyond its own (`can_see`).
            Actor::Run(_) => false,
        }
    }

    /// Whether the actor may read this row of `company_id`: company access, or, for a run
    /// token, the row being its own run's.
    pub fn can_see(&self, company_id: CompanyId, row: Row) -> bool {
        match self {
            Actor::Run(scope) => {
                scope.company_id == company_id
                    && match row {
                        Row::Run(id) => id == scope.run_id,
                        Row::Agent(id) => id == scope.agent_id,
                        Row::Issue(id) => Some(id) == scope.issue_id,
                        Row::Project(id) => Some(id) == scope.project_id,
                        Row::Workspace(id) => Some(id) == scope.workspace_id,
                    }
            }
            other => other.can_access_company(company_id),
        }
    }

    /// May manage environments (and see unredacted configs) of this company.
    pub fn is_privileged(&self, company_id: CompanyId) -> bool {
        match self {
            Actor::LocalTrusted => true,
            Actor::Board {
                grants,
                instance_admin,
                ..
            } => {
                *instance_admin
                    || (self.can_access_company(company_id)
                        && grants.iter().any(|g| g == GRANT_ENVIRONMENTS_MANAGE))
            }
            Actor::Agent {
                grants,
                company_id: own,
                ..
            } => *own == company_id && grants.iter().any(|g| g == GRANT_ENVIRONMENTS_MANAGE),
            Actor::Run(_) => false,
        }
    }

    pub fn is_instance_admin(&self) -> bool {
        matches!(
            self,
            Actor::LocalTrusted
                | Actor::Board {
                    instance_admin: true,
                    ..
                }
        )
    }

    pub fn is_board(&self) -> bool {
        matches!(self, Actor::LocalTrusted | Actor::Board { .. })
    }

    pub fn actor_type(&self) -> &'static str {
        match self {
            Actor::LocalTrusted | Actor::Board { .. } => "board",
            Actor::Agent { .. } | Actor::Run(_) => "agent",
        }
    }

    pub fn actor_id(&self) -> String {
        match self {
            Actor::LocalTrusted => "local-board".to_string(),
            Actor::Board { token_id, .. } | Actor::Agent { token_id, .. } => {
                format!("token:{token_id}")
            }
            Actor::Run(scope) => format!("run:{}", scope.run_id),
        }
    }

    /// A run token is told "not found" where others are told "forbidden": it may not even
    /// learn which routes exist beyond its own rows.
    fn refuse(&self, message: String) -> ApiError {
        match self {
            Actor::Run(_) => ApiError::NotFound("Resource not found".into()),
            _ => ApiError::Forbidden(message),
        }
    }

    pub fn require_privileged(&self, company_id: CompanyId) -> ApiResult<()> {
        if self.is_privileged(company_id) {
            Ok(())
        } else {
            Err(self.refuse(format!("Missing permission: {GRANT_ENVIRONMENTS_MANAGE}")))
        }
    }

    /// Company-wide lists and instance-level reads: not for a run token.
    pub fn require_not_run(&self) -> ApiResult<()> {
        match self {
            Actor::Run(_) => Err(self.refuse(String::new())),
            _ => Ok(()),
        }
    }

    pub fn require_board(&self) -> ApiResult<()> {
        if self.is_board() {
            Ok(())
        } else {
            Err(self.refuse("Board access required".into()))
        }
    }

    pub fn require_instance_admin(&self) -> ApiResult<()> {
        if self.is_instance_admin() {
            Ok(())
        } else {
            Err(self.refuse("Instance admin access required".into()))
        }
    }
}

/// The company if it exists and the actor may see it; 404 otherwise (same answer either way).
pub async fn company_for(
    state: &AppState,
    actor: &Actor,
    company_id: CompanyId,
) -> ApiResult<Company> {
    match state.store.get_company(company_id).await? {
        Some(c) if actor.can_access_company(c.id) => Ok(c),
        _ => Err(ApiError::NotFound("Company not found".into())),
    }
}

/// A fresh token value: `berth_` + 32 random bytes (base64url). Shown once, stored hashed.
pub fn new_token_value() -> String {
    let bytes = crate::crypto::random_bytes::<32>();
    format!(
        "berth_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash_token(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Marks requests that came in on the agents' listener (see `launch_with_options`): there a
/// request without a token is refused even when the server is `local_trusted`.
#[derive(Debug, Clone, Copy)]
pub struct AgentChannel;

impl FromRequestParts<SharedState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            if state.local_trusted() && parts.extensions.get::<AgentChannel>().is_none() {
                return Ok(Actor::LocalTrusted);
            }
            return Err(ApiError::Unauthorized("Authentication required".into()));
        };
        let value = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthorized("Authorization must be a Bearer token".into()))?
            .trim();
        if value.starts_with(berth_engine::secrets::RUN_TOKEN_PREFIX) {
            return run_actor(state, value).await;
        }
        let token = state
            .store
            .find_token_by_hash(&hash_token(value))
            .await?
            .ok_or_else(|| ApiError::Unauthorized("Invalid or revoked token".into()))?;
        Ok(match token.kind {
            TokenKind::Board => Actor::Board {
                token_id: token.id,
                company_ids: token.company_ids,
                grants: token.grants,
                instance_admin: token.instance_admin,
            },
            TokenKind::Agent => {
                let (Some(agent_id), Some(company_id)) =
                    (token.agent_id, token.company_ids.first().copied())
                else {
                    return Err(ApiError::Forbidden("Agent authentication required".into()));
                };
                Actor::Agent {
                    token_id: token.id,
                    agent_id,
                    company_id,
                    grants: token.grants,
                }
            }
        })
    }
}

/// A run token is valid while its run is active (queued or running): it dies with the run.
async fn run_actor(state: &AppState, value: &str) -> Result<Actor, ApiError> {
    let invalid = || ApiError::Unauthorized("Invalid or expired run token".into());
    let run_id = state.secrets.verify_run_token(value).ok_or_else(invalid)?;
    let run = state.store.get_run(run_id).await?.ok_or_else(invalid)?;
    if run.status.is_terminal() {
        return Err(invalid());
    }
    let issue = match run.issue_id {
        Some(id) => state.store.get_issue(id).await?,
        None => None,
    };
    let workspace_id = run
        .execution_workspace_id
        .or(issue.as_ref().and_then(|i| i.execution_workspace_id));
    let workspace = match workspace_id {
        Some(id) => state.store.get_execution_workspace(id).await?,
        None => None,
    };
    let project_id = issue
        .as_ref()
        .and_then(|i| i.project_id)
        .or(workspace.as_ref().and_then(|w| w.project_id));
    Ok(Actor::Run(RunScope {
        run_id,
        agent_id: run.agent_id,
        company_id: run.company_id,
        issue_id: run.issue_id,
        project_id,
        workspace_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_follow_grants_and_companies() {
        let a = CompanyId::new();
        let b = CompanyId::new();
        let board = |grants: Vec<&str>, admin| Actor::Board {
            token_id: TokenId::new(),
            company_ids: vec![a],
            grants: grants.into_iter().map(String::from).collect(),
            instance_admin: admin,
        };
        assert!(board(vec!["environments:manage"], false).is_privileged(a));
        assert!(!board(vec!["environments:manage"], false).is_privileged(b));
        assert!(!board(vec![], false).is_privileged(a));
        assert!(board(vec![], false).can_access_company(a));
        assert!(!board(vec![], false).can_access_company(b));
        assert!(board(vec![], true).is_privileged(b));
        let agent = Actor::Agent {
            token_id: TokenId::new(),
            agent_id: AgentId::new(),
            company_id: a,
            grants: vec![],
        };
        assert!(agent.can_access_company(a) && !agent.is_privileged(a) && !agent.is_board());
        assert!(Actor::LocalTrusted.is_privileged(b));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let t1 = new_token_value();
        let t2 = new_token_value();
        assert_ne!(t1, t2);
        assert!(t1.starts_with("berth_"));
        assert_eq!(hash_token(&t1).len(), 64);
        assert_ne!(hash_token(&t1), t1);
    }
}
