//! `berth serve`: bind the listener and run the server until Ctrl-C or SIGTERM.

use std::future::Future;

use anyhow::Context;

use crate::context::Ctx;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let settings = &ctx.settings;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    create_home(&settings.home)?;

    let listener = tokio::net::TcpListener::bind(&settings.bind)
        .await
        .with_context(|| {
            format!(
                "failed to listen on {} (is another server running there? choose another \
                 address with --bind or BERTH_BIND)",
                settings.bind
            )
        })?;
    let addr = listener
        .local_addr()
        .context("failed to read the listening address")?;
    tracing::info!(
        database = %redact_url(&settings.database_url),
        home = %settings.home.display(),
        "serving http://{addr}"
    );

    let shutdown = shutdown_signal()?;
    berth_server::launch_with_listener(settings.server_config(), listener, shutdown)
        .await
        .context("the server stopped with an error")?;
    tracing::info!("berth server stopped");
    Ok(())
}

/// `$BERTH_HOME` holds the master key, so it is created private to the user.
fn create_home(home: &std::path::Path) -> anyhow::Result<()> {
    if home.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(home)
        .with_context(|| format!("failed to create the Berth home {}", home.display()))
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM. The handlers are installed now, so a
/// signal that arrives while the server starts is not lost.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to install the SIGTERM handler")?;
    Ok(async move {
        #[cfg(unix)]
        let terminate = async move {
            term.recv().await;
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::pin!(terminate);
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                if let Err(e) = result {
                    tracing::error!("failed to listen for Ctrl-C: {e}");
                    // Without a Ctrl-C handler, wait for SIGTERM alone.
                    (&mut terminate).await;
                }
            }
            () = &mut terminate => {}
        }
        tracing::info!("shutting down");
    })
}

/// A database URL without its password, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{userinfo}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_masked_and_everything_else_kept() {
        assert_eq!(
            redact_url("postgres://berth:pw@db:5432/berth?sslmode=disable"),
            "postgres://berth:***@db:5432/berth?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://berth@db/berth"),
            "postgres://berth@db/berth"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/berth.db"),
            "sqlite:///var/lib/berth.db"
        );
    }
}
