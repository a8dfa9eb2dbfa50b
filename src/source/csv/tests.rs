//! Unit tests of the CSV source: formats, problems with their lines, duplicates, display.

use super::*;

fn settings() -> CsvSettings {
    let mut columns = CsvColumns::new("id", "email");
    columns.given_name = Some("given".into());
    columns.family_name = Some("family".into());
    columns.display_name = Some("display".into());
    columns.mobile = Some("mobile".into());
    columns.enabled = Some("active".into());
    columns.groups = Some("groups".into());
    CsvSettings::new("users.csv", columns)
}

fn minimal() -> CsvSettings {
    CsvSettings::new("users.csv", CsvColumns::new("id", "email"))
}

#[test]
fn reads_past_source_timeout_fail_naming_it() {
    let mut r = DeadlineReader::new(&b"id,email\n"[..], Duration::ZERO);
    let e = r.read(&mut [0; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(e.to_string().contains("source.timeout (0s)"), "{e}");
    let mut r = DeadlineReader::new(&b"id"[..], DEFAULT_TIMEOUT);
    let mut buf = [0; 8];
    assert_eq!(r.read(&mut buf).unwrap(), 2);
    // Through the whole load: a file read with no time left fails, naming the setting.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.csv");
    std::fs::write(&path, "id,email\nE1,a@example.com\n").unwrap();
    let mut s = CsvSettings::new(&path, CsvColumns::new("id", "email"));
    s.timeout = Duration::ZERO;
    let e = load(&s).unwrap_err().to_string();
    assert!(e.contains("source.timeout"), "{e}");
    s.timeout = DEFAULT_TIMEOUT;
    assert_eq!(load(&s).unwrap().len(), 1);
}

fn load_str(s: &CsvSettings, data: &str) -> Result<Snapshot, CsvError> {
    load_from_reader(s, Path::new("users.csv"), data.as_bytes())
}

fn load_bytes(s: &CsvSettings, data: &[u8]) -> Result<Snapshot, CsvError> {
    load_from_reader(s, Path::new("users.csv"), data)
}

/// A filtered read of `data` from a temp file, keeping keys for which `keep` says so.
fn filtered(data: &str, keep: impl Fn(&str) -> bool) -> Result<Snapshot, CsvError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.csv");
    std::fs::write(&path, data).unwrap();
    let s = CsvSettings::new(&path, CsvColumns::new("id", "email"));
    load_filtered(&s, &mut |u: &User| keep(&u.key))
}

#[test]
fn filtered_read_keeps_what_it_is_told_and_counts_everything() {
    let data = "id,email\nb,b@x.org\na,a@x.org\nc,c@x.org\nd,d@x.org\n";
    let snap = filtered(data, |k| k == "c" || k == "a").unwrap();
    assert!(snap.is_partial());
    assert_eq!(snap.len(), 4);
    let keys: Vec<&str> = snap.users().iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["a", "c"]);
    // Nothing kept: still the count (no-change runs), and an empty file stays empty.
    let none = filtered(data, |_| false).unwrap();
    assert_eq!((none.len(), none.users().len()), (4, 0));
    assert_eq!(filtered("id,email\n", |_| false).unwrap().len(), 0);
}

