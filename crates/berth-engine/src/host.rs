//! Running agents on the control-plane host is a privilege (SPEC §11, docs/security.md).
//!
//! The host holds `$BERTH_HOME` — the database and `master.key`, which decrypts every
//! company's secrets. So no run starts inside it or in a directory above it (an agent in
//! `$HOME` would find `~/.berth/master.key` by walking down), scratch and asset directories of
//! local runs live under their own root, and in token mode a company needs an instance admin's
//! `hostExecution` grant before its agents run here at all.

use std::path::{Component, Path, PathBuf};

use berth_core::config::{DriverConfig, SandboxConfig, SandboxNetwork};
use berth_core::model::Environment;
use berth_core::{CompanyId, Driver};
use berth_store::Store;

/// Where local runs keep scratch and assets when the operator does not say:
/// `<BERTH_HOME>-runs`, beside the home rather than in it.
pub fn default_local_root(berth_home: &Path) -> PathBuf {
    let mut name = berth_home
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "berth".into());
    name.push("-runs");
    berth_home.with_file_name(name)
}

/// `path` made absolute and free of `.`/`..` and symlinks as far as it exists: the longest
/// existing prefix is canonicalized, the rest appended lexically (it has no symlinks yet).
pub fn resolve_lenient(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = absolute.clone();
    let mut rest: Vec<PathBuf> = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(&existing) {
            let mut out = canonical;
            for part in rest.iter().rev() {
                push_normal(&mut out, part);
            }
            return out;
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(PathBuf::from(name));
                existing = parent.to_path_buf();
            }
            _ => return lexical(&absolute),
        }
    }
}

fn push_normal(out: &mut PathBuf, part: &Path) {
    for c in part.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
}

fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    push_normal(&mut out, path);
    out
}

/// Whether an agent working in `dir` could reach `home` by path alone: `dir` is `home`, lies
/// inside it, or lies above it. Both sides are resolved through symlinks first.
pub fn overlaps_home(dir: &Path, home: &Path) -> bool {
    let dir = resolve_lenient(dir);
    let home = resolve_lenient(home);
    dir.starts_with(&home) || home.starts_with(&dir)
}

/// The message for a directory refused by [`overlaps_home`].
pub fn home_overlap_message(dir: &Path, home: &Path) -> String {
    format!(
        "{} is {} BERTH_HOME ({}), which holds master.key and the database; agents never run \
         there. Use a directory outside it.",
        dir.display(),
        if resolve_lenient(home).starts_with(resolve_lenient(dir)) {
            "a parent of"
        } else {
            "inside"
        },
        home.display()
    )
}

/// Why a run may not use the control-plane host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Company \"{company}\" may not run agents on the control-plane host (environment \
     \"{environment}\", driver {driver}): an instance admin must grant it `hostExecution` \
     (PATCH /api/companies/{company_id} {{\"hostExecution\": true}}), or choose an SSH \
     environment or a sandbox with network \"none\"."
)]
pub struct HostExecutionDenied {
    pub company: String,
    pub company_id: CompanyId,
    pub environment: String,
    pub driver: Driver,
}

/// Whether runs on `env` need the `hostExecution` grant: `local` runs act as the server's user
/// on this host; a `sandbox` with network `open` shares this host's network, loopback services
/// (databases, Berth's own port, cloud metadata) included, and one with `allowlist` may be
/// allowed one of them. A sandbox with network `none` sees
/// neither the host's files beyond its own root nor its network (docs/security.md), so it
/// needs no grant.
pub fn needs_host_grant(env: &Environment) -> bool {
    match env.driver {
        Driver::Local => true,
        Driver::Sandbox => !matches!(
            env.typed_config().map(|p| p.config),
            Ok(DriverConfig::Sandbox(SandboxConfig {
                network: SandboxNetwork::None,
                ..
            }))
        ),
        Driver::Ssh | Driver::Plugin => false,
    }
}

/// Refuse an environment that runs on this host ([`needs_host_grant`]) for a company without
/// the `hostExecution` grant, when the server requires it (token mode).
pub async fn check_host_execution(
    store: &dyn Store,
    company_id: CompanyId,
    env: &Environment,
    grant_required: bool,
) -> Result<Result<(), HostExecutionDenied>, berth_store::StoreError> {
    if !needs_host_grant(env) || !grant_required {
        return Ok(Ok(()));
    }
    let company = store.get_company(company_id).await?;
    Ok(match company {
        Some(c) if c.host_execution => Ok(()),
        other => Err(HostExecutionDenied {
            company: other.map(|c| c.name).unwrap_or_default(),
            company_id,
            environment: env.name.clone(),
            driver: env.driver,
        }),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn inside_above_and_equal_overlap_siblings_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home/.berth");
        std::fs::create_dir_all(&home).unwrap();
        assert!(overlaps_home(&home, &home));
        assert!(overlaps_home(&home.join(".berth/scratch/x"), &home));
        assert!(overlaps_home(tmp.path(), &home), "a parent sees master.key");
        assert!(overlaps_home(Path::new("/"), &home));
        assert!(overlaps_home(&tmp.path().join("home"), &home));
        assert!(!overlaps_home(&tmp.path().join("home/project"), &home));
        assert!(!overlaps_home(&default_local_root(&home), &home));
        assert!(overlaps_home(
            &tmp.path().join("home/project/../.berth/x"),
            &home
        ));
    }

    #[test]
    fn symlinks_are_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("berth-home");
        std::fs::create_dir_all(&home).unwrap();
        let link = tmp.path().join("innocent");
        std::os::unix::fs::symlink(&home, &link).unwrap();
        assert!(overlaps_home(&link.join("ws"), &home));
        let up = tmp.path().join("work/up");
        std::fs::create_dir_all(tmp.path().join("work")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), &up).unwrap();
        assert!(overlaps_home(&up, &home));
    }

    #[test]
    fn the_default_local_root_sits_beside_the_home() {
        assert_eq!(
            default_local_root(Path::new("/root/.berth")),
            PathBuf::from("/root/.berth-runs")
        );
    }
}
