//! One module per command noun; `main.rs` dispatches to them.

pub mod activity;
pub mod agent;
pub mod company;
pub mod completions;
pub mod db;
pub mod doctor;
pub mod env;
pub mod issue;
pub mod lab;
pub mod project;
pub mod run;
pub mod secret;
pub mod serve;
pub mod settings;
pub mod shared;
pub mod token;
pub mod workspace;
