//! Every setting as clap declares it, read back from `SettingsArgs`: its file key, flag,
//! environment variable, meaning and default. `rethread check` lists its keys in its order and
//! the README's settings table is rendered from it (`readme.rs`), so the names, the help and the
//! documentation are written once, in `args.rs`, and a test (not a reviewer) notices when a copy
//! falls behind.

use clap::{Arg, Args, Command};

use super::SettingsArgs;

/// The one setting that is not a file key: it names the file.
const CONFIG: &str = "config";

/// One setting, as its `#[arg]` and doc comment declare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Setting {
    /// The field's name, which is also its file key (`config` excepted).
    pub key: String,
    /// The long flag, without `--`.
    pub flag: String,
    pub env: String,
    /// The help text without its `[default: …]`.
    pub meaning: String,
    /// What the help text's `[default: …]` holds, in Markdown.
    pub default: String,
}

impl Setting {
    fn from_arg(arg: &Arg) -> Setting {
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let (meaning, default) = split_default(&help);
        Setting {
            key: arg.get_id().as_str().to_owned(),
            flag: arg.get_long().unwrap_or_default().to_owned(),
            env: arg
                .get_env()
                .map(|env| env.to_string_lossy().into_owned())
                .unwrap_or_default(),
            meaning: meaning.to_owned(),
            default: default.to_owned(),
        }
    }

    /// Whether the setting is a key of the TOML file.
    pub(super) fn is_file_key(&self) -> bool {
        self.key != CONFIG
    }
}

/// Every setting, in the order `SettingsArgs` declares them.
pub(super) fn settings() -> Vec<Setting> {
    SettingsArgs::augment_args(Command::new("rethread"))
        .get_arguments()
        .map(Setting::from_arg)
        .collect()
}

/// The keys a config file may hold, in declaration order.
pub(super) fn file_keys() -> impl Iterator<Item = String> {
    settings()
        .into_iter()
        .filter(Setting::is_file_key)
        .map(|setting| setting.key)
}

/// `"Meaning [default: x]"` → `("Meaning", "x")`; without a default, `(help, "")`.
fn split_default(help: &str) -> (&str, &str) {
    help.strip_suffix(']')
        .and_then(|rest| rest.rsplit_once(" [default: "))
        .unwrap_or((help, ""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