#[test]
fn filtered_read_reports_problems_and_duplicates_as_a_whole_read_does() {
    // A duplicate key and a duplicate email among dropped rows, and a bad row: the
    // quarantine is exactly that of the unfiltered read (which it is: a whole read), with
    // its lines; a file-level problem fails both alike.
    for data in [
        "id,email\na,a@x.org\nb,b@x.org\na,c@x.org\n",
        "id,email\na,a@x.org\nb,A@X.org\n",
        "id,email\na,a@x.org\nb,not-an-email\n",
    ] {
        let whole = load_str(&minimal(), data).unwrap();
        let f = filtered(data, |_| false).unwrap();
        assert!(!f.is_partial(), "{data:?}");
        assert!(!whole.quarantined().is_empty(), "{data:?}");
        // (the filtered read is of a file elsewhere: compare past the path)
        let strip = |s: &Snapshot| {
            s.quarantined()
                .iter()
                .map(|q| {
                    let mut q = q.clone();
                    q.location = q.location.rsplit('/').next().unwrap_or("").to_string();
                    q
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&f), strip(&whole), "{data:?}");
        assert_eq!(f.users(), whole.users(), "{data:?}");
        assert_eq!(f.len(), whole.len(), "{data:?}");
    }
    let data = "id,email\na,a@x.org\nb,not-an-email\nc\n";
    let whole = load_str(&minimal(), data).unwrap_err().problems;
    let e = filtered(data, |_| false).unwrap_err();
    assert_eq!(e.problems.len(), whole.len(), "{e}");
    for (a, b) in e.problems.iter().zip(&whole) {
        assert_eq!((a.line, &a.message), (b.line, &b.message));
    }
}

fn ok(s: &CsvSettings, data: &str) -> Snapshot {
    match load_str(s, data) {
        Ok(snap) => snap,
        Err(e) => panic!("unexpected error for {data:?}:\n{e}"),
    }
}

/// `(line, message)` of each problem: of the error (file-level problems fail the read), or
/// of the quarantined records (a record's problems are joined with "; ").
fn problems(s: &CsvSettings, data: &[u8]) -> Vec<(Option<u64>, String)> {
    match load_bytes(s, data) {
        Ok(snap) if snap.quarantined().is_empty() => {
            panic!("expected problems for {data:?}, got {} users", snap.len())
        }
        Ok(snap) => quarantine_problems(&snap),
        Err(e) => e
            .problems
            .into_iter()
            .map(|p| (p.line, p.message))
            .collect(),
    }
}

/// `(line, message)` of each problem of the quarantined records.
fn quarantine_problems(snap: &Snapshot) -> Vec<(Option<u64>, String)> {
    snap.quarantined()
        .iter()
        .flat_map(|q| {
            let line = q.location.rsplit(':').next().and_then(|l| l.parse().ok());
            q.problem
                .split("; ")
                .map(move |m| (line, m.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Asserts exactly one problem, at `line`, whose message contains every fragment.
fn one_problem(s: &CsvSettings, data: &str, line: u64, fragments: &[&str]) {
    let ps = problems(s, data.as_bytes());
    assert_eq!(ps.len(), 1, "{data:?}: {ps:#?}");
    assert_eq!(ps[0].0, Some(line), "{data:?}: {ps:#?}");
    for f in fragments {
        assert!(ps[0].1.contains(f), "{data:?}: {:?} lacks {f:?}", ps[0].1);
    }
}

fn keys(s: &Snapshot) -> Vec<&str> {
    s.users().iter().map(|u| u.key.as_str()).collect()
}

#[test]
fn formats_that_parse() {
    // (description, settings delimiter, data, expected keys, expected emails by key order)
    type Case<'a> = (&'a str, u8, &'a str, &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "lf",
            b',',
            "id,email\nE1,a@x.com\nE2,b@x.com\n",
            &["E1", "E2"],
            &["a@x.com", "b@x.com"],
        ),
        (
            "crlf",
            b',',
            "id,email\r\nE1,a@x.com\r\nE2,b@x.com\r\n",
            &["E1", "E2"],
            &["a@x.com", "b@x.com"],
        ),
        (
            "no final newline",
            b',',
            "id,email\nE1,a@x.com",
            &["E1"],
            &["a@x.com"],
        ),
        (
            "bom",
            b',',
            "\u{feff}id,email\nE1,a@x.com\n",
            &["E1"],
            &["a@x.com"],
        ),
        (
            "bom crlf quoted header",
            b',',
            "\u{feff}\"id\",\"email\"\r\nE1,a@x.com\r\n",
            &["E1"],
            &["a@x.com"],
        ),
        (
            "semicolon",
            b';',
            "id;email\nE1;a@x.com\n",
            &["E1"],
            &["a@x.com"],
        ),
        (
            "tab",
            b'\t',
            "id\temail\nE1\ta@x.com\n",
            &["E1"],
            &["a@x.com"],
        ),
        (
            "pipe",
            b'|',
            "id|email\nE1|a@x.com\n",
            &["E1"],
            &["a@x.com"],
        ),
        (
            "header case and spaces",
            b',',
            " ID , Email \nE1,a@x.com\n",
            &["E1"],
            &["a@x.com"],
        ),
        (
            "columns in any order, unused duplicates",
            b',',
            "x,email,x,id\n1,a@x.com,2,E1\n",
            &["E1"],
            &["a@x.com"],
        ),
        (
            "values trimmed, email case kept",
            b',',
            "id,email\n  E1 ,  Alice@Example.COM \n",
            &["E1"],
            &["Alice@Example.COM"],
        ),
        (
            "blank lines skipped",
            b',',
            "\n\nid,email\n\nE1,a@x.com\r\n\r\n   \nE2,b@x.com\n\n",
            &["E1", "E2"],
            &["a@x.com", "b@x.com"],
        ),
        (
            "sorted by key",
            b',',
            "id,email\nE2,b@x.com\nE1,a@x.com\n",
            &["E1", "E2"],
            &["a@x.com", "b@x.com"],
        ),
        (
            "formula prefixes are data",
            b',',
            "id,email\n=1+1,=cmd@x.com\n-2,+a@x.com\n@3,b@x.com\n",
            &["-2", "=1+1", "@3"],
            &["+a@x.com", "=cmd@x.com", "b@x.com"],
        ),
    ];
    for (what, delim, data, want_keys, want_emails) in cases {
        let mut s = minimal();
        s.delimiter = *delim;
        let snap = ok(&s, data);
        assert_eq!(keys(&snap), *want_keys, "{what}");
        let emails: Vec<&str> = snap.users().iter().map(|u| u.email.as_str()).collect();
        assert_eq!(emails, *want_emails, "{what}");
    }
}

#[test]
fn quoted_fields_and_line_numbers() {
    // A quoted comma, an escaped quote and a quoted newline (LF and CRLF) on line 2-3 and
    // 4-6: the later records' lines must count the physical lines.
    for nl in ["\n", "\r\n"] {
        let data = [
            "id,email,display,note",
            "E1,a@x.com,\"Doe, Jane\",\"multi",
            "line\"",
            "E2,b@x.com,\"say \"\"hi\"\"\",\"three",
            "",
            "lines\"",
            "E3,,x,y",
            "",
            "E4,,x,y",
        ]
        .join(nl);
        let mut s = minimal();
        s.columns.display_name = Some("display".into());
        s.extra.insert("note".into(), "note".into());
        let ps = problems(&s, data.as_bytes());
        assert_eq!(
            ps,
            vec![
                (Some(7), "empty email".to_string()),
                (Some(9), "empty email".to_string())
            ],
            "newline {nl:?}"
        );
        let fixed = data
            .replace("E3,,", "E3,c@x.com,")
            .replace("E4,,", "E4,d@x.com,");
        let snap = ok(&s, &fixed);
        let e1 = snap.get("E1").unwrap();
        assert_eq!(e1.display_name.as_deref(), Some("Doe, Jane"));
        assert_eq!(e1.field("note"), Some(format!("multi{nl}line").as_str()));
        let e2 = snap.get("E2").unwrap();
        assert_eq!(e2.display_name.as_deref(), Some("say \"hi\""));
        assert_eq!(
            e2.field("note"),
            Some(format!("three{nl}{nl}lines").as_str())
        );
        assert_eq!(snap.len(), 4);
    }
}

#[test]
fn quoted_newline_in_extra_is_data() {
    let mut s = minimal();
    s.extra.insert("address".into(), "addr".into());
    let snap = ok(
        &s,
        "id,email,addr\nE1,a@x.com,\"1 Main St\nSpringfield\"\nE2,b@x.com,\n",
    );
    let e1 = snap.get("E1").unwrap();
    assert_eq!(
        e1.extra.get("address").map(String::as_str),
        Some("1 Main St\nSpringfield")
    );
    assert!(snap.get("E2").unwrap().extra.is_empty());
    // and the line after it is still numbered right
    let ps = problems(
        &s,
        b"id,email,addr\nE1,a@x.com,\"1 Main St\nSpringfield\"\n,b@x.com,\n",
    );
    assert_eq!(ps, vec![(Some(4), "empty key".to_string())]);
}

#[test]
fn names_with_newline_are_rejected() {
    let mut s = minimal();
    s.columns.given_name = Some("given".into());
    one_problem(
        &s,
        "id,email,given\nE1,a@x.com,\"Ja\nne\"\nE2,b@x.com,Bob\n",
        2,
        &["control character", "\"given\""],
    );
}

#[test]
fn each_row_problem_with_its_line() {
    let s = settings();
    let h = "id,email,given,family,display,mobile,active,groups\n";
    // (description, rows after the header, line, message fragments)
    let cases: &[(&str, &str, u64, &[&str])] = &[
        (
            "empty key",
            "E1,a@x.com,,,,,,\n  ,b@x.com,,,,,,\n",
            3,
            &["empty key"],
        ),
        ("empty email", "E1,,,,,,,\n", 2, &["empty email"]),
        ("blank email", "E1, ,,,,,,\n", 2, &["empty email"]),
        (
            "email without @",
            "E1,alice.x.com,,,,,,\n",
            2,
            &["invalid email \"alice.x.com\"", "no \"@\""],
        ),
        (
            "email with two @",
            "E1,a@b@x.com,,,,,,\n",
            2,
            &["invalid email", "more than one"],
        ),
        (
            "email without local part",
            "E1,@x.com,,,,,,\n",
            2,
            &["invalid email", "nothing before"],
        ),
        (
            "email without domain",
            "E1,alice@,,,,,,\n",
            2,
            &["invalid email", "nothing after"],
        ),
        (
            "email with space",
            "E1,al ice@x.com,,,,,,\n",
            2,
            &["invalid email", "whitespace"],
        ),
        (
            "unknown enabled",
            "E1,a@x.com,,,,,maybe,\n",
            2,
            &[
                "unknown value \"maybe\"",
                "\"active\"",
                "true, 1, yes",
                "false, 0, no",
            ],
        ),
        (
            "duplicate key",
            "E1,a@x.com,,,,,,\nE2,b@x.com,,,,,,\nE1,c@x.com,,,,,,\n",
            4,
            &["duplicate key \"E1\" (first on line 2)"],
        ),
        (
            "duplicate email, other case",
            "E1,a@x.com,,,,,,\nE2,b@x.com,,,,,,\nE3,A@X.Com,,,,,,\n",
            4,
            &["duplicate email \"A@X.Com\" (first on line 2)"],
        ),
        (
            "too few fields",
            "E1,a@x.com,,,,,\n",
            2,
            &["expected 8 fields", "found 7"],
        ),
        (
            "too many fields",
            "E1,a@x.com,,,,,,,\n",
            2,
            &["expected 8 fields", "found 9"],
        ),
        (
            "control char in given",
            "E1,a@x.com,Al\u{7}ice,,,,,\n",
            2,
            &["control character", "\"given\""],
        ),
        (
            "C1 control in family",
            "E1,a@x.com,,Sm\u{85}ith,,,,\n",
            2,
            &["control character", "\"family\""],
        ),
        (
            "control char in display",
            "E1,a@x.com,,,\"a\u{1b}b\",,,\n",
            2,
            &["control character", "\"display\""],
        ),
        (
            "control char in key",
            "E\u{0}1,a@x.com,,,,,,\n",
            2,
            &["control character in key"],
        ),
        (
            "control char in group",
            "E1,a@x.com,,,,,,a;b\u{7f}\n",
            2,
            &["control character in group"],
        ),
    ];
    for (what, rows, line, fragments) in cases {
        let data = format!("{h}{rows}");
        let mut ps = problems(&s, data.as_bytes());
        // A duplicate quarantines every record sharing it: the first names the repeat.
        if what.starts_with("duplicate") {
            assert_eq!(ps.len(), 2, "{what}: {ps:#?}");
            assert_eq!(ps[0].0, Some(2), "{what}: {ps:#?}");
            assert!(ps[0].1.contains("(again on line 4)"), "{what}: {ps:#?}");
            ps.remove(0);
        }
        assert_eq!(ps.len(), 1, "{what}: {ps:#?}");
        assert_eq!(ps[0].0, Some(*line), "{what}: {ps:#?}");
        for f in *fragments {
            assert!(ps[0].1.contains(f), "{what}: {:?} lacks {f:?}", ps[0].1);
        }
    }
}

#[test]
fn tab_in_a_name_is_allowed() {
    let mut s = minimal();
    s.columns.given_name = Some("given".into());
    let snap = ok(&s, "id,email,given\nE1,a@x.com,\"Mary\tAnn\"\n");
    assert_eq!(snap.users()[0].given_name.as_deref(), Some("Mary\tAnn"));
}

#[test]
fn problem_columns() {
    let s = settings();
    let data = "ID,Mail,given,family,display,mobile,active,groups\n,,,,,,nope,\n";
    let mut s2 = s.clone();
    s2.columns.email = "mail".into();
    // Record-level: quarantined, under the first column with a problem, every problem named.
    let snap = ok(&s2, data);
    let q = &snap.quarantined()[0];
    assert_eq!(q.field, "ID");
    assert!(q.problem.contains("empty email") && q.problem.contains("\"active\""));
    // Failing for a file-level problem, each problem names its column as written.
    let e = load_str(&s2, &format!("{data}E1,a@x.com\n")).unwrap_err();
    let cols: Vec<Option<&str>> = e.problems.iter().map(|p| p.column.as_deref()).collect();
    assert_eq!(cols, vec![Some("ID"), Some("Mail"), Some("active"), None]);
}

#[test]
fn all_problems_reported_at_once() {
    let s = settings();
    let data = "\
id,email,given,family,display,mobile,active,groups
E1,a@x.com,Ann,,,,yes,
,b@x.com,,,,,,
E3,not-an-email,,,,,,
E4,d@x.com,,,,,perhaps,
E1,e@x.com,,,,,,
E6,A@x.com,,,,,,
E7,g@x.com,,,
E8,,,,,,nah,
";
    let ps = problems(&s, data.as_bytes());
    let want: Vec<(Option<u64>, &str)> = vec![
        (Some(3), "empty key"),
        (Some(4), "invalid email \"not-an-email\""),
        (Some(5), "unknown value \"perhaps\""),
        (Some(6), "duplicate key \"E1\" (first on line 2)"),
        (Some(7), "duplicate email \"A@x.com\" (first on line 2)"),
        (Some(8), "expected 8 fields as in the header, found 5"),
        (Some(9), "empty email"),
        (Some(9), "unknown value \"nah\""),
    ];
    assert_eq!(ps.len(), want.len(), "{ps:#?}");
    for ((line, msg), (wline, wfrag)) in ps.iter().zip(&want) {
        assert_eq!(line, wline, "{msg}");
        assert!(msg.contains(wfrag), "{msg:?} lacks {wfrag:?}");
    }
}

#[test]
fn invalid_utf8_names_the_column() {
    let mut s = minimal();
    s.columns.given_name = Some("given".into());
    s.columns.family_name = Some("family".into());
    let data =
        b"id,email,given,family,unused\nE1,a@x.com,Ren\xe9,Doe,\xff\nE2,b@x.com,Bob,D\xc3,x\n";
    let ps = problems(&s, data);
    assert_eq!(
        ps,
        vec![
            (
                Some(2),
                "invalid UTF-8 in column \"given\" (after byte 3 of the value)".to_string()
            ),
            (
                Some(3),
                "invalid UTF-8 in column \"family\" (after byte 1 of the value)".to_string()
            ),
        ]
    );
    // invalid UTF-8 in a column nobody reads is fine
    let snap = ok(&s, "id,email,given,family,unused\nE1,a@x.com,A,B,ok\n");
    assert_eq!(snap.len(), 1);
    let good = b"id,email,given,family,unused\nE1,a@x.com,A,B,\xff\n";
    assert_eq!(load_bytes(&s, good).unwrap().len(), 1);
}

#[test]
fn header_problems() {
    let mut s = settings();
    s.extra.insert("cost_centre".into(), "CostCentre".into());
    // (header, expected (line, message) list)
    let cases: &[(&str, &[&str])] = &[
        (
            "id,given,family,display,mobile,active,groups,costcentre\n",
            &[
                "missing column \"email\" (source.csv.columns.email); header has: id, given, family, display, mobile, active, groups, costcentre",
            ],
        ),
        (
            "id,email,given,family,display,mobile,active,groups\n",
            &["missing column \"CostCentre\" (source.csv.extra.cost_centre)"],
        ),
        (
            "id,email,given,family,display,mobile,active,groups,costcentre,EMAIL\n",
            &[
                "duplicate header \"email\" (source.csv.columns.email): it is fields 2, 10 of the header",
            ],
        ),
        (
            "email,mobile,active,groups,costcentre\n",
            &[
                "missing column \"id\" (source.csv.columns.key)",
                "missing column \"given\" (source.csv.columns.given_name)",
                "missing column \"family\" (source.csv.columns.family_name)",
                "missing column \"display\" (source.csv.columns.display_name)",
            ],
        ),
    ];
    for (header, want) in cases {
        // rows with problems are not checked once the header is wrong
        let data = format!("{header}E1,,,\n");
        let ps = problems(&s, data.as_bytes());
        assert_eq!(ps.len(), want.len(), "{header}: {ps:#?}");
        for ((line, msg), w) in ps.iter().zip(*want) {
            assert_eq!(*line, Some(1), "{msg}");
            assert!(msg.starts_with(w), "{msg:?} does not start with {w:?}");
        }
    }
}

#[test]
fn wrong_delimiter_hint() {
    let ps = problems(&minimal(), b"id;email\nE1;a@x.com\n");
    let hint = "header has: id;email (the header is one field containing ';': is source.csv.delimiter ',' right?)";
    assert_eq!(
        ps,
        vec![
            (
                Some(1),
                format!("missing column \"id\" (source.csv.columns.key); {hint}")
            ),
            (
                Some(1),
                format!("missing column \"email\" (source.csv.columns.email); {hint}")
            ),
        ]
    );
    // the right delimiter reads it
    let mut s = minimal();
    s.delimiter = b';';
    assert_eq!(ok(&s, "id;email\nE1;a@x.com\n").len(), 1);
}

#[test]
fn empty_and_header_only() {
    let s = settings();
    for data in [
        "",
        "\u{feff}",
        "\n\n",
        "\r\n",
        "id,email,given,family,display,mobile,active,groups\n",
        "\u{feff}id,email,given,family,display,mobile,active,groups",
    ] {
        let snap = ok(&s, data);
        assert!(snap.is_empty(), "{data:?}");
    }
    // A header-only file is still checked.
    one_problem(&minimal(), "id,given\n", 1, &["missing column \"email\""]);
}

#[test]
fn enabled_values() {
    let s = settings();
    let h = "id,email,given,family,display,mobile,active,groups\n";
    let cases: &[(&str, bool)] = &[
        ("", true),
        ("  ", true),
        ("true", true),
        ("TRUE", true),
        (" Yes ", true),
        ("y", true),
        ("1", true),
        ("Active", true),
        ("enabled", true),
        ("false", false),
        ("0", false),
        ("No", false),
        ("n", false),
        ("INACTIVE", false),
        ("disabled", false),
        ("Suspended", false),
    ];
    for (value, want) in cases {
        let snap = ok(&s, &format!("{h}E1,a@x.com,,,,,\"{value}\",\n"));
        assert_eq!(snap.users()[0].enabled, *want, "{value:?}");
    }
    // no enabled column: everyone enabled
    assert!(ok(&minimal(), "id,email\nE1,a@x.com\n").users()[0].enabled);
    // custom, non-ASCII vocabulary
    let mut c = s.clone();
    c.enabled_values = vec!["Ativo".into()];
    c.disabled_values = vec!["DESLIGADO".into(), "Ä".into()];
    let snap = ok(
        &c,
        &format!("{h}E1,a@x.com,,,,,ativo,\nE2,b@x.com,,,,,desligado,\nE3,c@x.com,,,,,ä,\n"),
    );
    let en: Vec<bool> = snap.users().iter().map(|u| u.enabled).collect();
    assert_eq!(en, vec![true, false, false]);
    one_problem(
        &c,
        &format!("{h}E1,a@x.com,,,,,true,\n"),
        2,
        &[
            "unknown value \"true\"",
            "ativo (enabled), desligado, ä (disabled)",
        ],
    );
}

#[test]
fn groups_split() {
    let s = settings();
    let h = "id,email,given,family,display,mobile,active,groups\n";
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("staff", &["staff"]),
        ("staff; admins ;;", &["admins", "staff"]),
        (" Admins;admins;Staff", &["Admins", "Staff"]),
        ("a,b", &["a,b"]),
    ];
    for (cell, want) in cases {
        let snap = ok(&s, &format!("{h}E1,a@x.com,,,,,,\"{cell}\"\n"));
        assert_eq!(snap.users()[0].groups, *want, "{cell:?}");
    }
    let mut pipe = s.clone();
    pipe.groups_separator = "|".into();
    let snap = ok(&pipe, &format!("{h}E1,a@x.com,,,,,,b | a\n"));
    assert_eq!(snap.users()[0].groups, vec!["a", "b"]);
    let mut none = s.clone();
    none.groups_separator = String::new();
    let snap = ok(&none, &format!("{h}E1,a@x.com,,,,,,a;b\n"));
    assert_eq!(snap.users()[0].groups, vec!["a;b"]);
}

#[test]
fn names_normalised() {
    let s = settings();
    let data = "id,email,given,family,display,mobile,active,groups\n\
        E1,bender@planetexpress.com,  Bender Bending ,Rodri\u{301}guez,Bender Bending Rodr\u{ed}guez, +1 555 0100 ,,Caf\u{e9}\n\
        E2,rene@x.com,Rene\u{301},,,,,Cafe\u{301}\n";
    let snap = ok(&s, data);
    let b = snap.get("E1").unwrap();
    assert_eq!(b.given_name.as_deref(), Some("Bender Bending"));
    assert_eq!(b.family_name.as_deref(), Some("Rodr\u{ed}guez"));
    assert_eq!(
        b.display_name.as_deref(),
        Some("Bender Bending Rodr\u{ed}guez")
    );
    assert_eq!(b.mobile.as_deref(), Some("+1 555 0100"));
    assert_eq!(b.other_name, None);
    assert_eq!(b.groups, vec!["Caf\u{e9}"]);
    let r = snap.get("E2").unwrap();
    assert_eq!(r.given_name.as_deref(), Some("Ren\u{e9}"));
    assert_eq!(r.groups, vec!["Caf\u{e9}"]);
    assert_eq!(r.family_name, None);
}

#[test]
fn extra_columns() {
    let mut s = minimal();
    s.extra.insert("department".into(), "Dept".into());
    s.extra.insert("employee_no".into(), "EmpNo".into());
    s.columns.other_name = Some("nick".into());
    let snap = ok(
        &s,
        "id,email,dept,empno,nick\nE1,a@x.com, Sales ,=007,Al\nE2,b@x.com,,42,\n",
    );
    let a = snap.get("E1").unwrap();
    assert_eq!(a.extra.get("department").map(String::as_str), Some("Sales"));
    assert_eq!(a.extra.get("employee_no").map(String::as_str), Some("=007"));
    assert_eq!(a.other_name.as_deref(), Some("Al"));
    let b = snap.get("E2").unwrap();
    assert_eq!(b.extra.get("department"), None);
    assert_eq!(b.field("employee_no"), Some("42"));
}

#[test]
fn same_column_for_key_and_email() {
    let s = CsvSettings::new("u.csv", CsvColumns::new("email", "email"));
    let snap = ok(&s, "email\na@x.com\nb@x.com\n");
    assert_eq!(keys(&snap), vec!["a@x.com", "b@x.com"]);
}

#[test]
fn io_errors() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let e = load_from_reader(&minimal(), Path::new("x.csv"), Failing).unwrap_err();
    assert_eq!(
        e.problems,
        vec![CsvProblem::file("cannot read file: disk on fire".into())]
    );
    assert_eq!(e.to_string(), "x.csv: cannot read file: disk on fire");

    // fails after the first bytes: still one problem, no partial result
    let e = load_from_reader(
        &minimal(),
        Path::new("x.csv"),
        (&b"id,email\nE1,a@x.com\n"[..]).chain(Failing),
    )
    .unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].line, None);

    // a reader that hands out one byte at a time still finds the BOM
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            if buf.is_empty() {
                return Ok(0);
            }
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }
    let snap = load_from_reader(
        &minimal(),
        Path::new("x.csv"),
        Trickle("\u{feff}id,email\r\nE1,a@x.com\r\n".as_bytes()),
    )
    .unwrap();
    assert_eq!(keys(&snap), vec!["E1"]);
    let e = load_from_reader(&minimal(), Path::new("x.csv"), Trickle(b"id")).unwrap_err();
    assert_eq!(e.problems.len(), 1);
}

