//! Query-string extraction and list responses with keyset pagination.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use berth_store::{Page, PageOf};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::ApiError;

/// Query parameters deserialized strictly, answering 400 with the JSON error shape.
#[derive(Debug)]
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| StrictQuery(q))
            .map_err(|e| {
                ApiError::Validation(vec![json!({"path": "query", "message": e.body_text()})])
            })
    }
}

/// `?limit=&cursor=`.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageQuery {
    /// Whether the client asked for a page. Without `limit` or `cursor` the routes that
    /// Paperclip also serves answer every item in Paperclip's order (docs/paperclip-compat.md).
    pub fn paginated(&self) -> bool {
        self.limit.is_some() || self.cursor.is_some()
    }

    /// [`Self::page`] when the client asked for one, otherwise everything.
    pub fn page_or_all(&self) -> Result<Page, ApiError> {
        if self.paginated() {
            self.page()
        } else {
            Ok(Page::all())
        }
    }

    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(Page::DEFAULT_LIMIT);
        if limit == 0 || limit > Page::MAX_LIMIT {
            return Err(ApiError::field(
                "limit",
                format!("limit must be between 1 and {}", Page::MAX_LIMIT),
            ));
        }
        if let Some(c) = &self.cursor
            && uuid::Uuid::parse_str(c).is_err()
        {
            return Err(ApiError::field("cursor", "cursor is not valid"));
        }
        Ok(Page {
            limit,
            cursor: self.cursor.clone(),
        })
    }
}

/// A JSON array response; the next page's cursor travels in `X-Next-Cursor`.
pub fn list_response<T: serde::Serialize>(page: PageOf<T>) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(next) = page.next_cursor.as_deref()
        && let Ok(v) = HeaderValue::from_str(next)
    {
        headers.insert("x-next-cursor", v);
    }
    (headers, axum::Json(page.items)).into_response()
}
