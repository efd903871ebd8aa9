//! The library's module graph stays a DAG, and only `api/` and `lib.rs` know axum.
//!
//! Reads `src/` as text: every `crate::x` path in a top-level module's files (test modules at the
//! end of a file excluded, as `cargo modules --lib` excludes `cfg(test)`) is an edge from that
//! module to `x`. A cycle means two modules cannot be understood, tested or changed apart, so the
//! test names it.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// The top-level module a file belongs to (`src/generate/stream.rs` → `generate`).
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

/// The file without its test code: everything from the first `#[cfg(test)]` on, and whole
/// files declared as test modules (`mod tests;` → `tests.rs`).
fn library_code(file: &Path) -> Option<String> {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return None;
    }
    let text = std::fs::read_to_string(file).unwrap();
    Some(match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    })
}

/// Module → the modules it uses.
type Edges = BTreeMap<String, BTreeSet<String>>;

/// The edges, and the (module, file) pairs that use axum.
fn graph() -> (Edges, Vec<(String, PathBuf)>) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut axum_users = Vec::new();
    for file in &files {
        let from = module_of(&src, file);
        let Some(code) = library_code(file) else {
            continue;
        };
        if code.contains("axum::") || code.contains("use axum") {
            axum_users.push((from.clone(), file.clone()));
        }
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != from && modules.contains(&name) {
                edges.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    (edges, axum_users)
}

/// A cycle in the graph, if there is one, as the path of modules around it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if let Some(c) = visit(node, edges, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let (edges, _) = graph();
    // The check must see the graph it guards: a parser that found nothing would pass anything.
    assert!(
        edges.get("generate").is_some_and(|e| e.contains("cache")),
        "{edges:?}"
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn only_api_and_lib_know_axum() {
    let (_, users) = graph();
    let outside: Vec<_> = users
        .iter()
        .filter(|(m, _)| m != "api" && m != "lib")
        .collect();
    assert!(outside.is_empty(), "axum used outside api/: {outside:?}");
    assert!(users.iter().any(|(m, _)| m == "api"));
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&edges).map(|c| c.join(">")),
        Some("a>b>c>a".into())
    );
}
