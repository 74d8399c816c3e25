//! The settings' tests: precedence, validation, redaction.

use clap::Parser;

use super::catalogue::file_keys;
use super::resolve::read_file;
use super::*;

fn args(list: &[&str]) -> SettingsArgs {
    let mut all = vec!["rethread"];
    all.extend_from_slice(list);
    Cli::try_parse_from(all).unwrap().settings
}

#[test]
fn defaults_fill_what_nothing_sets() {
    let s = Settings::resolve(SettingsArgs::default(), SettingsArgs::default()).unwrap();
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.upstream.url.to_string(), "https://api.openai.com/");
    assert_eq!(s.store.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(s.capture.body_limit, 64 << 20);
}

#[test]
fn flags_work_on_either_side_of_a_subcommand() {
    for argv in [
        &["rethread", "check", "--upstream", "http://u:1"][..],
        &["rethread", "--upstream", "http://u:1", "check"],
        &[
            "rethread",
            "explain",
            "--turn",
            "t.json",
            "r.json",
            "--upstream",
            "http://u:1",
        ],
    ] {
        let cli = Cli::try_parse_from(argv).unwrap();
        assert_eq!(
            cli.settings.upstream.as_deref(),
            Some("http://u:1"),
            "{argv:?}"
        );
        assert!(cli.command.is_some());
    }
}

#[test]
fn flags_beat_the_file() {
    let file: SettingsArgs =
        toml::from_str("capacity = 5\nretention = \"2s\"\nlisten = \"127.0.0.1:1\"").unwrap();
    let s = Settings::resolve(args(&["--capacity", "7"]), file).unwrap();
    assert_eq!(s.store.capacity, 7);
    assert_eq!(s.store.retention, Duration::from_secs(2));
    assert_eq!(s.server.listen.port(), 1);
}

#[test]
fn the_documented_config_file_holds_the_defaults() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/rethread.toml");
    let documented = Settings::resolve(SettingsArgs::default(), read_file(&path).unwrap()).unwrap();
    let defaults = Settings::resolve(SettingsArgs::default(), SettingsArgs::default()).unwrap();
    assert_eq!(documented.describe(), defaults.describe());
}

#[test]
fn the_azure_example_config_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/azure.toml");
    let s = Settings::resolve(SettingsArgs::default(), read_file(&path).unwrap()).unwrap();
    assert_eq!(s.upstream.url.host(), Some("my-resource.openai.azure.com"));
}

#[test]
fn check_prints_a_value_for_every_file_key() {
    let s = Settings::resolve(SettingsArgs::default(), SettingsArgs::default()).unwrap();
    for key in file_keys() {
        assert!(s.value_of(&key).is_some(), "no value for `{key}`");
    }
    assert_eq!(s.describe().lines().count(), file_keys().count());
}

#[test]
fn unknown_file_keys_are_named() {
    let err = toml::from_str::<SettingsArgs>("capacty = 5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("capacty"), "{err}");
}

#[test]
fn a_shared_store_needs_a_tenant_secret() {
    let args = |secret: Option<&str>| SettingsArgs {
        store: Some("redis://u:pw@127.0.0.1:6379/0".parse().unwrap()),
        tenant_secret: secret.map(|s| s.parse().unwrap()),
        ..Default::default()
    };
    let err = Settings::resolve(args(None), SettingsArgs::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tenant_secret"), "{err}");
    let ok = Settings::resolve(args(Some("s")), SettingsArgs::default()).unwrap();
    assert!(!ok.describe().contains("pw@"), "{}", ok.describe());
    let cluster = SettingsArgs {
        store: Some("rediss+cluster://u:pw@h1:7000,h2:7001".parse().unwrap()),
        tenant_secret: Some("s".parse().unwrap()),
        ..Default::default()
    };
    let cluster = Settings::resolve(cluster, SettingsArgs::default()).unwrap();
    assert!(matches!(cluster.store.kind, StoreKind::Redis(_)));
    assert!(!cluster.describe().contains("pw"), "{}", cluster.describe());
    let bad = SettingsArgs {
        store: Some("postgres://x".parse().unwrap()),
        ..Default::default()
    };
    assert!(Settings::resolve(bad, SettingsArgs::default()).is_err());
}

#[test]
fn units_parse() {
    assert_eq!(
        "500ms".parse::<HumanDuration>().unwrap().0,
        Duration::from_millis(500)
    );
    assert_eq!(
        "30d".parse::<HumanDuration>().unwrap().0,
        Duration::from_secs(2_592_000)
    );
    assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
    assert!("5 parsecs".parse::<HumanDuration>().is_err());
}

#[test]
fn secrets_and_passwords_are_redacted() {
    let s: Secret = "hunter2".parse().unwrap();
    assert_eq!(format!("{s:?}"), "*****");
    assert_eq!(
        redact_url("redis://u:pw@h:6379/0"),
        "redis://u:*****@h:6379/0"
    );
}

#[test]
fn model_patterns_match_whole_names_with_stars() {
    let p = ModelPatterns::non_reasoning();
    for model in [
        "gpt-4.1",
        "GPT-4o-mini",
        "gpt-3.5-turbo",
        "chatgpt-4o-latest",
        "gpt-5-chat-latest",
    ] {
        assert!(p.matches(model), "{model}");
    }
    for model in [
        "gpt-5",
        "o4-mini",
        "gpt-5.1-codex",
        "o3",
        "my-gpt4-deployment",
        "",
    ] {
        assert!(!p.matches(model), "{model}");
    }
    let file: SettingsArgs = toml::from_str("non_reasoning_models = [\"my-*\", \"x\"]").unwrap();
    assert!(file.non_reasoning_models.unwrap().matches("my-deployment"));
    let flag = args(&["--non-reasoning-models", "a*, b"]);
    assert_eq!(flag.non_reasoning_models.unwrap().to_string(), "a*,b");
    assert!(!"".parse::<ModelPatterns>().unwrap().matches("gpt-4"));
}

#[test]
fn a_bad_upstream_is_refused() {
    for bad in ["ftp://x", "not a url", "http://h/?q=1", "https://user:pw@h"] {
        let a = SettingsArgs {
            upstream: Some(bad.into()),
            ..Default::default()
        };
        assert!(
            Settings::resolve(a, SettingsArgs::default()).is_err(),
            "{bad}"
        );
    }
}
