//! The documentation's examples cannot drift from the code: every fenced ```toml block in
//! README.md and docs/*.md parses, and passes `dirsync check --offline` (a fragment completed
//! with a minimal source, target and state; the files it names written to a temporary
//! directory), unless an explicit `<!-- not checked: reason -->` comment precedes it; every
//! `dirsync ...` command in a ```sh / ```console block names a real subcommand and real flags;
//! every relative link points to a file that exists, and its `#anchor` to a heading there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md, relative to the crate root.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

struct Block {
    page: PathBuf,
    line: usize,
    lang: String,
    text: String,
    /// The reason of a `<!-- not checked: reason -->` comment right before the fence.
    not_checked: Option<String>,
}

fn blocks(page: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(root().join(page)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let prev = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
        let not_checked = prev
            .and_then(|l| l.trim().strip_prefix("<!-- not checked:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(|r| r.trim().to_string());
        let mut body = String::new();
        i += 1;
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push_str(lines[i]);
            body.push('\n');
            i += 1;
        }
        i += 1;
        out.push(Block {
            page: page.to_path_buf(),
            line: start + 1,
            lang: lang.trim().to_string(),
            text: body,
            not_checked,
        });
    }
    out
}

/// What a fragment lacks to be a configuration `check --offline` accepts.
fn complete(mut t: toml::Table) -> toml::Table {
    let base: toml::Table = toml::from_str(
        r#"
state = { path = "state.db" }
source = { kind = "csv", csv = { path = "users.csv", columns = { key = "id" } } }
target = [{ name = "docs", kind = "covata", base_url = "https://covata.example.com", username = "u", password = "p", client_id = "c", client_secret = "s" }]
"#,
    )
    .unwrap();
    let source = t.get("source").and_then(|s| s.as_table()).cloned();
    match source {
        None => {
            t.insert("source".into(), base["source"].clone());
        }
        Some(mut s) => {
            if !s.contains_key("kind") && s.contains_key("ldap") {
                s.insert("kind".into(), "ldap".into());
            }
            if s.get("kind").and_then(|k| k.as_str()) == Some("ldap") {
                let ldap = s
                    .entry("ldap")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(l) = ldap.as_table_mut() {
                    for (k, v) in [
                        ("url", "ldap://localhost"),
                        ("base_dn", "dc=example,dc=com"),
                    ] {
                        l.entry(k).or_insert_with(|| v.into());
                    }
                    if !l.contains_key("bind_dn") {
                        l.entry("anonymous").or_insert(true.into());
                    }
                }
            }
            t.insert("source".into(), s.into());
        }
    }
    if !t.contains_key("target") {
        t.insert("target".into(), base["target"].clone());
    }
    if !t.contains_key("state") {
        t.insert("state".into(), base["state"].clone());
    }
    t
}

/// Points every `*_file` / `ca_file` / CSV `path` at a file in `dir` (written with a dummy
/// value), so a check reads what it would read without touching the machine's paths.
fn localise(v: &mut toml::Value, dir: &Path, key: &str) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                localise(v, dir, k);
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| localise(v, dir, key)),
        toml::Value::String(s) if key.ends_with("_file") => {
            let name = Path::new(s.as_str())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "secret".into());
            let path = dir.join(name);
            std::fs::write(&path, "docs-example-secret\n").unwrap();
            *s = path.display().to_string();
        }
        _ => {}
    }
}

fn check_offline(block: &Block, table: toml::Table) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = toml::Value::Table(complete(table));
    localise(&mut v, dir.path(), "");
    // The CSV source's file, with the columns the example names (or a key column).
    if let Some(csv) = v
        .get("source")
        .and_then(|s| s.get("csv"))
        .and_then(|c| c.as_table())
    {
        let path = csv
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or("users.csv");
        let path = dir.path().join(Path::new(path).file_name().unwrap());
        std::fs::write(path, "id,email\n1,a@example.com\n").unwrap();
        if let Some(toml::Value::Table(t)) = v.get_mut("source").and_then(|s| s.get_mut("csv")) {
            let name = Path::new(t["path"].as_str().unwrap_or("users.csv"))
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            t.insert("path".into(), name.into());
        }
    }
    let config = dir.path().join("dirsync.toml");
    std::fs::write(&config, toml::to_string(&v).unwrap()).unwrap();
    let out = dirsync(&["check", "--offline", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}:{}: `dirsync check --offline` refuses the example:\n{}\n--- as checked:\n{}",
            block.page.display(),
            block.line,
            String::from_utf8_lossy(&out.stderr),
            toml::to_string(&v).unwrap()
        ))
    }
}

fn dirsync(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dirsync"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DIRSYNC_") || k == "CREDENTIALS_DIRECTORY" {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

#[test]
fn toml_examples_parse_and_pass_check_offline() {
    let mut problems = Vec::new();
    let mut not_checked = Vec::new();
    let mut checked = 0;
    for page in pages() {
        for b in blocks(&page).into_iter().filter(|b| b.lang == "toml") {
            let table: toml::Table = match toml::from_str(&b.text) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{}:{}: not TOML: {e}", b.page.display(), b.line));
                    continue;
                }
            };
            if let Some(reason) = &b.not_checked {
                not_checked.push(format!("{}:{}: {reason}", b.page.display(), b.line));
                continue;
            }
            checked += 1;
            if let Err(e) = check_offline(&b, table) {
                problems.push(e);
            }
        }
    }
    eprintln!(
        "{checked} TOML examples checked; {} not checked:",
        not_checked.len()
    );
    for n in &not_checked {
        eprintln!("  {n}");
    }
    assert!(checked >= 10, "only {checked} TOML examples found");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// `dirsync [global options] SUBCOMMAND [SUBSUBCOMMAND] args...` invocations in a shell block.
