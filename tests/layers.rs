//! The import layers of ARCHITECTURE.md, checked by the test suite itself (so CI checks them on
//! a clean clone, with nothing but Rust): every top-level module of `src/` imports only modules
//! below it in the order ARCHITECTURE.md declares (its `--layers` list), so there is no import
//! upwards and no circle. `repair` is the `rethread-repair` crate, whose manifest proves its own
//! purity. (`../shared/tools/imports.py`, where present, draws the whole graph; this is the
//! check.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layer order, top first, as ARCHITECTURE.md's `--layers` list gives it.
fn declared_order(root: &Path) -> Vec<String> {
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let list = doc
        .split("--layers ")
        .nth(1)
        .expect("ARCHITECTURE.md names its layers with --layers")
        .split(|c: char| c == '`' || c.is_whitespace())
        .next()
        .unwrap();
    list.split(',').map(str::to_owned).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/main.rs` is `main`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The top-level modules a file names as `crate::X` (and, in a top-level file, `super::X`),
/// comments left out.
fn imports(text: &str, top_level: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut prefixes = vec!["crate::"];
        if top_level {
            prefixes.push("super::");
        }
        for prefix in prefixes {
            for (at, _) in code.match_indices(prefix) {
                let name: String = code[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = declared_order(root);
    let rank = |m: &str| order.iter().position(|o| o == m);
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("src/lib.rs")) {
        let module = module_of(&src, file);
        let Some(own) = rank(&module) else {
            problems.push(format!(
                "{}: module `{module}` is in no layer",
                file.display()
            ));
            continue;
        };
        let top_level = file.parent() == Some(src.as_path());
        let text = std::fs::read_to_string(file).unwrap();
        for import in imports(&text, top_level) {
            if import == module {
                continue;
            }
            match rank(&import) {
                Some(r) if r > own => {}
                Some(_) => problems.push(format!(
                    "{}: `{module}` imports `{import}`, which is not below it",
                    file.display()
                )),
                // A name that is no top-level module (a macro, a re-exported item): not a layer.
                None => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_an_import_upwards() {
    let order = ["proxy", "ledger", "repair"];
    let text = "use crate::proxy::session; // crate::ledger in a comment\n";
    let found = imports(text, false);
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["proxy"]);
    let rank = |m: &str| order.iter().position(|o| *o == m);
    assert!(
        rank("proxy") < rank("ledger"),
        "ledger importing proxy runs upwards"
    );
}
