//! The web UI entry page. The environment pages arrive with the web UI issue; until then `/`
//! tells the user where the API and its documentation are.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use crate::state::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new().route("/", get(index))
}

async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Berth</title></head>",
        "<body><h1>Berth</h1><p>Berth ",
        env!("CARGO_PKG_VERSION"),
        " is running.</p><ul>",
        "<li><a href=\"/api/health\">/api/health</a></li>",
        "<li><a href=\"/api/openapi.json\">/api/openapi.json</a> (the API description)</li>",
        "<li><a href=\"/metrics\">/metrics</a> (Prometheus)</li>",
        "</ul><p>The web UI for environments, leases and runs is not built yet; use the <code>berth</code> CLI.</p>",
        "</body></html>"
    ))
}
