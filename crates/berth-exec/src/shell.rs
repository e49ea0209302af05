//! POSIX shell quoting and env-key validation, shared by every script Berth builds.

/// Quote `s` as one POSIX `sh` word: wrapped in single quotes, each embedded `'` written as
/// `'"'"'`. Nothing inside single quotes is special to `sh`, so this is the only escape needed.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\"'\"'");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Whether `key` is a valid environment variable name: `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn is_valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_single_quotes() {
        assert_eq!(quote("a'b"), "'a'\"'\"'b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME `x` \\n"), "'$HOME `x` \\n'");
    }

    #[test]
    fn quoted_values_round_trip_through_sh() {
        for v in [
            "plain",
            "it's",
            "a\nb",
            "$(echo pwned)",
            "'''",
            "\\\"",
            " spaced  ",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(v)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), v);
        }
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
