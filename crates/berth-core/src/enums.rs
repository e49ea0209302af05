//! Every status and kind is an enum with exactly one `Display`/`FromStr` pair, and the same
//! snake_case spelling on the wire, in the database and in the CLI.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stored or submitted value that is not one of an enum's variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected {kind} value {value:?}; expected one of: {expected}")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownVariant {
                        kind: $kind,
                        value: other.to_string(),
                        expected: [$($text),*].join(", "),
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// Where runs of an environment execute.
    Driver, "driver" {
        Local => "local",
        Ssh => "ssh",
        Sandbox => "sandbox",
        Plugin => "plugin",
    }
);

string_enum!(
    EnvironmentStatus, "environment status" {
        Active => "active",
        Archived => "archived",
    }
);

string_enum!(
    /// See SPEC §5 and [`crate::lease`] for the transitions between these.
    LeaseStatus, "lease status" {
        Active => "active",
        Released => "released",
        Expired => "expired",
        Failed => "failed",
        Retained => "retained",
        PendingCleanup => "pending_cleanup",
    }
);

string_enum!(
    LeasePolicy, "lease policy" {
        Ephemeral => "ephemeral",
        ReuseByEnvironment => "reuse_by_environment",
        ReuseByExecutionWorkspace => "reuse_by_execution_workspace",
        RetainOnFailure => "retain_on_failure",
    }
);

string_enum!(
    CleanupStatus, "cleanup status" {
        Pending => "pending",
        Success => "success",
        Failed => "failed",
    }
);

string_enum!(
    RunStatus, "run status" {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
    }
);

string_enum!(
    /// Which rule of the selection precedence (SPEC §6) chose a run's environment.
    EnvironmentSource, "environment source" {
        Workspace => "workspace",
        Issue => "issue",
        Project => "project",
        Agent => "agent",
        CompanyDefault => "company_default",
    }
);

string_enum!(
    TokenKind, "token kind" {
        Board => "board",
        Agent => "agent",
    }
);

impl Driver {
    /// The lease policy an environment of this driver gets when none is given (SPEC §5).
    pub fn default_lease_policy(&self) -> LeasePolicy {
        match self {
            Driver::Ssh | Driver::Sandbox => LeasePolicy::ReuseByExecutionWorkspace,
            Driver::Local | Driver::Plugin => LeasePolicy::Ephemeral,
        }
    }

    /// Concurrent active leases allowed when none is given (SPEC §5: SSH default 4).
    pub fn default_capacity(&self) -> Option<i64> {
        match self {
            Driver::Ssh => Some(4),
            _ => None,
        }
    }
}

impl RunStatus {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl LeaseStatus {
    pub fn is_active(&self) -> bool {
        matches!(self, LeaseStatus::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_its_text() {
        for d in Driver::ALL {
            assert_eq!(d.as_str().parse::<Driver>(), Ok(*d));
        }
        for s in LeaseStatus::ALL {
            assert_eq!(s.as_str().parse::<LeaseStatus>(), Ok(*s));
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        for p in LeasePolicy::ALL {
            assert_eq!(p.as_str().parse::<LeasePolicy>(), Ok(*p));
        }
        for r in RunStatus::ALL {
            assert_eq!(r.as_str().parse::<RunStatus>(), Ok(*r));
        }
    }

    #[test]
    fn unknown_value_names_the_kind_and_the_choices() {
        let err = "docker".parse::<Driver>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected driver value \"docker\"; expected one of: local, ssh, sandbox, plugin"
        );
    }
}
