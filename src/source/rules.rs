//! The value rules every source applies (control characters, email syntax, email folding for
//! duplicate detection) and how a source's problems are displayed: one place for both sources.

use std::fmt;

use crate::model::email_fold;

/// How many problems a source error's `Display` lists before summarising the rest.
pub(crate) const SHOWN_PROBLEMS: usize = 50;

/// Writes `problems` one a line (each with `line`), at most [`SHOWN_PROBLEMS`] of them, then
/// `... and N more problems`.
pub(crate) fn write_problems<P>(
    f: &mut fmt::Formatter<'_>,
    problems: &[P],
    mut line: impl FnMut(&mut fmt::Formatter<'_>, &P) -> fmt::Result,
) -> fmt::Result {
    for (i, p) in problems.iter().take(SHOWN_PROBLEMS).enumerate() {
        if i > 0 {
            f.write_str("\n")?;
        }
        line(f, p)?;
    }
    if problems.len() > SHOWN_PROBLEMS {
        write!(
            f,
            "\n... and {} more problems",
            problems.len() - SHOWN_PROBLEMS
        )?;
    }
    Ok(())
}

/// Control characters other than tab (C0, DEL, C1).
pub(crate) fn has_control(s: &str) -> bool {
    // A branch-free pass over the bytes (vectorised) for C0 and DEL; C1 controls are
    // U+0080..=U+009F, encoded 0xC2 0x80..=0x9F, so only look for them when 0xC2 occurs.
    let (c0, c2) = s.bytes().fold((false, false), |(c0, c2), b| {
        (
            c0 | ((b < 0x20) & (b != b'\t')) | (b == 0x7f),
            c2 | (b == 0xc2),
        )
    });
    c0 || (c2 && s.chars().any(|c| c.is_control() && c != '\t'))
}

/// Why `email` (trimmed, non-empty) is not a usable address, if it is not. Deliberately
/// simple: one `@`, something on both sides, no whitespace or control characters.
pub(crate) fn email_error(email: &str) -> Option<&'static str> {
    let Some((local, domain)) = email.split_once('@') else {
        return Some("no \"@\"");
    };
    if domain.contains('@') {
        return Some("more than one \"@\"");
    }
    if local.is_empty() {
        return Some("nothing before \"@\"");
    }
    if domain.is_empty() {
        return Some("nothing after \"@\"");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or control characters");
    }
    None
}

/// [`email_fold`] into `buf`, without allocating for ASCII emails.
pub(crate) fn fold_into<'b>(email: &str, buf: &'b mut Vec<u8>) -> &'b [u8] {
    buf.clear();
    if email.is_ascii() {
        buf.extend(email.trim().bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        buf.extend_from_slice(email_fold(email).as_bytes());
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters() {
        let cases: &[(&str, bool)] = &[
            ("Alice", false),
            ("Mary\tAnn", false),
            ("Ren\u{e9} \u{c2}ngstr\u{f6}m", false),
            ("non\u{a0}breaking", false),  // 0xC2 0xA0: not C1
            ("tab\tand\u{a0}nbsp", false), // a tab is no control character, 0xC2 or not
            ("\u{1f600}", false),
            ("a\nb", true),
            ("a\rb", true),
            ("\u{0}", true),
            ("a\u{1b}[31m", true),
            ("del\u{7f}", true),
            ("nel\u{85}", true),
            ("c1\u{9f}", true),
            ("Ren\u{e9}\u{7}", true),
        ];
        for (s, want) in cases {
            assert_eq!(has_control(s), *want, "{s:?}");
            // The rule as written: C0, DEL, C1, tab aside.
            let plain = s.chars().any(|c| c.is_control() && c != '\t');
            assert_eq!(has_control(s), plain, "{s:?}");
        }
    }

    #[test]
    fn email_folding_matches_the_model() {
        let mut buf = Vec::new();
        for e in [
            "a@x.com",
            "Alice@Example.COM",
            "\u{c9}mile@X.com",
            "\u{212a}@x",
            "\u{130}@x",
            "\u{3a3}\u{3a3}@x",
        ] {
            assert_eq!(fold_into(e, &mut buf), email_fold(e).as_bytes(), "{e:?}");
        }
    }

    #[test]
    fn emails_checked() {
        assert!(email_error("a@b.c").is_none());
        assert!(email_error("ab.c").is_some());
        assert!(email_error("a b@c").is_some());
        assert!(email_error("@c").is_some());
        assert_eq!(email_error("a@b@c"), Some("more than one \"@\""));
        assert!(email_error("jos\u{e9}@ex\u{e4}mple.org").is_none());
        assert!(email_error("x?y#z%/..@example.org").is_none());
    }

    struct Listed(Vec<u32>);

    impl fmt::Display for Listed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_problems(f, &self.0, |f, n| write!(f, "origin: p{n}"))
        }
    }

    #[test]
    fn problems_listed_up_to_fifty() {
        let text = Listed((1..=50).collect()).to_string();
        assert_eq!(text.lines().count(), 50);
        assert!(text.starts_with("origin: p1\norigin: p2\n"));
        assert!(text.ends_with("origin: p50"));
        let text = Listed((1..=53).collect()).to_string();
        assert_eq!(text.lines().count(), 51);
        assert!(text.ends_with("origin: p50\n... and 3 more problems"));
    }
}
