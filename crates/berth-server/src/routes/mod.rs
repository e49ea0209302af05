//! One module per resource; each owns its `router()`. The root only merges them.

pub mod activity;
pub mod agents;
pub mod companies;
pub mod environments;
pub mod issues;
pub mod leases;
pub mod projects;
pub mod runs;
pub mod secrets;
pub mod settings;
pub mod system;
pub mod tokens;
pub mod workspaces;
