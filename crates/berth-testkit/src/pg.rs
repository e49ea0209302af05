//! Fresh PostgreSQL databases for tests: one uniquely named database per [`TestDatabase`],
//! dropped (`WITH (FORCE)`, so leftover pool connections do not block it) on
//! [`TestDatabase::cleanup`] or on drop.
//!
//! The server is `postgres://postgres@127.0.0.1:5432` unless `BERTH_TEST_PG_URL` says
//! otherwise. When it is unreachable, [`TestDatabase::create`] fails;
//! [`TestDatabase::create_or_skip`] instead skips loudly outside CI (see [`crate::require`]).

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// The server URL without a database path.
fn server_url() -> String {
    let url = std::env::var("BERTH_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    strip_database(&url)
}

fn strip_database(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

async fn admin_connection(server: &str) -> anyhow::Result<PgConnection> {
    let url = format!("{server}/postgres");
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url))
        .await
        .with_context(|| format!("timed out connecting to PostgreSQL at {server}"))?
        .with_context(|| format!("failed to connect to PostgreSQL at {server}"))
}

async fn drop_database(server: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = admin_connection(server).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .with_context(|| format!("failed to drop test database {name}"))?;
    admin.close().await.ok();
    Ok(())
}

/// A fresh database on the test server; dropped when this value is.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
    dropped: bool,
}

impl TestDatabase {
    /// Create a fresh, uniquely named database. Fails when PostgreSQL is unreachable.
    pub async fn create() -> anyhow::Result<TestDatabase> {
        let server = server_url();
        let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection(&server).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("failed to create test database {name}"))?;
        admin.close().await.ok();
        let url = format!("{server}/{name}");
        Ok(TestDatabase {
            server,
            name,
            url,
            dropped: false,
        })
    }

    /// As [`TestDatabase::create`], but when PostgreSQL is unreachable outside CI print a loud
    /// skip notice and return `None` (under `CI=true` the error is returned).
    pub async fn create_or_skip() -> anyhow::Result<Option<TestDatabase>> {
        match Self::create().await {
            Ok(db) => Ok(Some(db)),
            Err(e) => {
                let what = format!("PostgreSQL ({}: {e:#})", server_url());
                crate::require(&what, false)?;
                // The test harness captures `eprintln!`; write to the real stderr so a skip is
                // seen even when the test "passes".
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPING: PostgreSQL is not available ({e:#})"
                );
                Ok(None)
            }
        }
    }

    /// The database's connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drop the database now (terminating any connections still open to it).
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_database(&self.server, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime that must not block on itself: use a thread with its
        // own runtime, and wait for it so the database is gone when the test ends.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    if let Err(e) = rt.block_on(drop_database(&server, &name)) {
                        eprintln!("warning: {e:#}");
                    }
                }
                Err(e) => eprintln!("warning: cannot drop test database {name}: {e}"),
            }
        });
        if handle.join().is_err() {
            eprintln!("warning: dropping test database {} panicked", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_drops_the_database_path() {
        assert_eq!(
            strip_database("postgres://u:p@h:5433/db?sslmode=disable"),
            "postgres://u:p@h:5433"
        );
        assert_eq!(
            strip_database("postgres://postgres@127.0.0.1:5432"),
            "postgres://postgres@127.0.0.1:5432"
        );
    }
}
