//! The `berth` command's exit codes. They are part of its interface: scripts branch on them,
//! so a code never changes meaning.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | usage error (bad flags or arguments) |
//! | 3 | not found (HTTP 404) |
//! | 4 | conflict (HTTP 409), e.g. a duplicate name or active leases |
//! | 5 | invalid input (HTTP 400/422), e.g. an invalid environment config |
//! | 6 | unauthorized or forbidden (HTTP 401/403) |
//! | 7 | the server is unreachable |
//! | 8 | a probe or check failed (`env probe`, `env trust`, `doctor`) |
//! | 9 | a followed run ended failed, timed out or cancelled (`run --follow`, `runs logs --follow`) |

use std::fmt;

/// One documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    NotFound = 3,
    Conflict = 4,
    Invalid = 5,
    Unauthorized = 6,
    Unreachable = 7,
    CheckFailed = 8,
    RunFailed = 9,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code for an HTTP error status.
    pub fn for_status(status: u16) -> Exit {
        match status {
            404 => Exit::NotFound,
            409 => Exit::Conflict,
            400 | 422 => Exit::Invalid,
            401 | 403 => Exit::Unauthorized,
            _ => Exit::Failure,
        }
    }
}

/// The text shown after `berth --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other failure
  2  usage error
  3  not found (404)
  4  conflict (409), e.g. duplicate name, active leases
  5  invalid input (400/422), e.g. an invalid environment config
  6  unauthorized or forbidden (401/403)
  7  server unreachable
  8  probe or check failed (env probe, env trust, doctor)
  9  a followed run did not succeed (run --follow, runs logs --follow)";

/// A failure that carries its own exit code and hint, for failures that are not HTTP errors
/// (a failed probe, a refused confirmation, a usage problem found after parsing).
#[derive(Debug)]
pub struct Failed {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl Failed {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}
