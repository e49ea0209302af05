//! Berth's engine: the work that touches environments: probing (SPEC §10), resolving an
//! environment and its secrets into a transport, the lease reaper (SPEC §5), and secrets at
//! rest. Run orchestration and lease heartbeats belong here too.
//!
//! Everything is written once over `berth_exec::Transport`, so local and SSH environments (and
//! later sandbox and plugin ones) are probed by the same checks. Must not depend on axum.

pub mod holder;
pub mod host;
pub mod probe;
pub mod reaper;
pub mod redact;
pub mod resolve;
pub mod run;
pub mod secrets;
