//! `berth env …`: the company's execution environments.
//!
//! A private key reaches the server only inside a request body: it is read from the file given
//! with `--private-key-file` (or from `--config-file`), never echoed, and never passed to a
//! child process.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use berth_core::EnvironmentId;
use berth_core::model::{Environment, Lease};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::cli::{
    ConfigArgs, EnvCommand, EnvCreateArgs, EnvDeleteArgs, EnvLeasesArgs, EnvListArgs, EnvProbeArgs,
    EnvRef, EnvTrustArgs, EnvUpdateArgs,
};
use crate::client::{Client, with_query};
use crate::commands::shared::{
    decode, deleted_json, json_object, json_value, list, read_secret_file, read_text,
    resolve_environment,
};
use crate::context::Ctx;
use crate::exit::{Exit, Failed};
use crate::output::{Level, Output, opt, pretty, time};

pub async fn run(ctx: &Ctx, command: EnvCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        EnvCommand::List(args) => list_envs(ctx, &client, args).await,
        EnvCommand::Create(args) => create(ctx, &client, args).await,
        EnvCommand::Show(EnvRef { env }) => show(ctx, &client, &env).await,
        EnvCommand::Update(args) => update(ctx, &client, args).await,
        EnvCommand::Delete(args) => delete(ctx, &client, args).await,
        EnvCommand::Leases(args) => leases(ctx, &client, args).await,
        EnvCommand::Probe(args) => probe(ctx, &client, args).await,
        EnvCommand::Trust(args) => trust(ctx, &client, args).await,
        EnvCommand::Capabilities => {
            let company = ctx.company(&client).await?;
            let caps = client
                .get(&format!(
                    "/api/companies/{company}/environments/capabilities"
                ))
                .await
                .context("failed to get environment capabilities")?;
            ctx.out.print_json(&caps)
        }
    }
}

async fn list_envs(ctx: &Ctx, client: &Client, args: EnvListArgs) -> anyhow::Result<()> {
    let company = ctx.company(client).await?;
    let path = with_query(
        &format!("/api/companies/{company}/environments"),
        &[
            ("status", args.status.as_deref()),
            ("driver", args.driver.as_deref()),
        ],
    );
    let items = list(client, &path, args.page.limit, args.page.cursor.as_deref())
        .await
        .context("failed to list environments")?;
    if ctx.out.json {
        return ctx.out.print_json(&items);
    }
    let mut rows = Vec::new();
    for item in &items {
        let env: Environment = decode("environment", item)?;
        rows.push(vec![
            env.id.to_string(),
            env.name.clone(),
            env.driver.to_string(),
            env.status.to_string(),
            target(&env),
            env.lease_policy.to_string(),
            opt(&env.capacity),
        ]);
    }
    ctx.out.table(
        &[
            "ID",
            "NAME",
            "DRIVER",
            "STATUS",
            "TARGET",
            "LEASE POLICY",
            "CAPACITY",
        ],
        rows,
        "No environments. Create one with `berth env create`.",
    )
}

/// Where an environment's runs go, in a few words.
fn target(env: &Environment) -> String {
    let c = &env.config;
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    match env.driver {
        berth_core::Driver::Local => s("workspaceRoot").unwrap_or_else(|| "this host".into()),
        berth_core::Driver::Ssh => {
            let host = s("host").unwrap_or_else(|| "?".into());
            let user = s("username").map(|u| format!("{u}@")).unwrap_or_default();
            let port = c
                .get("port")
                .and_then(Value::as_u64)
                .filter(|p| *p != 22)
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            format!("{user}{host}{port}")
        }
        berth_core::Driver::Sandbox => s("provider").unwrap_or_else(|| "-".into()),
        berth_core::Driver::Plugin => c
            .get("command")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string(),
    }
}

