//! The target answering 429, 500 / 503 or too slowly for a stretch of consecutive requests,
//! during syncs of a few hundred operations (300 creates; then 100 renames and 20 leavers).
//!
//! What must hold: the HTTP layer absorbs what its retry policy covers (docs/applying.md, "HTTP
//! behaviour": 429 and 503 retried for every request after `Retry-After`; other 5xx and request
//! timeouts only for idempotent requests; at most `max_retries` retries) and the run reports
//! every operation it could not apply (exit 4, each failure with the target's answer); the
//! store and the target agree on who exists after the faulted run; the next run converges
//! exactly, with no create sent twice.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cmd::{code, out, stderr, str_fields};
use crate::support::covata::{Exchange, FakeCovata, Fault, PathMatch};
use crate::support::faultrun::{
    RUN_LIMIT, assert_converged, assert_store_agrees, assert_store_agrees_on, creates, csv,
    run_bounded, write_config,
};

const N: usize = 300;
/// Leavers of the second phase (which also renames every third user): users 281..=300.
const LEFT_FROM: usize = N - 19;

/// One faulted `dirsync sync --format json`: its exit code, report and what the fake saw.
struct Faulted {
    code: i32,
    report: Value,
    /// Requests the fake received during the run.
    requests: usize,
    /// Of those, how many fired an injected fault.
    faults: usize,
    took: Duration,
    exchanges: Vec<Exchange>,
    stderr: String,
}

impl Faulted {
    fn applied(&self) -> &Value {
        &self.report["targets"][0]["applied"]
    }
    fn failed(&self) -> u64 {
        self.applied()["failed"].as_u64().unwrap()
    }
    fn succeeded(&self) -> u64 {
        self.applied()["applied"].as_u64().unwrap()
    }
    fn skipped(&self) -> u64 {
        self.applied()["skipped"].as_u64().unwrap()
    }
    fn notes(&self) -> usize {
        self.applied()["notes"].as_array().unwrap().len()
    }
    /// The HTTP layer's retries logged for this reason (`HTTP 429`, ...; a prefix of the
    /// transport error for timeouts).
    fn retries(&self, reason: &str) -> usize {
        self.stderr
            .lines()
            .filter(|l| l.contains("retrying") && l.contains(&format!("reason={reason}")))
            .count()
    }
    /// Failures whose error mentions `text`.
    fn failures_saying(&self, text: &str) -> usize {
        self.failures()
            .iter()
            .filter(|(_, _, e)| e.contains(text))
            .count()
    }
    /// Operations the run planned (its summary's changes).
    fn planned(&self) -> u64 {
        let s = &self.report["targets"][0]["summary"];
        [
            "create",
            "update",
            "set_roles",
            "set_groups",
            "enable",
            "disable",
            "delete",
        ]
        .iter()
        .map(|k| s[k].as_u64().unwrap_or(0))
        .sum()
    }
    fn figures(&self) -> String {
        format!(
            "{} ops planned, {} requests, {} faults fired, {} applied, {} failed, {} skipped, \
             exit {}, {:.1?}",
            self.planned(),
            self.requests,
            self.faults,
            self.succeeded(),
            self.failed(),
            self.skipped(),
            self.code,
            self.took
        )
    }
    fn failures(&self) -> Vec<(String, String, String)> {
        str_fields(&self.applied()["failures"], ["key", "op", "error"])
            .into_iter()
            .map(|[key, op, error]| (key, op, error))
            .collect()
    }
}

fn sync_faulted(fake: &FakeCovata, config: &Path) -> Faulted {
    let first = fake.exchange_count();
    let started = Instant::now();
    let o = run_bounded(config, &["sync", "--format", "json"], RUN_LIMIT);
    let took = started.elapsed();
    let report: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", out(&o)));
    let exchanges: Vec<Exchange> = fake.exchanges().split_off(first);
    Faulted {
        code: code(&o),
        requests: exchanges.len(),
        faults: exchanges.iter().filter(|e| e.fault.is_some()).count(),
        report,
        took,
        exchanges,
        stderr: stderr(&o),
    }
}

/// Exit 4 exactly when some operation failed; the report's counts add up; every fault fired.
fn assert_reported(fake: &FakeCovata, f: &Faulted, what: &str) {
    let planned = f.planned();
    assert_eq!(fake.pending_faults(), 0, "{what}: faults left unfired");
    let failed = f.failed();
    assert_eq!(
        f.code,
        if failed > 0 { 4 } else { 0 },
        "{what}: exit code with {failed} failures: {}",
        f.report
    );
    assert_eq!(
        f.failures().len() as u64,
        failed,
        "{what}: every failure is listed"
    );
    let skipped = f.skipped();
    assert_eq!(
        f.succeeded() + failed + skipped,
        planned,
        "{what}: applied + failed + skipped = planned: {}",
        f.applied()
    );
}

