//! Judging a stored `adapterConfig` before any run: what the server calls on create and patch so
//! a value a run would refuse (or one that could not be run safely) is refused at once, naming
//! its field.

use serde_json::Value;

use crate::config::{object, str_opt};
use crate::error::AdapterError;
use crate::invocation::BuildContext;

/// Validate `config` for `adapter_type` exactly as a run would judge it, and bound every
/// number: a dry build with secret references (resolved only when a run starts) stood in for.
/// Every key is checked even while a required one (the `process` adapter's `command`) is still
/// missing: an agent may be configured in steps, but never with a bad value.
pub fn validate_config(adapter_type: &str, config: &Value) -> Result<(), AdapterError> {
    let Some(adapter) = crate::adapter(adapter_type) else {
        return Err(AdapterError::InvalidRequest(format!(
            "unknown adapter type \"{adapter_type}\""
        )));
    };
    object(config)?;
    let mut config = match config {
        Value::Null => Value::Object(serde_json::Map::new()),
        other => other.clone(),
    };
    if let Some(Value::Object(env)) = config.get_mut("env") {
        for value in env.values_mut() {
            let is_ref = value.get("type").and_then(Value::as_str) == Some("secret_ref");
            if is_ref {
                *value = Value::String("secret".into());
            }
        }
    }
    if let Value::Object(obj) = &mut config
        && str_opt(obj, "command")?.is_none()
        && adapter_type == crate::process::ADAPTER_TYPE
    {
        // Stand in for the missing command so the build goes on to judge every other key.
        obj.insert("command".into(), Value::String("true".into()));
    }
    let mut ctx = BuildContext::new(config, "prompt", "/berth/validate");
    ctx.assets_dir_on_environment = Some("/berth/validate/.berth/assets".into());
    match adapter.build(&ctx) {
        Ok(_) | Err(AdapterError::MissingConfig { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
