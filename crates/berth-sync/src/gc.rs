//! Remote garbage collection: copies of scopes that no longer exist are removed.

use berth_exec::Transport;
use berth_exec::shell::quote;

use crate::error::SyncError;
use crate::remote::{run_ok, validate_id};

/// Remove `<root>/.berth/ws/<scope>` (and its `.<scope>.sync` state) for every scope on the
/// remote that is not in `keep`. Returns the scopes removed.
pub async fn gc_remote_scopes(
    t: &dyn Transport,
    root: &str,
    keep: &[String],
) -> Result<Vec<String>, SyncError> {
    gc_idle_remote_scopes(t, root, keep, 0).await
}

/// [`gc_remote_scopes`] for copies untouched for more than `idle_minutes` only: a scheduled
/// collector reads `keep` before it lists, so a copy a new lease is creating right then is
/// young and spared.
pub async fn gc_idle_remote_scopes(
    t: &dyn Transport,
    root: &str,
    keep: &[String],
    idle_minutes: u32,
) -> Result<Vec<String>, SyncError> {
    for k in keep {
        validate_id("scope", k)?;
    }
    let parent = berth_exec::RemoteLayout::new(root).workspaces_dir();
    let c = run_ok(
        t,
        &format!(
            "cd {} 2>/dev/null || exit 0\nfind . -mindepth 1 -maxdepth 1 {} -printf '%f\\0'\nexit 0\n",
            quote(&parent),
            if idle_minutes > 0 {
                format!("-mmin +{idle_minutes}")
            } else {
                String::new()
            }
        ),
        "list remote workspace copies",
    )
    .await?;
    let mut remove = Vec::new();
    let mut scopes = Vec::new();
    for name in c.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let scope = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".sync"))
            .unwrap_or(name);
        if validate_id("scope", scope).is_err() || keep.iter().any(|k| k == scope) {
            continue;
        }
        remove.push(format!("{}/{}", parent, name));
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    if !remove.is_empty() {
        let args: Vec<String> = remove.iter().map(|r| quote(r)).collect();
        run_ok(
            t,
            &format!("rm -rf -- {}\n", args.join(" ")),
            "remove stale remote workspace copies",
        )
        .await?;
    }
    Ok(scopes)
}
