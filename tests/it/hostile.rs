//! Hostile input: the committed corpus under `tests/data/hostile/` (plus big files generated
//! here) run through the real binary against the fake Covata. Each input is either rejected
//! with a clear error (exit 1, naming the file and the line) or accepted and sent correctly
//! encoded (asserted on what the fake received). And: no secret or token ever appears in logs
//! or reports.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::cmd::{code, out, stderr, stdout};
use crate::support::covata::{self, FakeCovata, Fault, PathMatch};
use crate::support::env::{Backend, TestEnv};

const HEADER: &str = "id,email,first,last,status,groups\n";

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hostile")
        .join(name)
}

crate::support::env::env_with_fake!(Env, FakeCovata, HEADER);

impl Env {
    async fn new() -> Env {
        let env = Env {
            fake: FakeCovata::start().await,
            env: TestEnv::new(Backend::Sqlite).await,
        };
        env.config()
            .csv("")
            .covata_with_admins(&env.fake.base_url(), "max_backoff = \"1s\"")
            .write();
        env
    }

    fn csv_path(&self) -> PathBuf {
        self.path("users.csv")
    }

    fn write_csv_bytes(&self, bytes: &[u8]) {
        std::fs::write(self.csv_path(), bytes).unwrap();
    }

    fn copy_corpus(&self, name: &str) {
        self.write_csv_bytes(&std::fs::read(corpus(name)).unwrap());
    }

    /// Bodies of `POST /api/v1/users` (single creates), parsed.
    fn create_bodies(&self) -> Vec<Value> {
        self.fake
            .requests_to("POST", "/api/v1/users")
            .into_iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    }
}

/// Exit 1, nothing sent to the target, and every `(line, text)` is in an error line that
/// names the file and that line.
fn assert_rejected(env: &Env, o: &Output, want: &[(u64, &str)]) {
    assert_eq!(code(o), 1, "{}", out(o));
    let err = stderr(o);
    for (line, text) in want {
        let located = format!("users.csv:{line}:");
        assert!(
            err.lines()
                .any(|l| l.contains(&located) && l.contains(text)),
            "want {located} ... {text:?}\n{}",
            out(o)
        );
    }
    let api: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && !r.path.starts_with("/api/oauth"))
        .collect();
    assert!(api.is_empty(), "{api:?}");
    assert!(env.fake.users().is_empty());
}

/// Exit 7 (applied, records quarantined), every `(line, text)` in a `? quarantined` line of
/// the report naming the file and that line, and exactly `created` users on the target: the
/// quarantined records are never sent.
fn assert_quarantined(env: &Env, o: &Output, want: &[(u64, &str)], created: usize) {
    assert_eq!(code(o), 7, "{}", out(o));
    let report = stdout(o);
    for (line, text) in want {
        let located = format!("users.csv:{line}");
        assert!(
            report
                .lines()
                .any(|l| l.contains("? quarantined") && l.contains(&located) && l.contains(text)),
            "want ? quarantined {located} ... {text:?}\n{}",
            out(o)
        );
    }
    assert_eq!(env.fake.users().len(), created, "{}", out(o));
}

#[tokio::test]
async fn control_characters_in_names_are_rejected_with_the_line() {
    let env = Env::new().await;
    env.copy_corpus("control.csv");
    let o = env.run(&["sync"]);
    // The escape sequence and the bell are shown escaped, never sent to the terminal.
    assert!(!stdout(&o).contains('\u{1b}') && !stdout(&o).contains('\u{7}'));
    assert_quarantined(
        &env,
        &o,
        &[(3, "control character"), (4, "control character")],
        1,
    );
}

#[tokio::test]
async fn latin1_bytes_are_an_invalid_utf8_error_naming_the_line() {
    let env = Env::new().await;
    env.copy_corpus("latin1.csv");
    let o = env.run(&["sync"]);
    assert_quarantined(&env, &o, &[(3, "invalid UTF-8")], 1);
}

#[tokio::test]
async fn duplicate_headers_are_rejected() {
    let env = Env::new().await;
    env.copy_corpus("duplicate_header.csv");
    let o = env.run(&["sync"]);
    assert_rejected(&env, &o, &[(1, "duplicate header")]);
}

#[tokio::test]
async fn emails_with_spaces_are_rejected() {
    let env = Env::new().await;
    env.copy_corpus("email_space.csv");
    let o = env.run(&["sync"]);
    assert_quarantined(&env, &o, &[(2, "invalid email")], 0);
}

