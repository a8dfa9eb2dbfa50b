//! `[schedule]`: cron expressions with crontab's meaning, and the next run times of a schedule.
//!
//! A cron expression has 5 fields (crontab: minute hour day-of-month month day-of-week) or 6
//! (a seconds field first, then the same five). Day-of-week counts as crontab does: 0 and 7 are
//! Sunday, 1 Monday … 6 Saturday, or the names `sun`…`sat`; months are 1–12 or `jan`…`dec`
//! (names in any case). Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or
//! `a/n` (from `a` to the field's maximum), or a comma list of those. `@yearly`
//! (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` are accepted.
//!
//! Day-of-month and day-of-week combine as in crontab (Vixie cron, cronie): when both are
//! restricted, a day matching EITHER runs; when either field starts with `*` (`*` or `*/n`),
//! a day must match both. Times are UTC.
//!
//! The daemon and `dirsync check --offline` both ask [`upcoming`] for run times.

use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};

/// `[schedule]`: when the daemon runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// A cron expression with crontab's meaning (see the module documentation).
    pub cron: Option<Cron>,
    pub interval: Option<Duration>,
    pub jitter: Duration,
    pub run_on_start: bool,
}

/// A parsed cron expression (see the module documentation for its meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// The expression as written (trimmed).
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u64,
    /// The day-of-month field starts with `*` (crontab's DOM_STAR).
    days_star: bool,
    /// The day-of-week field starts with `*` (crontab's DOW_STAR).
    weekdays_star: bool,
}

/// How far ahead a next run time is looked for: a 29 February that must also be a given
/// weekday recurs within 40 years (the 28-year cycle, stretched by 2100 not being a leap year).
const SEARCH_DAYS: u64 = 366 * 50;

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's range and names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for the values `names_from`, `names_from + 1`, …
    names: &'static [&'static str],
    names_from: u32,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_from: 0,
};
const DAY: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    names_from: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    names_from: 1,
};
const WEEKDAY: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &WEEKDAY_NAMES,
    names_from: 0,
};

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            // At most 12 names.
            return Ok(self.names_from + i as u32);
        }
        let v: u32 = text.parse().map_err(|_| {
            let names = if self.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({})", self.names.join(", "))
            };
            format!(
                "{} field: {text:?} is not a number from {} to {}{names}",
                self.name, self.min, self.max
            )
        })?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} field: {v} is out of range ({} to {})",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The set of values as a bit mask, and whether the field starts with `*`.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!("{} field {text:?}: empty list item", self.name));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().map_err(|_| {
                        format!("{} field {text:?}: step {s:?} is not a number", self.name)
                    })?;
                    if step == 0 {
                        return Err(format!("{} field {text:?}: a step of 0", self.name));
                    }
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "{} field {text:?}: the range {range} goes backwards (write it as a list, \
                         e.g. for weekends `sat,sun` or `6-7`)",
                        self.name
                    ));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `a/n`: from a to the end of the field.
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1) as usize;
            for v in (lo..=hi).step_by(step) {
                bits |= 1 << v;
            }
        }
        Ok((bits, text.starts_with('*')))
    }
}

