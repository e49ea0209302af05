//! What every command receives: the layered settings, the output mode, and (for commands that
//! talk to a server) the API client and the selected company.

use std::time::Duration;

use berth_core::CompanyId;

use crate::client::{self, Client};
use crate::config::Settings;
use crate::output::Output;

#[derive(Debug)]
pub struct Ctx {
    pub settings: Settings,
    pub out: Output,
}

impl Ctx {
    pub fn new(settings: Settings, out: Output) -> Self {
        Self { settings, out }
    }

    /// A client of the configured server.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(
            &self.settings.server,
            self.settings.token.clone(),
            Duration::from_secs(self.settings.timeout_secs.max(1)),
        )?)
    }

    /// The company selected by `--company` / `BERTH_COMPANY` / the `default` company.
    pub async fn company(&self, client: &Client) -> anyhow::Result<CompanyId> {
        client::resolve_company(client, self.settings.company.as_deref()).await
    }
}