fn setup(dir: &Path, fake: &FakeCovata, http: &str) -> std::path::PathBuf {
    let config = write_config(dir, fake, &dir.join("state.db"), http);
    std::fs::write(dir.join("users.csv"), csv(N, false, usize::MAX)).unwrap();
    config
}

/// A run with no fault after the faulted creates: it makes exactly the creates that failed.
async fn converge_creates(fake: &FakeCovata, config: &Path, failed: u64, what: &str) {
    let before = creates(fake);
    let f = sync_faulted(fake, config);
    assert_eq!(f.code, 0, "{what}: {}", f.report);
    assert_eq!(
        f.planned(),
        failed,
        "{what}: only the failed creates are planned again"
    );
    assert_converged(fake, config, N, false, usize::MAX, what).await;
    let after = creates(fake);
    assert_eq!(
        after.attempts - before.attempts,
        failed as usize,
        "{what}: one create request per failed create"
    );
}

fn second_phase_csv(dir: &Path) {
    std::fs::write(dir.join("users.csv"), csv(N, true, LEFT_FROM)).unwrap();
}

/// The gaps between consecutive attempts of the same create whose earlier attempt was answered
/// 429 (the wait the client made).
fn waits_after_429(exchanges: &[Exchange]) -> Vec<Duration> {
    let mut last: std::collections::HashMap<String, &Exchange> = Default::default();
    let mut waits = Vec::new();
    for e in exchanges.iter().filter(|e| e.is_create()) {
        let email = e.email().unwrap_or_default();
        if let Some(prev) = last.get(&email)
            && prev.status == Some(429)
        {
            waits.push(e.at.duration_since(prev.at));
        }
        last.insert(email, e);
    }
    waits
}

/// (1) 429 with `Retry-After: 1` for a stretch of 16 consecutive create requests, then (after a
/// clean run that makes the failed creates) for 16 consecutive requests of a run of updates,
/// role changes and bulk disables. Four requests are in flight and each may be retried twice: at least one
/// operation must exhaust its retries (16 > 4 × 2), the others are absorbed after waiting the
/// second the target asked for.
#[tokio::test(flavor = "multi_thread")]
async fn target_answers_429_for_a_stretch() {
    const STRETCH: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let config = setup(
        dir.path(),
        &fake,
        "concurrency = 4\nbatch_size = 7\nmax_retries = 2\nmax_backoff = \"2s\"\n",
    );
    let throttled = || Fault::Status429 {
        retry_after: Some("1".into()),
    };

    fake.inject("POST", "/api/v1/users", throttled(), STRETCH);
    let f1 = sync_faulted(&fake, &config);
    assert_reported(&fake, &f1, "429 on creates");
    assert_eq!(f1.faults, STRETCH);
    assert!(f1.failed() >= 1, "nothing failed: {}", f1.figures());
    assert_eq!(
        f1.failures_saying("HTTP 429 after 3 attempt(s)") as u64,
        f1.failed(),
        "every failure is a create that exhausted its retries: {:?}",
        f1.failures()
    );
    // Each 429 was either retried or ended its request's last attempt.
    assert_eq!(
        f1.retries("HTTP 429") + f1.failed() as usize,
        STRETCH,
        "{}",
        f1.figures()
    );
    let waits = waits_after_429(&f1.exchanges);
    assert!(!waits.is_empty());
    assert!(
        waits.iter().all(|w| *w >= Duration::from_millis(950)),
        "Retry-After: 1 not honoured: {waits:?}"
    );
    assert_eq!(
        assert_store_agrees(&fake, &config, "after 429 on creates").await,
        N - f1.failed() as usize
    );
    converge_creates(&fake, &config, f1.failed(), "after 429 on creates").await;

    second_phase_csv(dir.path());
    fake.inject(
        "*",
        PathMatch::prefix("/api/v1/users"),
        throttled(),
        STRETCH,
    );
    let f2 = sync_faulted(&fake, &config);
    assert_reported(&fake, &f2, "429 on changes");
    assert_eq!(f2.faults, STRETCH);
    assert!(f2.failed() >= 1, "nothing failed: {}", f2.figures());
    assert_eq!(
        f2.failures_saying("HTTP 429 after 3 attempt(s)") as u64,
        f2.failed(),
        "{:?}",
        f2.failures()
    );
    assert_eq!(f2.retries("HTTP 429") + f2.failed() as usize, STRETCH);
    assert_store_agrees(&fake, &config, "after 429 on changes").await;

    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_converged(&fake, &config, N, true, LEFT_FROM, "after 429 stretches").await;
    let c = creates(&fake);
    println!(
        "429 stretch: creates run: {}; changes run: {}; then exit 0, converged; 429s injected {}, \
         creates seen by the fake {} ({} answered 201, {} duplicates), lost 0",
        f1.figures(),
        f2.figures(),
        2 * STRETCH,
        c.attempts,
        c.created,
        c.duplicates
    );
}

