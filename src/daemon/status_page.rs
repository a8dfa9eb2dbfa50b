//! The read-only status page (`[http] status_page = true`): `GET /status` on the daemon's
//! health and metrics listener. Server-rendered HTML without any script: the last runs with
//! their status, each configured target's verdict in its last run and its counts (owned, not
//! owned, unfinished journal rows, failures of its last apply), and the changes of the last
//! applied plan, paged (`?page=N`, [`PAGE_SIZE`] a page). Everything comes from the store at
//! request time; user data appears only as `dirsync runs show` prints it (keys, operation kinds,
//! statuses and errors), never a secret, and every value is HTML-escaped.
//!
//! The page is a list of sections ([`Section`]); a future section (live-sync lag) is one more
//! entry of that list, shown only once there is data for it.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::store::{OperationPage, RunRecord, Store, StoreError, TargetCounts};

/// Changes shown on one page of the changes section.
pub const PAGE_SIZE: u32 = 100;

/// Runs listed in the runs section (and searched for each target's last verdict).
pub const RUNS_SHOWN: u32 = 20;

/// How often the browser reloads the page (a `<meta http-equiv="refresh">`, no script).
pub const REFRESH_SECONDS: u32 = 60;

/// What is shown as the page is rendered, read from the store (pure data: [`render`] does no
/// I/O, so it is unit-tested).
#[derive(Debug, Clone)]
pub struct StatusData {
    pub generated_at: DateTime<Utc>,
    /// The store, as reports name it (`StoreLocation::describe`: never a password).
    pub store: String,
    /// The configured targets, in configuration order.
    pub targets: Vec<TargetStatus>,
    /// The newest runs, newest first.
    pub runs: Vec<RunRecord>,
    /// The last applied plan's changes (the newest run that journaled operations), if any.
    pub changes: Option<Changes>,
}

/// One configured target with its counts.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub counts: TargetCounts,
}

/// One page of the last applied plan's changes.
#[derive(Debug, Clone)]
pub struct Changes {
    pub run: RunRecord,
    /// 1-based.
    pub page: u32,
    pub ops: OperationPage,
}

impl Changes {
    fn pages(&self) -> u64 {
        self.ops.total.div_ceil(u64::from(PAGE_SIZE)).max(1)
    }
}

/// Why a request for the page gets no page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("page: {0:?} is not a page number (1, 2, ...)")]
    BadPage(String),
    #[error("page {page}: there are {pages} pages of changes")]
    NoSuchPage { page: u32, pages: u64 },
    #[error("state store unreachable: {0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match self {
            PageError::BadPage(_) => StatusCode::BAD_REQUEST,
            PageError::NoSuchPage { .. } => StatusCode::NOT_FOUND,
            PageError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut r = (status, format!("{self}\n")).into_response();
        secure_headers(&mut r);
        r
    }
}

/// The page number of a query string (`page=N`, default 1); other parameters are ignored.
pub fn page_of(query: Option<&str>) -> Result<u32, PageError> {
    let Some(q) = query else { return Ok(1) };
    match url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "page") {
        None => Ok(1),
        Some((_, v)) => match v.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(PageError::BadPage(v.chars().take(40).collect())),
        },
    }
}

/// Reads what the page shows from the store: the newest runs, each configured target's counts,
/// and one page of the last applied plan's changes (an error when `page` is past the last).
pub async fn load(store: &dyn Store, config: &Config, page: u32) -> Result<StatusData, PageError> {
    let runs = store.list_runs(RUNS_SHOWN).await?;
    let mut targets = Vec::with_capacity(config.targets.len());
    for t in &config.targets {
        targets.push(TargetStatus {
            name: t.name.clone(),
            kind: t.kind.as_str().to_string(),
            enabled: t.enabled,
            counts: store.target_counts(&t.name).await?,
        });
    }
    let changes = match store.last_journaled_run().await? {
        Some(id) => match store.get_run(id).await? {
            Some(run) => {
                let offset = u64::from(page - 1) * u64::from(PAGE_SIZE);
                let ops = store.run_operations_page(id, offset, PAGE_SIZE).await?;
                Some(Changes { run, page, ops })
            }
            None => None,
        },
        None => None,
    };
    let pages = changes.as_ref().map_or(1, Changes::pages);
    if u64::from(page) > pages {
        return Err(PageError::NoSuchPage { page, pages });
    }
    Ok(StatusData {
        generated_at: Utc::now(),
        store: config.state.location.describe(),
        targets,
        runs,
        changes,
    })
}

