//! `process`: any command, as Paperclip's process adapter (`{command, args, env, timeoutSec,
//! graceSec}`). Its output is passed through raw; the run's outcome is its exit status, so the
//! parser never reports a result, a session or an unknown session. The prompt goes to stdin.

use crate::config::{
    DEFAULT_GRACE_SEC, base_invocation, env_map, object, str_opt, string_list, u64_opt,
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
        if command.contains(['\0', '\n', '\r']) {
            return Err(AdapterError::config(
                "command",
                "must not contain NUL or line breaks",
            ));
        }
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
            timeout_sec: u64_opt(obj, "timeoutSec")?.unwrap_or(0),
            grace_sec: u64_opt(obj, "graceSec")?.unwrap_or(DEFAULT_GRACE_SEC),
            instructions_file_path: None,
            max_turns_per_run: None,
            assets: std::collections::BTreeMap::new(),
        };
        let mut inv = base_invocation(&common, ctx, &[], ctx.prompt.clone())?;
        inv.args = string_list(obj, "args")?.unwrap_or_default();
        Ok(inv)
    }

    fn parser(&self, _invocation: &Invocation) -> Box<dyn OutputParser> {
        Box::new(RawParser)
    }
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
