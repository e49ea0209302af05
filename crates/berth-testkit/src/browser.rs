//! A real headless Chromium driven over the W3C WebDriver protocol (chromedriver), for the
//! web UI's browser tests and screenshots.
//!
//! chromedriver starts on a free loopback port in its own process group (Chromium is its
//! child), with a fresh profile directory; [`Browser::close`] ends the session and dropping
//! the value ends the group. `BERTH_CHROMIUM` / `BERTH_CHROMEDRIVER` override the binaries
//! (default `/usr/bin/chromium`, `/usr/bin/chromedriver`). Under `CI=true` a missing one is
//! an error, never a skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

/// The element reference key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn chromium() -> PathBuf {
    binary("BERTH_CHROMIUM", "/usr/bin/chromium")
}

fn chromedriver() -> PathBuf {
    binary("BERTH_CHROMEDRIVER", "/usr/bin/chromedriver")
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// One element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Whether Chromium and chromedriver exist. Under `CI=true` missing ones are an error.
    pub fn available() -> anyhow::Result<bool> {
        crate::require(
            &format!(
                "Chromium at {} and chromedriver at {} (install chromium and chromium-driver)",
                chromium().display(),
                chromedriver().display()
            ),
            chromium().exists() && chromedriver().exists(),
        )
    }

    /// Start a browser, or `Ok(None)` (with a loud message) when it is missing outside CI.
    pub async fn start_unless_unavailable() -> anyhow::Result<Option<Browser>> {
        if !Self::available()? {
            return Ok(None);
        }
        Self::start().await.map(Some)
    }

    pub async fn start() -> anyhow::Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("failed to find a free port for chromedriver")?
            .port();
        let mut cmd = Command::new(chromedriver());
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .with_context(|| format!("failed to start {}", chromedriver().display()))?;
        let profile = tempfile::Builder::new()
            .prefix("berth-chromium-")
            .tempdir()
            .context("failed to create a Chromium profile directory")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on port {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium(), "args": args},
        }}});
        let v = browser.raw("POST", "/session", Some(caps)).await?;
        browser.session = v["sessionId"]
            .as_str()
            .context("chromedriver gave no session id")?
            .to_string();
        Ok(browser)
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("failed to reach chromedriver for {method} {path}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.context("chromedriver sent no JSON")?;
        if !status.is_success() {
            bail!(
                "WebDriver {method} {path} failed ({status}): {}",
                v["value"]["message"].as_str().unwrap_or("")
            );
        }
        Ok(v.get("value").cloned().unwrap_or(Value::Null))
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await?;
        Ok(())
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .cmd("GET", "/url", None)
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> anyhow::Result<String> {
        Ok(self
            .cmd("GET", "/source", None)
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .with_context(|| format!("no element matches {css:?}"))?;
        Ok(Element(
            v[ELEMENT]
                .as_str()
                .context("chromedriver gave no element id")?
                .to_string(),
        ))
    }

    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Type into a field (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.find(css).await?;
        self.cmd("POST", &format!("/element/{}/clear", e.0), None)
            .await?;
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await?;
        Ok(())
    }

    /// Set a field's value at once (long texts such as keys, where typing is slow).
    pub async fn set_value(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.find(css).await?;
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": "arguments[0].value = arguments[1];",
                "args": [{ELEMENT: e.0}, text]})),
        )
        .await?;
        Ok(())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let e = self.find(css).await?;
        self.cmd("POST", &format!("/element/{}/click", e.0), None)
            .await?;
        Ok(())
    }

    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let e = self.find(css).await?;
        Ok(self
            .cmd("GET", &format!("/element/{}/text", e.0), None)
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// Wait until the element's text contains `needle`; its text then.
    pub async fn wait_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(css).await.unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!("{css:?} did not show {needle:?} within {timeout:?}; it shows {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Press and release one key (a WebDriver key code such as `"\u{E004}"` for Tab) on
    /// whatever has the focus, as a keyboard user would.
    pub async fn press(&self, key: &str) -> anyhow::Result<()> {
        self.cmd(
            "POST",
            "/actions",
            Some(
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]}),
            ),
        )
        .await?;
        Ok(())
    }

    /// Run a script in the page; its return value.
    pub async fn script(&self, script: &str) -> anyhow::Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    pub async fn set_window(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await?;
        Ok(())
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let v = self.cmd("GET", "/screenshot", None).await?;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("no screenshot data")?)
            .context("the screenshot is not base64")
    }

    /// End the session (Chromium quits); chromedriver ends when the value drops.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if !self.session.is_empty() {
            self.cmd("DELETE", "", None).await?;
            self.session.clear();
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started.
        let pgid = self.driver.id();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
