//! `berth workspace …`: execution workspaces (local directories runs work on) and their pinned
//! environment (`config.environmentId`).

use std::path::Path;

use anyhow::Context;
use berth_core::ExecutionWorkspaceId;
use berth_core::model::ExecutionWorkspace;
use serde_json::{Map, Value, json};

use crate::cli::{IdArg, WorkspaceCommand, WorkspaceCreateArgs, WorkspaceUpdateArgs};
use crate::commands::project::selection_cell;
use crate::commands::shared::{
    apply_selection, decode, deleted_json, environment_selection, list, nullable_id, parse_id,
};
use crate::context::Ctx;
use crate::exit::Failed;
use crate::output::{opt, pretty};

pub async fn run(ctx: &Ctx, command: WorkspaceCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let company = ctx.company(&client).await?;
    match command {
        WorkspaceCommand::List(page) => {
            let items = list(
                &client,
                &format!("/api/companies/{company}/execution-workspaces"),
                page.limit,
                page.cursor.as_deref(),
            )
            .await
            .context("failed to list execution workspaces")?;
            if ctx.out.json {
                return ctx.out.print_json(&items);
            }
            let mut rows = Vec::new();
            for item in &items {
                let ws: ExecutionWorkspace = decode("execution workspace", item)?;
                rows.push(vec![
                    ws.id.to_string(),
                    ws.local_path,
                    opt(&ws.project_id),
                    selection_cell(&ws.config),
                ]);
            }
            ctx.out.table(
                &["ID", "PATH", "PROJECT", "ENVIRONMENT"],
                rows,
                "No execution workspaces. Create one with `berth workspace create --path DIR`.",
            )
        }
        WorkspaceCommand::Create(WorkspaceCreateArgs {
            path,
            project,
            environment,
        }) => {
            let mut body = Map::new();
            body.insert("localPath".into(), json!(absolute(&path)?));
            if let Some(id) = nullable_id("project", project.as_deref())? {
                body.insert("projectId".into(), id);
            }
            let mut config = json!({});
            if let Some(text) = &environment {
                apply_selection(
                    &mut config,
                    environment_selection(&client, company, text).await?,
                );
            }
            body.insert("config".into(), config);
            let created = client
                .post(
                    &format!("/api/companies/{company}/execution-workspaces"),
                    &body,
                )
                .await
                .with_context(|| {
                    format!("failed to create execution workspace {}", path.display())
                })?;
            if ctx.out.json {
                return ctx.out.print_json(&created);
            }
            let ws: ExecutionWorkspace = decode("execution workspace", &created)?;
            ctx.out.done(format!(
                "created execution workspace {} ({})",
                ws.local_path, ws.id
            ))
        }
        WorkspaceCommand::Show(IdArg { id }) => {
            let id: ExecutionWorkspaceId = parse_id("execution workspace", &id)?;
            let value = get(&client, id).await?;
            if ctx.out.json {
                return ctx.out.print_json(&value);
            }
            let ws: ExecutionWorkspace = decode("execution workspace", &value)?;
            ctx.out.fields(&[
                ("id", ws.id.to_string()),
                ("path", ws.local_path),
                ("project", opt(&ws.project_id)),
                ("config", pretty(&ws.config)),
            ])
        }
        WorkspaceCommand::Update(WorkspaceUpdateArgs {
            id,
            path,
            project,
            environment,
        }) => {
            let id: ExecutionWorkspaceId = parse_id("execution workspace", &id)?;
            let mut body = Map::new();
            if let Some(path) = &path {
                body.insert("localPath".into(), json!(absolute(path)?));
            }
            if let Some(id) = nullable_id("project", project.as_deref())? {
                body.insert("projectId".into(), id);
            }
            if let Some(text) = &environment {
                let selection = environment_selection(&client, company, text).await?;
                let current = get(&client, id).await?;
                let mut config = current.get("config").cloned().unwrap_or_else(|| json!({}));
                apply_selection(&mut config, selection);
                body.insert("config".into(), config);
            }
            if body.is_empty() {
                return Err(
                    Failed::usage("nothing to update: give at least one field to change")
                        .with_hint("see `berth workspace update --help`")
                        .into(),
                );
            }
            let updated = client
                .patch(&format!("/api/execution-workspaces/{id}"), &body)
                .await
                .with_context(|| format!("failed to update execution workspace {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&updated);
            }
            ctx.out.done(format!("updated execution workspace {id}"))
        }
        WorkspaceCommand::Delete(IdArg { id }) => {
            let id: ExecutionWorkspaceId = parse_id("execution workspace", &id)?;
            let body = client
                .delete(&format!("/api/execution-workspaces/{id}"))
                .await
                .with_context(|| format!("failed to delete execution workspace {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&deleted_json(&id.to_string(), body));
            }
            ctx.out.done(format!("deleted execution workspace {id}"))
        }
    }
}

async fn get(client: &crate::client::Client, id: ExecutionWorkspaceId) -> anyhow::Result<Value> {
    client
        .get(&format!("/api/execution-workspaces/{id}"))
        .await
        .with_context(|| format!("failed to get execution workspace {id}"))
}

/// The path as the user meant it: relative to the directory `berth` runs in. The server
/// canonicalizes it (resolving symlinks) and checks it against `workspaceRoots`.
fn absolute(path: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(path)
        .with_context(|| format!("failed to make {} absolute", path.display()))?;
    abs.to_str()
        .map(str::to_string)
        .ok_or_else(|| Failed::usage(format!("{} is not valid UTF-8", abs.display())).into())
}
