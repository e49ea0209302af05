//! Inputs and outputs of [`crate::Store`] methods that are not domain records.

use std::time::Duration;

use berth_core::model::*;
use berth_core::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Keyset pagination: rows are ordered by id (UUID v7, so by creation time); `cursor` is the
/// last id of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// Everything (for internal callers that need whole lists).
    pub fn all() -> Self {
        Self {
            limit: u32::MAX,
            cursor: None,
        }
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::first(Self::DEFAULT_LIMIT)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageOf<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentFilter {
    pub status: Option<EnvironmentStatus>,
    pub driver: Option<Driver>,
}

/// A secret to insert: already encrypted by the caller.
#[derive(Clone, PartialEq)]
pub struct NewSecret {
    pub id: SecretId,
    pub company_id: CompanyId,
    pub name: String,
    pub description: Option<String>,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentReferences {
    pub is_managed_local: bool,
    pub is_company_default: bool,
    pub agent_default_count: u64,
    pub execution_workspace_selection_count: u64,
    pub issue_selection_count: u64,
    pub project_selection_count: u64,
    pub active_lease_count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcquireLease {
    pub company_id: CompanyId,
    pub environment_id: EnvironmentId,
    pub scope_key: String,
    pub policy: LeasePolicy,
    pub ttl_secs: i64,
    pub execution_workspace_id: Option<ExecutionWorkspaceId>,
    pub issue_id: Option<IssueId>,
    pub run_id: Option<RunId>,
    pub agent_id: Option<AgentId>,
    pub provider: Option<String>,
    pub provider_lease_id: Option<String>,
    pub metadata: Option<Value>,
    /// `None`: fail at once when blocked; `Some(d)`: wait up to `d`.
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    pub company_id: CompanyId,
    pub name: String,
    pub adapter_type: String,
    pub adapter_config: Value,
    pub default_environment_id: Option<EnvironmentId>,
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub adapter_type: Option<String>,
    pub adapter_config: Option<Value>,
    pub default_environment_id: Option<Option<EnvironmentId>>,
    pub grants: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewProject {
    pub company_id: CompanyId,
    pub name: String,
    pub execution_workspace_policy: Value,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub execution_workspace_policy: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewIssue {
    pub company_id: CompanyId,
    pub project_id: Option<ProjectId>,
    pub title: String,
    pub assignee_agent_id: Option<AgentId>,
    pub execution_workspace_id: Option<ExecutionWorkspaceId>,
    pub execution_workspace_settings: Value,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IssuePatch {
    pub project_id: Option<Option<ProjectId>>,
    pub title: Option<String>,
    pub assignee_agent_id: Option<Option<AgentId>>,
    pub execution_workspace_id: Option<Option<ExecutionWorkspaceId>>,
    pub execution_workspace_settings: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewExecutionWorkspace {
    pub company_id: CompanyId,
    pub project_id: Option<ProjectId>,
    pub local_path: String,
    pub config: Value,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionWorkspacePatch {
    pub project_id: Option<Option<ProjectId>>,
    pub local_path: Option<String>,
    pub config: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub company_id: CompanyId,
    pub agent_id: AgentId,
    pub issue_id: Option<IssueId>,
    pub execution_workspace_id: Option<ExecutionWorkspaceId>,
    pub prompt: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPatch {
    pub status: Option<RunStatus>,
    pub environment_id: Option<Option<EnvironmentId>>,
    pub environment_source: Option<Option<EnvironmentSource>>,
    pub lease_id: Option<Option<LeaseId>>,
    pub error_code: Option<Option<String>>,
    pub error_message: Option<Option<String>>,
    pub exit_code: Option<Option<i64>>,
    pub session_params: Option<Option<Value>>,
    pub result: Option<Option<Value>>,
    pub started_at: Option<Option<DateTime<Utc>>>,
    pub finished_at: Option<Option<DateTime<Utc>>>,
    pub execution_workspace_id: Option<Option<ExecutionWorkspaceId>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    pub company_id: CompanyId,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub details: Value,
}

/// A secret row as it travels in a [`Dump`] (ciphertext only; the master key does not move).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpSecret {
    pub meta: SecretMeta,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpToken {
    pub token: ApiToken,
    pub sha256: String,
}

/// Every row of every table, for `berth db copy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dump {
    pub companies: Vec<Company>,
    pub environments: Vec<Environment>,
    pub secrets: Vec<DumpSecret>,
    pub agents: Vec<Agent>,
    pub projects: Vec<Project>,
    pub execution_workspaces: Vec<ExecutionWorkspace>,
    pub issues: Vec<Issue>,
    pub leases: Vec<Lease>,
    pub runs: Vec<Run>,
    pub run_events: Vec<RunEvent>,
    pub tokens: Vec<DumpToken>,
    pub experimental: ExperimentalSettings,
    pub activity: Vec<ActivityEntry>,
}
