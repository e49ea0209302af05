//! Session identity and the resume rule (SPEC §9, reference ssh-runtime §5).
//!
//! A CLI keeps its sessions on the machine (and in the directory) where it ran, so a saved
//! session is only worth resuming where it was created: same transport, same host, port, user
//! and directory. Anything else starts fresh, with a reason the engine logs on the run.

use std::fmt;

use berth_core::Driver;
use serde::{Deserialize, Serialize};

/// Where a session's CLI ran. Locally only `transport` is set (`{"transport":"local"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteIdentity {
    pub transport: Driver,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cwd: Option<String>,
}

impl RemoteIdentity {
    /// The identity of a run on the control plane's own machine.
    pub fn local() -> Self {
        Self {
            transport: Driver::Local,
            host: None,
            port: None,
            username: None,
            remote_cwd: None,
        }
    }

    /// The identity of a run over SSH in `remote_cwd`.
    pub fn ssh(host: &str, port: u16, username: &str, remote_cwd: &str) -> Self {
        Self {
            transport: Driver::Ssh,
            host: Some(host.to_string()),
            port: Some(port),
            username: Some(username.to_string()),
            remote_cwd: Some(remote_cwd.to_string()),
        }
    }

    /// The identity of a run in sandbox environment `environment` (its id), in `remote_cwd`.
    pub fn sandbox(environment: &str, remote_cwd: &str) -> Self {
        Self {
            transport: Driver::Sandbox,
            host: Some(environment.to_string()),
            port: None,
            username: None,
            remote_cwd: Some(remote_cwd.to_string()),
        }
    }

    fn describe(&self) -> String {
        match self.transport {
            Driver::Local => "local".to_string(),
            t => format!(
                "{t}://{}@{}:{}{}",
                self.username.as_deref().unwrap_or("?"),
                self.host.as_deref().unwrap_or("?"),
                self.port.map_or_else(|| "?".to_string(), |p| p.to_string()),
                self.remote_cwd.as_deref().unwrap_or("")
            ),
        }
    }
}

/// What Berth saves after a run so that the next run of the same agent can resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionParams {
    /// The CLI's session id (for `pi_local`, the session file's path on the environment).
    pub session_id: String,
    /// The working directory the CLI ran in, as a path on the environment.
    pub cwd: String,
    /// Paperclip saved this as `remoteExecution`; both spellings are read.
    #[serde(alias = "remoteExecution")]
    pub remote_identity: RemoteIdentity,
}

impl SessionParams {
    /// What to save after an attempt that reported `session_id` while running in `cwd` (a
    /// path on the environment) with identity `identity`.
    pub fn new(session_id: &str, cwd: &str, identity: RemoteIdentity) -> Self {
        Self {
            session_id: session_id.to_string(),
            cwd: cwd.to_string(),
            remote_identity: identity,
        }
    }
}

/// Why a saved session is not resumed; its `Display` is the reason logged on the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRefused {
    pub reason: String,
}

impl fmt::Display for ResumeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ResumeRefused {}

fn refuse(reason: String) -> Result<(), ResumeRefused> {
    Err(ResumeRefused {
        reason: format!("{reason}; starting a fresh session"),
    })
}

/// `Ok(())` when `saved` may be resumed by a run in `current_cwd` (a path on the environment)
/// with identity `current`. The identity must match exactly: a remote session is never resumed
/// locally, a local one never remotely, and a different host, port, user or directory starts
/// fresh. Ports compare numerically, paths as exact strings (trailing `/` ignored).
pub fn should_resume(
    saved: &SessionParams,
    current: &RemoteIdentity,
    current_cwd: &str,
) -> Result<(), ResumeRefused> {
    if saved.session_id.trim().is_empty() {
        return refuse("the saved session has no session id".to_string());
    }
    let (s, c) = (&saved.remote_identity, current);
    if s.transport != c.transport {
        return refuse(format!(
            "the saved session ran on {} but this run is on {}",
            s.describe(),
            c.describe()
        ));
    }
    let mut differs = Vec::new();
    if s.host != c.host {
        differs.push("host");
    }
    if s.port != c.port {
        differs.push("port");
    }
    if s.username != c.username {
        differs.push("username");
    }
    if s.remote_cwd.as_deref().map(trim_slash) != c.remote_cwd.as_deref().map(trim_slash) {
        differs.push("remote directory");
    }
    if !differs.is_empty() {
        return refuse(format!(
            "the saved session's {} differ from the current execution identity ({} vs {})",
            differs.join(", "),
            s.describe(),
            c.describe()
        ));
    }
    if !saved.cwd.is_empty() && trim_slash(&saved.cwd) != trim_slash(current_cwd) {
        return refuse(format!(
            "the saved session ran in {} but this run is in {}",
            saved.cwd, current_cwd
        ));
    }
    Ok(())
}

