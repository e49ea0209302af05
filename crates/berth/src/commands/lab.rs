//! `berth lab up|status|down|doctor`: a real OpenSSH sshd on a random loopback port with fresh
//! keys (`$BERTH_HOME/lab/ssh`), to try SSH environments against. Works as root too.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::cli::LabCommand;
use crate::context::Ctx;
use crate::exit::{Exit, Failed};
use crate::output::Level;

fn lab_dir(ctx: &Ctx) -> PathBuf {
    ctx.settings.home.join("lab").join("ssh")
}

fn lab_failed(e: berth_lab::LabError) -> anyhow::Error {
    let hint = match &e {
        berth_lab::LabError::Unavailable(_) => "run `berth lab doctor` to see what is missing",
        _ => "run `berth lab down` and try again",
    };
    Failed::new(Exit::Failure, e.to_string())
        .with_hint(hint)
        .into()
}

pub async fn run(ctx: &Ctx, command: LabCommand) -> anyhow::Result<()> {
    let dir = lab_dir(ctx);
    match command {
        LabCommand::Up { register } => {
            let (state, reused) = berth_lab::up(&dir).map_err(lab_failed)?;
            let cwd = berth_lab::verify(&state).await.map_err(lab_failed)?;
            let config = berth_lab::environment_config(&state).map_err(lab_failed)?;
            let mut registered: Option<Value> = None;
            if register {
                let client = ctx.client()?;
                let company = ctx.company(&client).await?;
                let env = client
                    .post(
                        &format!("/api/companies/{company}/environments"),
                        &json!({"name": "lab", "driver": "ssh", "config": config,
                            "description": "The local SSH lab (berth lab)"}),
                    )
                    .await
                    .map_err(|e| {
                        anyhow::Error::new(e).context("failed to register the lab environment")
                    })?;
                registered = Some(env);
            }
            if ctx.out.json {
                return ctx.out.print_json(&json!({
                    "state": state,
                    "reused": reused,
                    "environment": config,
                    "registered": registered,
                }));
            }
            let verb = if reused { "is running" } else { "started" };
            ctx.out.done(format!(
                "SSH lab {verb}: {}@{}:{} (sshd pid {}), workspace {cwd}",
                state.username, state.host, state.port, state.pid
            ))?;
            if let Some(env) = registered {
                let id = env["id"].as_str().unwrap_or_default();
                ctx.out.done(format!(
                    "registered environment `lab` ({id}); try: berth env probe {id}"
                ))?;
            } else {
                // The config carries the throwaway lab key; print it without it and say where
                // it is.
                let mut shown = config.clone();
                shown["privateKey"] =
                    json!(format!("<contents of {}>", state.client_key_path.display()));
                ctx.out
                    .line("Environment config (create it with --register, or POST it):")?;
                ctx.out.line(serde_json::to_string_pretty(&shown)?)?;
            }
            ctx.out
                .line(format!("sshd log: {}", state.log_path.display()))
        }
        LabCommand::Status => {
            let state = berth_lab::status(&dir).map_err(lab_failed)?;
            if ctx.out.json {
                return ctx
                    .out
                    .print_json(&json!({"running": state.is_some(), "state": state}));
            }
            match state {
                Some(s) => ctx.out.fields(&[
                    ("running", "yes".to_string()),
                    ("address", format!("{}@{}:{}", s.username, s.host, s.port)),
                    ("pid", s.pid.to_string()),
                    ("workspace", s.workspace.display().to_string()),
                    ("log", s.log_path.display().to_string()),
                ]),
                None => ctx
                    .out
                    .line("The SSH lab is not running (start it with `berth lab up`)."),
            }
        }
        LabCommand::Down => {
            let stopped = berth_lab::down(&dir).map_err(lab_failed)?;
            if ctx.out.json {
                return ctx.out.print_json(&json!({"stopped": stopped, "dir": dir}));
            }
            if stopped {
                ctx.out.done("SSH lab stopped and removed.")
            } else {
                ctx.out.line("The SSH lab was not running.")
            }
        }
        LabCommand::Doctor => {
            let checks = berth_lab::doctor();
            let state = berth_lab::status(&dir).map_err(lab_failed)?;
            if ctx.out.json {
                let list: Vec<Value> = checks
                    .iter()
                    .map(|(name, ok, detail)| json!({"name": name, "ok": ok, "detail": detail}))
                    .collect();
                return ctx.out.print_json(
                    &json!({"checks": list, "running": state.is_some(), "state": state}),
                );
            }
            let mut missing = false;
            for (name, ok, detail) in &checks {
                let level = if *ok { Level::Ok } else { Level::Error };
                missing |= !ok;
                ctx.out.check(level, name, Some(detail), None)?;
            }
            match &state {
                Some(s) => ctx.out.check(
                    Level::Ok,
                    &format!("lab running on {}:{}", s.host, s.port),
                    Some(&format!(
                        "key {}\nknown_hosts {}",
                        s.client_key_path.display(),
                        s.known_hosts_path.display()
                    )),
                    Some("stop it with `berth lab down`"),
                )?,
                None => ctx.out.check(
                    Level::Warn,
                    "lab not running",
                    None,
                    Some("start it with `berth lab up`"),
                )?,
            }
            if missing {
                return Err(Failed::new(
                    Exit::CheckFailed,
                    "the SSH lab's prerequisites are missing",
                )
                .with_hint("install openssh-server and openssh-client")
                .into());
            }
            Ok(())
        }
    }
}
