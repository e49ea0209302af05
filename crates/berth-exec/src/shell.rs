//! The one way Berth builds shell text: [`quote`] (and its byte form [`quote_bytes`] for paths
//! that are not UTF-8) turns any value into one POSIX `sh` word. Every script that splices a
//! value does it through these, or passes the value as a positional parameter (`sh -c '…"$1"…'
//! sh value`); nothing else escapes for the shell.
//!
//! A NUL byte cannot be carried by any shell word (an argv entry ends at it; `sh` drops or
//! truncates it in script text), so a value containing one has no faithful quoting. Callers
//! refuse such values with a clear error ([`check_no_nul`]); the transports refuse a script
//! containing one as a last line of defence rather than run something other than what was
//! asked.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// What single quotes cannot hold, written so `sh` glues it back: close the quote, a
/// double-quoted `'`, reopen.
const ESCAPED_QUOTE: &str = "'\"'\"'";

/// Quote `s` as one POSIX `sh` word: wrapped in single quotes, each embedded `'` written as
/// `'"'"'`. Nothing inside single quotes is special to `sh` (no `$`, backtick, backslash, glob
/// or newline handling), so this is the only escape needed. `s` must not contain NUL (see the
/// module docs); a leading `-` is the caller's to end with `--` where the command takes options.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for (i, part) in s.split('\'').enumerate() {
        if i > 0 {
            out.push_str(ESCAPED_QUOTE);
        }
        out.push_str(part);
    }
    out.push('\'');
    out
}

/// [`quote`] for arbitrary bytes (a path that is not UTF-8). Same rule, byte for byte.
pub fn quote_bytes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for (i, part) in s.split(|b| *b == b'\'').enumerate() {
        if i > 0 {
            out.extend_from_slice(ESCAPED_QUOTE.as_bytes());
        }
        out.extend_from_slice(part);
    }
    out.push(b'\'');
    out
}

/// [`quote_bytes`] for an `OsStr` (a path as the OS gave it).
pub fn quote_os(s: &OsStr) -> OsString {
    OsString::from_vec(quote_bytes(s.as_bytes()))
}

/// `exec <program> <args>…` with every word quoted: how an argv becomes the command line the
/// [launcher](crate::launcher) runs. A program starting with `-` is the caller's to refuse
/// (`exec --` is not portable: dash takes `--` as the program).
pub fn exec_command<S: AsRef<str>>(program: &str, args: &[S]) -> String {
    let mut command = format!("exec {}", quote(program));
    for arg in args {
        command.push(' ');
        command.push_str(&quote(arg.as_ref()));
    }
    command
}

/// A value that cannot be passed to a command because it contains a NUL byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} contains a NUL byte, which no command argument, path or shell word can carry")]
pub struct NulByte {
    /// What the value is, e.g. `the working directory`.
    pub what: String,
}

/// `Err` naming `what` when `value` contains a NUL byte.
pub fn check_no_nul(what: &str, value: impl AsRef<[u8]>) -> Result<(), NulByte> {
    if value.as_ref().contains(&0) {
        return Err(NulByte {
            what: what.to_owned(),
        });
    }
    Ok(())
}

/// Whether `key` is a valid environment variable name: `^[A-Za-z_][A-Za-z0-9_]*$` (the one
/// rule, owned by `berth-core`).
pub use berth_core::adapters::is_valid_env_key;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_single_quotes() {
        assert_eq!(quote("a'b"), "'a'\"'\"'b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("''"), "''\"'\"''\"'\"''");
        assert_eq!(quote("$HOME `x` \\n"), "'$HOME `x` \\n'");
    }

    #[test]
    fn byte_and_str_forms_agree() {
        for s in ["", "a'b", "'", "x'; rm -rf /; '", "é'ö"] {
            assert_eq!(quote_bytes(s.as_bytes()), quote(s).into_bytes());
            assert_eq!(quote_os(OsStr::new(s)), OsString::from(quote(s)));
        }
    }

    #[test]
    fn nul_is_refused_by_name() {
        assert!(check_no_nul("x", "fine").is_ok());
        let err = check_no_nul("the working directory", "a\0b").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the working directory contains a NUL")
        );
    }

    #[test]
    fn env_keys_are_validated() {
        assert!(is_valid_env_key("PATH"));
        assert!(is_valid_env_key("_a1"));
        assert!(!is_valid_env_key("1A"));
        assert!(!is_valid_env_key("A-B"));
        assert!(!is_valid_env_key(""));
        assert!(!is_valid_env_key("A B"));
    }
}
