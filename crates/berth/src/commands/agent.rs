//! `berth agent …`: agents and their default environment.

use anyhow::Context;
use berth_core::AgentId;
use berth_core::model::Agent;
use serde_json::{Map, Value, json};

use crate::cli::{AgentCommand, AgentCreateArgs, AgentUpdateArgs, IdArg};
use crate::commands::shared::{
    decode, deleted_json, json_object, list, parse_id, resolve_environment,
};
use crate::context::Ctx;
use crate::exit::Failed;
use crate::output::{opt, pretty, time};

pub async fn run(ctx: &Ctx, command: AgentCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let company = ctx.company(&client).await?;
    match command {
        AgentCommand::List(page) => {
            let items = list(
                &client,
                &format!("/api/companies/{company}/agents"),
                page.limit,
                page.cursor.as_deref(),
            )
            .await
            .context("failed to list agents")?;
            if ctx.out.json {
                return ctx.out.print_json(&items);
            }
            let mut rows = Vec::new();
            for item in &items {
                let agent: Agent = decode("agent", item)?;
                rows.push(vec![
                    agent.id.to_string(),
                    agent.name,
                    agent.adapter_type,
                    opt(&agent.default_environment_id),
                ]);
            }
            ctx.out.table(
                &["ID", "NAME", "ADAPTER", "DEFAULT ENVIRONMENT"],
                rows,
                "No agents. Create one with `berth agent create`.",
            )
        }
        AgentCommand::Create(AgentCreateArgs {
            name,
            adapter_type,
            adapter_config,
            default_environment,
        }) => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("adapterType".into(), json!(adapter_type));
            let config = match &adapter_config {
                Some(text) => json_object("--adapter-config", text)?,
                None => Map::new(),
            };
            body.insert("adapterConfig".into(), Value::Object(config));
            if let Some(reference) = &default_environment {
                let id = resolve_environment(&client, company, reference).await?;
                body.insert("defaultEnvironmentId".into(), json!(id));
            }
            let created = client
                .post(&format!("/api/companies/{company}/agents"), &body)
                .await
                .with_context(|| format!("failed to create agent {name:?}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&created);
            }
            let agent: Agent = decode("agent", &created)?;
            ctx.out
                .done(format!("created agent {} ({})", agent.name, agent.id))
        }
        AgentCommand::Show(IdArg { id }) => {
            let id: AgentId = parse_id("agent", &id)?;
            let value = client
                .get(&format!("/api/agents/{id}"))
                .await
                .with_context(|| format!("failed to get agent {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&value);
            }
            let agent: Agent = decode("agent", &value)?;
            ctx.out.fields(&[
                ("id", agent.id.to_string()),
                ("name", agent.name),
                ("adapter type", agent.adapter_type),
                ("default environment", opt(&agent.default_environment_id)),
                ("grants", agent.grants.join(", ")),
                ("created", time(&agent.created_at)),
                ("updated", time(&agent.updated_at)),
                ("adapter config", pretty(&agent.adapter_config)),
            ])
        }
        AgentCommand::Update(AgentUpdateArgs {
            id,
            name,
            adapter_type,
            adapter_config,
            default_environment,
        }) => {
            let id: AgentId = parse_id("agent", &id)?;
            let mut body = Map::new();
            if let Some(name) = name {
                body.insert("name".into(), json!(name));
            }
            if let Some(t) = adapter_type {
                body.insert("adapterType".into(), json!(t));
            }
            if let Some(text) = &adapter_config {
                body.insert(
                    "adapterConfig".into(),
                    Value::Object(json_object("--adapter-config", text)?),
                );
            }
            match default_environment.as_deref().map(str::trim) {
                None => {}
                Some("none") => {
                    body.insert("defaultEnvironmentId".into(), Value::Null);
                }
                Some(reference) => {
                    let env = resolve_environment(&client, company, reference).await?;
                    body.insert("defaultEnvironmentId".into(), json!(env));
                }
            }
            if body.is_empty() {
                return Err(
                    Failed::usage("nothing to update: give at least one field to change")
                        .with_hint("see `berth agent update --help`")
                        .into(),
                );
            }
            let updated = client
                .patch(&format!("/api/agents/{id}"), &body)
                .await
                .with_context(|| format!("failed to update agent {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&updated);
            }
            ctx.out.done(format!("updated agent {id}"))
        }
        AgentCommand::Delete(IdArg { id }) => {
            let id: AgentId = parse_id("agent", &id)?;
            let body = client
                .delete(&format!("/api/agents/{id}"))
                .await
                .with_context(|| format!("failed to delete agent {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&deleted_json(&id.to_string(), body));
            }
            ctx.out.done(format!("deleted agent {id}"))
        }
    }
}
