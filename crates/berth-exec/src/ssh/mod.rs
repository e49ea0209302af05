//! SSH transport on russh: the target and its policies ([`config`]), connecting and verifying
//! the host key ([`client`]), the connection pool with its per-connection control shell
//! ([`pool`], [`control`]) and the [`Transport`](crate::Transport) implementation
//! ([`transport`]).

pub mod client;
pub mod config;
pub mod control;
pub mod pool;
pub mod transport;

pub use client::{ConnectionInfo, HostKeyCheck, fetch_host_key};
pub use config::{SshTarget, SshTimeouts};
pub use pool::{SshConnection, SshPool};
pub use transport::SshTransport;