/// The driver config a command's flags describe: `--config`/`--config-file` as the base, the
/// individual SSH flags on top. `None` when no config flag was given.
pub fn build_config(
    args: &ConfigArgs,
    driver: Option<&str>,
) -> anyhow::Result<Option<Map<String, Value>>> {
    let mut config = match (&args.config, &args.config_file) {
        (Some(text), _) => {
            let map = json_object("--config", text)?;
            if map
                .get("privateKey")
                .is_some_and(|k| k.as_str().is_some_and(|k| !k.is_empty()))
            {
                eprintln!(
                    "warning: a private key given in --config is visible to other users of this \
                     machine (process list, shell history); prefer --private-key-file or \
                     --config-file"
                );
            }
            Some(map)
        }
        (None, Some(path)) => {
            let text = read_text("the config", path)?;
            Some(json_object(
                &format!("--config-file {}", path.display()),
                &text,
            )?)
        }
        (None, None) => None,
    };

    let mut ssh = Map::new();
    let mut set = |key: &str, value: Value| {
        ssh.insert(key.to_string(), value);
    };
    if let Some(host) = &args.host {
        set("host", json!(host));
    }
    if let Some(port) = args.port {
        set("port", json!(port));
    }
    if let Some(username) = &args.username {
        set("username", json!(username));
    }
    if let Some(path) = &args.remote_workspace_path {
        set("remoteWorkspacePath", json!(path));
    }
    if let Some(path) = &args.private_key_file {
        set(
            "privateKey",
            json!(read_secret_file("the private key", path)?),
        );
    }
    if let Some(path) = &args.private_key_passphrase_file {
        let text = read_secret_file("the private key passphrase", path)?;
        // A passphrase file written with `echo` ends with a newline that is not part of it.
        let passphrase = text.strip_suffix('\n').unwrap_or(&text);
        let passphrase = passphrase.strip_suffix('\r').unwrap_or(passphrase);
        set("privateKeyPassphrase", json!(passphrase));
    }
    if let Some(path) = &args.known_hosts_file {
        set(
            "knownHosts",
            json!(read_text("the known_hosts file", path)?),
        );
    }
    if let Some(strict) = args.strict_host_key_checking {
        set("strictHostKeyChecking", json!(strict));
    }
    if let Some(mode) = &args.workspace_mode {
        set("workspaceMode", json!(mode));
    }
    if let Some(path) = &args.in_place_path {
        set("inPlacePath", json!(path));
    }
    if let Some(n) = args.max_sessions {
        set("maxSessions", json!(n));
    }
    if !ssh.is_empty() {
        if let Some(driver) = driver
            && driver != "ssh"
        {
            return Err(Failed::usage(format!(
                "the SSH config flags apply to the ssh driver, not {driver}"
            ))
            .with_hint("give the config as JSON with --config or --config-file")
            .into());
        }
        config.get_or_insert_with(Map::new).extend(ssh);
    }
    Ok(config)
}

async fn create(ctx: &Ctx, client: &Client, args: EnvCreateArgs) -> anyhow::Result<()> {
    let config = build_config(&args.config, Some(&args.driver))?.unwrap_or_default();
    let mut body = Map::new();
    body.insert("name".into(), json!(args.name));
    body.insert("driver".into(), json!(args.driver));
    body.insert("config".into(), Value::Object(config));
    if let Some(d) = &args.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(s) = &args.status {
        body.insert("status".into(), json!(s));
    }
    if let Some(m) = &args.metadata {
        body.insert("metadata".into(), json_value("--metadata", m)?);
    }
    if let Some(c) = args.capacity {
        body.insert("capacity".into(), json!(c));
    }
    if let Some(p) = &args.lease_policy {
        body.insert("leasePolicy".into(), json!(p));
    }
    let company = ctx.company(client).await?;
    let created = client
        .post(&format!("/api/companies/{company}/environments"), &body)
        .await
        .with_context(|| format!("failed to create environment {:?}", args.name))?;
    if ctx.out.json {
        return ctx.out.print_json(&created);
    }
    let env: Environment = decode("environment", &created)?;
    ctx.out.done(format!(
        "created {} environment {} ({})",
        env.driver, env.name, env.id
    ))?;
    if env.driver == berth_core::Driver::Ssh {
        ctx.out.line(format!(
            "  next: `berth env probe {}` to check it, `berth env trust {}` to pin its host key",
            env.id, env.id
        ))?;
    }
    Ok(())
}

async fn get_env(client: &Client, id: EnvironmentId) -> anyhow::Result<Value> {
    client
        .get(&format!("/api/environments/{id}"))
        .await
        .with_context(|| format!("failed to get environment {id}"))
}

async fn show(ctx: &Ctx, client: &Client, reference: &str) -> anyhow::Result<()> {
    let company = ctx.company(client).await?;
    let id = resolve_environment(client, company, reference).await?;
    let value = get_env(client, id).await?;
    if ctx.out.json {
        return ctx.out.print_json(&value);
    }
    print_env(&ctx.out, &value)
}

