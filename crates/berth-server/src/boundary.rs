//! The HTTP trust boundary (SPEC §11, docs/security.md): what a request must look like before
//! any route, any auth decision or any body parsing sees it.
//!
//! - **Host.** A server bound to loopback answers only to loopback names for its own port
//!   (`localhost`, `127.0.0.1`, `[::1]`, …) and to names listed in `server.allowedHosts`. A
//!   page on `rebind.attacker.example` whose DNS now points at 127.0.0.1 sends its own name in
//!   `Host`, so DNS rebinding cannot reach `local_trusted`. A server bound elsewhere always
//!   needs tokens; it checks `Host` only once `server.allowedHosts` names its host names.
//! - **Content-Type.** A state-changing request needs `Content-Type: application/json`. A
//!   browser sends a cross-site POST without a CORS preflight only with a form or `text/plain`
//!   type (or none), so this refuses every "simple request" a foreign page can make. PUT,
//!   PATCH and DELETE always need a preflight, which Berth never grants; they are checked when
//!   they carry a body.
//! - **Origin.** A request that carries an `Origin` must come from this server's own origin
//!   (the scheme, host and port it was addressed by) or one listed in `server.allowedOrigins`.
//! - **Web UI forms.** The pages outside `/api` post HTML forms
//!   (`application/x-www-form-urlencoded`), which a browser also sends cross-site without a
//!   preflight. Such a post passes here only when the browser proves it same-origin: an
//!   allowed `Origin`, or, where a browser sends none, `Sec-Fetch-Site: same-origin`. The UI
//!   then also checks a per-browser CSRF token (`ui::session`). The API keeps its JSON-only
//!   rule, so nothing in the API became reachable by a form.
//!
//! These rules hold in every auth mode, on both listeners, for the API and the web UI alike.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::SharedState;

/// The boundary's settings: where the server is bound and what the operator allowed.
#[derive(Debug, Clone, Default)]
pub struct Boundary {
    /// The main listener's address.
    pub bound: Option<SocketAddr>,
    /// Extra host names (`name` for any port, or `name:port`), lower-case.
    pub allowed_hosts: Vec<String>,
    /// Extra origins (`scheme://host[:port]`), lower-case, without a trailing slash.
    pub allowed_origins: Vec<String>,
}

/// Why a request was refused at the boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Host(String),
    ContentType,
    Origin(String),
    /// A web UI form post that did not prove it came from this server's own pages.
    CrossSiteForm,
}

impl Refusal {
    fn into_api_error(self) -> ApiError {
        match self {
            Refusal::Host(host) => ApiError::Forbidden(format!(
                "Host {host:?} is not allowed: this server answers to loopback names for its own \
                 port. To reach it under another name, add that name to `server.allowedHosts` in \
                 berth.toml (or BERTH_ALLOWED_HOSTS)."
            )),
            Refusal::ContentType => ApiError::UnsupportedMediaType(
                "State-changing requests must send Content-Type: application/json.".into(),
            ),
            Refusal::Origin(origin) => ApiError::Forbidden(format!(
                "Origin {origin:?} is not allowed: only this server's own origin may change \
                 state. To allow another, add it to `server.allowedOrigins` in berth.toml (or \
                 BERTH_ALLOWED_ORIGINS)."
            )),
            Refusal::CrossSiteForm => ApiError::Forbidden(
                "Form posts must come from this server's own pages (same-origin Origin or \
                 Sec-Fetch-Site)."
                    .into(),
            ),
        }
    }
}

