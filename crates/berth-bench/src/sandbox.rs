//! The `sandbox` suite: the end-to-end overhead of a `process` run of `true` on a sandbox
//! environment (bubblewrap, network `none`) against the same run on the managed local
//! environment, both through the real server with the same small git workspace (select →
//! lease → [sync out] → launch → exit → [sync back] → release). Runs alternate between the two
//! so that background load hits both alike.

use anyhow::{Context, bail};
use serde_json::json;

use crate::api::Served;
use crate::runs::make_repo;
use crate::{median, ms, n};

pub async fn run() -> anyhow::Result<()> {
    berth_exec::sandbox::host_support()
        .map_err(|e| anyhow::anyhow!("bwrap cannot run here: {e} ({})", e.hint))?;
    let runs = n().min(20);
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let config = Served::sqlite_config(&home);
    let served = Served::start(config).await?;
    let (api, company) = (served.api.clone(), served.company.clone());
    let sandbox = api
        .post(
            &format!("/api/companies/{company}/environments"),
            json!({"name": "box", "driver": "sandbox", "config": {"network": "none"}}),
        )
        .await?;
    let sandbox = sandbox["id"]
        .as_str()
        .context("environment id")?
        .to_string();
    let repo = dir.path().join("repo");
    make_repo(&repo)?;
    let ws = api
        .post(
            &format!("/api/companies/{company}/execution-workspaces"),
            json!({"localPath": repo}),
        )
        .await?;
    let mut bodies = Vec::new();
    for (name, env) in [
        ("local", serde_json::Value::Null),
        ("sandbox", json!(sandbox)),
    ] {
        let agent = api
            .post(
                &format!("/api/companies/{company}/agents"),
                json!({"name": name, "adapterType": "process", "defaultEnvironmentId": env,
                       "adapterConfig": {"command": "true"}}),
            )
            .await?;
        bodies.push(
            json!({"agentId": agent["id"], "prompt": "bench", "executionWorkspaceId": ws["id"]}),
        );
    }
    // First runs: the sandbox's lease is new and pushes the whole workspace.
    let mut cold = Vec::new();
    for body in &bodies {
        let (r, took) = api.run(&company, body.clone()).await?;
        if r["status"] != "succeeded" {
            bail!("the first run did not succeed: {r}");
        }
        cold.push(took);
    }
    let (mut local, mut boxed) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs {
        std::fs::write(repo.join("NOTES.md"), format!("edit {i}\n"))?;
        for (body, into) in bodies.iter().zip([&mut local, &mut boxed]) {
            let (r, took) = api.run(&company, body.clone()).await?;
            if r["status"] != "succeeded" {
                bail!("run {i} did not succeed: {r}");
            }
            into.push(took);
        }
    }
    let (l, b) = (median(local), median(boxed));
    println!("| Measure | Sandbox | Local | Ratio | Target |");
    println!("|---|---|---|---|---|");
    println!(
        "| `process` run of `true`, steady state (median of {runs}) | {:.0} ms | {:.0} ms | {:.2}× | ≤ 1.5× |",
        ms(b),
        ms(l),
        ms(b) / ms(l)
    );
    println!(
        "| first run (sandbox: new lease, full push with git bundle) | {:.0} ms | {:.0} ms | {:.2}× | — |",
        ms(cold[1]),
        ms(cold[0]),
        ms(cold[1]) / ms(cold[0])
    );
    served.stop().await;
    Ok(())
}
