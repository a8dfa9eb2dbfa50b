//! Apply throughput against the fake Covata server with injected latency.
//!
//! `cargo bench --bench apply` (or with arguments after `--`: `creates=N concurrency=C
//! latency_ms=L disables=N`). Prints wall time, ops/s, the bound set by the connection limit
//! (concurrency / latency) and the ratio to it, and peak RSS. Not a test: nothing is asserted
//! about time. The logic lives in `benches/common/apply_run.rs`, which `benches/scale.rs`
//! shares.

#[allow(dead_code)]
#[path = "../tests/it/support/covata.rs"]
mod covata;
#[allow(dead_code)]
#[path = "../tests/it/support/fake/mod.rs"]
mod fake;
#[path = "../tests/it/support/killable.rs"]
mod killable;

#[path = "common/apply_run.rs"]
mod apply_run;

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .filter_map(|a| {
            a.strip_prefix(&format!("{name}="))
                .and_then(|v| v.parse().ok())
        })
        .next()
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let creates = arg("creates", 10_000);
    let concurrency = arg("concurrency", 32);
    let latency_ms = arg("latency_ms", 20);
    let disables = arg("disables", creates).min(creates);

    let r = apply_run::run(apply_run::ApplyParams {
        creates,
        concurrency,
        latency_ms,
        disables,
        connector_creates: 0,
    })
    .await;

    let bound = concurrency as f64 / (latency_ms as f64 / 1000.0);
    let rate = r.creates_applied as f64 / r.creates_secs;
    println!(
        "creates: {} applied, {} failed in {:.2} s = {rate:.0} ops/s; bound {bound:.0} ops/s (concurrency {concurrency} / {latency_ms} ms); ratio {:.2}; peak RSS {:.0} MB",
        r.creates_applied,
        r.creates_failed,
        r.creates_secs,
        rate / bound,
        r.creates_peak_rss_mb
    );
    println!(
        "disables: {} applied, {} failed in {:.2} s = {:.0} ids/s through {} expire + {} disable bulk calls of <= 500; peak RSS {:.0} MB",
        r.disables_applied,
        r.disables_failed,
        r.disables_secs,
        r.disables_applied as f64 / r.disables_secs,
        r.expire_calls,
        r.disable_calls,
        r.peak_rss_mb
    );
}
