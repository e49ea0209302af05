//! berth-exec owns the one execution seam of Berth: the [`Transport`] trait ("run this `sh`
//! script with this stdin, stream its output, give me its exit status") and its implementations
//! (local `sh`, SSH over russh with a pooled connection and a control shell, a bubblewrap
//! sandbox on this host), OpenSSH
//! known_hosts handling, and the remote [`launcher`] that is written once over any transport.
//!
//! It depends on `berth-core` only; it knows nothing of the store, the HTTP server or the
//! scheduler. Secrets (private keys, passphrases, env values) never reach an argv or a file
//! outside a 0700 directory: keys are decoded in memory, env values travel over stdin.

pub mod egress;
pub mod error;
pub mod known_hosts;
pub mod launcher;
pub mod layout;
pub mod local;
pub mod sandbox;
pub mod shell;
pub mod ssh;
pub mod transport;

pub use berth_core::Secret;
pub use egress::{AllowList, EgressRefusal};
pub use error::ExecError;
pub use known_hosts::{HostKeyVerdict, KnownHosts};
pub use launcher::{
    AttachEvent, Chunk, LaunchSpec, Launcher, LauncherError, Offsets, RemoteRun, RunOutcome,
    StopReason, StreamKind,
};
pub use layout::RemoteLayout;
pub use local::LocalTransport;
pub use sandbox::{SandboxPolicy, SandboxTransport};
pub use ssh::{SshPool, SshTarget, SshTransport};

pub use transport::{
    Completed, ExecHandle, ExecRequest, ExitOutcome, Output, RemoteIdentity, Stdin, Transport,
};
