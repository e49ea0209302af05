//! The store's error type. Named constraint violations become [`StoreError::Conflict`] with a
//! code the API maps to 409; nothing here is a stringly-typed database error the caller has
//! to parse.

use berth_core::lease::IllegalTransition;
use berth_core::{LeaseId, RunStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictCode {
    /// Another environment of the company has this name.
    EnvironmentNameTaken,
    /// The company already has a local environment.
    LocalEnvironmentExists,
    /// The managed local environment cannot be deleted or archived.
    ManagedLocal,
    /// The company's default environment cannot be deleted.
    CompanyDefault,
    /// The environment has active leases (delete without force).
    ActiveLeases,
    /// Single flight or capacity: another lease holds the scope (`environment_lease_conflict`).
    LeaseConflict,
    /// A secret with this name exists in the company.
    SecretNameTaken,
    /// `import_all` into a database that already has rows.
    NotEmpty,
    /// A row still referenced elsewhere.
    InUse,
}

impl ConflictCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConflictCode::EnvironmentNameTaken => "environment_name_taken",
            ConflictCode::LocalEnvironmentExists => "local_environment_exists",
            ConflictCode::ManagedLocal => "managed_local",
            ConflictCode::CompanyDefault => "company_default",
            ConflictCode::ActiveLeases => "active_leases",
            ConflictCode::LeaseConflict => "environment_lease_conflict",
            ConflictCode::SecretNameTaken => "secret_name_taken",
            ConflictCode::NotEmpty => "not_empty",
            ConflictCode::InUse => "in_use",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },

    #[error("{message}")]
    Conflict {
        code: ConflictCode,
        message: String,
        details: serde_json::Value,
    },

    /// The holder's fence is stale, or the lease is no longer active/unexpired: the holder
    /// must stop its work at once.
    #[error("lease {lease_id} lost: {reason}")]
    LeaseLost { lease_id: LeaseId, reason: String },

    #[error("timed out after {waited_ms} ms waiting for a lease on environment {environment}")]
    LeaseWaitTimeout { environment: String, waited_ms: u64 },

    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),

    #[error("illegal run transition from {from} to {to}")]
    IllegalRunTransition { from: RunStatus, to: RunStatus },

    #[error("invalid input: {0}")]
    Invalid(String),

    /// A stored row that does not decode (unknown enum value, bad JSON): never guessed.
    #[error("corrupt row: {0}")]
    Corrupt(String),

    #[error("failed to run migrations: {0}")]
    Migrate(String),

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub fn conflict(code: ConflictCode, message: impl Into<String>) -> Self {
        StoreError::Conflict {
            code,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    pub fn not_found(entity: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            entity,
            id: id.to_string(),
        }
    }
}
