//! Configuration layering: defaults < berth.toml < BERTH_* environment < flags.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on any problem"
)]

use std::path::{Path, PathBuf};

use berth::config::{
    ConfigWarning, DEFAULT_BIND, DEFAULT_SERVER, LogFormat, Overrides, env_from_pairs, load_with,
};

fn home_with_file(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("berth.toml"), text).unwrap();
    dir
}

fn flags_home(home: &Path) -> Overrides {
    Overrides {
        home: Some(home.to_path_buf()),
        ..Overrides::default()
    }
}

#[test]
fn defaults_apply_when_nothing_is_configured() {
    let home = tempfile::tempdir().unwrap();
    let s = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap();
    assert_eq!(s.bind, DEFAULT_BIND);
    assert_eq!(s.server, DEFAULT_SERVER);
    assert_eq!(
        s.database_url,
        format!("sqlite://{}", home.path().join("berth.db").display())
    );
    assert!(s.workspace_roots.is_empty());
    assert_eq!(s.log_format, LogFormat::Human);
    assert!(s.token.is_none());
    assert!(s.master_key.is_none());
    assert!(!s.config_file_exists);
    assert!(s.warnings.is_empty());
}

#[test]
fn home_defaults_to_dot_berth_under_the_user_home_and_berth_home_overrides_it() {
    let s = load_with(
        &Overrides::default(),
        env_from_pairs([("HOME", "/nonexistent/u")]),
    )
    .unwrap();
    assert_eq!(s.home, PathBuf::from("/nonexistent/u/.berth"));
    let s = load_with(
        &Overrides::default(),
        env_from_pairs([("HOME", "/nonexistent/u"), ("BERTH_HOME", "/nonexistent/b")]),
    )
    .unwrap();
    assert_eq!(s.home, PathBuf::from("/nonexistent/b"));
    assert_eq!(s.config_file, PathBuf::from("/nonexistent/b/berth.toml"));
}

#[test]
fn file_overrides_defaults() {
    let home = home_with_file(
        r#"
bind = "127.0.0.1:9000"
databaseUrl = "postgres://berth@db/berth"
workspaceRoots = ["/srv/work", "/home/dev"]
logFormat = "json"
company = "acme"
"#,
    );
    let s = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap();
    assert!(s.config_file_exists);
    assert_eq!(s.bind, "127.0.0.1:9000");
    assert_eq!(s.database_url, "postgres://berth@db/berth");
    assert_eq!(
        s.workspace_roots,
        vec![PathBuf::from("/srv/work"), PathBuf::from("/home/dev")]
    );
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.company.as_deref(), Some("acme"));
    // The CLI talks to the server where the configured server listens.
    assert_eq!(s.server, "http://127.0.0.1:9000");
}

#[test]
fn environment_overrides_the_file() {
    let home = home_with_file(
        "bind = \"127.0.0.1:9000\"\nserver = \"http://file:1\"\ndatabaseUrl = \"sqlite:///file.db\"\n",
    );
    let s = load_with(
        &flags_home(home.path()),
        env_from_pairs([
            ("BERTH_BIND", "127.0.0.1:9100"),
            ("BERTH_SERVER", "http://env:2/"),
            ("BERTH_DATABASE_URL", "sqlite:///env.db"),
            ("BERTH_WORKSPACE_ROOTS", "/a:/b"),
            ("BERTH_LOG_FORMAT", "json"),
            ("BERTH_TOKEN", "tok-env"),
            ("BERTH_MASTER_KEY", "00ff"),
        ]),
    )
    .unwrap();
    assert_eq!(s.bind, "127.0.0.1:9100");
    assert_eq!(s.server, "http://env:2", "trailing slash is trimmed");
    assert_eq!(s.database_url, "sqlite:///env.db");
    assert_eq!(
        s.workspace_roots,
        vec![PathBuf::from("/a"), PathBuf::from("/b")]
    );
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(
        s.token.as_ref().map(|t| t.expose().as_str()),
        Some("tok-env")
    );
    assert_eq!(s.server_config().master_key_hex.as_deref(), Some("00ff"));
}

#[test]
fn flags_override_the_environment() {
    use std::os::unix::fs::PermissionsExt;
    let home = home_with_file("server = \"http://file:1\"\n");
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "tok-flag\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let flags = Overrides {
        home: Some(home.path().to_path_buf()),
        server: Some("http://flag:3".into()),
        token_file: Some(token_file),
        company: Some("flagco".into()),
        bind: Some("127.0.0.1:9200".into()),
        database_url: Some("sqlite:///flag.db".into()),
        workspace_roots: vec![PathBuf::from("/flag")],
        log_format: Some(LogFormat::Human),
        timeout_secs: Some(5),
    };
    let s = load_with(
        &flags,
        env_from_pairs([
            ("BERTH_SERVER", "http://env:2"),
            ("BERTH_TOKEN", "tok-env"),
            ("BERTH_COMPANY", "envco"),
            ("BERTH_BIND", "127.0.0.1:9100"),
            ("BERTH_DATABASE_URL", "sqlite:///env.db"),
            ("BERTH_WORKSPACE_ROOTS", "/env"),
            ("BERTH_LOG_FORMAT", "json"),
            ("BERTH_TIMEOUT", "60"),
        ]),
    )
    .unwrap();
    assert_eq!(s.server, "http://flag:3");
    assert_eq!(
        s.token.as_ref().map(|t| t.expose().as_str()),
        Some("tok-flag")
    );
    assert_eq!(s.company.as_deref(), Some("flagco"));
    assert_eq!(s.bind, "127.0.0.1:9200");
    assert_eq!(s.database_url, "sqlite:///flag.db");
    assert_eq!(s.workspace_roots, vec![PathBuf::from("/flag")]);
    assert_eq!(s.log_format, LogFormat::Human);
    assert_eq!(s.timeout_secs, 5);
}

