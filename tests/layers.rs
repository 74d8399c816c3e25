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

/// A line without its comment (a `//` that is not part of a URL's `://`).
fn code(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut at = 0;
    while let Some(found) = line[at..].find("//") {
        let i = at + found;
        if i == 0 || bytes[i - 1] != b':' {
            return &line[..i];
        }
        at = i + 2;
    }
    line
}

/// The names right after a path prefix: `x` in `prefix x::…`, and every `x` of `prefix {x, y::…}`.
fn names_after(rest: &str) -> Vec<String> {
    let name = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    match rest.strip_prefix('{') {
        Some(list) => {
            let list = list.split('}').next().unwrap_or("");
            let mut depth = 0;
            let mut out = Vec::new();
            let mut start = 0;
            for (i, c) in list.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(name(&list[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            out.push(name(&list[start..]));
            out.into_iter()
                .filter(|n| !n.is_empty() && n != "self")
                .collect()
        }
        None => vec![name(rest)]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
    }
}

/// The top-level modules a file names: through `crate::`, or through as many `super::` as
/// lead back to the crate root from the file's `depth` (1 for `src/x.rs` and `src/x/mod.rs`).
fn imports(text: &str, depth: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = code(line);
        for (at, _) in code.match_indices("crate::") {
            out.extend(names_after(&code[at + "crate::".len()..]));
        }
        let root = "super::".repeat(depth);
        for (at, _) in code.match_indices(&root) {
            let rest = &code[at + root.len()..];
            let before_is_super = code[..at].ends_with("super::");
            if !before_is_super && !rest.starts_with("super::") {
                out.extend(names_after(rest));
            }
        }
    }
    out
}

/// Every import against `order` among `files` (module, depth, text).
fn violations(order: &[String], files: &[(String, usize, String)]) -> Vec<String> {
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut problems = Vec::new();
    for (module, depth, text) in files {
        let Some(own) = rank(module) else {
            problems.push(format!("module `{module}` is in no layer"));
            continue;
        };
        for import in imports(text, *depth) {
            match rank(&import) {
                Some(r) if r > own || import == *module => {}
                Some(_) => problems.push(format!(
                    "`{module}` imports `{import}`, which is not below it"
                )),
                // A name that is no top-level module (a macro, a re-exported item): not a layer.
                None => {}
            }
        }
    }
    problems
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = declared_order(root);
    let src = root.join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(String, usize, String)> = paths
        .iter()
        .filter(|f| !f.ends_with("src/lib.rs"))
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap();
            let dirs = rel.components().count() - 1;
            let depth = if f.ends_with("mod.rs") {
                dirs
            } else {
                dirs + 1
            };
            let text = std::fs::read_to_string(f).unwrap();
            (module_of(&src, f), depth.max(1), text)
        })
        .collect();
    let problems = violations(&order, &files);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_sees_every_form_of_an_import_upwards() {
    let order: Vec<String> = ["proxy", "ledger", "repair"].map(String::from).to_vec();
    let file = |module: &str, depth: usize, text: &str| (module.to_owned(), depth, text.to_owned());
    for (depth, text) in [
        (1, "use crate::proxy::attempt;"),
        (1, "use crate::{repair, proxy::attempt};"),
        (1, "use super::proxy;"),
        (2, "use super::super::proxy::x;"),
        (1, "let u = \"http://x\"; use crate::proxy::y;"),
    ] {
        let found = violations(&order, &[file("ledger", depth, text)]);
        assert_eq!(found.len(), 1, "{text}: {found:?}");
    }
    for (depth, text) in [
        (1, "use crate::repair::items; // crate::proxy in a comment"),
        (2, "use super::index::Table;"),
        (1, "use crate::ledger::memory;"),
    ] {
        assert!(
            violations(&order, &[file("ledger", depth, text)]).is_empty(),
            "{text}"
        );
    }
}
