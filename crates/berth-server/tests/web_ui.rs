//! The web UI (SPEC §11, issue 14): driven in a real headless Chromium against a real sshd,
//! and over plain HTTP for what a browser would never send (cross-site form posts, forged
//! CSRF tokens) — those must change nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use berth_testkit::browser::Browser;
use berth_testkit::sshd::Sshd;
use common::TestServer;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

/// A client that follows no redirects (the tests look at them).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of a `Set-Cookie` header among `resp`'s, and the whole header.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches(&format!("{name}="))
                .to_string();
            (value, v.to_string())
        })
}

/// The CSRF cookie a page hands out.
async fn csrf_of(s: &TestServer, path: &str, cookie: Option<&str>) -> String {
    let mut req = client().get(format!("{}{path}", s.base));
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let (token, header) = set_cookie(&resp, "berth_csrf").expect("a CSRF cookie");
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"));
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(&format!("name=\"csrf\" value=\"{token}\"")),
        "forms carry the token"
    );
    token
}

async fn flag(s: &TestServer) -> bool {
    s.get("/api/instance/settings/experimental").await.body["enableEnvironments"]
        .as_bool()
        .unwrap()
}

#[tokio::test]
async fn cross_site_and_forged_form_posts_change_nothing() {
    let s = TestServer::start().await;
    let csrf = csrf_of(&s, "/settings", None).await;
    let own = s.base.clone();
    // A rebound host name reaches no page either.
    let r = client()
        .get(format!("{}/settings", s.base))
        .header(reqwest::header::HOST, "rebind.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let form = |origin: Option<&str>, token: &str, cookie: bool| {
        let mut req = client()
            .post(format!("{}/settings", s.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("csrf={token}&enableEnvironments=true"));
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        if cookie {
            req = req.header(COOKIE, format!("berth_csrf={csrf}"));
        }
        req.send()
    };
    // A foreign page posting a form: refused by Origin before anything runs.
    let r = form(Some("http://evil.example"), &csrf, true)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No Origin and no Sec-Fetch-Site: nothing proves the post is ours.
    let r = form(None, &csrf, true).await.unwrap();
    assert_eq!(r.status(), 403);
    // Same origin but a forged or missing token, or no cookie to match it.
    let forged = "0".repeat(64);
    assert_eq!(form(Some(&own), &forged, true).await.unwrap().status(), 403);
    assert_eq!(form(Some(&own), "", true).await.unwrap().status(), 403);
    assert_eq!(form(Some(&own), &csrf, false).await.unwrap().status(), 403);
    assert!(!flag(&s).await, "no refused post changed the setting");

    // The API never takes a form, same origin or not.
    let c = s.default_company().await;
    let r = client()
        .post(format!("{}/api/companies/{c}/environments", s.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ORIGIN, &own)
        .body("name=x&driver=local")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // And the real thing works: same origin, the browser's token.
    let r = form(Some(&own), &csrf, true).await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(flag(&s).await);
    // Sec-Fetch-Site: same-origin stands in for a missing Origin.
    let r = client()
        .post(format!("{}/settings", s.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header(COOKIE, format!("berth_csrf={csrf}"))
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(!flag(&s).await);
}

#[tokio::test]
async fn token_mode_needs_a_login_whose_cookie_is_http_only_and_strict() {
    let s = TestServer::start().await;
    let admin = s
        .post(
            "/api/tokens",
            json!({"name": "admin", "kind": "board", "instanceAdmin": true}),
        )
        .await;
    assert_eq!(admin.status, 201, "{}", admin.text);
    let admin = admin.body["token"].as_str().unwrap().to_string();

    let r = client()
        .get(format!("{}/runs", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/login");
    let csrf = csrf_of(&s, "/login", None).await;
    let login = |token: String| {
        client()
            .post(format!("{}/login", s.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ORIGIN, &s.base)
            .header(COOKIE, format!("berth_csrf={csrf}"))
            .body(format!("csrf={csrf}&token={token}"))
            .send()
    };
    let r = login("berth_not-a-token".into()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "berth_token").is_none());
    let r = login(admin.clone()).await.unwrap();
    assert_eq!(r.status(), 303);
    let (value, header) = set_cookie(&r, "berth_token").unwrap();
    assert_eq!(value, admin);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(header.contains(attr), "{header}");
    }
    assert!(!header.contains("Secure"), "plain http: {header}");
    let cookies = format!("berth_csrf={csrf}; berth_token={admin}");
    let r = client()
        .get(format!("{}/settings", s.base))
        .header(COOKIE, &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Log out"));
    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = login(admin.clone()).await.unwrap();
    assert!(set_cookie(&r, "berth_token").is_some());
    let r = client()
        .post(format!("{}/login", s.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .header("sec-fetch-site", "same-origin")
        .header(COOKIE, format!("berth_csrf={csrf}"))
        .body(format!("csrf={csrf}&token={admin}"))
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&r, "berth_token").unwrap().1.contains("Secure"));

    // Logout clears the cookie; a revoked token's cookie leads back to the login.
    let r = client()
        .post(format!("{}/logout", s.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ORIGIN, &s.base)
        .header(COOKIE, &cookies)
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (value, header) = set_cookie(&r, "berth_token").unwrap();
    assert!(value.is_empty() && header.contains("Max-Age=0"), "{header}");
    // (Another token keeps the server in token mode once this one is gone.)
    let other = s
        .call(
            reqwest::Method::POST,
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "other", "kind": "board", "instanceAdmin": true})),
        )
        .await;
    assert_eq!(other.status, 201, "{}", other.text);
    let list = s
        .call(reqwest::Method::GET, "/api/tokens", Some(&admin), None)
        .await;
    let id = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = client()
        .get(format!("{}/settings", s.base))
        .header(COOKIE, &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
}

#[tokio::test]
async fn pages_are_small_and_environment_pages_follow_the_flag() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let env = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "<script>alert(1)</script>", "driver": "ssh", "config": common::ssh_config(Some(&common::sentinel_key("UI")))}),
        )
        .await;
    assert_eq!(env.status, 201, "{}", env.text);
    let eid = env.body["id"].as_str().unwrap().to_string();
    let get = |path: String| {
        let base = s.base.clone();
        async move {
            let r = client().get(format!("{base}{path}")).send().await.unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        }
    };
    // Off (the default): no pages, no nav entry; the API still answers.
    let (status, _) = get(format!("/environments/{eid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(get("/environments".into()).await.0, StatusCode::NOT_FOUND);
    let (status, html) = get("/runs".into()).await;
    assert_eq!(status, 200);
    assert!(!html.contains("href=\"/environments\""));
    assert_eq!(s.get(&format!("/api/environments/{eid}")).await.status, 200);

    s.patch(
        "/api/instance/settings/experimental",
        json!({"enableEnvironments": true}),
    )
    .await;
    let css = get("/ui.css".into()).await.1.len();
    let js = get("/ui.js".into()).await.1.len();
    for path in [
        "/environments".to_string(),
        "/environments/new".into(),
        format!("/environments/{eid}"),
        format!("/environments/{eid}/edit"),
        "/agents".into(),
        "/runs".into(),
        "/settings".into(),
    ] {
        let (status, html) = get(path.clone()).await;
        assert_eq!(status, 200, "{path}");
        assert!(html.contains("href=\"/environments\""), "{path}: nav entry");
        assert!(
            html.len() + css + js < 100 * 1024,
            "{path} weighs {} bytes",
            html.len() + css + js
        );
        assert!(
            !html.contains("SENTINELUI"),
            "{path}: the private key never comes back"
        );
        assert!(!html.contains("<script>alert"), "{path}: names are escaped");
        // Every input has a label (or is hidden).
        for id in html
            .split("<input ")
            .skip(1)
            .filter(|i| !i.contains("type=\"hidden\""))
            .filter_map(|i| i.split("id=\"").nth(1))
            .map(|i| i.split('"').next().unwrap())
        {
            assert!(
                html.contains(&format!("for=\"{id}\"")),
                "{path}: #{id} has a label"
            );
        }
    }
}

/// WebDriver's key code for Tab.
const TAB: &str = "\u{E004}";

/// A long-running process agent that prints a line every 200 ms.
async fn ticking_agent(s: &TestServer, c: &str) -> String {
    let r = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "ticker", "adapterType": "process", "adapterConfig": {
                "command": "sh", "graceSec": 1,
                "args": ["-c", "i=0; while [ $i -lt 600 ]; do echo tick-$i; i=$((i+1)); sleep 0.2; done"]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_operator_manages_an_ssh_environment_and_watches_a_run_in_a_real_browser() {
    let Some(sshd) = Sshd::start_unless_unavailable().unwrap() else {
        return;
    };
    let Some(b) = Browser::start_unless_unavailable().await.unwrap() else {
        return;
    };
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let agent = ticking_agent(&s, &c).await;
    let base = s.base.clone();
    let t = Duration::from_secs(20);

    // The flag is off: no environment pages or nav entry. Turn it on in Settings.
    b.goto(&format!("{base}/")).await.unwrap();
    assert!(b.url().await.unwrap().ends_with("/runs"));
    assert!(
        b.find_all("nav a[href='/environments']")
            .await
            .unwrap()
            .is_empty()
    );
    b.goto(&format!("{base}/settings")).await.unwrap();
    b.click("#f-enableEnvironments").await.unwrap();
    b.click("main form button[type=submit]").await.unwrap();
    b.wait_text("main", "Saved.", t).await.unwrap();
    assert_eq!(
        b.find_all("nav a[href='/environments']")
            .await
            .unwrap()
            .len(),
        1
    );

    // Create the SSH environment through the form; an API error lands next to its field.
    b.click("nav a[href='/environments']").await.unwrap();
    b.click("a[href='/environments/new']").await.unwrap();
    // By keyboard alone: the first Tab reaches the skip link, more reach the form.
    b.press(TAB).await.unwrap();
    assert_eq!(
        b.script("return document.activeElement.textContent")
            .await
            .unwrap(),
        json!("Skip to content")
    );
    let mut reached = false;
    for _ in 0..12 {
        b.press(TAB).await.unwrap();
        if b.script("return document.activeElement.id").await.unwrap() == json!("f-name") {
            reached = true;
            break;
        }
    }
    assert!(reached, "the name field is reachable with Tab");
    b.fill("#f-name", "lab").await.unwrap();
    b.fill("#f-host", &sshd.host).await.unwrap();
    b.fill("#f-port", &sshd.port.to_string()).await.unwrap();
    b.fill("#f-username", &sshd.username).await.unwrap();
    b.fill("#f-remoteWorkspacePath", "relative/path")
        .await
        .unwrap();
    b.set_value("#f-privateKey", &sshd.client_private_key)
        .await
        .unwrap();
    b.click("main form button[type=submit]").await.unwrap();
    let err = b
        .wait_text("#e-remoteWorkspacePath", "absolute", t)
        .await
        .unwrap();
    assert!(!err.is_empty());
    assert_eq!(
        b.script("return document.getElementById('f-privateKey').value")
            .await
            .unwrap(),
        json!(""),
        "the key is never sent back to the page"
    );
    assert!(!b.source().await.unwrap().contains("PRIVATE KEY-----\n"));
    b.fill(
        "#f-remoteWorkspacePath",
        &sshd.workspace.display().to_string(),
    )
    .await
    .unwrap();
    b.set_value("#f-privateKey", &sshd.client_private_key)
        .await
        .unwrap();
    // A draft probe saves nothing and shows the checks (the host key is not pinned yet).
    b.click("button[formaction='/environments/probe-draft']")
        .await
        .unwrap();
    b.wait_text("#probe", "Probe", Duration::from_secs(40))
        .await
        .unwrap();
    let checks = b.text("#probe ul.checks").await.unwrap();
    assert!(checks.contains("SHA256:"), "the presented key: {checks}");
    let envs = s.get(&format!("/api/companies/{c}/environments")).await;
    assert_eq!(
        envs.body.as_array().unwrap().len(),
        1,
        "only Local: {}",
        envs.text
    );
    b.set_value("#f-privateKey", &sshd.client_private_key)
        .await
        .unwrap();
    b.click("main form button[type=submit]").await.unwrap();
    b.wait_text("main", "Environment created.", t)
        .await
        .unwrap();
    let env_url = b.url().await.unwrap();
    let eid = env_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let stored = s.get(&format!("/api/environments/{eid}")).await.body;
    assert_eq!(stored["config"]["privateKey"], Value::Null);
    assert!(stored["config"]["privateKeySecretRef"].is_object());

    // Trust the host key: the fingerprint is shown, confirmed, pinned.
    b.click("form[action$='/trust'] button").await.unwrap();
    let fp = b.wait_text("#fingerprint", "SHA256:", t).await.unwrap();
    b.click("form[action$='/trust/confirm'] button")
        .await
        .unwrap();
    b.wait_text("main", "Host key pinned", t).await.unwrap();
    let stored = s.get(&format!("/api/environments/{eid}")).await.body;
    assert!(
        stored["config"]["knownHosts"]
            .as_str()
            .unwrap()
            .contains(sshd.known_hosts.split_whitespace().nth(2).unwrap()),
        "the pinned key is the host's ({fp})"
    );
    assert_eq!(stored["config"]["strictHostKeyChecking"], true);

    // Probe and see the checks.
    b.click("form[action$='/probe'] button").await.unwrap();
    let probe = b
        .wait_text("#probe", "Probe", Duration::from_secs(40))
        .await
        .unwrap();
    assert!(probe.contains("ok"), "{probe}");
    assert!(b.find_all("#probe ul.checks li").await.unwrap().len() >= 3);
    b.goto(&env_url).await.unwrap();
    assert!(
        b.text("dl.props")
            .await
            .unwrap()
            .contains("verified the remote workspace path")
    );
    b.goto(&format!("{base}/environments")).await.unwrap();
    let list = b.text("main table").await.unwrap();
    assert!(
        list.contains("lab") && list.contains("ssh") && list.contains("ago"),
        "{list}"
    );

    // Edit: an invalid port is named next to its field; the stored key stays when the key
    // field is left empty.
    b.goto(&env_url).await.unwrap();
    b.click("a[href$='/edit']").await.unwrap();
    b.fill("#f-port", "70000").await.unwrap();
    b.click("main form button[type=submit]").await.unwrap();
    b.wait_text("#e-port", "between 1 and 65535", t)
        .await
        .unwrap();
    let key_ref =
        s.get(&format!("/api/environments/{eid}")).await.body["config"]["privateKeySecretRef"]
            .clone();
    b.fill("#f-port", &sshd.port.to_string()).await.unwrap();
    b.fill("#f-description", "the lab sshd").await.unwrap();
    b.click("main form button[type=submit]").await.unwrap();
    b.wait_text("main", "Saved.", t).await.unwrap();
    let stored = s.get(&format!("/api/environments/{eid}")).await.body;
    assert_eq!(stored["description"], "the lab sshd");
    assert_eq!(stored["config"]["privateKeySecretRef"], key_ref);

    // Pick the environment as the agent's default, start a run and watch it live.
    b.goto(&format!("{base}/agents")).await.unwrap();
    b.click(&format!("#env-{agent} option[value='{eid}']"))
        .await
        .unwrap();
    b.click(&format!(
        "form[action='/agents/{agent}/environment'] button"
    ))
    .await
    .unwrap();
    // The click submits the form; the browser's navigation completes on its own time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let agent_row = loop {
        let row = s.get(&format!("/api/agents/{agent}")).await.body;
        if row["defaultEnvironmentId"] == eid.as_str() || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(agent_row["defaultEnvironmentId"], eid.as_str());
    b.fill(&format!("#prompt-{agent}"), "tick").await.unwrap();
    b.click(&format!("form[action='/agents/{agent}/runs'] button"))
        .await
        .unwrap();
    let deadline = Instant::now() + t;
    while !b.url().await.unwrap().contains("/runs/") {
        assert!(Instant::now() < deadline, "no run page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_url = b.url().await.unwrap();
    let run_id = run_url.rsplit('/').next().unwrap().to_string();
    b.script("window.__sameDocument = true; return null")
        .await
        .unwrap();
    b.wait_text("#output", "tick-2", Duration::from_secs(60))
        .await
        .unwrap();
    b.wait_text("#output", "tick-6", t).await.unwrap();
    assert_eq!(
        b.script("return window.__sameDocument === true")
            .await
            .unwrap(),
        json!(true),
        "the output arrived live, without a reload"
    );

    // Deleting the environment under a running run is refused, with the reason.
    b.goto(&env_url).await.unwrap();
    b.click("form[action$='/delete'] button").await.unwrap();
    b.wait_text(".errors", "active leases", t).await.unwrap();
    assert_eq!(s.get(&format!("/api/environments/{eid}")).await.status, 200);

    // Cancel it.
    b.goto(&run_url).await.unwrap();
    b.click("#cancel button").await.unwrap();
    b.wait_text("#run-status", "cancelled", Duration::from_secs(40))
        .await
        .unwrap();
    let run = s.get(&format!("/api/runs/{run_id}")).await.body;
    assert_eq!(run["status"], "cancelled", "{run}");
    // (Reloaded: the page was rendered while the run was still queued.)
    b.goto(&run_url).await.unwrap();
    let page = b.text("main").await.unwrap();
    assert!(
        page.contains("lab") && page.contains("chosen by: agent"),
        "{page}"
    );
    assert!(page.contains("tick-6"), "the output replays: {page}");
    assert!(
        b.find_all("#cancel").await.unwrap().is_empty(),
        "no cancel once ended"
    );

    // The run shows in the list and holds (held) a lease of the environment.
    b.goto(&format!("{base}/runs")).await.unwrap();
    let runs = b.text("main table").await.unwrap();
    assert!(
        runs.contains("ticker") && runs.contains("cancelled"),
        "{runs}"
    );
    b.click("#f-status option[value='succeeded']")
        .await
        .unwrap();
    b.click("form[action='/runs'] button").await.unwrap();
    b.wait_text("main", "No succeeded runs.", t).await.unwrap();
    assert!(b.url().await.unwrap().ends_with("status=succeeded"));
    b.goto(&env_url).await.unwrap();
    let leases = b.text("main").await.unwrap();
    assert!(
        leases.contains(&run_id[..8]),
        "the lease names its run: {leases}"
    );

    b.click("form[action$='/status'] button").await.unwrap();
    b.wait_text("main", "Environment archived.", t)
        .await
        .unwrap();
    assert_eq!(
        s.get(&format!("/api/environments/{eid}")).await.body["status"],
        "archived"
    );

    // On a phone-sized window nothing needs sideways scrolling of the page itself (wide
    // tables scroll inside their own box).
    b.set_window(400, 800).await.unwrap();
    for path in [
        "/environments".to_string(),
        env_url.clone(),
        run_url.clone(),
        "/environments/new".into(),
    ] {
        let url = if path.starts_with("http") {
            path.clone()
        } else {
            format!("{base}{path}")
        };
        b.goto(&url).await.unwrap();
        let fits = b
            .script("return document.documentElement.scrollWidth <= window.innerWidth")
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "{path} fits a narrow window");
    }
    b.set_window(1280, 900).await.unwrap();

    // Flag off: the environment pages and nav entry go; the API keeps working.
    b.goto(&format!("{base}/settings")).await.unwrap();
    b.click("#f-enableEnvironments").await.unwrap();
    b.click("main form button[type=submit]").await.unwrap();
    b.wait_text("main", "Saved.", t).await.unwrap();
    assert!(
        b.find_all("nav a[href='/environments']")
            .await
            .unwrap()
            .is_empty()
    );
    b.goto(&env_url).await.unwrap();
    assert!(b.text("h1").await.unwrap().contains("Not Found"));
    b.goto(&format!("{base}/agents")).await.unwrap();
    assert!(b.find_all("select").await.unwrap().is_empty(), "no picker");
    assert_eq!(s.get(&format!("/api/environments/{eid}")).await.status, 200);
    b.close().await.unwrap();
}

/// `scripts/screenshots`: PNGs of the main pages with some data, into `docs/screenshots/`.
#[tokio::test]
#[ignore = "writes docs/screenshots; run through scripts/screenshots"]
async fn screenshots_of_the_main_pages() {
    let sshd = Sshd::start().unwrap();
    let b = Browser::start().await.unwrap();
    let s = TestServer::start().await;
    let c = s.default_company().await;
    s.patch(
        "/api/instance/settings/experimental",
        json!({"enableEnvironments": true}),
    )
    .await;
    let eid = s.lab_environment(&c, "lab-sshd", &sshd).await;
    let probe = s
        .post(&format!("/api/environments/{eid}/probe"), json!({}))
        .await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    let agent = s
        .post(
            &format!("/api/companies/{c}/agents"),
            json!({"name": "builder", "adapterType": "process", "defaultEnvironmentId": eid,
                "adapterConfig": {"command": "sh", "args": ["-c",
                    "echo 'cloning workspace'; for i in 1 2 3 4 5; do echo \"step $i of 5: ok\"; sleep 0.1; done; echo done"]}}),
        )
        .await;
    let agent = agent.body["id"].as_str().unwrap().to_string();
    let run = s
        .post(
            &format!("/api/companies/{c}/runs"),
            json!({"agentId": agent, "prompt": "build and test"}),
        )
        .await;
    let run = run.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        s.get(&format!("/api/runs/{run}")).await.body["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    ) {
        assert!(Instant::now() < deadline, "the run did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    b.set_window(1200, 800).await.unwrap();
    for (name, path) in [
        ("environments", "/environments".to_string()),
        ("environment", format!("/environments/{eid}")),
        ("environment-new", "/environments/new".into()),
        ("agents", "/agents".into()),
        ("runs", "/runs".into()),
        ("run", format!("/runs/{run}")),
        ("settings", "/settings".into()),
    ] {
        b.goto(&format!("{}{path}", s.base)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = b.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
    // The same pages on a phone-sized window.
    b.set_window(400, 800).await.unwrap();
    b.goto(&format!("{}/environments/{eid}", s.base))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = b.screenshot().await.unwrap();
    std::fs::write(dir.join("environment-narrow.png"), png).unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn the_pages_show_the_chosen_company_among_those_the_viewer_may_see() {
    let s = TestServer::start().await;
    let second = s.post("/api/companies", json!({"name": "second"})).await;
    assert_eq!(second.status, 201, "{}", second.text);
    let second = second.body["id"].as_str().unwrap().to_string();
    s.patch(
        "/api/instance/settings/experimental",
        json!({"enableEnvironments": true}),
    )
    .await;
    let env = s
        .post(
            &format!("/api/companies/{second}/environments"),
            json!({"name": "second-box", "driver": "ssh", "config": common::ssh_config(None)}),
        )
        .await;
    assert_eq!(env.status, 201, "{}", env.text);
    let csrf = csrf_of(&s, "/settings", None).await;
    let page = |cookie: String, path: &'static str| {
        let base = s.base.clone();
        async move {
            let r = client()
                .get(format!("{base}{path}"))
                .header(COOKIE, cookie)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (_, html) = page(format!("berth_csrf={csrf}"), "/environments").await;
    assert!(!html.contains("second-box"), "the first company by default");

    let switch = |id: String| {
        client()
            .post(format!("{}/settings/company", s.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ORIGIN, &s.base)
            .header(COOKIE, format!("berth_csrf={csrf}"))
            .body(format!("csrf={csrf}&companyId={id}"))
            .send()
    };
    let r = switch(uuid::Uuid::new_v4().to_string()).await.unwrap();
    assert_eq!(r.status(), 404, "not a company the viewer may see");
    let r = switch(second.clone()).await.unwrap();
    assert_eq!(r.status(), 303);
    let (value, header) = set_cookie(&r, "berth_company").unwrap();
    assert_eq!(value, second);
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"));
    let cookies = format!("berth_csrf={csrf}; berth_company={second}");
    let (_, html) = page(cookies.clone(), "/environments").await;
    assert!(html.contains("second-box"), "{html}");
    let (_, html) = page(cookies, "/settings").await;
    assert!(html.contains("<dd id=\"company\">second</dd>"), "{html}");
}

#[tokio::test]
async fn a_reader_without_the_grant_sees_what_the_api_shows_them() {
    let s = TestServer::start().await;
    let c = s.default_company().await;
    let env = s
        .post(
            &format!("/api/companies/{c}/environments"),
            json!({"name": "box", "driver": "ssh", "config": common::ssh_config(Some(&common::sentinel_key("R")))}),
        )
        .await;
    let eid = env.body["id"].as_str().unwrap().to_string();
    s.patch(
        "/api/instance/settings/experimental",
        json!({"enableEnvironments": true}),
    )
    .await;
    // The probe fails (nothing listens on port 1); its summary names user and host.
    let probe = s
        .post(&format!("/api/environments/{eid}/probe"), json!({}))
        .await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    let summary = probe.body["summary"].as_str().unwrap().to_string();
    let admin = s
        .post(
            "/api/tokens",
            json!({"name": "admin", "kind": "board", "instanceAdmin": true}),
        )
        .await;
    let admin = admin.body["token"].as_str().unwrap().to_string();
    let reader = s
        .call(
            reqwest::Method::POST,
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "reader", "kind": "board", "companyIds": [c]})),
        )
        .await;
    assert_eq!(reader.status, 201, "{}", reader.text);
    let reader = reader.body["token"].as_str().unwrap().to_string();
    let get = |path: String, token: String| {
        let base = s.base.clone();
        async move {
            let r = client()
                .get(format!("{base}{path}"))
                .header(COOKIE, format!("berth_token={token}"))
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, html) = get("/environments".into(), admin.clone()).await;
    assert_eq!(status, 200);
    assert!(html.contains(&summary) && html.contains("Active leases"));
    let (status, html) = get("/environments".into(), reader.clone()).await;
    assert_eq!(status, 200);
    assert!(html.contains("box") && html.contains("failed"), "{html}");
    assert!(!html.contains(&summary), "the summary is redacted: {html}");
    assert!(!html.contains("Active leases") && !html.contains("New SSH environment"));
    let (status, html) = get(format!("/environments/{eid}"), reader.clone()).await;
    assert_eq!(status, 200);
    assert!(
        !html.contains("127.0.0.1") && !html.contains("Leases"),
        "{html}"
    );
    assert!(!html.contains("SENTINELR"));
    let (status, _) = get(format!("/environments/{eid}/edit"), reader).await;
    assert_eq!(status, 403);
}
