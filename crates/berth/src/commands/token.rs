//! `berth token …`: API tokens. A new token's value is printed exactly once, at creation; the
//! server keeps only its hash.

use anyhow::Context;
use berth_core::TokenId;
use berth_core::model::ApiToken;
use serde::Deserialize;
use serde_json::json;

use crate::cli::{IdArg, TokenCommand, TokenCreateArgs, TokenKindArg};
use crate::client::resolve_company;
use crate::commands::shared::{decode, deleted_json, parse_id};
use crate::context::Ctx;
use crate::output::time;

/// `POST /api/tokens`' answer: the plaintext once, plus the stored record.
#[derive(Debug, Deserialize)]
struct CreatedToken {
    token: String,
    #[serde(flatten)]
    meta: ApiToken,
}

pub async fn run(ctx: &Ctx, command: TokenCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        TokenCommand::Create(args) => create(ctx, &client, args).await,
        TokenCommand::List => {
            let items = client
                .list_all("/api/tokens")
                .await
                .context("failed to list tokens")?;
            if ctx.out.json {
                return ctx.out.print_json(&items);
            }
            let mut rows = Vec::new();
            for item in &items {
                let token: ApiToken = decode("token", item)?;
                let status = if token.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                rows.push(vec![
                    token.id.to_string(),
                    token.name,
                    token.prefix,
                    token.kind.to_string(),
                    status.to_string(),
                    if token.instance_admin {
                        "instance admin".to_string()
                    } else {
                        token.grants.join(",")
                    },
                    time(&token.created_at),
                    token
                        .last_used_at
                        .as_ref()
                        .map_or_else(|| "never".to_string(), time),
                ]);
            }
            ctx.out.table(
                &[
                    "ID",
                    "NAME",
                    "PREFIX",
                    "KIND",
                    "STATUS",
                    "GRANTS",
                    "CREATED",
                    "LAST USED",
                ],
                rows,
                "No tokens. Create one with `berth token create --name NAME`.",
            )
        }
        TokenCommand::Revoke(IdArg { id }) => {
            let id: TokenId = parse_id("token", &id)?;
            let body = client
                .delete(&format!("/api/tokens/{id}"))
                .await
                .with_context(|| format!("failed to revoke token {id}"))?;
            if ctx.out.json {
                return ctx.out.print_json(&deleted_json(&id.to_string(), body));
            }
            ctx.out.done(format!("revoked token {id}"))
        }
    }
}

async fn create(
    ctx: &Ctx,
    client: &crate::client::Client,
    args: TokenCreateArgs,
) -> anyhow::Result<()> {
    let mut company_ids = Vec::new();
    if args.companies.is_empty() {
        company_ids.push(ctx.company(client).await?);
    }
    for selector in &args.companies {
        company_ids.push(resolve_company(client, Some(selector)).await?);
    }
    let agent_id = match &args.agent {
        Some(id) => Some(parse_id::<berth_core::AgentId>("agent", id)?),
        None => None,
    };
    let kind = match args.kind {
        TokenKindArg::Board => "board",
        TokenKindArg::Agent => "agent",
    };
    let body = json!({
        "name": args.name,
        "kind": kind,
        "companyIds": company_ids,
        "agentId": agent_id,
        "grants": args.grants,
        "instanceAdmin": args.instance_admin,
    });
    // The first token ends local_trusted mode: say so, or the next command's 401 surprises.
    let was_trusted = client
        .get("/api/health")
        .await
        .ok()
        .and_then(|h| {
            h.get("authMode")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .is_some_and(|mode| mode == "local_trusted");
    let created = client
        .post("/api/tokens", &body)
        .await
        .with_context(|| format!("failed to create token {:?}", args.name))?;
    if ctx.out.json {
        return ctx.out.print_json(&created);
    }
    let created: CreatedToken = decode("token", &created)?;
    ctx.out.done(format!(
        "created {} token {} ({})",
        created.meta.kind, created.meta.name, created.meta.id
    ))?;
    ctx.out.line(format!("\n    {}\n", created.token))?;
    ctx.out
        .line("Store it now: it is not shown again. Use it with BERTH_TOKEN or --token-file.")?;
    if was_trusted {
        ctx.out.line(
            "Note: the server now has a token, so it requires one on every request \
             (it is no longer in local_trusted mode).",
        )?;
    }
    Ok(())
}