fn print_env(out: &Output, value: &Value) -> anyhow::Result<()> {
    let env: Environment = decode("environment", value)?;
    let redacted = value
        .get("configRedacted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    out.fields(&[
        ("id", env.id.to_string()),
        ("name", env.name.clone()),
        ("description", opt(&env.description)),
        ("driver", env.driver.to_string()),
        ("status", env.status.to_string()),
        ("lease policy", env.lease_policy.to_string()),
        (
            "capacity",
            env.capacity.map_or("unlimited".into(), |c| c.to_string()),
        ),
        ("created", time(&env.created_at)),
        ("updated", time(&env.updated_at)),
        (
            "config",
            if redacted {
                "(redacted: this token may not read it)".into()
            } else {
                pretty(&env.config)
            },
        ),
        ("metadata", env.metadata.as_ref().map_or("-".into(), pretty)),
    ])
}

async fn update(ctx: &Ctx, client: &Client, args: EnvUpdateArgs) -> anyhow::Result<()> {
    let mut body = Map::new();
    if let Some(config) = build_config(&args.config, args.driver.as_deref())? {
        body.insert("config".into(), Value::Object(config));
    }
    if let Some(n) = &args.name {
        body.insert("name".into(), json!(n));
    }
    if let Some(d) = &args.description {
        let value = if d.is_empty() { Value::Null } else { json!(d) };
        body.insert("description".into(), value);
    }
    if let Some(d) = &args.driver {
        body.insert("driver".into(), json!(d));
    }
    if let Some(s) = &args.status {
        body.insert("status".into(), json!(s));
    }
    if let Some(m) = &args.metadata {
        body.insert("metadata".into(), json_value("--metadata", m)?);
    }
    if let Some(c) = args.capacity {
        body.insert("capacity".into(), json!(c));
    }
    if args.unlimited_capacity {
        body.insert("capacity".into(), Value::Null);
    }
    if let Some(p) = &args.lease_policy {
        body.insert("leasePolicy".into(), json!(p));
    }
    if body.is_empty() {
        return Err(
            Failed::usage("nothing to update: give at least one field to change")
                .with_hint("see `berth env update --help`")
                .into(),
        );
    }
    let company = ctx.company(client).await?;
    let id = resolve_environment(client, company, &args.env).await?;
    let updated = client
        .patch(&format!("/api/environments/{id}"), &body)
        .await
        .with_context(|| format!("failed to update environment {}", args.env))?;
    if ctx.out.json {
        return ctx.out.print_json(&updated);
    }
    let env: Environment = decode("environment", &updated)?;
    ctx.out
        .done(format!("updated environment {} ({})", env.name, env.id))
}

async fn delete(ctx: &Ctx, client: &Client, args: EnvDeleteArgs) -> anyhow::Result<()> {
    let company = ctx.company(client).await?;
    let id = resolve_environment(client, company, &args.env).await?;
    let path = if args.force {
        format!("/api/environments/{id}?force=true")
    } else {
        format!("/api/environments/{id}")
    };
    let body = client.delete(&path).await.map_err(|e| {
        let leases = e
            .details()
            .and_then(|d| d.get("activeLeaseCount"))
            .and_then(Value::as_u64);
        let err = anyhow::Error::new(e);
        match leases {
            Some(n) if !args.force => err.context(format!(
                "failed to delete environment {} ({n} active lease(s); --force expires them first)",
                args.env
            )),
            _ => err.context(format!("failed to delete environment {}", args.env)),
        }
    })?;
    if ctx.out.json {
        return ctx.out.print_json(&deleted_json(&id.to_string(), body));
    }
    ctx.out.done(format!("deleted environment {}", args.env))
}

async fn leases(ctx: &Ctx, client: &Client, args: EnvLeasesArgs) -> anyhow::Result<()> {
    let company = ctx.company(client).await?;
    let id = resolve_environment(client, company, &args.env).await?;
    let path = with_query(
        &format!("/api/environments/{id}/leases"),
        &[("status", args.status.as_deref())],
    );
    let items = client
        .list_all(&path)
        .await
        .with_context(|| format!("failed to list the leases of environment {}", args.env))?;
    if ctx.out.json {
        return ctx.out.print_json(&items);
    }
    let mut rows = Vec::new();
    for item in &items {
        let lease: Lease = decode("lease", item)?;
        rows.push(vec![
            lease.id.to_string(),
            lease.status.to_string(),
            lease.lease_policy.to_string(),
            lease.scope_key.clone(),
            lease.fence.to_string(),
            opt(&lease.run_id),
            time(&lease.acquired_at),
            time(&lease.expires_at),
            opt(&lease.cleanup_status),
            opt(&lease.failure_reason),
        ]);
    }
    ctx.out.table(
        &[
            "ID", "STATUS", "POLICY", "SCOPE", "FENCE", "RUN", "ACQUIRED", "EXPIRES", "CLEANUP",
            "FAILURE",
        ],
        rows,
        "No leases.",
    )
}

