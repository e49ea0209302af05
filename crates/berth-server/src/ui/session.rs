//! Who is looking at a page, and proof that a form post came from one of our pages.
//!
//! - **CSRF.** Every browser gets a random token in a `SameSite=Strict`, HttpOnly cookie;
//!   every form repeats it in a hidden field and a post whose field does not match changes
//!   nothing. This comes on top of the boundary's same-origin rule for form posts.
//! - **Login.** `local_trusted` needs none. In token mode the board token lives in an
//!   HttpOnly, SameSite=Strict, `Path=/` cookie (Secure behind https) and is checked by the
//!   API's own token logic ([`Actor`]) on every page.

use std::collections::HashMap;

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use berth_core::model::Company;
use berth_store::Page;

use crate::auth::{Actor, AgentChannel};
use crate::error::ApiError;
use crate::state::SharedState;

use super::layout;

pub const CSRF_COOKIE: &str = "berth_csrf";
pub const TOKEN_COOKIE: &str = "berth_token";
pub const CSRF_FIELD: &str = "csrf";
/// Which of the viewer's companies the pages show (access is checked on every request).
pub const COMPANY_COOKIE: &str = "berth_company";

/// This browser's CSRF token (from its cookie, or minted for this response).
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// Whether the browser reached us over https (through a TLS-terminating proxy): cookies are
/// then marked `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct Https(pub bool);

/// The value of one cookie.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, `Path=/`; `max_age` 0 clears it.
pub fn set_cookie(name: &str, value: &str, https: Https, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if https.0 {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Constant-time comparison: the token must not leak byte by byte through timing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The middleware of every UI route: the agents' listener serves no pages, every browser
/// gets a CSRF cookie, and pages carry headers that keep them out of frames and limit what
/// they may load.
pub async fn browser_session(mut req: Request, next: Next) -> Response {
    if req.extensions().get::<AgentChannel>().is_some() {
        return ApiError::NotFound("Not found".into()).into_response();
    }
    let https = Https(
        req.headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https")),
    );
    let existing = cookie(req.headers(), CSRF_COOKIE).filter(|t| well_formed(t));
    let fresh = existing.is_none();
    let token = existing.unwrap_or_else(|| hex::encode(crate::crypto::random_bytes::<32>()));
    req.extensions_mut().insert(CsrfToken(token.clone()));
    req.extensions_mut().insert(https);
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if fresh {
        headers.append(
            header::SET_COOKIE,
            set_cookie(CSRF_COOKIE, &token, https, None),
        );
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The viewer of a page: a board actor (the local user, or a logged-in board token), the
/// company they work in, and what the pages should show.
#[derive(Debug, Clone)]
pub struct Ui {
    pub actor: Actor,
    pub csrf: String,
    pub company: Company,
    /// Every company the viewer may see (the settings page switches between them).
    pub companies: Vec<Company>,
    pub environments_enabled: bool,
    /// Token mode: a logout button instead of "local".
    pub token_mode: bool,
}

impl FromRequestParts<SharedState> for Ui {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let csrf = parts
            .extensions
            .get::<CsrfToken>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let actor = if state.local_trusted() {
            Actor::LocalTrusted
        } else {
            if let Some(token) = cookie(&parts.headers, TOKEN_COOKIE)
                && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
            {
                parts.headers.insert(header::AUTHORIZATION, v);
            }
            if !parts.headers.contains_key(header::AUTHORIZATION) {
                return Err(Redirect::to("/login").into_response());
            }
            // The API's own token logic: hashes, revocation, kinds.
            match Actor::from_request_parts(parts, state).await {
                Ok(actor) => actor,
                Err(_) => return Err(Redirect::to("/login?expired=1").into_response()),
            }
        };
        if let Err(e) = actor.require_board() {
            return Err(layout::error_page(e));
        }
        let companies = state
            .store
            .list_companies(&Page::all())
            .await
            .map_err(|e| layout::error_page(e.into()))?;
        let chosen = cookie(&parts.headers, COMPANY_COOKIE);
        let visible: Vec<Company> = companies
            .items
            .into_iter()
            .filter(|c| actor.can_access_company(c.id))
            .collect();
        let company = visible
            .iter()
            .find(|c| chosen.as_deref() == Some(c.id.to_string().as_str()))
            .or(visible.first())
            .cloned();
        let Some(company) = company else {
            return Err(layout::error_page(ApiError::Forbidden(
                "This token gives access to no company.".into(),
            )));
        };
        let environments_enabled = state
            .store
            .get_experimental_settings()
            .await
            .map_err(|e| layout::error_page(e.into()))?
            .enable_environments;
        Ok(Ui {
            actor,
            csrf,
            company,
            companies: visible,
            environments_enabled,
            token_mode: !state.local_trusted(),
        })
    }
}

/// A form post whose CSRF field matches this browser's cookie; its fields by name (the last
/// value of a repeated name wins).
#[derive(Debug)]
pub struct CsrfForm(pub HashMap<String, String>);

impl CsrfForm {
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn trimmed(&self, name: &str) -> String {
        self.get(name).trim().to_string()
    }

    pub fn checked(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }
}

impl FromRequest<SharedState> for CsrfForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let expected = req
            .extensions()
            .get::<CsrfToken>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let Form(fields) = Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|e| layout::error_page(ApiError::field("body", e.body_text())))?;
        let fields: HashMap<String, String> = fields.into_iter().collect();
        let sent = fields.get(CSRF_FIELD).map(String::as_str).unwrap_or("");
        if expected.is_empty() || !same(sent, &expected) {
            return Err(layout::error_page(ApiError::Forbidden(
                "This form has expired or did not come from this server's pages; reload the \
                 page and try again."
                    .into(),
            )));
        }
        Ok(CsrfForm(fields))
    }
}
