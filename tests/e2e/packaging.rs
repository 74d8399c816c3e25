//! One version for everything users install: the crate, the Python wheel's module, the npm
//! packages (and their optional dependencies on each other), and the changelog names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_crate_the_wheel_and_the_npm_packages_share_one_version() {
    let version = env!("CARGO_PKG_VERSION");
    let python = read("packaging/python/rethread_proxy/__init__.py");
    assert!(
        python.contains(&format!("__version__ = \"{version}\"")),
        "rethread_proxy.__version__ is not {version}"
    );
    let npm: serde_json::Value =
        serde_json::from_str(&read("packaging/npm/rethread/package.json")).unwrap();
    assert_eq!(npm["version"], version);
    for (name, wanted) in npm["optionalDependencies"].as_object().unwrap() {
        assert_eq!(wanted, version, "{name}");
    }
    let platform: serde_json::Value =
        serde_json::from_str(&read("packaging/npm/platform/package.json")).unwrap();
    assert_eq!(platform["version"], version);
    assert!(read("CHANGELOG.md").contains(&format!("## {version}")));
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rethread"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(text.starts_with(&format!("rethread {version} (")), "{text}");
    let commit = text
        .trim()
        .trim_end_matches(')')
        .rsplit('(')
        .next()
        .unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
}
