//! Request body extraction that answers 400 `{"error":"Validation error","details":[…]}` with
//! the offending field's path, instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::error::ApiError;

/// A JSON body deserialized strictly (request types use `deny_unknown_fields`).
#[derive(Debug)]
pub struct StrictJson<T>(pub T);

impl<S, T> FromRequest<S> for StrictJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::field("body", e.body_text()))?;
        parse_body(&bytes).map(StrictJson)
    }
}

/// Parse a JSON object body, naming the path of the first problem. A string holding NUL is refused
/// wherever it is: no name, path, command or prompt needs one, PostgreSQL cannot store one,
/// and C strings (argv, file names) end at it.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::Validation(vec![json!({"path": "body", "message": e.to_string()})])
    })?;
    // Serde would read a struct from an array too (`[]` as "no fields"): every body is an object.
    if !value.is_object() {
        return Err(ApiError::Validation(vec![json!({
            "path": "body",
            "message": "must be a JSON object",
        })]));
    }
    if let Some(path) = nul_path(&value, "") {
        return Err(ApiError::Validation(vec![json!({
            "path": if path.is_empty() { "body".to_string() } else { path },
            "message": "must not contain a NUL character",
        })]));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::Validation(vec![
            json!({"path": path, "message": e.inner().to_string()}),
        ])
    })
}

/// The dotted path of the first string (or key) holding NUL.
fn nul_path(value: &Value, at: &str) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) => s.contains('\0').then(|| at.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, &join(&i.to_string()))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(&k.replace('\0', "\\0")))
            } else {
                nul_path(v, &join(k))
            }
        }),
        _ => None,
    }
}

/// For PATCH bodies: distinguishes an absent field (`None`) from an explicit `null`
/// (`Some(None)`). Use with `#[serde(default, deserialize_with = "double_option")]`.
pub fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        #[allow(dead_code)]
        name: Option<String>,
    }

    fn details(err: ApiError) -> Value {
        match err {
            ApiError::Validation(d) => Value::Array(d),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn an_array_is_not_a_body_even_when_every_field_is_optional() {
        let d = details(parse_body::<Body>(b"[]").unwrap_err());
        assert_eq!(d[0]["path"], "body");
        assert!(parse_body::<Body>(b"{}").is_ok());
        assert!(parse_body::<Body>(b"  ").is_ok());
    }

    #[test]
    fn nul_is_refused_with_its_path() {
        let d = details(parse_body::<Body>(br#"{"name":"a\u0000b"}"#).unwrap_err());
        assert_eq!(d[0]["path"], "name");
        let d = details(parse_body::<Value>(br#"{"a":[1,{"b\u0000":2}]}"#).unwrap_err());
        assert_eq!(d[0]["path"], "a.1.b\\0");
    }
}
