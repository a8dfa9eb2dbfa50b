//! SCIM filter expressions (RFC 7644 section 3.4.2.2) dirsync sends: `attr eq "value"`, the
//! value a JSON string (quotes, backslashes and control characters escaped).

/// `attr eq "value"`, `value` escaped as a JSON string.
pub fn eq(attr: &str, value: &str) -> String {
    format!("{attr} eq {}", quote(value))
}

/// `value` as a filter's string literal: a JSON string.
pub fn quote(value: &str) -> String {
    // Serialising a `&str` cannot fail; the fallback is never used.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_table() {
        for (value, want) in [
            ("amy@example.com", r#"userName eq "amy@example.com""#),
            (r#"o"brien"#, r#"userName eq "o\"brien""#),
            (r"back\slash", r#"userName eq "back\\slash""#),
            (r#"\""#, r#"userName eq "\\\"""#),
            ("tab\tnew\nline", r#"userName eq "tab\tnew\nline""#),
            ("\u{1}", r#"userName eq "\u0001""#),
            ("ünï cödé", r#"userName eq "ünï cödé""#),
            (
                r#"x" or userName pr or "y"#,
                r#"userName eq "x\" or userName pr or \"y""#,
            ),
            ("", r#"userName eq """#),
        ] {
            assert_eq!(eq("userName", value), want, "{value:?}");
        }
    }
}
