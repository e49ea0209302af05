//! The HTTP client of the Berth API, and the mapping of its failures to exit codes.
//!
//! Responses are returned as raw JSON ([`serde_json::Value`]) so that `--json` prints exactly
//! what the server said (fields this CLI does not know included); commands decode the typed
//! records of `berth_core::model` only for human output.

use std::time::Duration;

use berth_core::{CompanyId, Secret};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::exit::Exit;

/// The response header carrying the cursor of the next page of a list.
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No HTTP response at all: connection refused, DNS, timeout.
    #[error("cannot reach the Berth server at {server}: {reason}")]
    Unreachable { server: String, reason: String },

    /// The server answered with an error status.
    #[error("{message}")]
    Status {
        status: u16,
        /// The server's `error` field (or the status text when the body was not JSON).
        message: String,
        /// The server's `details` field.
        details: Option<Value>,
    },

    /// The server answered 2xx with a body this client does not understand.
    #[error("unexpected response from {method} {path}: {reason}")]
    Decode {
        method: String,
        path: String,
        reason: String,
    },

    #[error("invalid server URL {0:?}: {1}")]
    BadUrl(String, String),
}

impl ApiError {
    pub fn exit(&self) -> Exit {
        match self {
            ApiError::Unreachable { .. } => Exit::Unreachable,
            ApiError::Status { status, .. } => Exit::for_status(*status),
            ApiError::Decode { .. } => Exit::Failure,
            ApiError::BadUrl(..) => Exit::Usage,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ApiError::Unreachable { .. } => Some(
                "is the server running? Start one with `berth serve`, or point --server / \
                 BERTH_SERVER at it (`berth doctor` checks the setup)"
                    .into(),
            ),
            ApiError::Status { status, .. } => match status {
                401 => Some(
                    "set BERTH_TOKEN or pass --token-file PATH (an admin creates one with \
                     `berth token create`)"
                        .into(),
                ),
                403 => Some("the token lacks the grant this needs (see `berth token list`)".into()),
                404 => Some(
                    "check the id or name (the `list` subcommand shows what exists in the \
                     company; --company selects another company)"
                        .into(),
                ),
                409 => Some(conflict_hint(self.details())),
                400 | 422 => Some("fix the input named above and try again".into()),
                _ => None,
            },
            ApiError::Decode { .. } => Some(
                "the server and this CLI may be different versions (compare `berth --version` \
                 with `berth doctor`)"
                    .into(),
            ),
            ApiError::BadUrl(..) => {
                Some("pass an http:// URL with --server or BERTH_SERVER".into())
            }
        }
    }

    /// The server's `details`, when it sent any.
    pub fn details(&self) -> Option<&Value> {
        match self {
            ApiError::Status { details, .. } => details.as_ref().filter(|d| !d.is_null()),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A successful response: its JSON body (`Null` when empty) and the next-page cursor.
#[derive(Debug)]
pub struct Response {
    pub body: Value,
    pub next_cursor: Option<String>,
}

/// A client of one Berth server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<Secret<String>>,
}

impl Client {
    pub fn new(
        base: &str,
        token: Option<Secret<String>>,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        let base = base.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| ApiError::BadUrl(base.clone(), e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ApiError::BadUrl(
                base,
                "the scheme must be http or https".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")));
        // A proxy from the environment must not intercept the local control plane.
        let loopback = match url.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        };
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ApiError::BadUrl(base.clone(), e.to_string()))?;
        Ok(Self { http, base, token })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        Ok(self.send(Method::GET, path, None::<&()>).await?.body)
    }

    /// GET returning the next-page cursor as well.
    pub async fn get_page(&self, path: &str) -> Result<Response, ApiError> {
        self.send(Method::GET, path, None::<&()>).await
    }

    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<Value, ApiError> {
        Ok(self.send(Method::POST, path, Some(body)).await?.body)
    }

    pub async fn patch(&self, path: &str, body: &impl Serialize) -> Result<Value, ApiError> {
        Ok(self.send(Method::PATCH, path, Some(body)).await?.body)
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        Ok(self.send(Method::DELETE, path, None::<&()>).await?.body)
    }

    /// Every item of a paginated list, following `X-Next-Cursor`.
    pub async fn list_all(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                None => path.to_string(),
                Some(c) => with_query(path, &[("cursor", Some(c.as_str()))]),
            };
            let response = self.get_page(&page_path).await?;
            match response.body {
                Value::Array(page) => items.extend(page),
                other => {
                    return Err(ApiError::Decode {
                        method: "GET".into(),
                        path: page_path,
                        reason: format!("expected a JSON array, got {}", kind_of(&other)),
                    });
                }
            }
            match response.next_cursor {
                // A server repeating a cursor would make this loop forever.
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => return Ok(items),
            }
        }
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Response, ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        tracing::debug!(%method, %url, "API request");
        let response = request.send().await.map_err(|e| ApiError::Unreachable {
            server: self.base.clone(),
            reason: describe_transport_error(&e),
        })?;
        let status = response.status();
        let next_cursor = response
            .headers()
            .get(NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .filter(|c| !c.is_empty());
        let bytes = response.bytes().await.map_err(|e| ApiError::Unreachable {
            server: self.base.clone(),
            reason: describe_transport_error(&e),
        })?;
        if status.is_success() {
            let body = if bytes.is_empty() || status == StatusCode::NO_CONTENT {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
                    method: method.to_string(),
                    path: path.to_string(),
                    reason: format!("the body is not JSON: {e}"),
                })?
            };
            return Ok(Response { body, next_cursor });
        }
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&bytes).trim().to_string();
                let reason = status.canonical_reason().unwrap_or("error");
                if text.is_empty() || text.len() > 300 {
                    format!("HTTP {} {reason}", status.as_u16())
                } else {
                    format!("HTTP {} {reason}: {text}", status.as_u16())
                }
            });
        let details = parsed.and_then(|v| v.get("details").cloned());
        Err(ApiError::Status {
            status: status.as_u16(),
            message,
            details,
        })
    }
}

