//! Berth's engine: the work that touches environments. Today: probing (SPEC §10). Run
//! orchestration, lease heartbeats and the reaper belong here too.
//!
//! Everything is written once over `berth_exec::Transport`, so local and SSH environments (and
//! later sandbox and plugin ones) are probed by the same checks. Must not depend on axum or a
//! database driver.

pub mod probe;
