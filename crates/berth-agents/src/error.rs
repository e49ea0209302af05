//! The one error type of this layer: everything that can be wrong with an adapter config or a
//! build request. Messages read as "failed to …"-style fragments that name the offending key.

/// Why an adapter could not build a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// `adapterConfig.<key>` has the wrong type or an invalid value.
    #[error("invalid adapterConfig.{key}: {reason}")]
    InvalidConfig { key: String, reason: String },

    /// A required `adapterConfig` key is missing.
    #[error("adapterConfig.{key} is required for {adapter}")]
    MissingConfig {
        adapter: &'static str,
        key: &'static str,
    },

    /// `adapterConfig.env` sets a variable that changes how the shell or loader behaves.
    #[error(
        "adapterConfig.env.{key} is not allowed: it changes how the remote shell or dynamic loader behaves"
    )]
    ForbiddenEnvKey { key: String },

    /// `adapterConfig.env` sets a variable Berth reserves for itself.
    #[error("adapterConfig.env.{key} is reserved: Berth sets BERTH_* variables itself")]
    ReservedEnvKey { key: String },

    /// An asset was supplied that this adapter cannot point its CLI at.
    #[error("{adapter} has no use for an asset named '{key}' (known: {known})")]
    UnknownAsset {
        adapter: &'static str,
        key: String,
        known: String,
    },

    /// Assets were supplied but the environment has no asset directory to receive them.
    #[error("{adapter} needs the environment's asset directory: {why}")]
    NoAssetDir { adapter: &'static str, why: String },

    /// The build request itself is unusable (e.g. an empty working directory).
    #[error("invalid build request: {0}")]
    InvalidRequest(String),
}

impl AdapterError {
    /// The dotted JSON path of the offending field, e.g. `adapterConfig.timeoutSec` or
    /// `adapterConfig.extraArgs.2`; `adapterConfig` when no single key is at fault.
    pub fn field_path(&self) -> String {
        match self {
            Self::InvalidConfig { key, .. } if !key.is_empty() => format!("adapterConfig.{key}"),
            Self::MissingConfig { key, .. } => format!("adapterConfig.{key}"),
            Self::ForbiddenEnvKey { key } | Self::ReservedEnvKey { key } => {
                format!("adapterConfig.env.{key}")
            }
            Self::UnknownAsset { key, .. } => format!("adapterConfig.assets.{key}"),
            Self::InvalidConfig { .. } | Self::NoAssetDir { .. } | Self::InvalidRequest(_) => {
                "adapterConfig".to_string()
            }
        }
    }

    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