#[tokio::test]
async fn formula_prefixes_are_sent_verbatim_and_reports_keep_their_tables() {
    let env = Env::new().await;
    env.copy_corpus("formula.csv");

    // The markdown plan: every table row has as many cells as its header.
    let o = env.run_code(&["plan", "--format", "markdown"], 2);
    let md = stdout(&o);
    assert!(md.contains("HYPERLINK"), "{md}");
    assert!(check_markdown_tables(&md) > 0, "no table:\n{md}");
    // The text plan shows the formula key as it is, on one line.
    let o = env.run_code(&["plan"], 2);
    assert!(stdout(&o).contains("=HYPERLINK(x)"), "{}", out(&o));

    env.run_code(&["sync"], 0);
    let want = [
        ("f1@example.com", "=cmd|' /C calc'!A0", "Formula"),
        ("f2@example.com", "+SUM(1;2)", "Plus"),
        ("f3@example.com", "-2+3", "Minus"),
        ("f4@example.com", "@SUM(A1)", "At"),
        ("f5@example.com", "Key", "Formula|Pipe"),
    ];
    let bodies = env.create_bodies();
    for (email, first, last) in want {
        let u = env.fake.user_by_email(email).unwrap();
        assert_eq!(u.first_name.as_deref(), Some(first));
        assert_eq!(u.last_name.as_deref(), Some(last));
        assert!(
            bodies
                .iter()
                .any(|b| b["email"] == email && b["firstName"] == first && b["lastName"] == last),
            "{email}: {bodies:?}"
        );
    }
    // The run's own markdown report keeps its tables too.
    let o = env.run_code(&["runs", "--format", "markdown"], 0);
    check_markdown_tables(&stdout(&o));
}

/// Every run of `|`-lines (a table) has the same number of unescaped cell separators, and no
/// line carries a terminal escape. Gives the number of table lines.
fn check_markdown_tables(md: &str) -> usize {
    let mut rows = 0;
    let cells = |line: &str| {
        let mut n = 0;
        let mut escaped = false;
        let mut in_code = false;
        for c in line.chars() {
            match c {
                '\\' if !escaped => {
                    escaped = true;
                    continue;
                }
                '`' if !escaped => in_code = !in_code,
                '|' if !escaped && !in_code => n += 1,
                _ => {}
            }
            escaped = false;
        }
        n
    };
    let mut width: Option<usize> = None;
    for line in md.lines() {
        let t = line.trim();
        if t.starts_with('|') {
            rows += 1;
            let n = cells(t);
            match width {
                None => width = Some(n),
                Some(w) => assert_eq!(n, w, "table row breaks the table: {line:?}\n{md}"),
            }
        } else {
            width = None;
        }
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }
    rows
}

#[tokio::test]
async fn special_characters_in_keys_and_emails_are_sent_exactly() {
    let env = Env::new().await;
    env.copy_corpus("special.csv");
    env.run_code(&["sync"], 0);
    let want = [
        ("a/b", "a/b@example.com", "Slash"),
        ("q?x", "q?x@example.com", "Question"),
        ("h#1", "h#1@example.com", "Hash"),
        ("p%2F20", "p%2F20@example.com", "Percent"),
        ("../etc", "dot..dot@example.com", "Dots"),
        ("with space", "space@example.com", "Space"),
        (
            "\u{dc}n\u{ef}",
            "\u{fc}n\u{ef}@ex\u{e4}mple.com",
            "J\u{fc}rgen",
        ),
    ];
    let bodies = env.create_bodies();
    assert_eq!(bodies.len(), want.len(), "{bodies:?}");
    for (_, email, first) in want {
        assert!(
            bodies
                .iter()
                .any(|b| b["email"] == email && b["firstName"] == first),
            "{email}: {bodies:?}"
        );
        assert_eq!(
            env.fake.user_by_email(email).unwrap().first_name.as_deref(),
            Some(first)
        );
    }
    let store = crate::support::cmd::store(&env.config_path()).await;
    let accounts = store.load_accounts("covata").await.unwrap();
    let mut keys: Vec<&str> = accounts.iter().map(|a| a.key.as_str()).collect();
    keys.sort_unstable();
    let mut want_keys: Vec<&str> = want.iter().map(|w| w.0).collect();
    want_keys.sort_unstable();
    assert_eq!(keys, want_keys);

    // A later update of each: one PUT per user, to its id as ONE path segment, with the
    // exact new value in the body.
    let text = std::fs::read_to_string(env.csv_path()).unwrap();
    let text = text.replace(",Key,", ",Renamed/?#%..,");
    env.write_csv_bytes(text.replace(",\u{5f20},", ",Renamed/?#%..,").as_bytes());
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    let puts: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), want.len(), "{puts:?}");
    for (_, email, _) in want {
        let u = env.fake.user_by_email(email).unwrap();
        assert_eq!(u.last_name.as_deref(), Some("Renamed/?#%.."), "{email}");
        let put = puts
            .iter()
            .find(|r| r.path == format!("/api/v1/users/{}", u.id))
            .unwrap_or_else(|| panic!("{email}: {puts:?}"));
        assert!(put.query.is_none(), "{put:?}");
        let body: Value = serde_json::from_str(&put.body).unwrap();
        assert_eq!(body["lastName"], "Renamed/?#%..", "{put:?}");
    }
    // `--user` with such a key works, and a third sync has nothing to do.
    env.run_code(&["sync", "--dry-run", "--user", "a/b"], 0);
    env.run_code(&["plan"], 0);
}

