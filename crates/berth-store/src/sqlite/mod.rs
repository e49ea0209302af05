//! The embedded SQLite backend (WAL). All writes go through a single-connection writer pool
//! with `BEGIN IMMEDIATE`, so concurrent writers queue in-process instead of meeting
//! `SQLITE_BUSY`; reads use a separate pool and see WAL snapshots.

mod backend;
// One implementation compiled per backend: see `generic/store_impl.rs`.
#[allow(
    clippy::duplicate_mod,
    reason = "the shared implementation is deliberately compiled once per backend"
)]
#[path = "../generic/store_impl.rs"]
mod store_impl;

pub use backend::SqliteStore;
