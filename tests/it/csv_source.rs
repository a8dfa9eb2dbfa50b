//! The CSV source against real files: fixtures in `tests/data/csv/`, plus files written into a
//! temporary directory for the cases git should not hold (invalid UTF-8, missing, unreadable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dirsync::source::csv::{CsvColumns, CsvError, CsvProblem, CsvSettings, load};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/csv")
        .join(name)
}

/// The mapping of the HR-export style fixtures.
fn hr_settings(path: PathBuf) -> CsvSettings {
    let mut columns = CsvColumns::new("employee id", "EMAIL");
    columns.given_name = Some("First Name".into());
    columns.family_name = Some("Last Name".into());
    columns.display_name = Some("Display Name".into());
    columns.mobile = Some("Mobile".into());
    columns.enabled = Some("Status".into());
    columns.groups = Some("Groups".into());
    let mut s = CsvSettings::new(path, columns);
    s.extra = BTreeMap::from([("department".to_string(), "Department".to_string())]);
    s
}

fn load_err(s: &CsvSettings) -> CsvError {
    match load(s) {
        Ok(snap) => panic!(
            "{}: expected an error, got {} users",
            s.path.display(),
            snap.len()
        ),
        Err(e) => e,
    }
}

/// The quarantined records of a read that succeeds, as problems: (line, field, problem).
fn quarantined(s: &CsvSettings) -> Vec<CsvProblem> {
    let snap = match load(s) {
        Ok(snap) => snap,
        Err(e) => panic!("{}: expected a snapshot, got {e}", s.path.display()),
    };
    snap.quarantined()
        .iter()
        .map(|q| {
            let (file, line) = q.location.rsplit_once(':').expect("file:line");
            assert_eq!(file, s.path.display().to_string());
            assert!(q.key.as_deref().is_none_or(|k| snap.get(k).is_none()));
            CsvProblem {
                line: line.parse().ok(),
                column: Some(q.field.clone()),
                message: q.problem.clone(),
            }
        })
        .collect()
}

fn problem(line: Option<u64>, column: Option<&str>, message: &str) -> CsvProblem {
    CsvProblem {
        line,
        column: column.map(str::to_string),
        message: message.to_string(),
    }
}

#[test]
fn good_file_with_bom_and_crlf() {
    let snap = load(&hr_settings(fixture("good.csv"))).expect("good.csv loads");
    assert_eq!(snap.len(), 4);
    let keys: Vec<&str> = snap.users().iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["E1001", "E1002", "E1003", "E1004"]);

    let alice = snap.get("E1001").expect("E1001");
    assert_eq!(alice.email, "alice@example.com");
    assert_eq!(alice.given_name.as_deref(), Some("Alice"));
    assert_eq!(alice.display_name.as_deref(), Some("Anderson, Alice"));
    assert_eq!(alice.mobile.as_deref(), Some("+1 555 0101"));
    assert!(alice.enabled);
    assert_eq!(alice.groups, ["Admins", "Staff"]);
    assert_eq!(alice.field("department"), Some("Engineering"));

    let bob = snap.get("E1002").expect("E1002");
    assert_eq!(bob.email, "Bob@Example.com", "email case is kept");
    assert!(bob.enabled, "an empty status cell means enabled");
    assert_eq!(bob.display_name, None);
    assert_eq!(bob.groups, ["Sales", "Staff"]);

    let bender = snap.get("E1003").expect("E1003");
    assert_eq!(bender.family_name.as_deref(), Some("Rodr\u{ed}guez"));
    assert_eq!(
        bender.display_name.as_deref(),
        Some("Bender Bending Rodr\u{ed}guez")
    );
    assert!(!bender.enabled, "suspended");
    assert!(bender.groups.is_empty());
    assert_eq!(bender.field("department"), Some("Delivery\r\nEarth office"));

    let rene = snap.get("E1004").expect("E1004");
    assert_eq!(
        rene.given_name.as_deref(),
        Some("Ren\u{e9}"),
        "decomposed e + accent is put in NFC"
    );
    assert!(!rene.enabled);
    assert_eq!(rene.field("department"), Some("=SUM(A1)"), "kept as data");
}

#[test]
fn good_file_line_numbers_survive_bom_crlf_and_quoted_newlines() {
    // Same file, but E1004's email is mapped from a column where it is empty: the error must
    // point at line 7 (the header is line 1, E1003 spans lines 4-5, line 6 is blank).
    let mut s = hr_settings(fixture("good.csv"));
    s.columns.email = "Display Name".into();
    assert_eq!(
        quarantined(&s),
        [
            problem(
                Some(2),
                Some("Display Name"),
                "invalid email \"Anderson, Alice\": no \"@\"",
            ),
            problem(Some(3), Some("Display Name"), "empty email"),
            problem(
                Some(4),
                Some("Display Name"),
                "invalid email \"Bender Bending Rodr\u{ed}guez\": no \"@\"",
            ),
            problem(Some(7), Some("Display Name"), "empty email"),
        ]
    );
}

