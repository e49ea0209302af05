//! `process`: any command, as Paperclip's process adapter (`{command, args, env, timeoutSec,
//! graceSec}`). Its output is passed through raw; the run's outcome is its exit status, so the
//! parser never reports a result, a session or an unknown session. The prompt goes to stdin.

use crate::config::{
    base_invocation, check_command, env_map, grace_sec, object, str_opt, string_list, timeout_sec,
};
use crate::event::{Event, Stream};
use crate::{Adapter, AdapterError, BuildContext, CommonConfig, Invocation, OutputParser};

pub const ADAPTER_TYPE: &str = "process";

#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessAdapter;

impl Adapter for ProcessAdapter {
    fn adapter_type(&self) -> &'static str {
        ADAPTER_TYPE
    }

    fn asset_keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Invocation, AdapterError> {
        let obj = object(&ctx.adapter_config)?;
        let command = str_opt(obj, "command")?.ok_or(AdapterError::MissingConfig {
            adapter: ADAPTER_TYPE,
            key: "command",
        })?;
        check_command(&command)?;
        if !ctx.local_assets.is_empty() {
            return Err(AdapterError::UnknownAsset {
                adapter: ADAPTER_TYPE,
                key: ctx
                    .local_assets
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                known: String::new(),
            });
        }
        let common = CommonConfig {
            command,
            model: None,
            env: env_map(obj)?,
            extra_args: Vec::new(),
            timeout_sec: timeout_sec(obj)?,
            grace_sec: grace_sec(obj)?,
            instructions_file_path: None,
            max_turns_per_run: None,
            assets: std::collections::BTreeMap::new(),
        };
        let mut inv = base_invocation(&common, ctx, &[], ctx.prompt.clone())?;
        inv.args = args(obj)?;
        Ok(inv)
    }

    fn parser(&self, _invocation: &Invocation) -> Box<dyn OutputParser> {
        Box::new(RawParser)
    }
}

/// `args`: strings without NUL (no argv can carry one). Unlike an `extraArgs` flag, an
/// argument may span lines (`sh -c` with a script is the common use).
pub(crate) fn args(
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>, AdapterError> {
    let args = string_list(obj, "args")?.unwrap_or_default();
    for (i, arg) in args.iter().enumerate() {
        if arg.contains('\0') {
            return Err(AdapterError::config(
                format!("args.{i}"),
                "must not contain NUL",
            ));
        }
    }
    Ok(args)
}

/// Passes every line through as [`Event::Output`].
#[derive(Debug, Default)]
pub struct RawParser;

impl OutputParser for RawParser {
    fn parse_line(&mut self, stream: Stream, line: &str) -> Vec<Event> {
        vec![Event::Output {
            stream,
            line: line.to_string(),
        }]
    }

    fn is_terminal_result(&self) -> bool {
        false
    }

    fn unknown_session(&self) -> bool {
        false
    }

    fn session_id(&self) -> Option<&str> {
        None
    }
}
