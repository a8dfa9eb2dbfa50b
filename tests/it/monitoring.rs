//! The monitoring kit in `contrib/monitoring/` against a real daemon: both files parse, and every
//! metric the Grafana dashboard and the Prometheus alert rules use is one `/metrics` exports
//! after a run against the fake Covata (with the per-target gauges and `dirsync_build_info`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::covata::FakeCovata;

/// Metrics Prometheus itself adds to every scrape job (the kit uses `up`).
const PROMETHEUS_METRICS: &[&str] = &["up"];

fn kit(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/monitoring")
        .join(file)
}

fn free_port() -> u16 {
    crate::support::child::free_port().unwrap()
}

/// The PromQL expressions of the dashboard's panels (every `expr` anywhere in the JSON).
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The `expr` of every rule of every group, and the number of alerting rules.
fn rule_exprs(doc: &yaml_rust2::Yaml) -> (Vec<String>, usize) {
    let mut exprs = Vec::new();
    let mut alerts = 0;
    let groups = doc["groups"]
        .as_vec()
        .expect("alert rules: `groups` is a list");
    for g in groups {
        assert!(g["name"].as_str().is_some(), "a rule group without a name");
        for r in g["rules"].as_vec().expect("a group's `rules` is a list") {
            let expr = r["expr"].as_str().expect("a rule without `expr`");
            if r["alert"].as_str().is_some() {
                alerts += 1;
            }
            exprs.push(expr.to_string());
        }
    }
    (exprs, alerts)
}

/// Metric names an expression selects: identifiers outside `{…}`, `[…]`, strings and the label
/// lists of `by` / `without` / `on` / `ignoring` / `group_left` / `group_right`, that are not
/// function calls, keywords or Grafana variables (`$job`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Operators, and the aggregations (`sum by (x) (…)`: not followed by `(` at once).
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_next_parens = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c == '(' && skip_next_parens {
            skip_next_parens = false;
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A variable ($job, ${x}, $__rate_interval) or a number (1e3, 0.95).
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if LABEL_LISTS.contains(&word.as_str()) {
                skip_next_parens = call;
            } else if !call && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Metric families `/metrics` exports: the `# TYPE` lines' names, and the sample names.
fn exported(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.insert(name.to_string());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// A histogram's series name → its family (`_bucket`, `_sum`, `_count`).
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn metric_names_skip_labels_functions_and_variables() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, target) (rate(a_bucket{job=~"$job", x="y{z}"}[$__rate_interval]))) / on (instance) group_left (version) b_info and time() - c > 2700"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b_info", "c"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kit_uses_only_metrics_dirsync_exports() {
    // Both files parse.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kit("dirsync-dashboard.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "dashboard expressions: {exprs:?}");
    let rules_text = std::fs::read_to_string(kit("dirsync-alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&rules_text).expect("the rules are YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    let (rule_exprs, alerts) = rule_exprs(&docs[0]);
    assert!(alerts >= 5, "alerting rules: {alerts}");
    exprs.extend(rule_exprs);

    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for needed in [
        "dirsync_runs_total",
        "dirsync_operations_total",
        "dirsync_http_throttled_total",
        "dirsync_source_users",
        "dirsync_source_quarantined",
        "dirsync_target_owned_accounts",
        "dirsync_target_last_success_timestamp_seconds",
    ] {
        assert!(used.contains(needed), "the kit does not use {needed}");
    }

    // A real daemon, one run against the fake Covata, then a scrape.
    let env = crate::support::env::TestEnv::new(crate::support::env::Backend::Sqlite).await;
    let fake = FakeCovata::start().await;
    let port = free_port();
    env.write_users_csv("id,email\n", "E1,one@example.com\nE2,two@example.com\n");
    let config = env
        .config()
        .csv_columns("key = \"id\"")
        .raw(&format!(
            "[schedule]\ninterval = \"1h\"\nrun_on_start = true\n[http]\nlisten = \"127.0.0.1:{port}\""
        ))
        .covata(&fake.base_url(), crate::support::env::SecretStyle::Inline, "")
        .write();
    let log = env.path("daemon.log");
    let mut child = crate::support::cmd::dirsync(&config, &["run", "--allow-root"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Some((200, body)) = crate::support::cmd::http_get(port, "/metrics")
            && body.contains("dirsync_target_last_success_timestamp_seconds{target=\"covata\"}")
        {
            break body;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "no successful run in /metrics; daemon log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();

    assert_eq!(fake.users().len(), 2, "the run created both users");
    assert!(
        body.contains("dirsync_target_owned_accounts{target=\"covata\"} 2"),
        "{body}"
    );
    assert!(body.contains("dirsync_ready 1"), "{body}");
    let build = format!(
        "dirsync_build_info{{version=\"{}\",commit=\"{}\",build_date=\"{}\"}} 1",
        dirsync::build_info::VERSION,
        dirsync::build_info::COMMIT,
        dirsync::build_info::BUILD_DATE
    );
    assert!(body.contains(&build), "{build} missing from\n{body}");

    let exports = exported(&body);
    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !PROMETHEUS_METRICS.contains(&n.as_str()))
        .filter(|n| !exports.contains(family(n)) && !exports.contains(n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "the monitoring kit uses metrics dirsync does not export: {unknown:?}\nexported: {exports:?}"
    );
}
