//! Berth's domain: identifiers, environments, leases, driver configurations, selection
//! precedence and the secret wrapper.
//!
//! This crate owns the rules and has no I/O: it must not depend on sqlx, axum, russh or
//! `tokio::process`. Everything here is a pure function or a plain data type, so the rules
//! can be tested exhaustively without a database or a network.

pub mod adapters;
pub mod config;
pub mod enums;
pub mod ids;
pub mod lease;
pub mod model;
pub mod secret;
pub mod selection;

pub use enums::{
    CleanupStatus, Driver, EnvironmentSource, EnvironmentStatus, LeasePolicy, LeaseStatus,
    RunStatus, TokenKind,
};
pub use ids::*;
pub use secret::Secret;
