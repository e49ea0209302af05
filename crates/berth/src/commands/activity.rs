//! `berth activity`: the company's activity log (who changed what).

use anyhow::Context;
use berth_core::model::ActivityEntry;

use crate::cli::ListArgs;
use crate::commands::shared::{decode, list};
use crate::context::Ctx;
use crate::output::time;

pub async fn run(ctx: &Ctx, page: ListArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let company = ctx.company(&client).await?;
    let items = list(
        &client,
        &format!("/api/companies/{company}/activity"),
        page.limit,
        page.cursor.as_deref(),
    )
    .await
    .context("failed to list activity")?;
    if ctx.out.json {
        return ctx.out.print_json(&items);
    }
    let mut rows = Vec::new();
    for item in &items {
        let entry: ActivityEntry = decode("activity entry", item)?;
        rows.push(vec![
            time(&entry.created_at),
            format!("{}:{}", entry.actor_type, entry.actor_id),
            entry.action,
            format!("{} {}", entry.entity_type, entry.entity_id),
        ]);
    }
    ctx.out
        .table(&["TIME", "ACTOR", "ACTION", "ENTITY"], rows, "No activity.")
}