#[tokio::test]
async fn email_lookups_percent_encode_the_email_as_one_query_value() {
    // A create whose answer is lost makes dirsync look the account up by email.
    let env = Env::new().await;
    let email = "q?x#y%2F&z=1/..@example.com";
    env.write_csv_bytes(format!("{HEADER}K1,{email},Look,Up,active,staff\n").as_bytes());
    env.fake.inject(
        "POST",
        PathMatch::exact("/api/v1/users"),
        Fault::DropAfterApply,
        1,
    );
    let o = env.run(&["sync"]);
    let lookups: Vec<_> = env
        .fake
        .requests_to("GET", "/api/v1/users")
        .into_iter()
        .filter_map(|r| r.query)
        .filter(|q| q.contains("email="))
        .collect();
    assert!(!lookups.is_empty(), "{}", out(&o));
    for q in &lookups {
        assert!(!q.contains('#') && !q.contains('?'), "{q}");
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
        let emails: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| k == "email")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(emails, vec![email], "{q}");
        assert!(!pairs.iter().any(|(k, _)| k == "z"), "{q}");
    }
    // Exactly one account, recorded with the fake's id: no duplicate create.
    assert_eq!(env.fake.users().len(), 1, "{}", out(&o));
    let o = env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 1, "{}", out(&o));
    assert_eq!(env.fake.users()[0].email, email);
}

#[tokio::test]
async fn a_one_megabyte_field_is_handled() {
    let env = Env::new().await;
    let big = "x".repeat(1 << 20);
    env.write_csv_bytes(
        format!("{HEADER}B1,b1@example.com,{big},Big,active,staff\nB2,b2@example.com,Small,Ok,active,staff\n")
            .as_bytes(),
    );
    let started = std::time::Instant::now();
    let o = env.run(&["plan", "--format", "json"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    match code(&o) {
        2 => {
            let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert!(plan.to_string().contains("b1@example.com"), "{}", out(&o));
        }
        1 => assert!(stderr(&o).contains("users.csv:2:"), "{}", out(&o)),
        _ => panic!("{}", out(&o)),
    }
    // Sent: the fake holds the value exactly, or the run reports a clear failure.
    let o = env.run(&["sync"]);
    eprintln!("1 MB field: sync exit {}", code(&o));
    match code(&o) {
        0 => {
            let u = env.fake.user_by_email("b1@example.com").unwrap();
            assert_eq!(u.first_name.as_deref(), Some(big.as_str()));
        }
        1 | 4 => assert!(env.fake.user_by_email("b2@example.com").is_some() || code(&o) == 1),
        _ => panic!("{}", out(&o)),
    }
}

#[tokio::test]
async fn ten_thousand_columns_are_read() {
    let env = Env::new().await;
    let mut header: Vec<String> = (0..10_000).map(|i| format!("col{i}")).collect();
    header[0] = "id".into();
    header[5_000] = "email".into();
    header[9_996] = "first".into();
    header[9_997] = "last".into();
    header[9_998] = "status".into();
    header[9_999] = "groups".into();
    let mut row: Vec<String> = (0..10_000).map(|i| format!("v{i}")).collect();
    row[0] = "W1".into();
    row[5_000] = "wide@example.com".into();
    row[9_996] = "Wide".into();
    row[9_997] = "Columns".into();
    row[9_998] = "active".into();
    row[9_999] = "staff".into();
    let mut short = row.clone();
    short.pop();
    short[0] = "W2".into();
    let data = format!(
        "{}\n{}\n{}\n",
        header.join(","),
        row.join(","),
        short.join(",")
    );
    env.write_csv_bytes(data.as_bytes());
    // The short row is an error naming its line.
    let o = env.run(&["sync"]);
    assert_rejected(&env, &o, &[(3, "expected 10000 fields")]);
    // Without it: accepted and sent.
    let data = format!("{}\n{}\n", header.join(","), row.join(","));
    env.write_csv_bytes(data.as_bytes());
    env.run_code(&["sync"], 0);
    let u = env.fake.user_by_email("wide@example.com").unwrap();
    assert_eq!(u.first_name.as_deref(), Some("Wide"));
    assert_eq!(u.last_name.as_deref(), Some("Columns"));
}

/// Runs of 32+ hex digits (the shape of the fake's tokens: a simple UUID), except content
/// hashes (same shape), which are the value of a `hash` field.
fn token_like(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_ascii_hexdigit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                start = None;
                if i - s < 32 {
                    continue;
                }
                let before = &text[text.floor_char_boundary(s.saturating_sub(12))..s];
                if !before.contains("hash") {
                    found.push(text[s..i].to_string());
                }
            }
            _ => {}
        }
    }
    found
}

