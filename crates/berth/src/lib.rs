//! The `berth` command: a thin binary (`main.rs`) over these modules.
//!
//! - [`cli`]: the clap definitions (parsing only);
//! - [`config`]: layering of defaults, `berth.toml`, `BERTH_*` variables and flags;
//! - [`client`]: the HTTP client of the API and its failures;
//! - [`exit`]: the documented exit codes;
//! - [`output`]: tables, key/value views, check lists, or `--json`;
//! - [`commands`]: one module per command noun.
//!
//! This crate may use `anyhow`; the libraries it drives (`berth-server`, `berth-store`,
//! `berth-core`) have typed errors.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod context;
pub mod exit;
pub mod output;