/// The response: the page, with headers that keep it read-only and inert (no script may run,
/// nothing may embed it, no caching).
pub fn response(data: &StatusData) -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render(data),
    )
        .into_response();
    secure_headers(&mut r);
    r
}

fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// HTML-escaped text (`&`, `<`, `>`, `"`, `'`), with control characters shown escaped (`\n`)
/// as the text report shows them.
struct Esc<'a>(&'a str);

impl std::fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                c if c.is_control() => write!(f, "{}", c.escape_default())?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

/// One section of the page: its anchor id, heading and body (HTML).
struct Section {
    id: &'static str,
    title: String,
    body: String,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;margin:.5rem 0 1rem}\
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.n{text-align:right}\
.succeeded,.allowed{color:#176117}.partial,.forced,.interrupted,.skipped{color:#8a5a00}\
.failed,.blocked{color:#a01515;font-weight:bold}.running,.pending,.sent{color:#1f4fa0}\
small,.muted{color:#666}nav a{margin-right:.5rem}";

/// The page's HTML.
pub fn render(d: &StatusData) -> String {
    // Sections in page order. A live-sync lag section joins this list once the daemon has
    // such figures (none today: no placeholder is shown).
    let sections = [targets_section(d), runs_section(d), changes_section(d)];
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <title>dirsync status</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>dirsync status</h1>\n\
         <p class=\"muted\">dirsync {} &middot; state: {} &middot; generated {} &middot; \
         reloads every {REFRESH_SECONDS} s</p>\n<nav>",
        esc(crate::build_info::VERSION),
        esc(&d.store),
        time(d.generated_at),
    );
    for s in &sections {
        let _ = write!(o, "<a href=\"#{}\">{}</a>", s.id, esc(&s.title));
    }
    o.push_str("</nav>\n</header>\n<main>\n");
    for s in &sections {
        let _ = write!(
            o,
            "<section id=\"{}\">\n<h2>{}</h2>\n{}</section>\n",
            s.id,
            esc(&s.title),
            s.body
        );
    }
    o.push_str("</main>\n</body>\n</html>\n");
    o
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A CSS class for a status word, only from the fixed set the style knows.
fn class(word: &str) -> &'static str {
    match word {
        "succeeded" => "succeeded",
        "allowed" => "allowed",
        "partial" => "partial",
        "forced" => "forced",
        "interrupted" => "interrupted",
        "skipped" => "skipped",
        "failed" => "failed",
        "blocked" => "blocked",
        "running" => "running",
        "pending" => "pending",
        "sent" => "sent",
        _ => "",
    }
}

/// What a run's stored summary says of one target.
struct TargetInRun<'a> {
    run: &'a RunRecord,
    entry: &'a serde_json::Value,
}

impl TargetInRun<'_> {
    fn str(&self, path: &[&str]) -> Option<&str> {
        path.iter()
            .try_fold(self.entry, |v, k| v.get(k))
            .and_then(|v| v.as_str())
    }
    fn num(&self, path: &[&str]) -> Option<u64> {
        path.iter()
            .try_fold(self.entry, |v, k| v.get(k))
            .and_then(serde_json::Value::as_u64)
    }
    /// `failed` when the target failed in the run, `skipped` when another instance held it,
    /// else the safety verdict (`allowed`, `blocked`, `forced`).
    fn verdict(&self) -> &str {
        if self.str(&["error"]).is_some() {
            "failed"
        } else if self.str(&["skipped"]).is_some() {
            "skipped"
        } else {
            self.str(&["verdict", "status"]).unwrap_or("?")
        }
    }
    /// Why: the target's error, why it was skipped, the safety reasons.
    fn reasons(&self) -> Vec<&str> {
        let mut out: Vec<&str> = ["error", "skipped"]
            .iter()
            .filter_map(|k| self.str(&[k]))
            .collect();
        if let Some(rs) = self
            .entry
            .get("verdict")
            .and_then(|v| v.get("reasons"))
            .and_then(|r| r.as_array())
        {
            out.extend(rs.iter().filter_map(|r| r.get("message")?.as_str()));
        }
        out
    }
    /// The plan's changes by kind (`create 3, disable 1`), or `no changes`.
    fn planned(&self) -> String {
        let Some(s) = self.entry.get("summary").and_then(|s| s.as_object()) else {
            return "-".into();
        };
        let parts: Vec<String> = [
            "create",
            "update",
            "set_roles",
            "set_groups",
            "enable",
            "disable",
            "delete",
        ]
        .iter()
        .filter_map(|k| {
            let n = s.get(*k)?.as_u64().filter(|n| *n > 0)?;
            Some(format!("{k} {n}"))
        })
        .collect();
        if parts.is_empty() {
            "no changes".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The newest run (of `runs`, newest first) whose summary has `target`, and its entry; with
/// `applied`, only runs that applied something to it.
fn last_of<'a>(runs: &'a [RunRecord], target: &str, applied: bool) -> Option<TargetInRun<'a>> {
    runs.iter().find_map(|run| {
        let entry = run
            .summary
            .get("targets")?
            .as_array()?
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(target))?;
        (!applied || entry.get("applied").is_some_and(|a| a.is_object()))
            .then_some(TargetInRun { run, entry })
    })
}

