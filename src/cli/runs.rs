//! `dirsync runs` (the run history, `runs show ID`), `dirsync prune` (run retention) and
//! `dirsync migrate`: the commands that need only the state store.

use crate::config::{self, Config};
use crate::report;
use crate::store;

use super::session;
use super::{PruneArgs, RunsArgs, RunsCommand, fail};

pub(super) async fn migrate(config: &Config) -> u8 {
    match session::store_only(config, true).await {
        Ok(s) => {
            outln!("migrations applied ({})", config.state.location.describe());
            drop(s);
            0
        }
        Err(code) => code,
    }
}

pub(super) async fn runs(config: &Config, args: RunsArgs) -> u8 {
    let store = match session::store_only(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match args.command {
        None => {
            let since = match args.since.as_deref() {
                None => None,
                Some(v) => match parse_since(v, chrono::Utc::now()) {
                    Ok(t) => Some(t),
                    Err(e) => return fail(format!("--since: {e}")),
                },
            };
            let filter = store::RunFilter {
                limit: args.limit,
                triggers: args.trigger,
                statuses: args.status,
                since,
            };
            let filtered = filter != store::RunFilter::newest(args.limit);
            match store.find_runs(&filter).await {
                Ok(list) if list.is_empty() && filtered && args.format != report::Format::Json => {
                    outln!(
                        "{}store: {}\n\nNo runs match the filters (--trigger, --status, --since).",
                        if args.format == report::Format::Markdown {
                            "State "
                        } else {
                            ""
                        },
                        config.state.location.describe()
                    );
                    0
                }
                Ok(list) => {
                    out!(
                        "{}",
                        report::render_runs(&config.state.location.describe(), &list, args.format)
                    );
                    0
                }
                Err(e) => fail(e),
            }
        }
        Some(RunsCommand::Show { id, format }) => match store.get_run(id).await {
            Ok(Some(r)) => match store.run_operations(id).await {
                Ok(ops) => {
                    out!("{}", report::render_run(&r, &ops, format));
                    0
                }
                Err(e) => fail(e),
            },
            Ok(None) => fail(format!("no run with id {id} (see `dirsync runs`)")),
            Err(e) => fail(e),
        },
    }
}

/// `--since`: a duration back from `now` (`7d`, `12h`, `1w`), a date (midnight UTC) or an
/// RFC 3339 time.
fn parse_since(
    v: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let v = v.trim();
    if let Ok(d) = humantime::parse_duration(v) {
        return chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| format!("{v:?}: too long ago"));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    Err(format!(
        "{v:?} is neither a duration (7d, 12h) nor a date (2026-12-01) or time \
         (2026-12-01T08:00:00Z)"
    ))
}

pub(super) async fn prune(config: &Config, args: &PruneArgs) -> u8 {
    let keep = match args.keep.as_deref() {
        None => config.state.keep_runs,
        Some(v) => match config::parse_keep_runs(v) {
            Ok(d) => d,
            Err(e) => return fail(format!("--keep: {e}")),
        },
    };
    let store = match session::store_only(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let before = store::prune_before(chrono::Utc::now(), keep);
    match store.prune_runs(before).await {
        Ok(pruned) => {
            outln!(
                "pruned {} and {} finished before {}",
                report::plural(pruned.runs, "run"),
                report::plural(pruned.operations, "journal row"),
                before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            0
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::parse_since;

    #[test]
    fn since_takes_a_duration_a_date_or_a_time() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 3, 18, 0, 0).unwrap();
        let at = |y, mo, d, h, mi| chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
        for (v, want) in [
            ("7d", at(2026, 11, 26, 18, 0)),
            ("12h", at(2026, 12, 3, 6, 0)),
            ("1w", at(2026, 11, 26, 18, 0)),
            ("90m", at(2026, 12, 3, 16, 30)),
            ("2026-12-01", at(2026, 12, 1, 0, 0)),
            ("2026-12-01T08:30:00Z", at(2026, 12, 1, 8, 30)),
            ("2026-12-01T09:30:00+01:00", at(2026, 12, 1, 8, 30)),
        ] {
            assert_eq!(parse_since(v, now), Ok(want), "{v}");
        }
        for bad in ["", "yesterday", "2026-13-01", "7 parsecs"] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains("neither a duration"), "{bad}: {e}");
        }
    }
}