fn assert_no_secrets(what: &str, o: &Output) {
    let all = format!("{}\n{}", stdout(o), stderr(o));
    for secret in [covata::PASSWORD, covata::CLIENT_SECRET] {
        assert!(!all.contains(secret), "{what}: {secret:?} leaked\n{all}");
    }
    let tokens = token_like(&all);
    assert!(tokens.is_empty(), "{what}: token-like {tokens:?}\n{all}");
    for (i, _) in all.match_indices("Bearer ") {
        let next: String = all[i + 7..].chars().take(8).collect();
        assert!(
            !next.chars().all(|c| c.is_ascii_alphanumeric()),
            "{what}: a bearer token at {i}: {next:?}"
        );
    }
    for (i, _) in all.match_indices("access_token") {
        let around: String = all[i..].chars().take(80).collect();
        assert!(token_like(&around).is_empty(), "{what}: {around}");
    }
}

#[tokio::test]
async fn no_secret_or_token_in_logs_or_reports() {
    let env = Env::new().await;
    let rows: String = (1..=5)
        .map(|i| format!("S{i},s{i}@example.com,First{i},Last{i},active,staff\n"))
        .collect();
    env.write_csv_bytes(format!("{HEADER}{rows}").as_bytes());

    // Trace, JSON logs: creates (token grant included).
    let o = env.run_code(
        &["sync", "-vv", "--log-format", "json", "--format", "json"],
        0,
    );
    assert!(!stderr(&o).is_empty(), "trace logging produced nothing");
    assert_no_secrets("sync json", &o);
    assert_eq!(env.fake.users().len(), 5);

    // Trace, text logs: updates, with tokens expired so they are refreshed.
    env.fake.expire_all_tokens();
    env.write_csv_bytes(format!("{HEADER}{}", rows.replace("Last", "Changed")).as_bytes());
    let o = env.run_code(&["sync", "-vv", "--format", "markdown"], 0);
    assert_no_secrets("sync text", &o);

    // Tokens were issued (a grant per run at least) and none of them showed.
    let (grants, refreshes) = env.fake.token_grants();
    assert!(grants + refreshes >= 2, "{grants} {refreshes}");

    // Plans and reports.
    let o = env.run(&["plan", "-vv", "--format", "json"]);
    assert_no_secrets("plan", &o);
    let o = env.run_code(&["runs", "-vv", "--format", "json"], 0);
    assert_no_secrets("runs", &o);
    let runs: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<String> = runs
        .as_array()
        .or_else(|| runs["runs"].as_array())
        .unwrap_or_else(|| panic!("{runs}"))
        .iter()
        .map(|r| r["id"].to_string())
        .collect();
    assert!(ids.len() >= 2, "{runs}");
    for id in &ids {
        for format in ["json", "text", "markdown"] {
            let o = env.run_code(&["runs", "show", id, "-vv", "--format", format], 0);
            assert_no_secrets("runs show", &o);
        }
    }
    let o = env.run(&["check", "-vv", "--log-format", "json"]);
    assert_no_secrets("check", &o);
}