/// (2) 500 for 12 consecutive creates, then 503 for the next 24; after a clean run, 500 then 503
/// for 24 consecutive requests each of a run of updates, role changes and bulk disables. A 500 to a create is not retried (a POST may
/// have taken effect): exactly one failed create per 500, each looked up on the target before
/// it is called failed. 503s and 500s to idempotent requests (updates, bulk status calls) are
/// retried up to `max_retries`.
#[tokio::test(flavor = "multi_thread")]
async fn target_answers_500_and_503_for_a_stretch() {
    const S500: usize = 12;
    const S503: usize = 24;
    const S2: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let config = setup(
        dir.path(),
        &fake,
        "concurrency = 4\nbatch_size = 7\nmax_retries = 3\nmax_backoff = \"200ms\"\n",
    );

    fake.inject("POST", "/api/v1/users", Fault::Status(500), S500);
    fake.inject(
        "POST",
        "/api/v1/users",
        Fault::Status503 { retry_after: None },
        S503,
    );
    let f1 = sync_faulted(&fake, &config);
    assert_reported(&fake, &f1, "500/503 on creates");
    assert_eq!(f1.faults, S500 + S503);
    assert_eq!(
        f1.failures_saying("HTTP 500 after 1 attempt(s)"),
        S500,
        "one failed create per 500, none retried: {:?}",
        f1.failures()
    );
    assert_eq!(
        f1.retries("HTTP 500"),
        0,
        "a create was retried after a 500"
    );
    let failed503 = f1.failures_saying("HTTP 503 after 4 attempt(s)");
    assert!(
        failed503 >= 1,
        "no create exhausted its retries: {}",
        f1.figures()
    );
    assert_eq!(
        failed503 + S500,
        f1.failed() as usize,
        "{:?}",
        f1.failures()
    );
    assert_eq!(f1.retries("HTTP 503") + failed503, S503);
    // Each create answered 500 was looked up before it was called failed.
    let lookups = f1
        .exchanges
        .iter()
        .filter(|e| e.method == "GET" && e.path == "/api/v1/users")
        .count();
    assert!(
        lookups >= f1.failed() as usize,
        "{lookups} look-ups for {} failed creates",
        f1.failed()
    );
    assert_eq!(
        assert_store_agrees(&fake, &config, "after 500/503 on creates").await,
        N - f1.failed() as usize
    );
    converge_creates(&fake, &config, f1.failed(), "after 500/503 on creates").await;

    second_phase_csv(dir.path());
    let any = PathMatch::prefix("/api/v1/users");
    fake.inject("*", any.clone(), Fault::Status(500), S2);
    fake.inject("*", any, Fault::Status503 { retry_after: None }, S2);
    let f2 = sync_faulted(&fake, &config);
    assert_reported(&fake, &f2, "500/503 on changes");
    assert_eq!(f2.faults, 2 * S2);
    // Updates and bulk calls are idempotent: retried on 500 as on 503, and what failed
    // exhausted its retries.
    assert!(f2.failed() >= 1, "nothing failed: {}", f2.figures());
    let exhausted = f2.failures_saying("HTTP 500 after 4 attempt(s)")
        + f2.failures_saying("HTTP 503 after 4 attempt(s)");
    assert_eq!(exhausted as u64, f2.failed(), "{:?}", f2.failures());
    assert!(
        f2.retries("HTTP 500") > 0,
        "no retry after a 500 to an update"
    );
    assert_store_agrees(&fake, &config, "after 500/503 on changes").await;

    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_converged(
        &fake,
        &config,
        N,
        true,
        LEFT_FROM,
        "after 500/503 stretches",
    )
    .await;
    let c = creates(&fake);
    println!(
        "500/503 stretch: creates run: {} ({S500} failed on 500, {failed503} exhausted 503 \
         retries); changes run: {}; then exit 0, converged; faults injected {}, creates seen by \
         the fake {} ({} answered 201, {} duplicates), lost 0",
        f1.figures(),
        f2.figures(),
        S500 + S503 + 2 * S2,
        c.attempts,
        c.created,
        c.duplicates
    );
}

