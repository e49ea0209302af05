//! The PostgreSQL backend, for several control-plane instances sharing one database:
//! acquisitions lock the environment row, queued runs are claimed with `SKIP LOCKED`, and
//! lease releases are announced with `NOTIFY` so waiters on every instance wake up.

mod backend;
// One implementation compiled per backend: see `generic/store_impl.rs`.
#[allow(
    clippy::duplicate_mod,
    reason = "the shared implementation is deliberately compiled once per backend"
)]
#[path = "../generic/store_impl.rs"]
mod store_impl;

pub use backend::PgStore;
