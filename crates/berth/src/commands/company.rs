//! `berth company …`: companies (tenants).

use anyhow::Context;
use berth_core::model::Company;
use serde_json::json;

use crate::cli::{CompanyCommand, CompanyCreateArgs};
use crate::commands::shared::decode;
use crate::context::Ctx;
use crate::output::{opt, time};

pub async fn run(ctx: &Ctx, command: CompanyCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        CompanyCommand::List => {
            let items = client
                .list_all("/api/companies")
                .await
                .context("failed to list companies")?;
            if ctx.out.json {
                return ctx.out.print_json(&items);
            }
            let mut rows = Vec::new();
            for item in &items {
                let company: Company = decode("company", item)?;
                rows.push(vec![
                    company.id.to_string(),
                    company.name,
                    opt(&company.default_environment_id),
                    time(&company.created_at),
                ]);
            }
            ctx.out.table(
                &["ID", "NAME", "DEFAULT ENVIRONMENT", "CREATED"],
                rows,
                "No companies.",
            )
        }
        CompanyCommand::Create(CompanyCreateArgs { name }) => {
            let created = client
                .post("/api/companies", &json!({ "name": name }))
                .await
                .with_context(|| format!("failed to create company {name:?}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&created);
            }
            let company: Company = decode("company", &created)?;
            ctx.out
                .done(format!("created company {} ({})", company.name, company.id))
        }
    }
}