fn commands(b: &Block) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut heredoc: Option<String> = None;
    for raw in b.text.lines() {
        if let Some(end) = &heredoc {
            if raw.trim() == end {
                heredoc = None;
            }
            continue;
        }
        let line = if b.lang == "console" {
            match raw.strip_prefix("$ ") {
                Some(l) => l,
                None => continue,
            }
        } else {
            raw
        };
        let line = line.split(" # ").next().unwrap_or("").trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((_, tag)) = line.split_once("<<") {
            heredoc = Some(tag.trim().trim_matches('\'').trim_matches('"').to_string());
        }
        for segment in line.split("&&").flat_map(|s| s.split(['|', ';'])) {
            let mut words = segment.split_whitespace().peekable();
            // sudo [-u USER], VAR=value prefixes.
            loop {
                match words.peek() {
                    Some(&"sudo") => {
                        words.next();
                        while let Some(w) = words.peek() {
                            if *w == "-u" {
                                words.next();
                                words.next();
                            } else if w.starts_with('-') {
                                words.next();
                            } else {
                                break;
                            }
                        }
                    }
                    Some(w) if w.contains('=') && !w.starts_with('-') => {
                        words.next();
                    }
                    _ => break,
                }
            }
            let Some(first) = words.next() else { continue };
            let args: Vec<String> = if first == "cargo" {
                let rest: Vec<&str> = words.collect();
                match rest.iter().position(|w| *w == "--") {
                    Some(p) if rest.first() == Some(&"run") => {
                        rest[p + 1..].iter().map(|s| s.to_string()).collect()
                    }
                    _ => continue,
                }
            } else if first == "dirsync" || first.ends_with("/bin/dirsync") {
                words.map(|s| s.to_string()).collect()
            } else {
                continue;
            };
            out.push(args);
        }
    }
    out
}

/// The help text of a (sub)command path, cached.
fn help(cache: &mut BTreeMap<Vec<String>, Option<String>>, path: &[String]) -> Option<String> {
    cache
        .entry(path.to_vec())
        .or_insert_with(|| {
            let mut args: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
            args.push("--help");
            let out = dirsync(&args).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .clone()
}

/// Subcommand names listed under `Commands:` in a help text.
fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn has_flag(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .any(|w| w == flag)
}

#[test]
fn shell_examples_name_real_subcommands_and_flags() {
    let mut cache = BTreeMap::new();
    let top = help(&mut cache, &[]).expect("dirsync --help");
    let mut problems = Vec::new();
    let mut count = 0;
    for page in pages() {
        for b in blocks(&page)
            .into_iter()
            .filter(|b| b.lang == "sh" || b.lang == "console")
        {
            for args in commands(&b) {
                count += 1;
                let at = format!(
                    "{}:{}: dirsync {}",
                    b.page.display(),
                    b.line,
                    args.join(" ")
                );
                let mut path: Vec<String> = Vec::new();
                let mut helps = vec![top.clone()];
                for (i, a) in args.iter().enumerate() {
                    let current = helps.last().cloned().unwrap_or_default();
                    if a.starts_with('-') && a.len() > 1 {
                        let name = a.split('=').next().unwrap_or(a);
                        // A flag of this command or of the top level (global options).
                        if !has_flag(&current, name) && !has_flag(&top, name) {
                            problems.push(format!("{at}: unknown flag {name}"));
                        }
                    } else if subcommands(&current).contains(a.as_str()) {
                        path.push(a.clone());
                        match help(&mut cache, &path) {
                            Some(h) => helps.push(h),
                            None => {
                                problems.push(format!("{at}: `{}` has no help", path.join(" ")))
                            }
                        }
                    } else if path.is_empty() {
                        // The first word that is no flag must be a subcommand, unless it is the
                        // value of a global option (`--config PATH`).
                        let value =
                            i > 0 && args[i - 1].starts_with("--") && !args[i - 1].contains('=');
                        if !value {
                            problems.push(format!("{at}: unknown subcommand {a}"));
                            break;
                        }
                    }
                }
                if path.is_empty() && !args.iter().any(|a| a == "--help" || a == "--version") {
                    problems.push(format!("{at}: no subcommand"));
                }
            }
        }
    }
    assert!(count >= 10, "only {count} dirsync commands found");
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut fence = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn relative_links_and_anchors_resolve() {
    let mut files: Vec<PathBuf> = pages();
    for extra in [
        "RELIABILITY.md",
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
        "contrib/monitoring/README.md",
    ] {
        files.push(PathBuf::from(extra));
    }
    let mut problems = Vec::new();
    for page in files {
        let text = std::fs::read_to_string(root().join(&page)).unwrap();
        let dir = page.parent().unwrap_or(Path::new(""));
        let mut fence = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                fence = !fence;
            }
            if fence {
                continue;
            }
            for part in line.split("](").skip(1) {
                let Some(link) = part.split(')').next() else {
                    continue;
                };
                if link.contains("://") || link.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = match link.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (link, None),
                };
                let target = if file.is_empty() {
                    page.clone()
                } else {
                    dir.join(file)
                };
                let at = format!("{}:{}: ({link})", page.display(), n + 1);
                if !root().join(&target).exists() {
                    problems.push(format!("{at}: no file {}", target.display()));
                    continue;
                }
                if let Some(a) = anchor
                    && !anchors(&root().join(&target)).contains(a)
                {
                    problems.push(format!("{at}: no heading #{a} in {}", target.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
