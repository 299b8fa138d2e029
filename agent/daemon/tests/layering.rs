//! The daemon's layering, checked on its sources so that it cannot regress unseen:
//! - only `src/http/` imports axum, hyper or tower (the operations layer knows no HTTP type);
//! - the files of `src/` import each other without a circle.
//!
//! Imports are read from the text: `crate::`, `super::` and `use child::` paths, outside
//! `#[cfg(test)]` modules and comments; a path through a module's `pub use` counts as an import
//! of the module it re-exports from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const HTTP_CRATES: [&str; 5] = ["axum", "hyper", "hyper_util", "tower", "tower_http"];

fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The file's code without its test module and comments.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable source");
    let text = match text.find("#[cfg(test)]") {
        Some(start) => &text[..start],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(comment) => &line[..comment],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `src/ops/mod.rs` is `ops`, `src/ops/launch.rs` is `ops::launch`; lib.rs and main.rs are "".
fn module_of(src: &Path, path: &Path) -> String {
    let relative = path
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .filter(|part| part != "mod")
        .collect();
    let module = parts.join("::");
    if module == "lib" || module == "main" {
        String::new()
    } else {
        module
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `prefix` (e.g. `crate::`), with `{a, b::c}` groups expanded one
/// level: `crate::x::{y, z}` gives `x::y` and `x::z`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| is_ident_char(c) || c == ':') {
            continue;
        }
        let end = rest
            .find(|c: char| !(is_ident_char(c) || c == ':'))
            .unwrap_or(rest.len());
        let head = rest[..end].trim_end_matches(':').to_string();
        if rest[end..].starts_with('{') && (end == 0 || rest[..end].ends_with("::")) {
            let close = rest[end..]
                .find('}')
                .map_or(rest.len(), |close| end + close);
            for item in rest[end + 1..close].split(',') {
                let item: String = item
                    .trim()
                    .chars()
                    .take_while(|c| is_ident_char(*c) || *c == ':')
                    .collect();
                if !item.is_empty() {
                    paths.push(join(&head, &item));
                }
            }
        } else {
            paths.push(head);
        }
    }
    paths
}

struct Crate {
    /// Module → its code.
    code: BTreeMap<String, String>,
    /// (module, re-exported name) → the child module it comes from.
    reexports: BTreeMap<(String, String), String>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        source_files(src, &mut files);
        let code: BTreeMap<String, String> = files
            .iter()
            .map(|path| (module_of(src, path), code_of(path)))
            .collect();
        let mut reexports = BTreeMap::new();
        for (module, text) in &code {
            for path in paths_after(text, "pub use ") {
                let mut parts: Vec<&str> = path.split("::").collect();
                let name = parts.pop().unwrap_or_default();
                let child = join(module, parts.first().copied().unwrap_or_default());
                if code.contains_key(&child) && child != *module {
                    reexports.insert((module.clone(), name.to_string()), child);
                }
            }
        }
        Crate { code, reexports }
    }

    /// The module file a path from the crate root leads to.
    fn resolve(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split("::").filter(|part| !part.is_empty()).collect();
        (1..=parts.len()).rev().find_map(|length| {
            let module = parts[..length].join("::");
            if !self.code.contains_key(&module) {
                return None;
            }
            let through = parts
                .get(length)
                .and_then(|name| self.reexports.get(&(module.clone(), name.to_string())));
            Some(through.cloned().unwrap_or(module))
        })
    }

    fn imports(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges = BTreeMap::new();
        for (module, text) in &self.code {
            let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
            let mut targets = BTreeSet::new();
            let mut add = |path: String| {
                if let Some(target) = self.resolve(&path)
                    && target != *module
                    && !target.is_empty()
                {
                    targets.insert(target);
                }
            };
            paths_after(text, "crate::").into_iter().for_each(&mut add);
            for path in paths_after(text, "super::") {
                add(join(parent, &path));
            }
            for path in paths_after(text, "use ") {
                let first = path.split("::").next().unwrap_or_default();
                if self.code.contains_key(&join(module, first)) {
                    add(join(module, &path));
                }
            }
            edges.insert(module.clone(), targets);
        }
        edges
    }
}

fn join(module: &str, path: &str) -> String {
    if module.is_empty() {
        path.to_string()
    } else {
        format!("{module}::{path}")
    }
}

/// The modules on a circle, each with the next one on it; empty when there is none.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // A module is on a circle when it reaches itself.
    let reaches = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = edges[from].iter().collect();
        while let Some(module) = stack.pop() {
            if seen.insert(module.clone()) {
                stack.extend(edges.get(module).into_iter().flatten());
            }
        }
        seen
    };
    let mut found: Vec<Vec<String>> = Vec::new();
    for module in edges.keys() {
        let reached = reaches(module);
        if !reached.contains(module) || found.iter().any(|circle| circle.contains(module)) {
            continue;
        }
        let mut circle: Vec<String> = reached
            .into_iter()
            .filter(|other| reaches(other).contains(module))
            .collect();
        circle.sort();
        found.push(circle);
    }
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn only_the_http_module_imports_http_crates() {
    let src = src();
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let http = src.join("http");
    let mut offenders = Vec::new();
    for path in files.iter().filter(|path| !path.starts_with(&http)) {
        let text = std::fs::read_to_string(path).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let named = HTTP_CRATES.iter().any(|name| {
                code.contains(&format!("{name}::")) && !code.contains(&format!("_{name}::"))
            });
            if named {
                offenders.push(format!("{}:{}: {line}", path.display(), number + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "only src/http/ may use {HTTP_CRATES:?}:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_modules_import_each_other_without_a_circle() {
    let edges = Crate::read(&src()).imports();
    let found = circles(&edges);
    let described: Vec<String> = found
        .iter()
        .map(|circle| {
            circle
                .iter()
                .map(|module| {
                    let on: Vec<&String> = edges[module]
                        .iter()
                        .filter(|to| circle.contains(to))
                        .collect();
                    format!("  {module} -> {on:?}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import circles:\n{}",
        described.join("\n\n")
    );
}

#[test]
fn the_checker_sees_a_circle_and_a_reexport() {
    let mut code = BTreeMap::new();
    code.insert(
        "a".to_string(),
        "pub use inner::Thing;\nmod inner;".to_string(),
    );
    code.insert("a::inner".to_string(), "use crate::b::Other;".to_string());
    code.insert("b".to_string(), "use crate::{a::Thing, d};".to_string());
    code.insert("c".to_string(), "use crate::a::Thing;".to_string());
    code.insert("d".to_string(), String::new());
    let mut reexports = BTreeMap::new();
    reexports.insert(
        ("a".to_string(), "Thing".to_string()),
        "a::inner".to_string(),
    );
    let edges = Crate { code, reexports }.imports();
    assert_eq!(edges["c"], BTreeSet::from(["a::inner".to_string()]));
    assert_eq!(
        edges["b"],
        BTreeSet::from(["a::inner".to_string(), "d".to_string()])
    );
    assert_eq!(
        circles(&edges),
        vec![vec!["a::inner".to_string(), "b".to_string()]]
    );
}