fn targets_section(d: &StatusData) -> Section {
    let mut b = String::new();
    if d.targets.is_empty() {
        b.push_str("<p>No target is configured.</p>\n");
    } else {
        b.push_str(
            "<table>\n<thead><tr><th>Target</th><th>Kind</th><th>Last verdict</th>\
             <th>Planned in that run</th><th>Owned</th><th>Not owned</th>\
             <th>Pending</th><th>Failed in last apply</th></tr></thead>\n<tbody>\n",
        );
        for t in &d.targets {
            let last = last_of(&d.runs, &t.name, false);
            let applied = last_of(&d.runs, &t.name, true);
            let _ = write!(
                b,
                "<tr><td>{}{}</td><td>{}</td>",
                esc(&t.name),
                if t.enabled {
                    ""
                } else {
                    " <small>(disabled)</small>"
                },
                esc(&t.kind)
            );
            match &last {
                Some(l) => {
                    let v = l.verdict();
                    let _ = write!(
                        b,
                        "<td><span class=\"{}\">{}</span> <small>(run {}, {})</small>",
                        class(v),
                        esc(v),
                        l.run.id,
                        esc(l.run.trigger.as_str())
                    );
                    for r in l.reasons() {
                        let _ = write!(b, "<br><small>{}</small>", esc(r));
                    }
                    let _ = write!(b, "</td><td>{}</td>", esc(&l.planned()));
                }
                None => b.push_str("<td class=\"muted\">no run yet</td><td>-</td>"),
            }
            let _ = write!(
                b,
                "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                t.counts.owned, t.counts.not_owned, t.counts.unfinished
            );
            match applied.as_ref().and_then(|a| a.num(&["applied", "failed"])) {
                Some(n) => {
                    let _ = write!(
                        b,
                        "<td class=\"n\"><span class=\"{}\">{n}</span></td>",
                        if n > 0 { "failed" } else { "" }
                    );
                }
                None => b.push_str("<td class=\"n\">-</td>"),
            }
            b.push_str("</tr>\n");
        }
        b.push_str("</tbody>\n</table>\n");
        b.push_str(
            "<p><small>Pending: journal rows an interrupted run left pending or sent (the next \
             run reconciles them). Failed in last apply: operations that failed in the newest \
             run listed below that applied changes to the target.</small></p>\n",
        );
    }
    Section {
        id: "targets",
        title: "Targets".into(),
        body: b,
    }
}

fn runs_section(d: &StatusData) -> Section {
    let mut b = String::new();
    if d.runs.is_empty() {
        b.push_str("<p>No run yet.</p>\n");
    } else {
        b.push_str(
            "<table>\n<thead><tr><th>Run</th><th>Trigger</th><th>Status</th><th>Started</th>\
             <th>Took</th><th>Source users</th><th>Planned</th><th>Applied</th>\
             <th>Failed</th><th>Error</th></tr></thead>\n<tbody>\n",
        );
        for r in &d.runs {
            let status = r.status.as_str();
            let took = r.finished_at.map_or_else(
                || "-".to_string(),
                |f| {
                    let secs = (f - r.started_at).num_seconds().max(0);
                    humantime::format_duration(std::time::Duration::from_secs(secs.unsigned_abs()))
                        .to_string()
                },
            );
            let _ = writeln!(
                b,
                "<tr><td class=\"n\">{}</td><td>{}{}</td><td><span class=\"{}\">{}</span></td>\
                 <td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                r.id,
                esc(r.trigger.as_str()),
                if r.forced { ", forced" } else { "" },
                class(status),
                esc(status),
                time(r.started_at),
                esc(&took),
                r.source_count.map_or_else(|| "-".into(), |n| n.to_string()),
                r.planned,
                r.applied,
                r.failed,
                esc(r.error.as_deref().unwrap_or("")),
            );
        }
        b.push_str("</tbody>\n</table>\n");
        b.push_str(
            "<p><small>Each run's full report: <code>dirsync runs show ID</code>.</small></p>\n",
        );
    }
    Section {
        id: "runs",
        title: format!("Recent runs (last {RUNS_SHOWN})"),
        body: b,
    }
}

