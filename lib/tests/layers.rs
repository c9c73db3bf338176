//! The layering rule of STYLE.md, checked on the source: every `crate::X`
//! path in a module of `lib/src` names a module of a lower layer, or of
//! its own layer where that layer allows it. Stages never import one
//! another; only jobs compose stages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom up, as in STYLE.md, and whether modules of one
/// layer may import each other.
const LAYERS: &[(&str, &[&str], bool)] = &[
    ("foundation", &["error", "redact"], true),
    (
        "steps and infrastructure",
        &["body", "capture", "dedup", "expectations", "pii", "export", "storage", "delta"],
        true,
    ),
    ("lake", &["lake"], false),
    ("pipeline", &["pipeline"], false),
    ("report", &["report"], false),
    ("stage shape", &["stage"], false),
    ("stages", &["ingest", "process", "curate", "maintain", "status"], false),
    ("jobs", &["erase", "plan", "run"], true),
];

fn layer_of(module: &str) -> Option<(usize, bool)> {
    LAYERS.iter().enumerate().find(|(_, (_, m, _))| m.contains(&module)).map(|(i, (_, _, same))| (i, *same))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// module → the modules its code names as `crate::X`, with a line each.
fn edges(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let re = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for c in re.captures_iter(code) {
                let target = c[1].to_string();
                // `crate::Error`, `crate::Result` are the foundation's re-exports.
                if target != module && layer_of(&target).is_some() {
                    out.entry(module.clone())
                        .or_default()
                        .entry(target)
                        .or_insert_with(|| format!("{}:{}", rel.display(), n + 1));
                }
            }
        }
    }
    out
}

#[test]
fn no_module_imports_a_higher_layer_and_no_stage_imports_another() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = edges(&src);
    let mut problems = Vec::new();
    for (from, targets) in &graph {
        let Some((from_layer, same_ok)) = layer_of(from) else {
            problems.push(format!("module {from} is in no layer: add it to STYLE.md and this test"));
            continue;
        };
        for (to, at) in targets {
            let (to_layer, _) = layer_of(to).unwrap();
            if to_layer > from_layer || (to_layer == from_layer && !same_ok) {
                problems.push(format!("{at}: {from} ({}) imports {to} ({})", LAYERS[from_layer].0, LAYERS[to_layer].0));
            }
        }
    }
    // Every top-level module is in a layer.
    let declared: BTreeSet<String> = std::fs::read_to_string(src.join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").map(|m| m.trim_end_matches(';').to_string()))
        .collect();
    for m in &declared {
        if layer_of(m).is_none() {
            problems.push(format!("module {m} is in no layer: add it to STYLE.md and this test"));
        }
    }
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

/// Within a layer that allows imports among its modules, they must still
/// not import each other in a circle.
#[test]
fn modules_of_one_layer_import_each_other_without_a_circle() {
    let graph = edges(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].iter().cloned().chain([m.to_string()]).collect());
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for to in graph.get(m).into_iter().flat_map(|t| t.keys()) {
            if let Some(c) = visit(to, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(circle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("modules import each other in a circle: {}", circle.join(" -> "));
        }
    }
}
