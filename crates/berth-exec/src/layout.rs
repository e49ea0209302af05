//! Where Berth keeps its files on an environment, in one place. Everything lives under
//! `<root>/.berth/` (`root` is an SSH environment's `remoteWorkspacePath`, or the local root):
//!
//! | path | what | owner |
//! |---|---|---|
//! | `runs/<runId>[-<attempt>]/` | the launcher's files of one attempt (`cmd`, `stdout`, `status`, `pgid`, …) | launcher; removed after the run, or by the reaper |
//! | `ws/<scope>/` | the synced copy of an execution workspace, per lease scope | sync; kept for reuse, removed by the lease cleanup or the hourly GC |
//! | `scratch/<runId>/` | where a run without a workspace works | engine; removed after the run |
//! | `assets/<adapter>/<key>/` | files an adapter's CLI needs (skills, a CLI home) | asset sync |

/// The paths under one environment root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteLayout {
    root: String,
}

impl RemoteLayout {
    /// `root` as configured; a trailing `/` is dropped.
    pub fn new(root: &str) -> Self {
        let trimmed = root.trim_end_matches('/');
        Self {
            root: if trimmed.is_empty() && root.starts_with('/') {
                String::new()
            } else {
                trimmed.to_string()
            },
        }
    }

    /// The environment root, without a trailing `/`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<root>/.berth/runs`.
    pub fn runs_dir(&self) -> String {
        format!("{}/.berth/runs", self.root)
    }

    /// `<root>/.berth/runs/<key>`, `key` being a run id or `<runId>-<attempt>`.
    pub fn run_dir(&self, key: &str) -> String {
        format!("{}/{key}", self.runs_dir())
    }

    /// The launcher key of a run's attempt: the run id for the first, `<runId>-<n>` after.
    pub fn attempt_key(run_id: &str, attempt: u32) -> String {
        if attempt <= 1 {
            run_id.to_string()
        } else {
            format!("{run_id}-{attempt}")
        }
    }

    /// `<root>/.berth/ws`.
    pub fn workspaces_dir(&self) -> String {
        format!("{}/.berth/ws", self.root)
    }

    /// `<root>/.berth/ws/<scope_dir>`.
    pub fn workspace_copy(&self, scope_dir: &str) -> String {
        format!("{}/{scope_dir}", self.workspaces_dir())
    }

    /// `<root>/.berth/scratch/<runId>`.
    pub fn scratch_dir(&self, run_id: &str) -> String {
        format!("{}/.berth/scratch/{run_id}", self.root)
    }

    /// `<root>/.berth/assets/<adapter>`.
    pub fn assets_dir(&self, adapter_type: &str) -> String {
        format!("{}/.berth/assets/{adapter_type}", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_dot_berth_of_the_root() {
        let l = RemoteLayout::new("/srv/berth/");
        assert_eq!(l.root(), "/srv/berth");
        assert_eq!(l.run_dir("r1"), "/srv/berth/.berth/runs/r1");
        assert_eq!(
            l.workspace_copy("workspace-1"),
            "/srv/berth/.berth/ws/workspace-1"
        );
        assert_eq!(l.scratch_dir("r1"), "/srv/berth/.berth/scratch/r1");
        assert_eq!(
            l.assets_dir("pi_local"),
            "/srv/berth/.berth/assets/pi_local"
        );
        assert_eq!(RemoteLayout::attempt_key("r1", 1), "r1");
        assert_eq!(RemoteLayout::attempt_key("r1", 3), "r1-3");
        assert_eq!(RemoteLayout::new("/").runs_dir(), "/.berth/runs");
    }
}