/// `POST …/probe`'s result (SPEC §10).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub ok: bool,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub details: Value,
    #[serde(default)]
    pub checks: Vec<ProbeCheck>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProbeCheck {
    pub code: String,
    pub level: String,
    pub message: String,
    #[serde(default)]
    pub detail: Option<Value>,
    #[serde(default)]
    pub hint: Option<String>,
}

impl ProbeResult {
    /// The host key fingerprint the host presented: `details.hostKey.fingerprint`, else the
    /// first `SHA256:…` word of the `host_key` check's detail.
    pub fn presented_fingerprint(&self) -> Option<String> {
        if let Some(fp) = self
            .details
            .pointer("/hostKey/fingerprint")
            .and_then(Value::as_str)
        {
            return Some(fp.to_string());
        }
        let check = self.checks.iter().find(|c| c.code == "host_key")?;
        match check.detail.as_ref()? {
            Value::Object(map) => map
                .get("fingerprint")
                .and_then(Value::as_str)
                .map(str::to_string),
            Value::String(text) => find_fingerprint(text),
            _ => None,
        }
        .or_else(|| find_fingerprint(&check.message))
    }
}

fn find_fingerprint(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '"' | '\''))
        .find(|word| word.starts_with("SHA256:") && word.len() > "SHA256:".len())
        .map(|word| word.trim_end_matches('.').to_string())
}