/// A host header split into its name (lower-case, IPv6 without brackets) and port.
fn split_host(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim().to_ascii_lowercase();
    if value.is_empty() {
        return None;
    }
    if let Some(rest) = value.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((name.to_string(), port));
    }
    match value.rsplit_once(':') {
        // A bare IPv6 address without brackets is not a valid Host.
        Some((name, _)) if name.contains(':') => None,
        Some((name, port)) => Some((name.to_string(), Some(port.parse().ok()?))),
        None => Some((value, None)),
    }
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Boundary {
    pub fn new(bound: SocketAddr, allowed_hosts: &[String], allowed_origins: &[String]) -> Self {
        let norm = |v: &String| v.trim().trim_end_matches('/').to_ascii_lowercase();
        Self {
            bound: Some(bound),
            allowed_hosts: allowed_hosts.iter().map(norm).collect(),
            allowed_origins: allowed_origins.iter().map(norm).collect(),
        }
    }

    fn bound_loopback(&self) -> bool {
        self.bound.is_none_or(|a| a.ip().is_loopback())
    }

    fn listed(&self, name: &str, port: Option<u16>) -> bool {
        self.allowed_hosts
            .iter()
            .any(|entry| match split_host(entry) {
                Some((n, None)) => n == name,
                Some((n, Some(p))) => n == name && Some(p) == port,
                None => false,
            })
    }

    /// Whether `Host` may address this server. `agent_channel`: the agents' own listener, whose
    /// clients reach it through SSH forwards under other ports and which never trusts without
    /// a token.
    pub fn host_allowed(&self, host: Option<&str>, agent_channel: bool) -> bool {
        if agent_channel {
            return true;
        }
        let enforce = self.bound_loopback() || !self.allowed_hosts.is_empty();
        if !enforce {
            return true;
        }
        let Some((name, port)) = host.and_then(split_host) else {
            return false;
        };
        if self.listed(&name, port) {
            return true;
        }
        let own_port = self.bound.map(|a| a.port());
        let port = port.unwrap_or(80);
        if Some(port) != own_port {
            return false;
        }
        if is_loopback_name(&name) {
            return true;
        }
        // Bound to one specific address: that address, literally.
        self.bound
            .is_some_and(|a| !a.ip().is_unspecified() && name.parse::<IpAddr>() == Ok(a.ip()))
    }

    /// Whether `origin` is this server's own (as addressed by `host`) or a configured one.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        let Some(rest) = origin.strip_prefix("http://") else {
            // `null` (sandboxed frames, file: pages), https (Berth serves plain HTTP), others.
            return false;
        };
        let Some((o_name, o_port)) = split_host(rest) else {
            return false;
        };
        let Some((h_name, h_port)) = host.and_then(split_host) else {
            return false;
        };
        o_name == h_name && o_port.unwrap_or(80) == h_port.unwrap_or(80)
    }

    /// The whole check for one request to the API (or anything outside the web UI).
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        agent_channel: bool,
    ) -> Result<(), Refusal> {
        self.check_request(method, headers, agent_channel, false)
    }

    /// The whole check for one request; `ui`: the path is a web UI page (outside `/api`),
    /// where same-origin form posts are allowed.
    pub fn check_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
        agent_channel: bool,
        ui: bool,
    ) -> Result<(), Refusal> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !self.host_allowed(host, agent_channel) {
            return Err(Refusal::Host(
                host.unwrap_or("").chars().take(200).collect(),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("<not text>");
            if !self.origin_allowed(origin, host) {
                return Err(Refusal::Origin(origin.chars().take(200).collect()));
            }
        }
        let state_changing = !matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        if state_changing && (*method == Method::POST || carries_body(headers)) && !is_json(headers)
        {
            if ui && *method == Method::POST && is_form(headers) {
                // The Origin, when sent, was checked above; without one only the browser's
                // own same-origin marker will do.
                let same_origin = headers.contains_key(header::ORIGIN)
                    || headers
                        .get("sec-fetch-site")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.eq_ignore_ascii_case("same-origin"));
                return if same_origin {
                    Ok(())
                } else {
                    Err(Refusal::CrossSiteForm)
                };
            }
            return Err(Refusal::ContentType);
        }
        Ok(())
    }
}

/// Whether a path belongs to the web UI (everything outside the API and `/metrics`).
pub fn is_ui_path(path: &str) -> bool {
    !(path == "/api" || path.starts_with("/api/") || path == "/metrics")
}

