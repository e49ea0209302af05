//! `berth settings …`: instance-wide settings.

use anyhow::Context;
use berth_core::model::ExperimentalSettings;
use serde_json::json;

use crate::cli::{ExperimentalArgs, SettingsCommand};
use crate::commands::shared::decode;
use crate::context::Ctx;

pub async fn run(ctx: &Ctx, command: SettingsCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        SettingsCommand::Experimental(ExperimentalArgs {
            enable_environments,
        }) => {
            let path = "/api/instance/settings/experimental";
            let value = match enable_environments {
                None => client
                    .get(path)
                    .await
                    .context("failed to get the experimental settings")?,
                Some(enable) => client
                    .patch(path, &json!({ "enableEnvironments": enable }))
                    .await
                    .context("failed to change the experimental settings")?,
            };
            if ctx.out.json {
                return ctx.out.print_json(&value);
            }
            let settings: ExperimentalSettings = decode("experimental settings", &value)?;
            ctx.out.fields(&[(
                "enableEnvironments",
                settings.enable_environments.to_string(),
            )])
        }
    }
}