#[test]
fn bad_file_reports_every_problem() {
    let s = hr_settings(fixture("bad.csv"));
    let e = load_err(&s);
    let want = [
        problem(Some(3), Some("Employee ID"), "empty key"),
        problem(
            Some(4),
            Some("Email"),
            "invalid email \"erin.example.com\": no \"@\"",
        ),
        problem(
            Some(5),
            Some("Last Name"),
            "control character in column \"Last Name\": \"Foster\\nJr\"",
        ),
        problem(
            Some(7),
            Some("Status"),
            "unknown value \"maybe\" in enabled column \"Status\": accepted are true, 1, yes, y, \
             active, enabled (enabled), false, 0, no, n, inactive, disabled, suspended \
             (disabled), or empty (enabled)",
        ),
        problem(
            Some(8),
            Some("Employee ID"),
            "duplicate key \"E2001\" (first on line 2)",
        ),
        problem(
            Some(9),
            Some("Email"),
            "duplicate email \"CAROL@example.com\" (first on line 2)",
        ),
        problem(
            Some(10),
            None,
            "expected 9 fields as in the header, found 7 (an unquoted ',' in a value?)",
        ),
        problem(Some(11), Some("Email"), "empty email"),
    ];
    assert_eq!(e.problems, want);

    let path = s.path.display().to_string();
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert_eq!(lines[0], format!("{path}:3: empty key"));
    assert_eq!(
        lines[4],
        format!("{path}:8: duplicate key \"E2001\" (first on line 2)")
    );
}

#[test]
fn missing_column_in_a_real_file() {
    let mut s = hr_settings(fixture("good.csv"));
    s.columns.email = "mail".into();
    let e = load_err(&s);
    assert_eq!(
        e.problems,
        [problem(
            Some(1),
            Some("mail"),
            "missing column \"mail\" (source.csv.columns.email); header has: Employee ID, Email, \
             First Name, Last Name, Display Name, Mobile, Status, Groups, Department",
        )]
    );
}

#[test]
fn empty_and_header_only_files_are_empty_snapshots() {
    for name in ["empty.csv", "header_only.csv"] {
        let snap = load(&hr_settings(fixture(name))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(snap.is_empty(), "{name}");
    }
    assert_eq!(
        std::fs::metadata(fixture("empty.csv"))
            .expect("empty.csv")
            .len(),
        0
    );
}

#[test]
fn invalid_utf8_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.csv");
    // Latin-1 export: "René" with a bare 0xE9, on line 3, in the given-name column.
    std::fs::write(
        &path,
        b"id,email,given\nE1,a@example.com,Ann\nE2,b@example.com,Ren\xe9\nE3,c@example.com,Cy\n",
    )
    .expect("write");
    let mut columns = CsvColumns::new("id", "email");
    columns.given_name = Some("given".into());
    let s = CsvSettings::new(&path, columns);
    assert_eq!(
        quarantined(&s),
        [problem(
            Some(3),
            Some("given"),
            "invalid UTF-8 in column \"given\" (after byte 3 of the value)",
        )]
    );
    let snap = load(&s).unwrap();
    assert_eq!(snap.quarantined()[0].key.as_deref(), Some("E2"));
    assert_eq!(snap.quarantined()[0].value, "\"Ren\u{fffd}\"");
    assert_eq!(snap.users().len(), 2);
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.csv");
    let e = load_err(&CsvSettings::new(&path, CsvColumns::new("id", "email")));
    assert_eq!(e.path, path);
    assert_eq!(e.problems.len(), 1);
    let p = &e.problems[0];
    assert_eq!((p.line, p.column.as_deref()), (None, None));
    assert!(
        p.message.starts_with("cannot open file: ") && p.message.contains("No such file"),
        "{}",
        p.message
    );
    assert_eq!(e.to_string(), format!("{}: {}", path.display(), p.message));
}

#[test]
fn unreadable_path() {
    // A directory: opening works on Linux, reading fails (EISDIR) even as root, unlike a
    // chmod 000 file.
    let dir = tempfile::tempdir().expect("tempdir");
    let e = load_err(&CsvSettings::new(
        dir.path(),
        CsvColumns::new("id", "email"),
    ));
    assert_eq!(e.problems.len(), 1);
    let p = &e.problems[0];
    assert_eq!(p.line, None);
    assert!(
        p.message.starts_with("cannot ") && p.message.contains("directory"),
        "{}",
        p.message
    );
}