/// `application/x-www-form-urlencoded`, the type of the UI's HTML forms.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            essence
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn carries_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) || headers.contains_key(header::CONTENT_TYPE)
    {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.to_str().map_or(true, |len| len.trim() != "0"))
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The middleware: refuse at the boundary, before auth, routing extractors or body parsing.
pub async fn enforce(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let agent_channel = req
        .extensions()
        .get::<crate::auth::AgentChannel>()
        .is_some();
    let ui = is_ui_path(req.uri().path());
    if let Err(refusal) =
        state
            .boundary
            .check_request(req.method(), req.headers(), agent_channel, ui)
    {
        tracing::warn!(
            method = %req.method(),
            path = req.uri().path(),
            refusal = ?refusal,
            "request refused at the HTTP boundary"
        );
        return refusal.into_api_error().into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn boundary(bound: &str, hosts: &[&str], origins: &[&str]) -> Boundary {
        Boundary::new(
            bound.parse().unwrap_or_else(|_| unreachable!()),
            &hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &origins.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                k.clone(),
                HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    #[test]
    fn loopback_names_for_the_bound_port_only() {
        let b = boundary("127.0.0.1:7411", &[], &[]);
        for ok in [
            "127.0.0.1:7411",
            "localhost:7411",
            "[::1]:7411",
            "LOCALHOST:7411",
            "127.1.2.3:7411",
        ] {
            assert!(b.host_allowed(Some(ok), false), "{ok}");
        }
        for bad in [
            "rebind.attacker.example:7411",
            "127.0.0.1:8080",
            "localhost",
            "127.0.0.1.attacker.example:7411",
            "",
            "::1:7411",
            "localhost:notaport",
        ] {
            assert!(!b.host_allowed(Some(bad), false), "{bad}");
        }
        assert!(!b.host_allowed(None, false));
        // The agents' listener is reached through forwards under other ports.
        assert!(b.host_allowed(Some("127.0.0.1:40000"), true));
    }

    #[test]
    fn allowed_hosts_extend_the_list() {
        let b = boundary("127.0.0.1:7411", &["berth.internal", "localhost:8000"], &[]);
        assert!(b.host_allowed(Some("berth.internal:7411"), false));
        assert!(b.host_allowed(Some("BERTH.internal"), false));
        assert!(b.host_allowed(Some("localhost:8000"), false));
        assert!(!b.host_allowed(Some("localhost:8001"), false));
        // Bound elsewhere without a list: tokens are required anyway, any host.
        let open = boundary("0.0.0.0:7411", &[], &[]);
        assert!(open.host_allowed(Some("build.example:7411"), false));
        let listed = boundary("0.0.0.0:7411", &["berth.example"], &[]);
        assert!(listed.host_allowed(Some("berth.example:7411"), false));
        assert!(!listed.host_allowed(Some("rebind.example:7411"), false));
    }

    #[test]
    fn origins_must_match_the_addressed_host() {
        let b = boundary("127.0.0.1:7411", &[], &["http://ui.example:3000"]);
        assert!(b.origin_allowed("http://127.0.0.1:7411", Some("127.0.0.1:7411")));
        assert!(b.origin_allowed("http://ui.example:3000", Some("127.0.0.1:7411")));
        assert!(!b.origin_allowed("http://localhost:7411", Some("127.0.0.1:7411")));
        assert!(!b.origin_allowed("http://attacker.example", Some("127.0.0.1:7411")));
        assert!(!b.origin_allowed("null", Some("127.0.0.1:7411")));
        assert!(!b.origin_allowed("https://127.0.0.1:7411", Some("127.0.0.1:7411")));
    }

    #[test]
    fn ui_form_posts_need_proof_of_same_origin_and_api_posts_stay_json_only() {
        let b = boundary("127.0.0.1:7411", &[], &[]);
        let host = (header::HOST, "127.0.0.1:7411");
        let form = (header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        let own = (header::ORIGIN, "http://127.0.0.1:7411");
        let same = (
            header::HeaderName::from_static("sec-fetch-site"),
            "same-origin",
        );
        let cross = (
            header::HeaderName::from_static("sec-fetch-site"),
            "cross-site",
        );
        let post = |pairs: &[(header::HeaderName, &str)], ui| {
            b.check_request(&Method::POST, &headers(pairs), false, ui)
        };
        assert_eq!(
            post(&[host.clone(), form.clone(), own.clone()], true),
            Ok(())
        );
        assert_eq!(post(&[host.clone(), form.clone(), same], true), Ok(()));
        assert_eq!(
            post(&[host.clone(), form.clone()], true),
            Err(Refusal::CrossSiteForm)
        );
        assert_eq!(
            post(&[host.clone(), form.clone(), cross], true),
            Err(Refusal::CrossSiteForm)
        );
        assert_eq!(
            post(
                &[
                    host.clone(),
                    form.clone(),
                    (header::ORIGIN, "http://evil.example")
                ],
                true
            ),
            Err(Refusal::Origin("http://evil.example".into()))
        );
        // The API never takes forms, same-origin or not.
        assert_eq!(
            post(&[host.clone(), form, own.clone()], false),
            Err(Refusal::ContentType)
        );
        // Nor does the UI take text/plain.
        assert_eq!(
            post(&[host, (header::CONTENT_TYPE, "text/plain"), own], true),
            Err(Refusal::ContentType)
        );
        assert!(is_ui_path("/environments") && is_ui_path("/"));
        assert!(!is_ui_path("/api/health") && !is_ui_path("/metrics") && !is_ui_path("/api"));
    }

    #[test]
    fn state_changes_need_json() {
        let b = boundary("127.0.0.1:7411", &[], &[]);
        let host = (header::HOST, "127.0.0.1:7411");
        let json = (header::CONTENT_TYPE, "application/json; charset=utf-8");
        let text = (header::CONTENT_TYPE, "text/plain");
        assert_eq!(
            b.check(&Method::POST, &headers(std::slice::from_ref(&host)), false),
            Err(Refusal::ContentType)
        );
        assert_eq!(
            b.check(
                &Method::POST,
                &headers(&[host.clone(), text.clone()]),
                false
            ),
            Err(Refusal::ContentType)
        );
        assert_eq!(
            b.check(
                &Method::POST,
                &headers(&[host.clone(), json.clone()]),
                false
            ),
            Ok(())
        );
        assert_eq!(
            b.check(
                &Method::PATCH,
                &headers(&[host.clone(), text, (header::CONTENT_LENGTH, "3")]),
                false
            ),
            Err(Refusal::ContentType)
        );
        // A bodiless DELETE needs no type (and cannot be sent cross-site without a preflight).
        assert_eq!(
            b.check(
                &Method::DELETE,
                &headers(std::slice::from_ref(&host)),
                false
            ),
            Ok(())
        );
        assert_eq!(
            b.check(&Method::GET, &headers(std::slice::from_ref(&host)), false),
            Ok(())
        );
        assert_eq!(
            b.check(
                &Method::GET,
                &headers(&[host, (header::ORIGIN, "http://evil.example")]),
                false
            ),
            Err(Refusal::Origin("http://evil.example".into()))
        );
    }
}