/// Print a probe result as a check list.
pub fn print_probe(out: &Output, result: &ProbeResult) -> anyhow::Result<()> {
    for check in &result.checks {
        let detail = check.detail.as_ref().map(|d| match d {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        out.check(
            Level::from_probe(&check.level),
            &check.message,
            detail.as_deref(),
            check.hint.as_deref(),
        )?;
    }
    let took = result
        .duration_ms
        .map(|ms| format!(" ({ms} ms)"))
        .unwrap_or_default();
    let verdict = if result.ok { "ok" } else { "FAILED" };
    let summary = if result.summary.is_empty() {
        String::new()
    } else {
        format!(": {}", result.summary)
    };
    out.line(format!(
        "{}{summary}{took}",
        out.bold(&format!("{} probe {verdict}", result.driver))
    ))
}

async fn probe_value(
    ctx: &Ctx,
    client: &Client,
    args: &EnvProbeArgs,
) -> anyhow::Result<(Value, String)> {
    if let Some(reference) = &args.env {
        if build_config(&args.config, None)?.is_some() {
            return Err(Failed::usage(
                "config flags probe an unsaved config; give --driver instead of an environment",
            )
            .with_hint("to change a saved environment use `berth env update` first")
            .into());
        }
        let company = ctx.company(client).await?;
        let id = resolve_environment(client, company, reference).await?;
        let value = client
            .post(&format!("/api/environments/{id}/probe"), &json!({}))
            .await
            .with_context(|| format!("failed to probe environment {reference}"))?;
        return Ok((value, reference.clone()));
    }
    let driver = args.driver.clone().unwrap_or_default();
    let config = build_config(&args.config, Some(&driver))?.unwrap_or_default();
    let company = ctx.company(client).await?;
    let value = client
        .post(
            &format!("/api/companies/{company}/environments/probe-config"),
            &json!({ "driver": driver, "config": config }),
        )
        .await
        .context("failed to probe the config")?;
    Ok((value, format!("unsaved {driver} config")))
}

async fn probe(ctx: &Ctx, client: &Client, args: EnvProbeArgs) -> anyhow::Result<()> {
    let (value, what) = probe_value(ctx, client, &args).await?;
    let result: ProbeResult = decode("probe result", &value)?;
    if ctx.out.json {
        ctx.out.print_json(&value)?;
    } else {
        print_probe(&ctx.out, &result)?;
    }
    if result.ok {
        Ok(())
    } else {
        Err(
            Failed::new(Exit::CheckFailed, format!("probe of {what} failed"))
                .with_hint("fix the checks marked ✗ above (each has a hint where one is known)")
                .into(),
        )
    }
}

async fn trust(ctx: &Ctx, client: &Client, args: EnvTrustArgs) -> anyhow::Result<()> {
    let company = ctx.company(client).await?;
    let id = resolve_environment(client, company, &args.env).await?;
    let value = client
        .post(&format!("/api/environments/{id}/probe"), &json!({}))
        .await
        .with_context(|| format!("failed to probe environment {}", args.env))?;
    let result: ProbeResult = decode("probe result", &value)?;
    let Some(presented) = result.presented_fingerprint() else {
        if !ctx.out.json {
            print_probe(&ctx.out, &result)?;
        }
        return Err(Failed::new(
            Exit::CheckFailed,
            format!("environment {} did not present a host key", args.env),
        )
        .with_hint("the probe must reach the SSH handshake; fix the connection checks above")
        .into());
    };

    let fingerprint = if let Some(expected) = &args.fingerprint {
        if expected.trim() != presented {
            return Err(Failed::new(
                Exit::CheckFailed,
                format!(
                    "the host presents {presented}, not the fingerprint {} you gave; refusing \
                     to trust it",
                    expected.trim()
                ),
            )
            .with_hint(
                "verify the key on the host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)",
            )
            .into());
        }
        presented
    } else if args.yes {
        presented
    } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        if !confirm(&args.env, &presented)? {
            return Err(Failed::new(Exit::Failure, "host key not trusted (declined)").into());
        }
        presented
    } else {
        return Err(Failed::usage(format!(
            "refusing to trust host key {presented} without confirmation"
        ))
        .with_hint(
            "verify it, then pass --fingerprint SHA256:… (or --yes) to confirm non-interactively",
        )
        .into());
    };

    let updated = client
        .post(
            &format!("/api/environments/{id}/trust-host-key"),
            &json!({ "fingerprint": fingerprint }),
        )
        .await
        .with_context(|| format!("failed to trust the host key of environment {}", args.env))?;
    if ctx.out.json {
        return ctx.out.print_json(&updated);
    }
    ctx.out.done(format!(
        "trusted host key {fingerprint} for environment {}",
        args.env
    ))
}

/// Ask on the terminal (prompt on stderr so stdout stays clean).
fn confirm(env: &str, fingerprint: &str) -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(
        err,
        "The host of environment {env} presents the key\n  {fingerprint}\n\
         Trust this key for future connections? [y/N] "
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("failed to read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(value: Value) -> ProbeResult {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_fingerprint_comes_from_details_first() {
        let r = result(json!({
            "ok": false,
            "details": {"hostKey": {"fingerprint": "SHA256:fromDetails"}},
            "checks": [{"code": "host_key", "level": "error", "message": "m",
                        "detail": "presented SHA256:fromCheck"}]
        }));
        assert_eq!(
            r.presented_fingerprint().as_deref(),
            Some("SHA256:fromDetails")
        );
    }

    #[test]
    fn the_fingerprint_falls_back_to_the_host_key_check() {
        let r = result(json!({
            "ok": false,
            "checks": [
                {"code": "tcp_connect", "level": "info", "message": "connected"},
                {"code": "host_key", "level": "error",
                 "message": "Host key is not trusted.",
                 "detail": "The host presented SHA256:abc+/def. Pin it with berth env trust."}
            ]
        }));
        assert_eq!(
            r.presented_fingerprint().as_deref(),
            Some("SHA256:abc+/def")
        );

        let r = result(json!({
            "ok": false,
            "checks": [{"code": "host_key", "level": "warn", "message": "m",
                        "detail": {"fingerprint": "SHA256:obj"}}]
        }));
        assert_eq!(r.presented_fingerprint().as_deref(), Some("SHA256:obj"));
    }

    #[test]
    fn no_host_key_check_means_no_fingerprint() {
        let r = result(json!({
            "ok": false,
            "checks": [{"code": "tcp_connect", "level": "error", "message": "refused"}]
        }));
        assert_eq!(r.presented_fingerprint(), None);
    }

    #[test]
    fn ssh_flags_layer_over_the_json_config() {
        let args = ConfigArgs {
            config: Some(r#"{"host":"a","port":22,"username":"u"}"#.into()),
            port: Some(2222),
            strict_host_key_checking: Some(false),
            ..ConfigArgs::default()
        };
        let config = build_config(&args, Some("ssh")).unwrap().unwrap();
        assert_eq!(config["host"], "a");
        assert_eq!(config["port"], 2222);
        assert_eq!(config["strictHostKeyChecking"], false);
    }

    #[test]
    fn ssh_flags_are_refused_for_other_drivers_and_nothing_is_no_config() {
        let args = ConfigArgs {
            host: Some("h".into()),
            ..ConfigArgs::default()
        };
        assert!(build_config(&args, Some("local")).is_err());
        assert_eq!(
            build_config(&ConfigArgs::default(), Some("ssh")).unwrap(),
            None
        );
    }
}
