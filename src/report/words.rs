//! Words for counts and durations in reports and command-line messages: "1 change",
//! "2 changes", "1 day 2 hours".

use std::time::Duration;

/// `n` and the noun, singular for exactly one: `count(1, "change", "changes")` is
/// "1 change", `count(0, ...)` "0 changes".
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// [`count`] for nouns whose plural adds an "s" (`plural(2, "run")` is "2 runs").
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration for people, in its two largest units: "1 day 2 hours", "3 minutes 5
/// seconds", "45 seconds", "0 seconds". Sub-second parts are dropped (rounded up below one
/// second, so a short wait never reads "0 seconds").
pub fn duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 && d.subsec_nanos() > 0 {
        secs = 1;
    }
    let units: [(u64, &str); 4] = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut parts = Vec::new();
    for (size, name) in units {
        let n = secs / size;
        if n > 0 || (size == 1 && parts.is_empty()) {
            parts.push(plural(n, name));
            secs -= n * size;
        }
        if parts.len() == 2 {
            break;
        }
        // Units below the first one shown count only when they follow it directly.
        if !parts.is_empty() && n == 0 {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_read_right() {
        for (n, want) in [(0, "0 changes"), (1, "1 change"), (2, "2 changes")] {
            assert_eq!(count(n, "change", "changes"), want);
        }
        assert_eq!(plural(1, "day"), "1 day");
        assert_eq!(plural(30, "day"), "30 days");
        assert_eq!(
            count(1, "account already exists", "accounts already exist"),
            "1 account already exists"
        );
        for (secs, want) in [
            (0, "0 seconds"),
            (1, "1 second"),
            (45, "45 seconds"),
            (60, "1 minute"),
            (125, "2 minutes 5 seconds"),
            (3_600, "1 hour"),
            (3_660, "1 hour 1 minute"),
            (86_400, "1 day"),
            (86_400 + 7_200, "1 day 2 hours"),
            (2 * 86_400 + 59, "2 days"),
            (30 * 86_400, "30 days"),
        ] {
            assert_eq!(duration(Duration::from_secs(secs)), want, "{secs}s");
        }
        assert_eq!(duration(Duration::from_millis(20)), "1 second");
    }
}
