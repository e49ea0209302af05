//! Runs, step by step (SPEC §7): select the environment, hold a lease, realize the workspace,
//! decide session resume, launch the agent through the remote launcher, stream and persist its
//! events, enforce timeouts and cancellation, restore the workspace and release the lease —
//! the last two on every path.

pub mod error;
pub mod events;
pub mod execute;
mod reattach;
pub mod select;
pub mod worker;

pub use error::{ErrorCode, RunError};
pub use execute::Orchestrator;
pub use worker::Worker;
