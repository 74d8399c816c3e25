//! The README's settings table, rendered from the settings' declarations (`catalogue.rs`) and
//! compared with `README.md` by the test suite: a contributor changes a doc comment in `args.rs`,
//! and the test prints the table to paste (or, with `RETHREAD_BLESS=1`, writes it in place).

use std::path::PathBuf;

use super::catalogue::settings;

/// The table (Markdown), one row per setting in declaration order.
fn readme_table() -> String {
    let mut table = String::from("| flag | env | default | meaning |\n| --- | --- | --- | --- |\n");
    for setting in settings() {
        table.push_str(&format!(
            "| `--{}` | `{}` | {} | {} |\n",
            setting.flag,
            setting.env,
            cell(&setting.default),
            cell(&setting.meaning)
        ));
    }
    table
}

/// A table cell's text: a `|` would end the cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `text` split around its settings table: before, the table, after.
fn around_table(text: &str) -> Option<(&str, &str, &str)> {
    let start = text.find("| flag | env | default | meaning |\n")?;
    let rows = text[start..]
        .split_inclusive('\n')
        .take_while(|line| line.starts_with('|'))
        .map(str::len)
        .sum::<usize>();
    let end = start + rows;
    Some((&text[..start], &text[start..end], &text[end..]))
}

#[test]
#[allow(clippy::unwrap_used)]
fn the_readme_settings_table_is_the_one_the_code_renders() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (before, table, after) = around_table(&readme).unwrap();
    let expected = readme_table();
    if table != expected && std::env::var_os("RETHREAD_BLESS").is_some() {
        std::fs::write(&path, format!("{before}{expected}{after}")).unwrap();
        return;
    }
    assert!(
        table == expected,
        "README.md's settings table differs from the doc comments of SettingsArgs \
         (src/config/args.rs). Paste this table into README.md, or run \
         `RETHREAD_BLESS=1 cargo test --lib config::readme` to have it written:\n\n{expected}"
    );
}
