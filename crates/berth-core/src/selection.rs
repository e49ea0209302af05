//! Environment selection precedence for a run (SPEC §6), as one pure function.

use serde::{Deserialize, Serialize};

use crate::enums::EnvironmentSource;
use crate::ids::EnvironmentId;

/// A JSON selection field (`environmentId`) that can be absent, explicitly `null`, or an id.
///
/// Absent means "no opinion, ask the next rule"; an explicit `null` means "use the company
/// default and skip the rules below".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    #[default]
    Absent,
    Null,
    Id(EnvironmentId),
}

impl Selection {
    /// Read the `environmentId` key of a JSON selection object (`None` = no object at all).
    pub fn from_json(object: Option<&serde_json::Value>) -> Selection {
        match object.and_then(|o| o.as_object()) {
            None => Selection::Absent,
            Some(map) => match map.get("environmentId") {
                None => Selection::Absent,
                Some(serde_json::Value::Null) => Selection::Null,
                Some(serde_json::Value::String(s)) => match s.parse() {
                    Ok(id) => Selection::Id(id),
                    Err(_) => Selection::Absent,
                },
                Some(_) => Selection::Absent,
            },
        }
    }
}

/// Everything the precedence looks at.
#[derive(Debug, Clone, Default)]
pub struct SelectionInputs {
    /// The issue's pinned execution workspace config (`config.environmentId`).
    pub workspace: Selection,
    /// The issue's `executionWorkspaceSettings.environmentId`.
    pub issue: Selection,
    /// The project's `executionWorkspacePolicy.environmentId`.
    pub project: Selection,
    /// The agent's `defaultEnvironmentId`.
    pub agent_default: Option<EnvironmentId>,
    /// The company's `default_environment_id`.
    pub company_default: Option<EnvironmentId>,
}

/// The chosen environment, or `None` for "the managed local environment" (the caller ensures
/// it exists), with the rule that chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub environment_id: Option<EnvironmentId>,
    pub source: EnvironmentSource,
}

/// The first rule that applies wins: workspace > issue > project > agent > company default
/// (else the managed local environment). An explicit `null` at the workspace, issue or project
/// level selects the company default and skips the rules below it.
pub fn resolve(inputs: &SelectionInputs) -> Resolved {
    let company_default = Resolved {
        environment_id: inputs.company_default,
        source: EnvironmentSource::CompanyDefault,
    };
    let levels = [
        (inputs.workspace, EnvironmentSource::Workspace),
        (inputs.issue, EnvironmentSource::Issue),
        (inputs.project, EnvironmentSource::Project),
    ];
    for (selection, source) in levels {
        match selection {
            Selection::Id(id) => {
                return Resolved {
                    environment_id: Some(id),
                    source,
                };
            }
            Selection::Null => return company_default,
            Selection::Absent => {}
        }
    }
    if let Some(id) = inputs.agent_default {
        return Resolved {
            environment_id: Some(id),
            source: EnvironmentSource::Agent,
        };
    }
    company_default
}

#[cfg(test)]
mod tests {
    use super::*;
    use EnvironmentSource::*;
    use Selection::*;

    #[test]
    fn precedence_table() {
        let w = EnvironmentId::new();
        let i = EnvironmentId::new();
        let p = EnvironmentId::new();
        let a = EnvironmentId::new();
        let c = EnvironmentId::new();
        // (workspace, issue, project, agent, company default) → (chosen, source)
        type Case = (
            Selection,
            Selection,
            Selection,
            Option<EnvironmentId>,
            Option<EnvironmentId>,
            Option<EnvironmentId>,
            EnvironmentSource,
        );
        let cases: Vec<Case> = vec![
            // every rule on its own
            (Id(w), Absent, Absent, None, None, Some(w), Workspace),
            (Absent, Id(i), Absent, None, None, Some(i), Issue),
            (Absent, Absent, Id(p), None, None, Some(p), Project),
            (Absent, Absent, Absent, Some(a), None, Some(a), Agent),
            (
                Absent,
                Absent,
                Absent,
                None,
                Some(c),
                Some(c),
                CompanyDefault,
            ),
            (Absent, Absent, Absent, None, None, None, CompanyDefault),
            // each rule beats every rule below it
            (Id(w), Id(i), Id(p), Some(a), Some(c), Some(w), Workspace),
            (Absent, Id(i), Id(p), Some(a), Some(c), Some(i), Issue),
            (Absent, Absent, Id(p), Some(a), Some(c), Some(p), Project),
            (Absent, Absent, Absent, Some(a), Some(c), Some(a), Agent),
            // explicit null: company default, skipping the rules below
            (
                Null,
                Id(i),
                Id(p),
                Some(a),
                Some(c),
                Some(c),
                CompanyDefault,
            ),
            (Null, Id(i), Id(p), Some(a), None, None, CompanyDefault),
            (
                Absent,
                Null,
                Id(p),
                Some(a),
                Some(c),
                Some(c),
                CompanyDefault,
            ),
            (Absent, Null, Absent, Some(a), None, None, CompanyDefault),
            (
                Absent,
                Absent,
                Null,
                Some(a),
                Some(c),
                Some(c),
                CompanyDefault,
            ),
            (Absent, Absent, Null, Some(a), None, None, CompanyDefault),
            // a null below a chosen level changes nothing
            (Id(w), Null, Null, Some(a), Some(c), Some(w), Workspace),
            (Absent, Id(i), Null, Some(a), Some(c), Some(i), Issue),
        ];
        for (n, (ws, is, pr, ag, co, want, source)) in cases.into_iter().enumerate() {
            let got = resolve(&SelectionInputs {
                workspace: ws,
                issue: is,
                project: pr,
                agent_default: ag,
                company_default: co,
            });
            assert_eq!(
                got,
                Resolved {
                    environment_id: want,
                    source
                },
                "case {n}"
            );
        }
    }

    #[test]
    fn selection_reads_absent_null_and_ids_from_json() {
        let id = EnvironmentId::new();
        assert_eq!(Selection::from_json(None), Absent);
        assert_eq!(Selection::from_json(Some(&serde_json::json!({}))), Absent);
        assert_eq!(
            Selection::from_json(Some(&serde_json::json!({"environmentId": null}))),
            Null
        );
        assert_eq!(
            Selection::from_json(Some(&serde_json::json!({"environmentId": id.to_string()}))),
            Id(id)
        );
    }
}