#[test]
fn the_home_flag_beats_berth_home() {
    let flag_home = tempfile::tempdir().unwrap();
    std::fs::write(
        flag_home.path().join("berth.toml"),
        "bind = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let s = load_with(
        &flags_home(flag_home.path()),
        env_from_pairs([("BERTH_HOME", "/nonexistent/env-home")]),
    )
    .unwrap();
    assert_eq!(s.home, flag_home.path());
    assert_eq!(s.bind, "127.0.0.1:1");
}

#[test]
fn server_config_carries_the_layered_values() {
    let home = home_with_file("workspaceRoots = [\"/w\"]\n");
    let s = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap();
    let c = s.server_config();
    assert_eq!(c.berth_home, home.path());
    assert_eq!(c.workspace_roots, vec![PathBuf::from("/w")]);
    assert!(c.database_url.starts_with("sqlite://"));
    assert_eq!(c.master_key_hex, None);
}

#[test]
fn unknown_keys_are_reported_with_their_dotted_path() {
    let home = home_with_file(
        "databseUrl = \"sqlite:///typo.db\"\nbind = \"127.0.0.1:9000\"\n\n[log]\nformat = \"json\"\n",
    );
    let s = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap();
    let paths: Vec<String> = s
        .warnings
        .iter()
        .map(|w| match w {
            ConfigWarning::UnknownKey { path, .. } => path.clone(),
        })
        .collect();
    assert!(paths.contains(&"databseUrl".to_string()), "{paths:?}");
    assert!(paths.iter().any(|p| p.starts_with("log")), "{paths:?}");
    // The known key still applies; the misspelt one does not.
    assert_eq!(s.bind, "127.0.0.1:9000");
    assert!(s.database_url.ends_with("berth.db"));
    let text = s.warnings[0].to_string();
    assert!(text.contains("unknown key `databseUrl`"), "{text}");
    assert!(text.contains("berth.toml"), "{text}");
}

#[test]
fn a_nested_unknown_key_is_reported_with_its_full_path() {
    let home = home_with_file("[log]\nformat = \"json\"\n\n[log.sinks]\nfile = \"/tmp/x\"\n");
    let s = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap();
    let text: Vec<String> = s.warnings.iter().map(ToString::to_string).collect();
    assert!(!text.is_empty());
    assert!(text.iter().all(|t| t.contains("`log")), "{text:?}");
}

#[test]
fn a_value_of_the_wrong_type_is_an_error_naming_the_key() {
    let home = home_with_file("bind = \"127.0.0.1:1\"\nworkspaceRoots = 5\n");
    let err = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("`workspaceRoots`"), "{text}");
    assert!(text.contains("line 2"), "{text}");

    let home = home_with_file("logFormat = \"xml\"\n");
    let err = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap_err();
    assert!(format!("{err:#}").contains("`logFormat`"), "{err:#}");
}

#[test]
fn a_master_key_in_the_file_is_refused() {
    let home = home_with_file(&format!("masterKey = \"{}\"\n", "ab".repeat(32)));
    let err = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("masterKey"), "{text}");
    assert!(text.contains("BERTH_MASTER_KEY"), "{text}");
    assert!(
        !text.contains(&"ab".repeat(32)),
        "the key itself is never echoed: {text}"
    );
}

#[test]
fn a_syntax_error_names_the_file() {
    let home = home_with_file("bind = \n");
    let err = load_with(&flags_home(home.path()), env_from_pairs([])).unwrap_err();
    assert!(format!("{err:#}").contains("berth.toml"), "{err:#}");
}

#[test]
fn a_bad_environment_value_is_an_error_naming_the_variable() {
    let home = tempfile::tempdir().unwrap();
    let err = load_with(
        &flags_home(home.path()),
        env_from_pairs([("BERTH_LOG_FORMAT", "xml")]),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("BERTH_LOG_FORMAT"), "{err:#}");
}

#[test]
fn a_wildcard_bind_gives_a_loopback_server_url() {
    let home = tempfile::tempdir().unwrap();
    let s = load_with(
        &flags_home(home.path()),
        env_from_pairs([("BERTH_BIND", "0.0.0.0:7500")]),
    )
    .unwrap();
    assert_eq!(s.server, "http://127.0.0.1:7500");
}

#[test]
fn the_token_comes_from_a_private_file_or_the_environment_never_argv() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "  from-file\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home = home_with_file(&format!(
        "tokenFile = {:?}\n",
        token_file.display().to_string()
    ));
    let token = |o: &Overrides, env: Vec<(&str, &str)>| {
        load_with(o, env_from_pairs(env))
            .unwrap()
            .token
            .map(|t| t.expose().clone())
    };
    // berth.toml tokenFile, trimmed.
    assert_eq!(
        token(&flags_home(home.path()), vec![]).as_deref(),
        Some("from-file")
    );
    // BERTH_TOKEN wins over the files named by config.
    assert_eq!(
        token(&flags_home(home.path()), vec![("BERTH_TOKEN", "from-env")]).as_deref(),
        Some("from-env")
    );
    // --token-file wins over everything.
    let other = dir.path().join("other");
    std::fs::write(&other, "from-flag").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o400)).unwrap();
    let flags = Overrides {
        token_file: Some(other.clone()),
        ..flags_home(home.path())
    };
    assert_eq!(
        token(&flags, vec![("BERTH_TOKEN", "from-env")]).as_deref(),
        Some("from-flag")
    );
    // A file others can read is refused, naming the fix.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = load_with(&flags_home(home.path()), env_from_pairs([]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("from-file"), "{err}");
}
