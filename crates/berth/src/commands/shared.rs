//! Helpers several commands share: JSON flags, secret files, and naming things by id or name.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use berth_core::{CompanyId, EnvironmentId};
use serde_json::{Map, Value};

use crate::client::{Client, encode_component, with_query};
use crate::exit::{Exit, Failed};

/// Parse a flag's JSON text, which must be an object.
pub fn json_object(flag: &str, text: &str) -> anyhow::Result<Map<String, Value>> {
    match json_value(flag, text)? {
        Value::Object(map) => Ok(map),
        other => Err(Failed::usage(format!(
            "{flag} must be a JSON object, not {}",
            crate::client::kind_of(&other)
        ))
        .into()),
    }
}

/// Parse a flag's JSON text.
pub fn json_value(flag: &str, text: &str) -> anyhow::Result<Value> {
    // serde_json's syntax errors name a position, never the content, so nothing secret in
    // the text can end up in the message.
    serde_json::from_str(text).map_err(|e| {
        Failed::usage(format!("{flag} is not valid JSON: {e}"))
            .with_hint("quote the JSON for your shell, e.g. --config '{\"host\":\"example\"}'")
            .into()
    })
}

/// Read a whole file, or stdin for `-`.
pub fn read_text(what: &str, path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("failed to read {what} from stdin"))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {what} from {}", path.display()))
}

/// Read a file holding a secret. The content is never printed; only the path appears in errors.
pub fn read_secret_file(what: &str, path: &Path) -> anyhow::Result<String> {
    let text = read_text(what, path)?;
    if text.trim().is_empty() {
        return Err(Failed::usage(format!("{what} file {} is empty", path.display())).into());
    }
    Ok(text)
}

/// An id given on the command line, checked to be a UUID before it goes into a URL path.
pub fn parse_id<T: std::str::FromStr>(what: &str, text: &str) -> anyhow::Result<T> {
    text.trim().parse::<T>().map_err(|_| {
        Failed::new(
            Exit::Usage,
            format!("{text:?} is not a valid {what} id (a UUID)"),
        )
        .with_hint(format!(
            "list {what}s with the `list` subcommand to find the id"
        ))
        .into()
    })
}

/// An environment by id, or by (exact) name within the company.
pub async fn resolve_environment(
    client: &Client,
    company: CompanyId,
    reference: &str,
) -> anyhow::Result<EnvironmentId> {
    if let Ok(id) = reference.parse::<EnvironmentId>() {
        return Ok(id);
    }
    let environments = client
        .list_all(&format!("/api/companies/{company}/environments"))
        .await
        .context("failed to list environments")?;
    let found = environments.iter().find(|e| {
        e.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n == reference)
    });
    match found.and_then(|e| e.get("id")).and_then(Value::as_str) {
        Some(id) => parse_id("environment", id),
        None => Err(Failed::new(
            Exit::NotFound,
            format!("no environment named {reference:?}"),
        )
        .with_hint("`berth env list` shows the company's environments")
        .into()),
    }
}

/// What an `--environment` flag of a selection means.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Remove the selection (fall through to the next rule).
    Remove,
    /// Set `environmentId` to this (a UUID string, or null for "the company default").
    Set(Value),
}

/// Parse an `--environment ID|NAME|default|none` flag.
pub async fn environment_selection(
    client: &Client,
    company: CompanyId,
    text: &str,
) -> anyhow::Result<Selection> {
    match text.trim() {
        "none" => Ok(Selection::Remove),
        "default" => Ok(Selection::Set(Value::Null)),
        reference => {
            let id = resolve_environment(client, company, reference).await?;
            Ok(Selection::Set(Value::String(id.to_string())))
        }
    }
}

/// Apply a selection to a JSON selection object (`executionWorkspacePolicy`, …).
pub fn apply_selection(target: &mut Value, selection: Selection) {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        match selection {
            Selection::Remove => {
                map.remove("environmentId");
            }
            Selection::Set(value) => {
                map.insert("environmentId".into(), value);
            }
        }
    }
}

/// `Some(None)` for `none`, `Some(Some(id))` for an id, `None` when the flag was not given.
pub fn nullable_id(what: &str, text: Option<&str>) -> anyhow::Result<Option<Value>> {
    match text.map(str::trim) {
        None => Ok(None),
        Some("none") => Ok(Some(Value::Null)),
        Some(id) => {
            let id: uuid::Uuid = parse_id(what, id)?;
            Ok(Some(Value::String(id.to_string())))
        }
    }
}

/// A list endpoint's items: one page when `--limit`/`--cursor` is given (the next cursor is
/// reported on stderr), every page otherwise.
pub async fn list(
    client: &Client,
    path: &str,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    if limit.is_none() && cursor.is_none() {
        return Ok(client.list_all(path).await?);
    }
    let limit_text = limit.map(|l| l.to_string());
    let page_path = with_query(
        path,
        &[("limit", limit_text.as_deref()), ("cursor", cursor)],
    );
    let response = client.get_page(&page_path).await?;
    if let Some(next) = &response.next_cursor {
        eprintln!("more results: pass --cursor {}", encode_component(next));
    }
    match response.body {
        Value::Array(items) => Ok(items),
        other => Err(anyhow::anyhow!(
            "unexpected response from GET {path}: expected a JSON array, got {}",
            crate::client::kind_of(&other)
        )),
    }
}

/// Decode a JSON record into a typed model for human output.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, value: &Value) -> anyhow::Result<T> {
    serde_json::from_value(value.clone())
        .with_context(|| format!("failed to read the {what} the server returned"))
}

/// The `id` of a returned record, for messages.
pub fn id_of(value: &Value) -> String {
    value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// The JSON a `delete` prints: the server's body, or `{id, deleted: true}` when it sent none.
pub fn deleted_json(id: &str, body: Value) -> Value {
    if body.is_null() {
        serde_json::json!({ "id": id, "deleted": true })
    } else {
        body
    }
}
