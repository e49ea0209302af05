//! Backend-neutral helpers shared by both implementations: the clock, timestamp text, secret
//! references inside configs, the named unique constraints and their conflict messages.

use berth_core::SecretId;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::Value;

use crate::{ConflictCode, Page, Result, StoreError};

/// Now, truncated to microseconds: the precision both backends store, so a value written and
/// read back compares equal.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A caller-supplied timestamp at the stored precision.
pub(crate) fn at_stored_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Fixed-width RFC 3339 (`2026-01-02T03:04:05.123456Z`): text order equals time order.
pub(crate) fn ts_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts_text(column: &str, s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("{column}: bad timestamp {s:?}: {e}")))
}

/// Every secret a config references: any object `{"type": "secret_ref", "secretId": …}` at any
/// depth (SSH keys today, secret-marked plugin fields tomorrow).
pub(crate) fn secret_refs(config: &Value) -> Vec<SecretId> {
    let mut out = Vec::new();
    collect_secret_refs(config, &mut out);
    out
}

fn collect_secret_refs(v: &Value, out: &mut Vec<SecretId>) {
    match v {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("secret_ref")
                && let Some(id) = map
                    .get("secretId")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<SecretId>().ok())
                && !out.contains(&id)
            {
                out.push(id);
            }
            for child in map.values() {
                collect_secret_refs(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|c| collect_secret_refs(c, out)),
        _ => {}
    }
}

/// Set `environmentId` to null in a selection object when it names `environment_id`.
/// Returns whether it changed.
pub(crate) fn clear_environment_selection(v: &mut Value, environment_id: &str) -> bool {
    match v.as_object_mut() {
        Some(map) if map.get("environmentId").and_then(Value::as_str) == Some(environment_id) => {
            map.insert("environmentId".into(), Value::Null);
            true
        }
        _ => false,
    }
}

/// The unique constraints the store turns into typed conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unique {
    EnvironmentName,
    LocalEnvironment,
    SecretName,
    ActiveLeaseScope,
    RunEventSeq,
    TokenHash,
    Other,
}

pub(crate) fn environment_name_taken(name: &str) -> StoreError {
    StoreError::conflict(
        ConflictCode::EnvironmentNameTaken,
        format!("An environment named \"{name}\" already exists in this company."),
    )
}

pub(crate) fn local_exists() -> StoreError {
    StoreError::conflict(
        ConflictCode::LocalEnvironmentExists,
        "A local environment already exists for this company.",
    )
}

pub(crate) fn secret_name_taken(name: &str) -> StoreError {
    StoreError::conflict(
        ConflictCode::SecretNameTaken,
        format!("A secret named \"{name}\" already exists in this company."),
    )
}

/// Why an acquisition could not be granted right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Another active lease holds the same `(environment, scope_key)`.
    SingleFlight,
    /// The environment is at capacity.
    Capacity,
}

impl Blocked {
    pub(crate) fn into_error(self) -> StoreError {
        let message = match self {
            Blocked::SingleFlight => {
                "Environment lease conflict: another run holds this workspace on the environment."
            }
            Blocked::Capacity => "Environment lease conflict: the environment is at capacity.",
        };
        StoreError::conflict(ConflictCode::LeaseConflict, message)
    }
}

/// Validated keyset-pagination parameters.
pub(crate) struct PageQuery {
    pub cursor: Option<uuid::Uuid>,
    /// Rows to fetch: the page limit plus one, to learn whether another page follows.
    pub fetch: i64,
    pub limit: usize,
}

pub(crate) fn page_query(page: &Page) -> Result<PageQuery> {
    if page.limit == 0 {
        return Err(StoreError::Invalid("page limit must be at least 1".into()));
    }
    let cursor = match &page.cursor {
        None => None,
        Some(c) => Some(
            uuid::Uuid::parse_str(c.trim())
                .map_err(|_| StoreError::Invalid(format!("invalid page cursor {c:?}")))?,
        ),
    };
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    Ok(PageQuery {
        cursor,
        fetch: i64::from(page.limit) + 1,
        limit,
    })
}

/// Cut the extra row off and derive the next cursor from the last id kept.
pub(crate) fn finish_page<T>(
    mut items: Vec<T>,
    q: &PageQuery,
    id_of: impl Fn(&T) -> String,
) -> crate::PageOf<T> {
    let next_cursor = if items.len() > q.limit {
        items.truncate(q.limit);
        items.last().map(id_of)
    } else {
        None
    };
    crate::PageOf { items, next_cursor }
}