fn changes_section(d: &StatusData) -> Section {
    let mut b = String::new();
    let title = match &d.changes {
        None => {
            b.push_str("<p>No run has applied changes yet.</p>\n");
            "Changes of the last applied plan".to_string()
        }
        Some(c) => {
            let pages = c.pages();
            let first = u64::from(c.page - 1) * u64::from(PAGE_SIZE);
            let _ = writeln!(
                b,
                "<p>Run {} ({}, <span class=\"{}\">{}</span>, started {}): {} change{}; \
                 page {} of {pages}.</p>",
                c.run.id,
                esc(c.run.trigger.as_str()),
                class(c.run.status.as_str()),
                esc(c.run.status.as_str()),
                time(c.run.started_at),
                c.ops.total,
                if c.ops.total == 1 { "" } else { "s" },
                c.page,
            );
            if !c.ops.operations.is_empty() {
                b.push_str(
                    "<table>\n<thead><tr><th>#</th><th>Target</th><th>Change</th><th>Key</th>\
                     <th>Status</th><th>Error</th></tr></thead>\n<tbody>\n",
                );
                for (i, op) in c.ops.operations.iter().enumerate() {
                    let _ = writeln!(
                        b,
                        "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
                         <td><span class=\"{}\">{}</span></td><td>{}</td></tr>",
                        first + i as u64 + 1,
                        esc(&op.target),
                        esc(&op.kind),
                        esc(&op.source_key),
                        class(&op.status),
                        esc(&op.status),
                        esc(op.last_error.as_deref().unwrap_or("")),
                    );
                }
                b.push_str("</tbody>\n</table>\n");
            }
            if pages > 1 {
                b.push_str("<nav class=\"pages\">");
                if c.page > 1 {
                    let _ = write!(
                        b,
                        "<a href=\"?page={}#changes\" rel=\"prev\">previous</a>",
                        c.page - 1
                    );
                }
                if u64::from(c.page) < pages {
                    let _ = write!(
                        b,
                        "<a href=\"?page={}#changes\" rel=\"next\">next</a>",
                        c.page + 1
                    );
                }
                b.push_str("</nav>\n");
            }
            format!("Changes of the last applied plan (run {})", c.run.id)
        }
    };
    Section {
        id: "changes",
        title,
        body: b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OperationRecord, RunStatus, Trigger};

    fn run(id: i64, summary: serde_json::Value) -> RunRecord {
        let at = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        RunRecord {
            id,
            trigger: Trigger::Schedule,
            status: RunStatus::Succeeded,
            started_at: at,
            finished_at: Some(at + chrono::TimeDelta::seconds(3)),
            targets: vec!["covata".into()],
            forced: false,
            source_count: Some(2),
            planned: 2,
            applied: 2,
            failed: 0,
            error: Some("<b>boom</b>".into()),
            summary,
        }
    }

    fn op(i: i64, key: &str) -> OperationRecord {
        OperationRecord {
            id: i,
            run_id: 1,
            target: "covata".into(),
            source_key: key.into(),
            kind: "create".into(),
            status: "failed".into(),
            attempts: 1,
            last_error: Some("refused: \"x\" & <y>".into()),
            remote_id: None,
            payload: serde_json::json!({"account": {"password": "never shown"}}),
            updated_at: Utc::now(),
        }
    }

    fn data(total: u64, page: u32, keys: &[&str]) -> StatusData {
        let summary = serde_json::json!({
            "targets": [{
                "name": "covata", "kind": "covata",
                "verdict": {"status": "blocked", "reasons": [{"message": "deletes <over> limit"}]},
                "summary": {"create": 2, "update": 0},
                "applied": {"applied": 1, "failed": 1},
            }]
        });
        StatusData {
            generated_at: Utc::now(),
            store: "sqlite /var/lib/dirsync/dirsync.db".into(),
            targets: vec![TargetStatus {
                name: "covata".into(),
                kind: "covata".into(),
                enabled: true,
                counts: TargetCounts {
                    owned: 7,
                    not_owned: 1,
                    unfinished: 0,
                },
            }],
            runs: vec![run(1, summary)],
            changes: Some(Changes {
                run: run(1, serde_json::json!({})),
                page,
                ops: OperationPage {
                    total,
                    operations: keys
                        .iter()
                        .enumerate()
                        .map(|(i, k)| op(i as i64 + 1, k))
                        .collect(),
                },
            }),
        }
    }

    #[test]
    fn every_value_is_escaped_and_no_script_or_payload_is_written() {
        let html = render(&data(2, 1, &["<script>alert(1)</script>", "a&b\"c'd\ne"]));
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("a&amp;b&quot;c&#39;d\\ne"), "{html}");
        assert!(
            html.contains("refused: &quot;x&quot; &amp; &lt;y&gt;"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;boom&lt;/b&gt;"), "{html}");
        assert!(html.contains("deletes &lt;over&gt; limit"), "{html}");
        assert!(!html.contains("never shown"), "payloads are not shown");
        // The figures.
        assert!(
            html.contains("<span class=\"blocked\">blocked</span>"),
            "{html}"
        );
        assert!(html.contains("create 2"), "{html}");
        assert!(html.contains("<td class=\"n\">7</td>"), "{html}");
        assert!(html.contains("2 changes; page 1 of 1."), "{html}");
        // No live-sync section without data, and no placeholder.
        assert!(!html.to_lowercase().contains("lag"), "{html}");
    }

    #[test]
    fn a_failed_or_skipped_target_shows_why_and_the_last_apply_counts() {
        let failed = serde_json::json!({"targets": [{
            "name": "covata", "verdict": {"status": "allowed"},
            "summary": {"create": 0}, "error": "covata: unreachable <host>",
        }]});
        let applied = serde_json::json!({"targets": [{
            "name": "covata", "verdict": {"status": "allowed"},
            "summary": {"update": 3}, "applied": {"applied": 1, "failed": 2},
        }]});
        let mut d = data(0, 1, &[]);
        d.runs = vec![run(3, failed), run(2, applied)];
        let html = render(&d);
        assert!(
            html.contains("<span class=\"failed\">failed</span> <small>(run 3, schedule)</small>"),
            "{html}"
        );
        assert!(html.contains("covata: unreachable &lt;host&gt;"), "{html}");
        assert!(html.contains("<td>no changes</td>"), "{html}");
        // Failed in last apply: from run 2, the newest that applied something.
        assert!(
            html.contains("<td class=\"n\"><span class=\"failed\">2</span></td>"),
            "{html}"
        );
        let skipped = serde_json::json!({"targets": [{
            "name": "covata", "verdict": {"status": "allowed"},
            "skipped": "another instance holds the target",
        }]});
        d.runs = vec![run(4, skipped)];
        let html = render(&d);
        assert!(
            html.contains("<span class=\"skipped\">skipped</span>"),
            "{html}"
        );
        assert!(html.contains("another instance holds the target"), "{html}");
        assert!(html.contains("<td class=\"n\">-</td></tr>"), "{html}");
    }

    #[test]
    fn paging_links_and_page_numbers() {
        let html = render(&data(250, 2, &["k"]));
        assert!(html.contains("page 2 of 3."), "{html}");
        assert!(html.contains("href=\"?page=1#changes\""), "{html}");
        assert!(html.contains("href=\"?page=3#changes\""), "{html}");
        // Row numbers continue from the previous pages.
        assert!(html.contains("<td class=\"n\">101</td>"), "{html}");
        let last = render(&data(250, 3, &["k"]));
        assert!(!last.contains("rel=\"next\""), "{last}");

        assert_eq!(page_of(None).unwrap(), 1);
        assert_eq!(page_of(Some("page=3")).unwrap(), 3);
        assert_eq!(page_of(Some("x=1&page=2")).unwrap(), 2);
        assert_eq!(page_of(Some("x=1")).unwrap(), 1);
        for bad in ["page=0", "page=-1", "page=abc", "page=", "page=99999999999"] {
            assert!(
                matches!(page_of(Some(bad)), Err(PageError::BadPage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_store_renders_without_sections_failing() {
        let d = StatusData {
            generated_at: Utc::now(),
            store: "sqlite x".into(),
            targets: vec![],
            runs: vec![],
            changes: None,
        };
        let html = render(&d);
        assert!(html.contains("No run yet."), "{html}");
        assert!(html.contains("No run has applied changes yet."), "{html}");
    }
}