/// Compares the session a CLI reports with the one it was asked to resume. Some CLIs start a
/// new session instead of failing (Codex 0.171 does for an id that is not a UUID), so a
/// mismatch is reported as an error event and remembered, and the new id is what gets saved.
#[derive(Debug, Default)]
pub(crate) struct ResumeCheck {
    requested: Option<String>,
    pub(crate) ignored: bool,
}

impl ResumeCheck {
    pub(crate) fn new(requested: Option<String>) -> Self {
        Self {
            requested,
            ignored: false,
        }
    }

    pub(crate) fn on_init(&mut self, got: &str, out: &mut Vec<crate::Event>) {
        if let Some(req) = &self.requested
            && req != got
            && !self.ignored
        {
            self.ignored = true;
            out.push(crate::Event::Error {
                message: format!(
                    "asked to resume session {req} but the CLI started session {got}; \
                     the saved session was not continued"
                ),
            });
        }
    }
}

fn trim_slash(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() { p } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(identity: RemoteIdentity, cwd: &str) -> SessionParams {
        SessionParams {
            session_id: "s-1".into(),
            cwd: cwd.into(),
            remote_identity: identity,
        }
    }

    const W: &str = "/srv/berth/.berth/ws/scope-1";

    #[test]
    fn identical_ssh_identity_resumes() {
        let id = RemoteIdentity::ssh("10.0.0.5", 22, "agent", W);
        assert_eq!(should_resume(&saved(id.clone(), W), &id, W), Ok(()));
        assert_eq!(
            should_resume(&saved(id.clone(), &format!("{W}/")), &id, W),
            Ok(())
        );
    }

    #[test]
    fn remote_session_is_never_resumed_locally_and_vice_versa() {
        let remote = RemoteIdentity::ssh("10.0.0.5", 22, "agent", W);
        let local = RemoteIdentity::local();
        let err = should_resume(&saved(remote.clone(), W), &local, W).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.reason.contains("ran on ssh://")),
            "{err:?}"
        );
        assert!(should_resume(&saved(local.clone(), W), &remote, W).is_err());
        assert_eq!(should_resume(&saved(local.clone(), W), &local, W), Ok(()));
    }

    #[test]
    fn different_host_port_user_or_directory_starts_fresh_with_a_reason() {
        let base = RemoteIdentity::ssh("10.0.0.5", 22, "agent", W);
        let cases = [
            (RemoteIdentity::ssh("10.0.0.6", 22, "agent", W), "host"),
            (RemoteIdentity::ssh("10.0.0.5", 2222, "agent", W), "port"),
            (RemoteIdentity::ssh("10.0.0.5", 22, "root", W), "username"),
            (
                RemoteIdentity::ssh("10.0.0.5", 22, "agent", "/other"),
                "remote directory",
            ),
        ];
        for (current, field) in cases {
            let err = should_resume(&saved(base.clone(), W), &current, W).err();
            let reason = err.map(|e| e.reason).unwrap_or_default();
            assert!(reason.contains(field), "{field}: {reason}");
            assert!(reason.ends_with("starting a fresh session"), "{reason}");
        }
    }

    #[test]
    fn local_session_from_another_directory_starts_fresh() {
        let local = RemoteIdentity::local();
        assert!(should_resume(&saved(local.clone(), "/a"), &local, "/b").is_err());
        assert!(should_resume(&saved(local.clone(), ""), &local, "/b").is_ok());
    }

    #[test]
    fn empty_session_id_is_not_resumed() {
        let local = RemoteIdentity::local();
        let mut s = saved(local.clone(), "/a");
        s.session_id = " ".into();
        assert!(should_resume(&s, &local, "/a").is_err());
    }

    #[test]
    fn session_params_round_trip_and_read_paperclip_spelling() {
        let p = saved(RemoteIdentity::ssh("h", 2222, "u", "/w"), "/w");
        let v = serde_json::to_value(&p).ok();
        assert_eq!(
            v,
            Some(
                serde_json::json!({"sessionId":"s-1","cwd":"/w","remoteIdentity":
                {"transport":"ssh","host":"h","port":2222,"username":"u","remoteCwd":"/w"}})
            )
        );
        let paperclip = serde_json::json!({"sessionId":"s-1","cwd":"/w","remoteExecution":
            {"transport":"ssh","host":"h","port":2222,"username":"u","remoteCwd":"/w"}});
        let back: Option<SessionParams> = serde_json::from_value(paperclip).ok();
        assert_eq!(back, Some(p));
        let local: Option<RemoteIdentity> =
            serde_json::from_value(serde_json::json!({"transport":"local"})).ok();
        assert_eq!(local, Some(RemoteIdentity::local()));
    }
}
