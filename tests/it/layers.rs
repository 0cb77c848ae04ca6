//! The layer order of ARCHITECTURE.md's code map, checked: no module of
//! `src/` names (`crate::x`) a module of a layer above its own. A lower
//! layer that needs a constant or a message of a higher one is a design
//! error (move the item down), not something to import.
//!
//! The check reads the sources, so it fails on the line that breaks the
//! order, with the file and the two layers.

use std::path::{Path, PathBuf};

/// Lowest first. Same-layer imports are allowed; each name is a top-level
/// module of `src/` (a directory or a `.rs` file).
///
/// `client` is the `leasehold-client` crate re-exported (it depends on
/// `leasehold-proto` alone, which the compiler enforces); the server's
/// modules may use it (forwarding, peer channels, identity).
const LAYERS: &[&[&str]] = &[
    &["proto"],
    &["client"],
    &["lease"],
    &["state"],
    &["types"],
    &["telemetry"],
    &["auth"],
    &["store"],
    &["raft"],
    &["api"],
    &["kube"],
    &["ops"],
    &["identity"],
    &["server"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::name` on a line that is not a comment.
fn crate_paths(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // Not `leasehold_crate::` or similar: a path must start here.
            code[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_')
        })
        .filter_map(|(at, m)| {
            let rest = &code[at + m.len()..];
            let end = rest
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut unknown = Vec::new();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        let module = first.trim_end_matches(".rs");
        // The crate roots and the binaries are above every layer.
        if matches!(module, "lib" | "main" | "bin") {
            continue;
        }
        let Some(own) = layer_of(module) else {
            unknown.push(rel.display().to_string());
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            for target in crate_paths(line) {
                match layer_of(target) {
                    Some(l) if l > own => violations.push(format!(
                        "{}:{}: `{module}` (layer {own}) names `crate::{target}` (layer {l})",
                        rel.display(),
                        n + 1
                    )),
                    Some(_) => {}
                    None => unknown.push(format!("{}:{}: crate::{target}", rel.display(), n + 1)),
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from LAYERS (add them where they belong):\n{}",
        unknown.join("\n")
    );
    assert!(
        violations.is_empty(),
        "imports from a higher layer:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scanner_sees_paths_and_skips_comments() {
    assert_eq!(
        crate_paths("use crate::store::x; let y = crate::api::z;"),
        ["store", "api"]
    );
    assert!(crate_paths("// see crate::api").is_empty());
    assert!(crate_paths("let my_crate::x = 1;").is_empty());
}