/// The last day a month can have (29 for February).
fn max_days(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Cron {
    /// Parses a 5- or 6-field expression (or a `@daily`-style macro). The error says what is
    /// wrong and with which field.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let text = expr.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => Some("0 0 1 1 *"),
            "@monthly" => Some("0 0 1 * *"),
            "@weekly" => Some("0 0 * * 0"),
            "@daily" | "@midnight" => Some("0 0 * * *"),
            "@hourly" => Some("0 * * * *"),
            m if m.starts_with('@') => {
                return Err(format!(
                    "unknown macro {text:?} (known: @yearly, @annually, @monthly, @weekly, \
                     @daily, @midnight, @hourly)"
                ));
            }
            _ => None,
        };
        let parts: Vec<&str> = expanded.unwrap_or(text).split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => {
                return Err(format!(
                    "expected 5 fields (crontab: minute hour day-of-month month day-of-week) or 6 \
                     (second first, then the same five), got {n} in {text:?}"
                ));
            }
        };
        let with = |e: String| format!("invalid cron expression {text:?}: {e}");
        let (seconds, _) = SECOND.parse(sec).map_err(with)?;
        let (minutes, _) = MINUTE.parse(rest[0]).map_err(with)?;
        let (hours, _) = HOUR.parse(rest[1]).map_err(with)?;
        let (days, days_star) = DAY.parse(rest[2]).map_err(with)?;
        let (months, _) = MONTH.parse(rest[3]).map_err(with)?;
        let (mut weekdays, weekdays_star) = WEEKDAY.parse(rest[4]).map_err(with)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let cron = Cron {
            text: text.to_string(),
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_star,
            weekdays_star,
        };
        // Only the day of month decides (AND with every weekday, or a weekday restriction
        // that every date meets in some year): some month must have one of the days.
        let weekdays_decide = !days_star && !weekdays_star;
        if !weekdays_decide
            && !(1..=12u32)
                .filter(|m| months & (1 << m) != 0)
                .any(|m| (1..=max_days(m)).any(|d| days & (1 << d) != 0))
        {
            return Err(with(format!(
                "day-of-month {:?} never occurs in month {:?}",
                rest[2], rest[3]
            )));
        }
        Ok(cron)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first matching time strictly after `after`, or `None` if there is none within 50
    /// years (only possible for an expression [`Cron::parse`] would not have accepted).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after
            .with_nanosecond(0)?
            .checked_add_signed(chrono::Duration::seconds(1))?;
        let start_date = start.date_naive();
        let (h0, m0, s0) = (start.hour(), start.minute(), start.second());
        let mut date = start_date;
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                let first_day = date == start_date;
                if let Some(t) = self.first_time(first_day.then_some((h0, m0, s0))) {
                    return Some(Utc.from_utc_datetime(&date.and_time(t)));
                }
            }
            date = date.checked_add_days(Days::new(1))?;
        }
        None
    }

    /// The first matching time of a day at or after `from` (the whole day when `None`).
    fn first_time(&self, from: Option<(u32, u32, u32)>) -> Option<NaiveTime> {
        let (h0, m0, s0) = from.unwrap_or((0, 0, 0));
        for h in bits_from(self.hours, h0, 23) {
            let m_from = if h == h0 { m0 } else { 0 };
            for m in bits_from(self.minutes, m_from, 59) {
                let s_from = if h == h0 && m == m0 { s0 } else { 0 };
                if let Some(s) = bits_from(self.seconds, s_from, 59).next() {
                    return NaiveTime::from_hms_opt(h, m, s);
                }
            }
        }
        None
    }
}

/// The set bits of `mask` from `from` to `max`, ascending.
fn bits_from(mask: u64, from: u32, max: u32) -> impl Iterator<Item = u32> {
    (from..=max).filter(move |b| mask & (1 << b) != 0)
}

/// The first `n` run times of a schedule after `from`: cron times strictly after it, or
/// `from + k × interval` (k = 1…n). Jitter is not included (it is random, up to `jitter`).
pub fn upcoming(schedule: &ScheduleConfig, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(n);
    match (&schedule.cron, schedule.interval) {
        (Some(cron), _) => {
            let mut at = from;
            while out.len() < n {
                match cron.next_after(at) {
                    Some(next) => {
                        out.push(next);
                        at = next;
                    }
                    None => break,
                }
            }
        }
        (None, interval) => {
            let step = chrono::Duration::from_std(interval.unwrap_or(DEFAULT_INTERVAL))
                .unwrap_or(chrono::Duration::MAX);
            let mut at = from;
            for _ in 0..n {
                match at.checked_add_signed(step) {
                    Some(next) => {
                        out.push(next);
                        at = next;
                    }
                    None => break,
                }
            }
        }
    }
    out
}