/// (3) The target slower than the 400 ms `request_timeout` for a stretch. Creates: 8 that time
/// out before the target made them (the fake drops the handler with the connection) fail after
/// one attempt — a POST is not retried after a timeout — and are looked up first; 8 made by the
/// target whose answer came too late are found by that look-up and recorded as created, with a
/// note. After a clean run, in a run of updates, role changes and bulk disables, 12 consecutive
/// requests time out unanswered, then 12 are applied but answered too late; updates and bulk
/// calls are retried after a timeout (idempotent), at most twice.
#[tokio::test(flavor = "multi_thread")]
async fn target_too_slow_for_a_stretch() {
    const LOST: usize = 8;
    const LATE: usize = 8;
    const S2: usize = 12;
    let slow = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let config = setup(
        dir.path(),
        &fake,
        "concurrency = 4\nbatch_size = 7\nmax_retries = 2\nmax_backoff = \"200ms\"\n\
         request_timeout = \"400ms\"\n",
    );

    fake.inject("POST", "/api/v1/users", Fault::Latency(slow), LOST);
    fake.inject("POST", "/api/v1/users", Fault::ApplyThenLatency(slow), LATE);
    let f1 = sync_faulted(&fake, &config);
    assert_reported(&fake, &f1, "timeouts on creates");
    assert_eq!(f1.faults, LOST + LATE);
    assert_eq!(
        f1.failures_saying("timed out after 1 attempt(s)"),
        LOST,
        "{:?}",
        f1.failures()
    );
    assert_eq!(f1.failed() as usize, LOST);
    assert_eq!(
        f1.notes(),
        LATE,
        "creates made although the answer was lost: {}",
        f1.applied()["notes"]
    );
    assert_eq!(
        f1.stderr.lines().filter(|l| l.contains("retrying")).count(),
        0,
        "a create was retried after a timeout"
    );
    assert_eq!(
        assert_store_agrees(&fake, &config, "after timeouts on creates").await,
        N - LOST
    );
    converge_creates(&fake, &config, f1.failed(), "after timeouts on creates").await;

    second_phase_csv(dir.path());
    let any = PathMatch::prefix("/api/v1/users");
    fake.inject("*", any.clone(), Fault::Latency(slow), S2);
    fake.inject("*", any, Fault::ApplyThenLatency(slow), S2);
    let f2 = sync_faulted(&fake, &config);
    assert_reported(&fake, &f2, "timeouts on changes");
    assert_eq!(f2.faults, 2 * S2);
    // Updates and bulk calls are retried after a timeout; what failed timed out three times.
    assert!(f2.failed() >= 1, "nothing failed: {}", f2.figures());
    assert_eq!(
        f2.failures_saying("timed out after 3 attempt(s)") as u64,
        f2.failed(),
        "{:?}",
        f2.failures()
    );
    assert_eq!(
        f2.retries("error sending request") + f2.failed() as usize,
        2 * S2,
        "each timeout was retried or ended a request: {}",
        f2.figures()
    );
    // A status change applied although its answer timed out may be recorded as failed: compare
    // who exists, not the flags; the next run sends it again.
    assert_store_agrees_on(&fake, &config, "after timeouts on changes", false).await;

    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_converged(&fake, &config, N, true, LEFT_FROM, "after slow stretches").await;
    let c = creates(&fake);
    println!(
        "timeout stretch: creates run: {} ({LOST} failed unanswered, {LATE} confirmed by \
         look-up); changes run: {}; then exit 0, converged; faults injected {}, creates seen by \
         the fake {} ({} answered 201, {} duplicates), lost 0",
        f1.figures(),
        f2.figures(),
        LOST + LATE + 2 * S2,
        c.attempts,
        c.created,
        c.duplicates
    );
}

/// A create that the target finishes only after dirsync gave up on it (request timeout) and
/// after the immediate look-up missed it: the next run must find it rather than create it again.
/// Today the engine records such a create as `failed` (src/engine.rs, `Ctx::chain`, the
/// `OpError::Unavailable` arm when `confirm_create` finds nothing), so the next run sends the
/// create again: the target answers 409 and the account is recorded as not owned — a duplicate
/// create, and an account dirsync no longer manages. Leaving the operation `sent` (outcome
/// unknown) lets the next run's reconciliation look it up first.
#[tokio::test(flavor = "multi_thread")]
async fn create_made_after_its_timeout_is_not_sent_twice() {
    const LATE: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let config = setup(
        dir.path(),
        &fake,
        "concurrency = 4\nbatch_size = 7\nmax_retries = 2\nmax_backoff = \"200ms\"\n\
         request_timeout = \"400ms\"\n",
    );
    fake.inject(
        "POST",
        "/api/v1/users",
        Fault::LatencyThenApplyDetached(Duration::from_millis(1000)),
        LATE,
    );
    let f1 = sync_faulted(&fake, &config);
    assert_eq!(f1.code, 4, "{}", f1.report);
    assert_eq!(f1.faults, LATE);
    // The target finishes the late creates.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.users().len() < N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fake.users().len(), N, "the late creates were not made");
    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_converged(&fake, &config, N, false, usize::MAX, "after late creates").await;
}
