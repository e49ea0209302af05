//! A real Berth server on `127.0.0.1:0` with a temp `BERTH_HOME`, driven over HTTP.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_server::{LaunchOptions, ServerConfig, launch_with_options};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub base: String,
    pub home: tempfile::TempDir,
    /// Local runs' scratch and assets (`runsRoot`, outside `home`).
    pub runs: tempfile::TempDir,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub headers: HeaderMap,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(None, Vec::new()).await
    }

    /// `database_url` `None` = SQLite in the temp home.
    pub async fn start_with(database_url: Option<String>, workspace_roots: Vec<PathBuf>) -> Self {
        Self::start_configured(move |c| {
            if let Some(url) = database_url {
                c.database_url = url;
            }
            c.workspace_roots = workspace_roots;
        })
        .await
    }

    /// A server whose config `tweak` adjusts (it starts as SQLite in the temp home).
    pub async fn start_configured(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_full(tweak, LaunchOptions::default()).await
    }

    /// [`TestServer::start_configured`] with explicit launch options (reaper, run worker).
    pub async fn start_full(tweak: impl FnOnce(&mut ServerConfig), options: LaunchOptions) -> Self {
        let home = tempfile::tempdir().unwrap();
        let runs = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            database_url: format!("sqlite://{}", home.path().join("berth.db").display()),
            berth_home: home.path().to_path_buf(),
            master_key_hex: None,
            runs_root: Some(runs.path().to_path_buf()),
            ..Default::default()
        };
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            launch_with_options(
                config,
                listener,
                async {
                    let _ = rx.await;
                },
                options,
            )
            .await
            .unwrap();
        });
        let client = reqwest::Client::new();
        // Wait until the server answers.
        for _ in 0..200 {
            if client
                .get(format!("{base}/api/health"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        TestServer {
            base,
            home,
            runs,
            client,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, None, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, None, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None, None).await
    }

    /// The id of the company created on first start (`default`).
    pub async fn default_company(&self) -> String {
        let r = self.get("/api/companies").await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "default")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Register `sshd` as an SSH environment named `name` of company `c` (pinned host key,
    /// the fixture's client key); returns its id.
    pub async fn lab_environment(
        &self,
        c: &str,
        name: &str,
        sshd: &berth_testkit::sshd::Sshd,
    ) -> String {
        let env = self
            .post(
                &format!("/api/companies/{c}/environments"),
                serde_json::json!({"name": name, "driver": "ssh", "config": {
                    "host": sshd.host, "port": sshd.port, "username": sshd.username,
                    "remoteWorkspacePath": sshd.workspace, "privateKey": sshd.client_private_key,
                    "knownHosts": sshd.known_hosts}}),
            )
            .await;
        assert_eq!(env.status, 201, "{}", env.text);
        env.body["id"].as_str().unwrap().to_string()
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A syntactically plausible private key used as a sentinel: it must never come back out.
pub fn sentinel_key(tag: &str) -> String {
    format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nSENTINEL{tag}b3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----"
    )
}

pub fn ssh_config(key: Option<&str>) -> Value {
    let mut v = serde_json::json!({
        "host": "127.0.0.1",
        "port": 1,
        "username": "agent",
        "remoteWorkspacePath": "/srv/berth",
    });
    if let Some(k) = key {
        v["privateKey"] = Value::String(k.to_string());
    }
    v
}

/// Everything the process logs, as written (install with [`LogCapture::install_json`]).
#[derive(Clone, Default)]
pub struct LogCapture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Capture the process's logs as JSON lines (with their spans) at `filter`.
    pub fn install_json(filter: &str) -> LogCapture {
        let logs = LogCapture::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || writer.clone())
            .json()
            .init();
        logs
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    /// The captured JSON records.
    pub fn records(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.bytes())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