/// What to do about a conflict, by the server's `details.code` where it gives one.
fn conflict_hint(details: Option<&Value>) -> String {
    let code = details.and_then(|d| d.get("code")).and_then(Value::as_str);
    match code {
        Some("environment_name_taken") => {
            "choose another --name (`berth env list` shows the names in use)".into()
        }
        Some("active_leases") => {
            "wait for the leases to end (`berth env leases`), or pass --force to expire them".into()
        }
        Some("managed_local") => {
            "the managed local environment cannot be deleted or archived".into()
        }
        Some("company_default") => {
            "it is the company's default environment; choose another default first".into()
        }
        Some("local_environment_exists") => {
            "a company has exactly one local environment; use the existing one".into()
        }
        _ => "the request conflicts with the current state; see the message above".into(),
    }
}

fn describe_transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the request timed out (raise it with --timeout or BERTH_TIMEOUT)".into()
    } else if e.is_connect() {
        "connection failed (nothing is listening there?)".into()
    } else {
        // reqwest's Display hides the cause (e.g. "error sending request"); add it.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// The JSON type name of a value, for error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `path?k=v&…` for the pairs whose value is `Some`, percent-encoded.
pub fn with_query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = path.to_string();
    let mut sep = if path.contains('?') { '&' } else { '?' };
    for (key, value) in pairs {
        if let Some(value) = value {
            out.push(sep);
            out.push_str(key);
            out.push('=');
            out.push_str(&encode_component(value));
            sep = '&';
        }
    }
    out
}

/// Percent-encode a path segment or query value (everything but unreserved characters).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// How a command names a company: `--company <id|name>` or the company named `default`.
pub async fn resolve_company(client: &Client, selector: Option<&str>) -> anyhow::Result<CompanyId> {
    if let Some(selector) = selector
        && let Ok(id) = selector.parse::<CompanyId>()
    {
        return Ok(id);
    }
    let name = selector.unwrap_or("default");
    let companies = client.list_all("/api/companies").await?;
    let found = companies.iter().find(|c| {
        c.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n == name)
    });
    match found.and_then(|c| c.get("id")).and_then(Value::as_str) {
        Some(id) => Ok(id.parse::<CompanyId>().map_err(|e| ApiError::Decode {
            method: "GET".into(),
            path: "/api/companies".into(),
            reason: format!("company id {id:?} is not a UUID: {e}"),
        })?),
        None => {
            let known: Vec<&str> = companies
                .iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            Err(
                crate::exit::Failed::new(Exit::NotFound, format!("no company named {name:?}"))
                    .with_hint(if known.is_empty() {
                        "the server has no companies; create one with `berth company create NAME`"
                            .to_string()
                    } else {
                        format!(
                            "pass --company (or BERTH_COMPANY) with one of: {}",
                            known.join(", ")
                        )
                    })
                    .into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_and_absent_ones_dropped() {
        assert_eq!(
            with_query("/api/x", &[("status", Some("active")), ("driver", None)]),
            "/api/x?status=active"
        );
        assert_eq!(
            with_query("/api/x?a=1", &[("cursor", Some("a b/c&d"))]),
            "/api/x?a=1&cursor=a%20b%2Fc%26d"
        );
    }

    #[test]
    fn statuses_map_to_the_documented_exit_codes() {
        let status = |status| ApiError::Status {
            status,
            message: String::new(),
            details: None,
        };
        assert_eq!(status(404).exit(), Exit::NotFound);
        assert_eq!(status(409).exit(), Exit::Conflict);
        assert_eq!(status(400).exit(), Exit::Invalid);
        assert_eq!(status(422).exit(), Exit::Invalid);
        assert_eq!(status(401).exit(), Exit::Unauthorized);
        assert_eq!(status(403).exit(), Exit::Unauthorized);
        assert_eq!(status(500).exit(), Exit::Failure);
        let unreachable = ApiError::Unreachable {
            server: "http://x".into(),
            reason: "refused".into(),
        };
        assert_eq!(unreachable.exit(), Exit::Unreachable);
        assert_eq!(Exit::CheckFailed.code(), 8);
    }
}
