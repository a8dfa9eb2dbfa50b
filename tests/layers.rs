//! The layering of `src/` (ARCHITECTURE.md, "Layers"): no module imports a module of a higher
//! layer, and no two top-level modules import each other, directly or through others.
//!
//! Pure std: walks `src/`, reads every `crate::<module>` path (comments skipped, `crate::{..}`
//! groups expanded), maps each file to its top-level module and that module to its layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, bottom to top, keyed by top-level module name (`src/<name>.rs` or `src/<name>/`).
/// A module may import modules of its own layer and of the layers below it.
const LAYERS: &[(&str, &[&str])] = &[
    // Pure core: values, rules and process-wide counters; no I/O (telemetry: logging setup).
    (
        "core",
        &[
            "model",
            "secret",
            "problems",
            "mapping",
            "plan",
            "schedule",
            "metrics",
            "telemetry",
            "build_info",
            "progress",
        ],
    ),
    // The outside world, beside each other: the source read, the state store, the vendor APIs.
    ("io", &["source", "store", "connector"]),
    // The validated configuration (built from the settings types of the layers below) and the
    // outcome of a run as plain data.
    ("settings", &["config", "outcome"]),
    // Rendering and sending outcomes: reports, notifications.
    ("render", &["report", "notify"]),
    // The steps of a run and the commands beside it.
    ("steps", &["engine", "drift", "adopt", "saved_plan"]),
    // One run, orchestrated.
    ("run", &["run"]),
    // The front ends: the command line and the daemon.
    ("front", &["cli", "daemon"]),
];

/// Upward imports tolerated until the change that removes them lands: (importing module,
/// imported module, why). An entry that no longer matches any import fails the check: delete it.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

/// Files of the crate root that belong to no layer (they only declare or call modules).
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

#[derive(Debug, Clone)]
struct Import {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate roots).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("file under src/");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if rel.components().count() == 1 {
        if ROOTS.contains(&first.as_str()) {
            return None;
        }
        return Some(first.trim_end_matches(".rs").to_string());
    }
    Some(first)
}

/// The text with comments blanked out (line breaks kept, so offsets keep their line).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = match line.find("//") {
            // `//` inside a string literal (a URL) is not a comment: only cut where an even
            // number of quotes precede it.
            Some(i) if line[..i].matches('"').count() % 2 == 0 => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    // Block comments (rare in this crate): blank them, keeping line breaks.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(start) = rest.find("/*") {
        result.push_str(&rest[..start]);
        let end = rest[start..]
            .find("*/")
            .map_or(rest.len(), |e| start + e + 2);
        result.extend(rest[start..end].chars().filter(|c| *c == '\n'));
        rest = &rest[end..];
    }
    result.push_str(rest);
    result
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules named by `crate::` paths in `code`, with the byte offset of each.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let at = from + i;
        from = at + "crate::".len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b, self}`: the first segment of each item at depth 0.
            let mut depth = 0usize;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        item_start = false;
                        let name = ident_at(&group[j..]);
                        if name != "self" {
                            found.push((at, name.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                found.push((at, name.to_string()));
            }
        }
    }
    found
}

fn imports(src: &Path) -> Vec<Import> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut all = Vec::new();
    for file in files {
        let Some(from) = module_of(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let code = strip_comments(&text);
        for (offset, to) in crate_paths(&code) {
            if to == from {
                continue;
            }
            let line = code[..offset].matches('\n').count() + 1;
            all.push(Import {
                file: file.clone(),
                line,
                from: from.clone(),
                to,
            });
        }
    }
    all
}

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_has_a_layer() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let missing: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(&src, f))
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "top-level modules without a layer (add them to LAYERS in tests/layers.rs and to \
         ARCHITECTURE.md's layer table): {missing:?}"
    );
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = src_dir();
    let mut problems = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for i in imports(&src) {
        let (Some((from_layer, from_name)), Some((to_layer, to_name))) =
            (layer_of(&i.from), layer_of(&i.to))
        else {
            // Modules without a layer fail `every_module_has_a_layer`; names that are not
            // modules (`crate::VERSION`) cannot be upward imports.
            continue;
        };
        if to_layer <= from_layer {
            continue;
        }
        if let Some(e) = EXCEPTIONS
            .iter()
            .find(|(f, t, _)| *f == i.from && *t == i.to)
        {
            used_exceptions.insert((e.0, e.1));
            continue;
        }
        problems.push(format!(
            "{}:{}: `{}` (layer {from_name}) imports `crate::{}` (layer {to_name}, higher)",
            i.file.strip_prefix(&src).unwrap_or(&i.file).display(),
            i.line,
            i.from,
            i.to
        ));
    }
    for (f, t, why) in EXCEPTIONS {
        if !used_exceptions.contains(&(*f, *t)) {
            problems.push(format!(
                "exception `{f}` → `{t}` ({why}) is no longer needed: delete it from EXCEPTIONS"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "layering violated (see ARCHITECTURE.md, \"Layers\"):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn no_cycle_between_top_level_modules() {
    let src = src_dir();
    let modules: BTreeSet<&str> = LAYERS.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    // module → imported module → first place it is imported
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in imports(&src) {
        // An excepted upward import is a known cycle on its way out (see EXCEPTIONS).
        if !modules.contains(i.to.as_str())
            || EXCEPTIONS
                .iter()
                .any(|(f, t, _)| *f == i.from && *t == i.to)
        {
            continue;
        }
        let rel = i.file.strip_prefix(&src).unwrap_or(&i.file).display();
        edges
            .entry(i.from.clone())
            .or_default()
            .entry(i.to.clone())
            .or_insert_with(|| format!("{rel}:{}", i.line));
    }
    let reach = |start: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_string()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&str, BTreeSet<String>> =
        modules.iter().map(|m| (*m, reach(m))).collect();
    let mut cycles = BTreeSet::new();
    for m in &modules {
        let cycle: BTreeSet<&str> = modules
            .iter()
            .copied()
            .filter(|o| o != m && reachable[m].contains(*o) && reachable[o].contains(*m))
            .chain(std::iter::once(*m))
            .collect();
        if cycle.len() > 1 {
            let detail: Vec<String> = cycle
                .iter()
                .flat_map(|a| {
                    edges
                        .get(*a)
                        .into_iter()
                        .flatten()
                        .filter(|(b, _)| cycle.contains(b.as_str()))
                        .map(move |(b, at)| format!("{a} → {b} ({at})"))
                })
                .collect();
            cycles.insert(format!("{cycle:?}: {}", detail.join(", ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "top-level modules that import each other:\n  {}",
        cycles.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn the_parser_reads_paths_and_groups() {
    let code = strip_comments(
        "use crate::plan::Op;\n// use crate::cli::x;\nuse crate::{store::{A, B}, self, model};\n\
         let u = \"http://x\"; crate::report::render();\n$crate::x; dirsync_crate::y;\n/* crate::run */\n",
    );
    let names: Vec<String> = crate_paths(&code).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["plan", "store", "model", "report"]);
}
