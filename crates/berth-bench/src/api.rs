//! A minimal client of Berth's HTTP API for the suites that drive a real server.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// A real Berth server in this process on a fresh SQLite home, with a client for it.
pub(crate) struct Served {
    pub(crate) api: std::sync::Arc<Api>,
    /// The `default` company's id.
    pub(crate) company: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), berth_server::ServerError>>,
}

impl Served {
    /// Serve `config` (its home on SQLite) on a loopback port; wait until it answers.
    pub(crate) async fn start(config: berth_server::ServerConfig) -> anyhow::Result<Served> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(berth_server::launch_with_listener(
            config,
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        let api = std::sync::Arc::new(Api::new(base));
        for _ in 0..200 {
            if api.get("/api/health").await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let company = api.get("/api/companies").await?;
        let company = company[0]["id"].as_str().context("company")?.to_string();
        Ok(Served {
            api,
            company,
            stop,
            server,
        })
    }

    /// The config of a server whose home (and SQLite database) is `home`.
    pub(crate) fn sqlite_config(home: &std::path::Path) -> berth_server::ServerConfig {
        berth_server::ServerConfig {
            database_url: format!("sqlite://{}", home.join("berth.db").display()),
            berth_home: home.to_path_buf(),
            ..Default::default()
        }
    }

    /// Shut the server down gracefully.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
}

impl Api {
    pub(crate) fn new(base: String) -> Self {
        Self {
            base,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {v}");
        }
        Ok(v)
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    /// The body as text (an event stream).
    pub(crate) async fn text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .text()
            .await?)
    }
}