#[test]
fn display_caps_at_fifty() {
    let mut data = String::from("id,email\n");
    for _ in 0..60 {
        data.push_str(",a@x.com\n");
    }
    // A row with too few fields makes it a failing read, which lists every problem.
    data.push_str("E1\n");
    let e = load_str(&minimal(), &data).unwrap_err();
    // 60 empty keys, 59 duplicate emails, 1 field count
    assert_eq!(e.problems.len(), 120);
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 51);
    assert_eq!(lines[0], "users.csv:2: empty key");
    assert_eq!(lines[1], "users.csv:3: empty key");
    assert_eq!(
        lines[2],
        "users.csv:3: duplicate email \"a@x.com\" (first on line 2)"
    );
    assert_eq!(lines[50], "... and 70 more problems");

    let small = CsvError {
        path: "f.csv".into(),
        problems: vec![
            CsvProblem::file("x".into()),
            CsvProblem::at(3, None, "y".into()),
        ],
    };
    assert_eq!(small.to_string(), "f.csv: x\nf.csv:3: y");
}

#[test]
fn duplicates_in_depth() {
    let s = minimal();
    // (rows after the header, expected (line, message) list)
    let cases: &[(&str, &[(u64, &str)])] = &[
        (
            "E1,a@x.com\nE1,b@x.com\nE1,c@x.com\n",
            &[
                (2, "duplicate key \"E1\" (again on line 3)"),
                (3, "duplicate key \"E1\" (first on line 2)"),
                (4, "duplicate key \"E1\" (first on line 2)"),
            ],
        ),
        // keys are compared exactly (case and all), after trimming
        ("e1,a@x.com\nE1,b@x.com\n", &[]),
        (
            " E1 ,a@x.com\nE1,b@x.com\n",
            &[
                (2, "duplicate key \"E1\" (again on line 3)"),
                (3, "duplicate key \"E1\" (first on line 2)"),
            ],
        ),
        // long keys sharing the 8-byte sort prefix
        (
            "user-000001,a@x.com\nuser-000002,b@x.com\nuser-000001,c@x.com\n",
            &[
                (2, "duplicate key \"user-000001\" (again on line 4)"),
                (4, "duplicate key \"user-000001\" (first on line 2)"),
            ],
        ),
        // emails: case-insensitively, non-ASCII too, and across ASCII/non-ASCII
        (
            "E1,\u{c9}mile@x.com\nE2,\u{e9}MILE@X.com\nE3,emile@x.com\n",
            &[
                (2, "duplicate email \"\u{c9}mile@x.com\" (again on line 3)"),
                (3, "duplicate email \"\u{e9}MILE@X.com\" (first on line 2)"),
            ],
        ),
        (
            "E1,Kelvin@x.com\nE2,\u{212a}elvin@x.com\n",
            &[
                (2, "duplicate email \"Kelvin@x.com\" (again on line 3)"),
                (
                    3,
                    "duplicate email \"\u{212a}elvin@x.com\" (first on line 2)",
                ),
            ],
        ),
        (
            "E1,a@x.com\nE2,b@x.com\nE3,A@X.COM\nE4,B@x.com\nE5,a@x.com\n",
            &[
                (2, "duplicate email \"a@x.com\" (again on line 4)"),
                (3, "duplicate email \"b@x.com\" (again on line 5)"),
                (4, "duplicate email \"A@X.COM\" (first on line 2)"),
                (5, "duplicate email \"B@x.com\" (first on line 3)"),
                (6, "duplicate email \"a@x.com\" (first on line 2)"),
            ],
        ),
        // a row with an unusable email still takes part with its key, and vice versa
        (
            "E1,bad\nE1,a@x.com\n,a@x.com\n",
            &[
                (2, "invalid email \"bad\": no \"@\""),
                (2, "duplicate key \"E1\" (again on line 3)"),
                (3, "duplicate key \"E1\" (first on line 2)"),
                (3, "duplicate email \"a@x.com\" (again on line 4)"),
                (4, "empty key"),
                (4, "duplicate email \"a@x.com\" (first on line 3)"),
            ],
        ),
    ];
    for (rows, want) in cases {
        let data = format!("id,email\n{rows}");
        // Every record sharing a key or email is quarantined; the rest are users.
        let snap = ok(&s, &data);
        assert_eq!(snap.len(), rows.lines().count(), "{rows:?}");
        let got = quarantine_problems(&snap);
        let want: Vec<(Option<u64>, String)> = want
            .iter()
            .map(|(l, m)| (Some(*l), (*m).to_string()))
            .collect();
        assert_eq!(got, want, "{rows:?}");
    }
}

