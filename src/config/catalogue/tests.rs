//! The settings' declarations are consistent, and the documented config file agrees with them.

use std::path::PathBuf;

use clap::Parser;

use super::*;
use crate::config::{Cli, Settings};

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn every_setting_has_a_flag_and_variable_named_after_its_key_a_meaning_and_a_default() {
    let all = settings();
    assert!(all.len() > 40, "{all:?}");
    for setting in all {
        assert_eq!(setting.flag, setting.key.replace('_', "-"), "{setting:?}");
        assert_eq!(
            setting.env,
            format!("RETHREAD_{}", setting.key.to_uppercase()),
            "{setting:?}"
        );
        assert!(!setting.meaning.is_empty(), "{setting:?}");
        assert!(!setting.default.is_empty(), "{setting:?}");
    }
}

/// The value a default names, when it is one code span (`` `30s` ``, not `` `0` (one per…) ``).
fn literal(default: &str) -> Option<&str> {
    let value = default.strip_prefix('`')?.strip_suffix('`')?;
    (!value.contains('`')).then_some(value)
}

#[test]
fn the_defaults_the_help_names_are_the_defaults_in_force() {
    let defaults = Settings::resolve(SettingsArgs::default(), SettingsArgs::default()).unwrap();
    let mut checked = 0;
    for setting in settings() {
        let Some(value) = literal(&setting.default) else {
            continue;
        };
        let flag = format!("--{}", setting.flag);
        let given = Cli::try_parse_from(["rethread", &flag, value]).unwrap();
        let resolved = Settings::resolve(given.settings, SettingsArgs::default()).unwrap();
        assert_eq!(resolved.describe(), defaults.describe(), "{flag} {value}");
        checked += 1;
    }
    assert!(checked > 30, "only {checked} defaults are literal values");
}

#[test]
fn the_documented_config_file_holds_every_file_key_with_its_flag_and_variable() {
    let text = std::fs::read_to_string(repo_file("config/rethread.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut documented = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        // `key = value`, or commented out as `# key = value` where the default is "unset".
        let entry = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = entry.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let setting = settings()
            .into_iter()
            .find(|s| s.key == key && s.is_file_key());
        assert!(setting.is_some(), "`{key}` is not a setting");
        let setting = setting.unwrap();
        let named = lines[i.saturating_sub(1)];
        assert!(
            named.starts_with(&format!("# flag --{}", setting.flag))
                && named.ends_with(&format!("env {}", setting.env)),
            "the line above `{key}` should be `# flag --{}, env {}`, not `{named}`",
            setting.flag,
            setting.env
        );
        documented.push(key.to_owned());
    }
    let mut keys: Vec<String> = file_keys().collect();
    documented.sort();
    keys.sort();
    assert_eq!(documented, keys, "each file key documented once");
}
