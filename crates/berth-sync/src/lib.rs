//! berth-sync owns workspace realization and sync: manifests of a workspace, the compressed tar
//! streams that carry it out to an environment and back, git history as bundles, and the
//! three-way restore that never loses a local edit.
//!
//! Everything runs over [`berth_exec::Transport`], so it works unchanged for every driver. The
//! remote side needs only POSIX `sh`, GNU `tar`/`find`, coreutils (`sha256sum`, `xargs`,
//! `base64`) and `gzip`, plus `git` for git work trees. It depends on `berth-exec` only: no
//! store, no server, no scheduler.
//!
//! Cost model: on SSH every exec channel starts the user's login shell, while a step on the
//! connection's control shell costs about a millisecond. Small steps therefore go through
//! [`berth_exec::Transport::run`], with their data embedded in the script (base64, at most
//! 64 KiB) since the control shell has no stdin; only bulk streams open an exec channel.
//! When there is no control shell (busy, or one session per connection), a step's script
//! goes on an exec channel's stdin, like every bulk stream's: a remote command line is only
//! `eval "$(head -c <n>)"`, so no file content reaches a remote process's argv (world-readable
//! in `ps`).
//! Bulk streams are gzip-compressed (fast level) unless the link is local (the local
//! transport, or SSH to a loopback address), where compression only costs CPU.
//!
//! - [`push()`] realizes a workspace at `<root>/.berth/ws/<scope>/` (full, or only the difference
//!   to the last synced manifest on a resumed lease) and records the baseline;
//! - [`restore()`] brings the remote's changes back with a per-path three-way decision;
//! - [`sync_asset`] / [`copy_back`] carry adapters' assets (skills, instructions, CLI config)
//!   to `<root>/.berth/assets/<adapter>/<key>/` and selected files back;
//! - [`gc`] removes remote copies of scopes that no longer exist.
//!
//! The local sync state (baseline manifests per scope) is kept next to the workspace in the
//! compact binary form of [`codec`].

pub mod archive;
pub mod assets;
pub mod codec;
pub mod error;
pub mod gc;
pub mod git;
pub mod manifest;
pub mod path;
pub mod progress;
pub mod push;
pub mod remote;
pub mod restore;
pub mod spool;
pub mod state;

pub use assets::{AssetOptions, AssetReport, CopiedBack, CopyBackOutcome, copy_back, sync_asset};
pub use error::SyncError;
pub use gc::{gc_idle_remote_scopes, gc_remote_scopes};
pub use manifest::{ContentHash, Entry, EntryKind, Filter, Manifest};
pub use path::RelPath;
pub use progress::{Phase, Progress, ProgressFn};
pub use push::{PushReport, push};
pub use remote::RemoteSpec;
pub use restore::{
    Decision, GitRestore, REMOTE_SUFFIX, Rejected, RemoteCopy, RestoreReport, decide, restore,
};
pub use state::{GitPoint, SyncOptions};