/// The interval when `[schedule]` sets neither `cron` nor `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The schedule in words: `cron "0 3 * * 1-5" (UTC)` or `every 15m`, with the jitter.
pub fn describe(schedule: &ScheduleConfig) -> String {
    let mut text = match (&schedule.cron, schedule.interval) {
        (Some(cron), _) => format!("cron {:?} (UTC)", cron.as_str()),
        (None, interval) => format!(
            "every {}",
            humantime::format_duration(interval.unwrap_or(DEFAULT_INTERVAL))
        ),
    };
    if !schedule.jitter.is_zero() {
        text.push_str(&format!(
            ", each run delayed by up to {} of jitter",
            humantime::format_duration(schedule.jitter)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next_n(expr: &str, from: &str, n: usize) -> Vec<String> {
        let cron = Cron::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let schedule = ScheduleConfig {
            cron: Some(cron),
            interval: None,
            jitter: Duration::ZERO,
            run_on_start: false,
        };
        upcoming(&schedule, at(from), n)
            .iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    /// 2026-12-03 is a Thursday; 2026-12-05 a Saturday, 2026-12-06 a Sunday, 2026-12-07 a
    /// Monday.
    #[test]
    fn next_times_table() {
        let table: &[(&str, &str, &[&str])] = &[
            // Friday only: not the Thursday it is.
            (
                "* * * * 5",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-04T00:00:00Z",
                    "2026-12-04T00:01:00Z",
                    "2026-12-04T00:02:00Z",
                ],
            ),
            (
                "0 9 * * 5",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-04T09:00:00Z",
                    "2026-12-11T09:00:00Z",
                    "2026-12-18T09:00:00Z",
                ],
            ),
            // Monday to Friday, from a Thursday.
            (
                "30 2 * * 1-5",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-04T02:30:00Z",
                    "2026-12-07T02:30:00Z",
                    "2026-12-08T02:30:00Z",
                    "2026-12-09T02:30:00Z",
                    "2026-12-10T02:30:00Z",
                    "2026-12-11T02:30:00Z",
                    "2026-12-14T02:30:00Z",
                ],
            ),
            // 0 and 7 are both Sunday.
            (
                "0 3 * * 0",
                "2026-12-03T10:00:00Z",
                &["2026-12-06T03:00:00Z", "2026-12-13T03:00:00Z"],
            ),
            (
                "0 3 * * 7",
                "2026-12-03T10:00:00Z",
                &["2026-12-06T03:00:00Z", "2026-12-13T03:00:00Z"],
            ),
            // Friday to Sunday through 7.
            (
                "0 3 * * 5-7",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-04T03:00:00Z",
                    "2026-12-05T03:00:00Z",
                    "2026-12-06T03:00:00Z",
                    "2026-12-11T03:00:00Z",
                ],
            ),
            // Names, any case.
            (
                "0 3 * * sat,SUN",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-05T03:00:00Z",
                    "2026-12-06T03:00:00Z",
                    "2026-12-12T03:00:00Z",
                ],
            ),
            (
                "0 3 * * Mon-Fri",
                "2026-12-04T10:00:00Z",
                &["2026-12-07T03:00:00Z", "2026-12-08T03:00:00Z"],
            ),
            // Steps in a range: Monday, Wednesday, Friday.
            (
                "0 3 * * 1-5/2",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-04T03:00:00Z",
                    "2026-12-07T03:00:00Z",
                    "2026-12-09T03:00:00Z",
                    "2026-12-11T03:00:00Z",
                ],
            ),
            // Every other weekday from Sunday: Sun, Tue, Thu, Sat.
            (
                "0 3 * * */2",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-05T03:00:00Z",
                    "2026-12-06T03:00:00Z",
                    "2026-12-08T03:00:00Z",
                    "2026-12-10T03:00:00Z",
                ],
            ),
            // Both days restricted: the 1st and 15th OR any Monday (crontab's union).
            (
                "0 0 1,15 * 1",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-07T00:00:00Z",
                    "2026-12-14T00:00:00Z",
                    "2026-12-15T00:00:00Z",
                    "2026-12-21T00:00:00Z",
                    "2026-12-28T00:00:00Z",
                    "2027-01-01T00:00:00Z",
                    "2027-01-04T00:00:00Z",
                ],
            ),
            // A field starting with `*` makes it an AND: odd days that are Mondays.
            (
                "0 0 */2 * mon",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-07T00:00:00Z",
                    "2026-12-21T00:00:00Z",
                    "2027-01-11T00:00:00Z",
                ],
            ),
            // Every 15 minutes, strictly after the start.
            (
                "*/15 * * * *",
                "2026-12-03T10:15:00Z",
                &[
                    "2026-12-03T10:30:00Z",
                    "2026-12-03T10:45:00Z",
                    "2026-12-03T11:00:00Z",
                ],
            ),
            // 6 fields: seconds first, weekdays as in crontab.
            (
                "30 0 12 * * 5",
                "2026-12-03T12:00:00Z",
                &["2026-12-04T12:00:30Z", "2026-12-11T12:00:30Z"],
            ),
            (
                "*/20 * * * * *",
                "2026-12-03T12:00:05.500Z",
                &[
                    "2026-12-03T12:00:20Z",
                    "2026-12-03T12:00:40Z",
                    "2026-12-03T12:01:00Z",
                ],
            ),
            // Months by name, day of month, a year boundary.
            (
                "0 6 31 dec,jan *",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-31T06:00:00Z",
                    "2027-01-31T06:00:00Z",
                    "2027-12-31T06:00:00Z",
                ],
            ),
            // 29 February: leap years only.
            (
                "0 0 29 2 *",
                "2026-12-03T10:00:00Z",
                &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
            ),
            // `a/n`: from a to the end of the field.
            (
                "10/20 8 * * *",
                "2026-12-03T10:00:00Z",
                &[
                    "2026-12-04T08:10:00Z",
                    "2026-12-04T08:30:00Z",
                    "2026-12-04T08:50:00Z",
                ],
            ),
            // Lists mixing values and ranges.
            (
                "0 1,3-4 * * *",
                "2026-12-03T03:30:00Z",
                &[
                    "2026-12-03T04:00:00Z",
                    "2026-12-04T01:00:00Z",
                    "2026-12-04T03:00:00Z",
                ],
            ),
            ("@weekly", "2026-12-03T10:00:00Z", &["2026-12-06T00:00:00Z"]),
            (
                "@daily",
                "2026-12-03T00:00:00Z",
                &["2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z"],
            ),
        ];
        for (expr, from, want) in table {
            assert_eq!(next_n(expr, from, want.len()), *want, "{expr} from {from}");
        }
    }

    #[test]
    fn bad_expressions_name_the_field() {
        let table: &[(&str, &str)] = &[
            ("* * *", "expected 5 fields"),
            ("* * * * * * 2026", "expected 5 fields"),
            ("61 * * * *", "minute field: 61 is out of range (0 to 59)"),
            ("* 24 * * *", "hour field: 24 is out of range"),
            (
                "* * 0 * *",
                "day-of-month field: 0 is out of range (1 to 31)",
            ),
            ("* * * 13 *", "month field: 13 is out of range"),
            ("* * * * 8", "day-of-week field: 8 is out of range (0 to 7)"),
            ("* * * * sun-sat-x", "day-of-week field"),
            ("* * * * fri-mon", "goes backwards"),
            ("*/0 * * * *", "a step of 0"),
            ("* * * * funday", "not a number from 0 to 7 or a name"),
            ("1,,2 * * * *", "empty list item"),
            ("0 0 30 2 *", "never occurs"),
            ("0 0 31 4,6 *", "never occurs"),
            ("@reboot", "unknown macro"),
        ];
        for (expr, want) in table {
            let e = Cron::parse(expr).expect_err(expr);
            assert!(e.contains(want), "{expr}: {e}");
        }
        // Restricted both ways, the weekday alone makes it run.
        assert!(Cron::parse("0 0 30 2 1").is_ok());
    }

    #[test]
    fn interval_schedules_count_from_the_start() {
        let schedule = ScheduleConfig {
            cron: None,
            interval: Some(Duration::from_secs(900)),
            jitter: Duration::from_secs(30),
            run_on_start: true,
        };
        let got = upcoming(&schedule, at("2026-12-03T10:00:00Z"), 3);
        assert_eq!(
            got,
            vec![
                at("2026-12-03T10:15:00Z"),
                at("2026-12-03T10:30:00Z"),
                at("2026-12-03T10:45:00Z")
            ]
        );
        assert_eq!(
            describe(&schedule),
            "every 15m, each run delayed by up to 30s of jitter"
        );
    }
}