#[test]
fn mass_repeats_stay_linear() {
    // 20 000 rows with one key and one email: every repeat named, quickly.
    let mut data = String::from("id,email\n");
    for _ in 0..20_000 {
        data.push_str("E1,Same@x.com\n");
    }
    let started = std::time::Instant::now();
    let snap = ok(&minimal(), &data);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(snap.users().is_empty());
    assert_eq!(snap.quarantined().len(), 20_000);
    let last = &snap.quarantined()[19_999];
    assert_eq!(last.location, "users.csv:20001");
    assert_eq!(
        last.problem,
        "duplicate key \"E1\" (first on line 2); duplicate email \"Same@x.com\" (first on line 2)"
    );
}

#[test]
fn unterminated_quote_at_the_end() {
    // The quote swallows the rest of the file: one field, reported where it starts.
    for tail in ["", "\n", "\r\n"] {
        let data = format!("id,email\nE1,a@x.com\n\"E2,b@x.com{tail}");
        let ps = problems(&minimal(), data.as_bytes());
        assert_eq!(ps.len(), 1, "{tail:?}: {ps:?}");
        assert_eq!(ps[0].0, Some(3), "{tail:?}: {ps:?}");
        assert!(
            ps[0]
                .1
                .starts_with("expected 2 fields as in the header, found 1")
        );
    }
}

#[test]
fn display_of_exactly_fifty() {
    let problems: Vec<CsvProblem> = (1..=50)
        .map(|l| CsvProblem::at(l, None, format!("p{l}")))
        .collect();
    let e = CsvError {
        path: "f.csv".into(),
        problems,
    };
    let text = e.to_string();
    assert_eq!(text.lines().count(), 50);
    assert!(text.ends_with("f.csv:50: p50"));
}

#[test]
fn defaults() {
    let (en, dis) = CsvSettings::default_values();
    assert_eq!(en, ["true", "1", "yes", "y", "active", "enabled"]);
    assert_eq!(
        dis,
        ["false", "0", "no", "n", "inactive", "disabled", "suspended"]
    );
    let s = minimal();
    assert_eq!(s.delimiter, b',');
    assert_eq!(s.groups_separator, ";");
}
