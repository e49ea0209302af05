//! `berth project …`: projects and their environment selection
//! (`executionWorkspacePolicy.environmentId`).

use anyhow::Context;
use berth_core::ProjectId;
use berth_core::model::Project;
use serde_json::{Map, Value, json};

use crate::cli::{IdArg, ProjectCommand, ProjectCreateArgs, ProjectUpdateArgs};
use crate::commands::shared::{
    apply_selection, decode, deleted_json, environment_selection, list, parse_id,
};
use crate::context::Ctx;
use crate::exit::Failed;
use crate::output::{cell, pretty};

pub async fn run(ctx: &Ctx, command: ProjectCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let company = ctx.company(&client).await?;
    match command {
        ProjectCommand::List(page) => {
            let items = list(
                &client,
                &format!("/api/companies/{company}/projects"),
                page.limit,
                page.cursor.as_deref(),
            )
            .await
            .context("failed to list projects")?;
            if ctx.out.json {
                return ctx.out.print_json(&items);
            }
            let mut rows = Vec::new();
            for item in &items {
                let project: Project = decode("project", item)?;
                rows.push(vec![
                    project.id.to_string(),
                    project.name,
                    selection_cell(&project.execution_workspace_policy),
                ]);
            }
            ctx.out.table(
                &["ID", "NAME", "ENVIRONMENT"],
                rows,
                "No projects. Create one with `berth project create`.",
            )
        }
        ProjectCommand::Create(ProjectCreateArgs { name, environment }) => {
            let mut policy = json!({});
            if let Some(text) = &environment {
                apply_selection(
                    &mut policy,
                    environment_selection(&client, company, text).await?,
                );
            }
            let created = client
                .post(
                    &format!("/api/companies/{company}/projects"),
                    &json!({ "name": name, "executionWorkspacePolicy": policy }),
                )
                .await
                .with_context(|| format!("failed to create project {name:?}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&created);
            }
            let project: Project = decode("project", &created)?;
            ctx.out
                .done(format!("created project {} ({})", project.name, project.id))
        }
        ProjectCommand::Show(IdArg { id }) => {
            let id: ProjectId = parse_id("project", &id)?;
            let value = get(&client, id).await?;
            if ctx.out.json {
                return ctx.out.print_json(&value);
            }
            let project: Project = decode("project", &value)?;
            ctx.out.fields(&[
                ("id", project.id.to_string()),
                ("name", project.name),
                (
                    "workspace policy",
                    pretty(&project.execution_workspace_policy),
                ),
            ])
        }
        ProjectCommand::Update(ProjectUpdateArgs {
            id,
            name,
            environment,
        }) => {
            let id: ProjectId = parse_id("project", &id)?;
            let mut body = Map::new();
            if let Some(name) = name {
                body.insert("name".into(), json!(name));
            }
            if let Some(text) = &environment {
                let selection = environment_selection(&client, company, text).await?;
                // The policy is replaced as a whole, so start from the current one.
                let current = get(&client, id).await?;
                let mut policy = current
                    .get("executionWorkspacePolicy")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                apply_selection(&mut policy, selection);
                body.insert("executionWorkspacePolicy".into(), policy);
            }
            if body.is_empty() {
                return Err(
                    Failed::usage("nothing to update: give at least one field to change")
                        .with_hint("see `berth project update --help`")
                        .into(),
                );
            }
            let updated = client
                .patch(&format!("/api/projects/{id}"), &body)
                .await
                .with_context(|| format!("failed to update project {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&updated);
            }
            ctx.out.done(format!("updated project {id}"))
        }
        ProjectCommand::Delete(IdArg { id }) => {
            let id: ProjectId = parse_id("project", &id)?;
            let body = client
                .delete(&format!("/api/projects/{id}"))
                .await
                .with_context(|| format!("failed to delete project {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&deleted_json(&id.to_string(), body));
            }
            ctx.out.done(format!("deleted project {id}"))
        }
    }
}

async fn get(client: &crate::client::Client, id: ProjectId) -> anyhow::Result<Value> {
    client
        .get(&format!("/api/projects/{id}"))
        .await
        .with_context(|| format!("failed to get project {id}"))
}

/// The environment a selection object names: an id, `default` (null) or `-` (none).
pub fn selection_cell(selection: &Value) -> String {
    match selection.get("environmentId") {
        None => "-".into(),
        Some(Value::Null) => "default".into(),
        Some(other) => cell(Some(other)),
    }
}
