//! The API error type: one enum, one status code per variant, one JSON shape
//! (`{"error": "...", "details": ...}`). Internal errors are logged with the request span and
//! answered with a generic message — their text never reaches the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::config::ConfigIssue;
use berth_store::{ConflictCode, StoreError};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Request shape: bad JSON, unknown top-level keys, wrong types (400).
    #[error("Validation error")]
    Validation(Vec<Value>),
    /// Semantically invalid input, e.g. a driver config (422).
    #[error("{message}")]
    Unprocessable { message: String, details: Value },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Missing — or belonging to another company, which must look exactly the same.
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { message: String, details: Value },
    /// A state-changing request without `Content-Type: application/json` (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("internal error")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            message: message.into(),
            details: Value::Null,
        }
    }

    /// 422 naming one field (`details: [{path, message}]`).
    pub fn unprocessable_field(path: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Unprocessable {
            details: json!([{"path": path, "message": message}]),
            message,
        }
    }

    /// 422 for driver-config issues: the first message, every issue in `details.issues`.
    pub fn config_issues(issues: Vec<ConfigIssue>) -> Self {
        let message = issues
            .first()
            .map(|i| i.message.clone())
            .unwrap_or_else(|| "Invalid environment config.".to_string());
        ApiError::Unprocessable {
            message,
            details: json!({ "issues": issues }),
        }
    }

    /// 400 naming one field.
    pub fn field(path: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![json!({"path": path, "message": message.into()})])
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { entity, .. } => ApiError::NotFound(format!(
                "{}{} not found",
                entity[..1].to_uppercase(),
                &entity[1..]
            )),
            StoreError::Conflict {
                code,
                message,
                details,
            } => {
                let mut details = if details.is_null() {
                    json!({})
                } else {
                    details
                };
                if let Value::Object(map) = &mut details {
                    map.insert("code".into(), json!(code.as_str()));
                }
                if code == ConflictCode::NotEmpty {
                    return ApiError::unprocessable(message);
                }
                ApiError::Conflict { message, details }
            }
            StoreError::LeaseLost { lease_id, reason } => ApiError::Conflict {
                message: format!("Lease {lease_id} was lost: {reason}"),
                details: json!({"code": "lease_lost"}),
            },
            StoreError::LeaseWaitTimeout { .. } => ApiError::Conflict {
                message: err.to_string(),
                details: json!({"code": "lease_acquire_failed"}),
            },
            StoreError::IllegalTransition(t) => ApiError::Conflict {
                message: t.to_string(),
                details: json!({"code": "illegal_transition"}),
            },
            StoreError::IllegalRunTransition { .. } => ApiError::Conflict {
                message: err.to_string(),
                details: json!({"code": "illegal_transition"}),
            },
            StoreError::Invalid(message) => ApiError::unprocessable(message),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = match &self {
            ApiError::Validation(details) => {
                let details: Vec<Value> = details.iter().map(paperclip_issue).collect();
                json!({"error": "Validation error", "details": details})
            }
            ApiError::Unprocessable { message, details } => {
                let details = paperclip_details(details);
                if details.is_null() {
                    json!({"error": message})
                } else {
                    json!({"error": message, "details": details})
                }
            }
            ApiError::Conflict { message, details } => {
                if details.is_null() {
                    json!({"error": message})
                } else {
                    json!({"error": message, "details": details})
                }
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                json!({"error": "Internal server error"})
            }
            other => json!({"error": other.to_string()}),
        };
        (status, Json(body)).into_response()
    }
}

/// Validation details as Paperclip's (zod) issues carry them: `path` an array of segments
/// (array indices as numbers) and a `code`; `field` keeps Berth's dotted path, which its own
/// clients show next to form fields (docs/paperclip-compat.md).
fn paperclip_issue(item: &Value) -> Value {
    let Value::Object(map) = item else {
        return item.clone();
    };
    let Some(dotted) = map.get("path").and_then(Value::as_str) else {
        return item.clone();
    };
    let message = map.get("message").and_then(Value::as_str).unwrap_or("");
    let segments: Vec<Value> = if matches!(dotted, "body" | "query" | "") {
        Vec::new()
    } else {
        dotted
            .split('.')
            .map(|seg| match seg.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => json!(seg),
            })
            .collect()
    };
    let code = if message.starts_with("unknown field") {
        "unrecognized_keys"
    } else if message.starts_with("invalid type")
        || message.starts_with("missing field")
        || message.starts_with("invalid value")
    {
        "invalid_type"
    } else {
        "custom"
    };
    let mut out = map.clone();
    out.insert("path".into(), Value::Array(segments));
    out.insert("field".into(), json!(dotted));
    out.entry("code").or_insert_with(|| json!(code));
    Value::Object(out)
}

/// [`paperclip_issue`] over a details array or a `details.issues` array.
fn paperclip_details(details: &Value) -> Value {
    match details {
        Value::Array(items) => Value::Array(items.iter().map(paperclip_issue).collect()),
        Value::Object(map) => match map.get("issues") {
            Some(Value::Array(items)) => {
                let mut out = map.clone();
                out.insert(
                    "issues".into(),
                    Value::Array(items.iter().map(paperclip_issue).collect()),
                );
                Value::Object(out)
            }
            _ => details.clone(),
        },
        other => other.clone(),
    }
}
