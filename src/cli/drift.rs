//! `dirsync drift`: each target's accounts compared with what dirsync recorded (reads only).

use crate::config::Config;

use super::session::Session;
use super::{DriftArgs, EXIT_DRIFT, fail};

pub(super) async fn drift(config: &Config, args: &DriftArgs) -> u8 {
    let session = match Session::open(config, &args.targets, true).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut report = crate::drift::DriftReport {
        generated_at: chrono::Utc::now(),
        targets: Vec::with_capacity(session.targets.len()),
    };
    for t in &session.targets {
        let c = match session.connector(t) {
            Ok(c) => c,
            Err(code) => return code,
        };
        match crate::drift::detect(session.store(), c, t).await {
            Ok(d) => report.targets.push(d),
            Err(e) => return fail(e),
        }
    }
    out!("{}", crate::drift::render(&report, args.format));
    if report.has_drift() { EXIT_DRIFT } else { 0 }
}
