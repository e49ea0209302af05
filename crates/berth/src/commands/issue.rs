//! `berth issue …`: issues, their pinned execution workspace and environment selection
//! (`executionWorkspaceSettings.environmentId`).

use anyhow::Context;
use berth_core::IssueId;
use berth_core::model::Issue;
use serde_json::{Map, Value, json};

use crate::cli::{IdArg, IssueCommand, IssueCreateArgs, IssueUpdateArgs};
use crate::commands::project::selection_cell;
use crate::commands::shared::{
    apply_selection, decode, deleted_json, environment_selection, list, nullable_id, parse_id,
};
use crate::context::Ctx;
use crate::exit::Failed;
use crate::output::{opt, pretty};

pub async fn run(ctx: &Ctx, command: IssueCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let company = ctx.company(&client).await?;
    match command {
        IssueCommand::List(page) => {
            let items = list(
                &client,
                &format!("/api/companies/{company}/issues"),
                page.limit,
                page.cursor.as_deref(),
            )
            .await
            .context("failed to list issues")?;
            if ctx.out.json {
                return ctx.out.print_json(&items);
            }
            let mut rows = Vec::new();
            for item in &items {
                let issue: Issue = decode("issue", item)?;
                rows.push(vec![
                    issue.id.to_string(),
                    issue.title,
                    opt(&issue.project_id),
                    opt(&issue.assignee_agent_id),
                    opt(&issue.execution_workspace_id),
                    selection_cell(&issue.execution_workspace_settings),
                ]);
            }
            ctx.out.table(
                &[
                    "ID",
                    "TITLE",
                    "PROJECT",
                    "ASSIGNEE",
                    "WORKSPACE",
                    "ENVIRONMENT",
                ],
                rows,
                "No issues. Create one with `berth issue create`.",
            )
        }
        IssueCommand::Create(IssueCreateArgs {
            title,
            project,
            assignee,
            workspace,
            environment,
        }) => {
            let mut body = Map::new();
            body.insert("title".into(), json!(title));
            for (key, what, value) in [
                ("projectId", "project", &project),
                ("assigneeAgentId", "agent", &assignee),
                ("executionWorkspaceId", "execution workspace", &workspace),
            ] {
                if let Some(id) = nullable_id(what, value.as_deref())? {
                    body.insert(key.into(), id);
                }
            }
            let mut settings = json!({});
            if let Some(text) = &environment {
                apply_selection(
                    &mut settings,
                    environment_selection(&client, company, text).await?,
                );
            }
            body.insert("executionWorkspaceSettings".into(), settings);
            let created = client
                .post(&format!("/api/companies/{company}/issues"), &body)
                .await
                .with_context(|| format!("failed to create issue {title:?}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&created);
            }
            let issue: Issue = decode("issue", &created)?;
            ctx.out
                .done(format!("created issue {} ({})", issue.title, issue.id))
        }
        IssueCommand::Show(IdArg { id }) => {
            let id: IssueId = parse_id("issue", &id)?;
            let value = get(&client, id).await?;
            if ctx.out.json {
                return ctx.out.print_json(&value);
            }
            let issue: Issue = decode("issue", &value)?;
            ctx.out.fields(&[
                ("id", issue.id.to_string()),
                ("title", issue.title),
                ("project", opt(&issue.project_id)),
                ("assignee", opt(&issue.assignee_agent_id)),
                ("workspace", opt(&issue.execution_workspace_id)),
                (
                    "workspace settings",
                    pretty(&issue.execution_workspace_settings),
                ),
            ])
        }
        IssueCommand::Update(IssueUpdateArgs {
            id,
            title,
            project,
            assignee,
            workspace,
            environment,
        }) => {
            let id: IssueId = parse_id("issue", &id)?;
            let mut body = Map::new();
            if let Some(title) = title {
                body.insert("title".into(), json!(title));
            }
            for (key, what, value) in [
                ("projectId", "project", &project),
                ("assigneeAgentId", "agent", &assignee),
                ("executionWorkspaceId", "execution workspace", &workspace),
            ] {
                if let Some(id) = nullable_id(what, value.as_deref())? {
                    body.insert(key.into(), id);
                }
            }
            if let Some(text) = &environment {
                let selection = environment_selection(&client, company, text).await?;
                let current = get(&client, id).await?;
                let mut settings = current
                    .get("executionWorkspaceSettings")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                apply_selection(&mut settings, selection);
                body.insert("executionWorkspaceSettings".into(), settings);
            }
            if body.is_empty() {
                return Err(
                    Failed::usage("nothing to update: give at least one field to change")
                        .with_hint("see `berth issue update --help`")
                        .into(),
                );
            }
            let updated = client
                .patch(&format!("/api/issues/{id}"), &body)
                .await
                .with_context(|| format!("failed to update issue {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&updated);
            }
            ctx.out.done(format!("updated issue {id}"))
        }
        IssueCommand::Delete(IdArg { id }) => {
            let id: IssueId = parse_id("issue", &id)?;
            let body = client
                .delete(&format!("/api/issues/{id}"))
                .await
                .with_context(|| format!("failed to delete issue {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&deleted_json(&id.to_string(), body));
            }
            ctx.out.done(format!("deleted issue {id}"))
        }
    }
}

async fn get(client: &crate::client::Client, id: IssueId) -> anyhow::Result<Value> {
    client
        .get(&format!("/api/issues/{id}"))
        .await
        .with_context(|| format!("failed to get issue {id}"))
}
