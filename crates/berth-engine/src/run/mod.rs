//! Runs, step by step (SPEC §7): select the environment, hold a lease, realize the workspace,
//! decide session resume, launch the agent through the remote launcher, stream and persist its
//! events, enforce timeouts and cancellation, restore the workspace and release the lease —
//! the last two on every path.
//!
//! One file per phase, all `impl Orchestrator`:
//!
//! | phase | file |
//! |---|---|
//! | claim, then the pipeline that drives the phases below | `execute.rs` (runs), `worker.rs` (claims) |
//! | 1. select the environment | `select.rs` |
//! | 2. lease (acquire in `execute.rs`; release by outcome) | `lease.rs` |
//! | 3. realize: where the agent works, what is synced | `realize.rs` |
//! | 4-5. resume decision, assets, launch, fresh-session retry | `launch.rs` |
//! | 6. stream output exactly once; timeout/cancel/stop | `stream.rs` |
//! | 8. restore the workspace (fenced) | `restore.rs` |
//! | 7/9. judge the outcome, write the run | `finish.rs` |
//! | after a restart or on another instance: pick a run up again | `reattach.rs` |
//! | error codes | `error.rs`; the event log: `events.rs`; the stored phase: `phase.rs`; output decoding: `utf8.rs` |

pub mod error;
pub mod events;
pub mod execute;
mod finish;
mod launch;
mod lease;
pub mod phase;
mod realize;
mod reattach;
mod restore;
pub mod select;
mod stream;
mod utf8;
pub mod worker;

pub use error::{ErrorCode, RunError};
pub use execute::Orchestrator;
pub use worker::Worker;
