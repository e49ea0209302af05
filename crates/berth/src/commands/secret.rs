//! `berth secret …`: company secrets. A value goes to the server only inside a request body,
//! read from a file or stdin; the API and this command only ever show metadata.

use anyhow::Context;
use berth_core::model::SecretMeta;
use serde_json::json;

use crate::cli::{SecretCommand, SecretCreateArgs};
use crate::commands::shared::{decode, list, read_secret_file};
use crate::context::Ctx;
use crate::output::{opt, time};

pub async fn run(ctx: &Ctx, command: SecretCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        SecretCommand::List(page) => {
            let company = ctx.company(&client).await?;
            let items = list(
                &client,
                &format!("/api/companies/{company}/secrets"),
                page.limit,
                page.cursor.as_deref(),
            )
            .await
            .context("failed to list secrets")?;
            if ctx.out.json {
                return ctx.out.print_json(&items);
            }
            let mut rows = Vec::new();
            for item in &items {
                let secret: SecretMeta = decode("secret", item)?;
                rows.push(vec![
                    secret.id.to_string(),
                    secret.name,
                    secret.version.to_string(),
                    opt(&secret.description),
                    time(&secret.updated_at),
                ]);
            }
            ctx.out.table(
                &["ID", "NAME", "VERSION", "DESCRIPTION", "UPDATED"],
                rows,
                "No secrets.",
            )
        }
        SecretCommand::Create(SecretCreateArgs {
            name,
            description,
            value_file,
        }) => {
            let text = read_secret_file("the secret value", &value_file)?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            let company = ctx.company(&client).await?;
            let created = client
                .post(
                    &format!("/api/companies/{company}/secrets"),
                    &json!({ "name": name, "description": description, "value": value }),
                )
                .await
                .with_context(|| format!("failed to create secret {name:?}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&created);
            }
            let secret: SecretMeta = decode("secret", &created)?;
            ctx.out
                .done(format!("stored secret {} ({})", secret.name, secret.id))
        }
    }
}
