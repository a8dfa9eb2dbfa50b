//! Covata's wire format: request bodies built from accounts, the import CSV, the import's
//! error strings matched back to users, and user records parsed into remote accounts. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::connector::api::{OpError, RemoteAccount};
use crate::connector::http::truncate_body;
use crate::mapping::Account;
use crate::plan::FieldChange;

/// Fields `POST /api/v1/users` takes from the account (`roles` comes from its roles).
pub(crate) const CREATE_FIELDS: [&str; 6] = [
    "email",
    "firstName",
    "lastName",
    "otherName",
    "mobileNumber",
    "planId",
];

/// Fields `PUT /api/v1/users/{id}` can change. `email` is not among them.
pub(crate) const UPDATE_FIELDS: [&str; 5] = [
    "firstName",
    "lastName",
    "otherName",
    "mobileNumber",
    "planId",
];

/// ASSUMED: the value sent for a field that is no longer mapped (the docs do not say how to
/// clear a field). An empty string rather than JSON null: a null is commonly read as "leave
/// unchanged" by partial-update APIs, which would silently keep the old value.
pub(crate) const CLEARED_VALUE: &str = "";

/// ASSUMED: the import CSV header (the admin guide's template); see [`import_csv`].
pub(crate) const IMPORT_HEADER: [&str; 7] = [
    "Email",
    "First Name",
    "Last Name",
    "Mobile Number",
    "Role",
    "Account Type",
    "Plan",
];

/// ASSUMED: how several roles share the import's `Role` column.
pub(crate) const IMPORT_ROLE_SEPARATOR: &str = ";";

/// The body of `POST /api/v1/users`: the account's fields that Covata takes, and its roles.
pub(crate) fn create_body(account: &Account) -> Value {
    let mut m = Map::new();
    for f in CREATE_FIELDS {
        if let Some(v) = account.fields.get(f) {
            m.insert(f.to_string(), Value::String(v.clone()));
        }
    }
    m.insert("roles".to_string(), roles_value(&account.roles));
    Value::Object(m)
}

fn roles_value<'a>(roles: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(roles.into_iter().cloned().map(Value::String).collect())
}

/// The body of `PUT /api/v1/users/{id}` for these changes: only the changed fields; a removed
/// field is sent as [`CLEARED_VALUE`]. `Ok(None)`: nothing to send. `Err`: a change this API
/// cannot make (an email change, an unknown field) — then nothing at all is sent.
pub(crate) fn update_body(changes: &[FieldChange]) -> Result<Option<Value>, String> {
    let mut m = Map::new();
    for c in changes {
        match c.field.as_str() {
            "email" => {
                return Err(format!(
                    "Covata cannot change a user's email through its API (PUT /api/v1/users/{{id}} \
                     has no email field): {} → {}; change it in Covata's admin console, then run \
                     again",
                    c.before.as_deref().unwrap_or("(none)"),
                    c.after.as_deref().unwrap_or("(none)")
                ));
            }
            f if UPDATE_FIELDS.contains(&f) => {
                let v = c.after.clone().unwrap_or_else(|| CLEARED_VALUE.to_string());
                m.insert(f.to_string(), Value::String(v));
            }
            other => {
                return Err(format!(
                    "Covata cannot update the field {other:?} (updatable: {})",
                    UPDATE_FIELDS.join(", ")
                ));
            }
        }
    }
    Ok((!m.is_empty()).then_some(Value::Object(m)))
}

/// The body of a roles update: the complete set (Covata replaces).
pub(crate) fn roles_body(roles: &[String]) -> Value {
    let mut m = Map::new();
    m.insert("roles".to_string(), roles_value(roles));
    Value::Object(m)
}

/// The body of `POST /api/v1/users/bulk?action=..`.
pub(crate) fn ids_body(ids: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert(
        "ids".to_string(),
        Value::Array(ids.iter().map(|i| Value::String(i.to_string())).collect()),
    );
    Value::Object(m)
}

/// The id of a created user, from the create answer (a string or a number).
pub(crate) fn created_id(body: &Value) -> Option<String> {
    scalar_string(body.get("id")?)
}

/// Whether an account can go through the CSV import: it has an email, and no value holds a
/// line break (which would shift the `Line <n>` numbers the import's errors use).
pub(crate) fn importable(account: &Account) -> bool {
    let breaks = |s: &str| s.contains(['\n', '\r']);
    account
        .fields
        .get("email")
        .is_some_and(|e| !e.trim().is_empty())
        && !account.fields.values().any(|v| breaks(v))
        && !account.roles.iter().any(|r| breaks(r))
}

/// The import CSV: [`IMPORT_HEADER`], then one row per account in order (account `i` is on
/// line `i + 2`). `Account Type` is left empty (the server's default) and `Plan` carries the
/// `planId` field (ASSUMED). `otherName` has no column: the connector sets it afterwards.
pub(crate) fn import_csv(accounts: &[&Account]) -> Result<Vec<u8>, String> {
    // `\n` line ends (the csv default): with `\r\n`, csv-crate readers report record
    // lines one too low, which would break `Line <n>` matching on such servers.
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(IMPORT_HEADER).map_err(|e| e.to_string())?;
    for a in accounts {
        let f = |name: &str| a.fields.get(name).map(String::as_str).unwrap_or("");
        let roles = a
            .roles
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(IMPORT_ROLE_SEPARATOR);
        w.write_record([
            f("email"),
            f("firstName"),
            f("lastName"),
            f("mobileNumber"),
            roles.as_str(),
            "",
            f("planId"),
        ])
        .map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

/// The import answer's `errors` (missing or null: none).
pub(crate) fn import_errors(body: &Value) -> Result<Vec<String>, String> {
    match body.get("errors") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()),
        Some(other) => Err(format!(
            "`errors` is not an array: {}",
            truncate_body(other.to_string().as_bytes())
        )),
    }
}

/// Assigns each import error to the account it is about (ASSUMED wording): the account whose
/// email the text contains (case-insensitive, as a whole address; the longest wins), else the
/// account on the `Line <n>` it names (the header is line 1). Returns the errors of each
/// account (in order) and the errors that match no account.
pub(crate) fn match_import_errors(
    accounts: &[&Account],
    errors: &[String],
) -> (Vec<Vec<String>>, Vec<String>) {
    let emails: Vec<Option<String>> = accounts
        .iter()
        .map(|a| {
            a.fields
                .get("email")
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty())
        })
        .collect();
    let mut per = vec![Vec::new(); accounts.len()];
    let mut unmatched = Vec::new();
    for err in errors {
        let lc = err.to_lowercase();
        let by_email = emails
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_deref().map(|e| (i, e)))
            .filter(|(_, e)| contains_address(&lc, e))
            .max_by_key(|(_, e)| e.len())
            .map(|(i, _)| i);
        let by_line = || {
            line_number(&lc)
                .and_then(|n| n.checked_sub(2))
                .filter(|i| *i < accounts.len())
        };
        match by_email.or_else(by_line) {
            Some(i) => per[i].push(err.clone()),
            None => unmatched.push(err.clone()),
        }
    }
    (per, unmatched)
}

/// Characters that may continue an email address on either side.
fn address_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-@".contains(c)
}

/// Whether `hay` holds `address` as a whole address (not inside a longer one). A `.` right
/// after it ends it when no address character follows (end of a sentence).
fn contains_address(hay: &str, address: &str) -> bool {
    let mut from = 0;
    while let Some(pos) = hay[from..].find(address) {
        let start = from + pos;
        let end = start + address.len();
        let before_ok = hay[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !address_char(c));
        let mut after = hay[end..].chars();
        let after_ok = match after.next() {
            None => true,
            Some('.') => after.next().is_none_or(|c| !address_char(c)),
            Some(c) => !address_char(c),
        };
        if before_ok && after_ok {
            return true;
        }
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The number after the word `line` (`Line 3`, `line: 3`, `line #3`), in lower-cased text.
fn line_number(lc: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = lc[from..].find("line") {
        let start = from + pos;
        let word_start = lc[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let rest = lc[start + 4..].trim_start_matches([' ', ':', '#', '\t']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if word_start && !digits.is_empty() {
            return digits.parse().ok();
        }
        from = start + 4;
    }
    None
}

/// ASSUMED wording of "this user already exists" (create answers and import errors).
pub(crate) fn is_duplicate_message(text: &str) -> bool {
    let lc = text.to_lowercase();
    lc.contains("duplicate")
        || lc.contains("already")
        || (lc.contains("exists") && !lc.contains("not exist"))
}

/// The result of an account the import reported errors for: `Conflict` for duplicate wording,
/// else `Rejected` with the import answer's status.
pub(crate) fn import_error(status: u16, errors: &[String]) -> OpError {
    let message = truncate_body(errors.join("; ").as_bytes());
    if errors.iter().any(|e| is_duplicate_message(e)) {
        OpError::Conflict { message }
    } else {
        OpError::Rejected { status, message }
    }
}

/// One page of `GET /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub items: Vec<RemoteAccount>,
    /// The total the server reports (`None` when it does not).
    pub count: Option<u64>,
}

/// Parses a page: `{"items":[...],"count":N,"offset":N}` (ASSUMED, as Covata's other lists),
/// or a bare array (then the whole list).
pub(crate) fn parse_page(body: &Value) -> Result<Page, String> {
    let (items, count) = match body {
        Value::Array(items) => (items, Some(items.len() as u64)),
        Value::Object(m) => {
            let items = match m.get("items") {
                Some(Value::Array(items)) => items,
                _ => return Err("the answer has no `items` array".to_string()),
            };
            let count = match m.get("count") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .ok_or_else(|| format!("`count` is not a number: {v}"))?,
                ),
            };
            (items, count)
        }
        _ => return Err("the answer is neither an object nor an array".to_string()),
    };
    let items = items
        .iter()
        .map(remote_account)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, count })
}

/// A Covata user record as a remote account. Fields are kept under the mapping's names when
/// present and not empty; `planId` falls back to `plan.id`; a record without `enabled` counts
/// as enabled (ASSUMED).
pub(crate) fn remote_account(user: &Value) -> Result<RemoteAccount, String> {
    let id = user
        .get("id")
        .and_then(scalar_string)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "a user record has no id".to_string())?;
    let mut fields = BTreeMap::new();
    for f in CREATE_FIELDS {
        let v = user.get(f).and_then(scalar_string).or_else(|| {
            (f == "planId")
                .then(|| {
                    user.get("plan")
                        .and_then(|p| p.get("id"))
                        .and_then(scalar_string)
                })
                .flatten()
        });
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            fields.insert(f.to_string(), v);
        }
    }
    let roles: BTreeSet<String> = match user.get("roles") {
        Some(Value::Array(rs)) => rs
            .iter()
            .filter_map(|r| match r {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o
                    .get("name")
                    .or_else(|| o.get("authority"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            })
            .collect(),
        _ => BTreeSet::new(),
    };
    let enabled = match user.get("enabled") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => true,
    };
    let email = fields.get("email").cloned();
    Ok(RemoteAccount {
        remote_id: id,
        login: email.clone(),
        email,
        fields,
        roles,
        enabled,
    })
}

/// A JSON string, number or boolean as text; `None` for null, arrays and objects.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account(fields: &[(&str, &str)], roles: &[&str]) -> Account {
        Account {
            groups: Default::default(),
            key: "k".into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            enabled: true,
            hash: Default::default(),
        }
    }

    fn change(field: &str, before: Option<&str>, after: Option<&str>) -> FieldChange {
        FieldChange {
            field: field.into(),
            before: before.map(Into::into),
            after: after.map(Into::into),
        }
    }

    #[test]
    fn create_bodies() {
        let cases = [
            (
                account(&[("email", "a@x.io")], &["ROLE_COLLABORATOR"]),
                json!({"email": "a@x.io", "roles": ["ROLE_COLLABORATOR"]}),
            ),
            (
                account(
                    &[
                        ("email", "b@x.io"),
                        ("firstName", "Bé"),
                        ("lastName", "O'Neil"),
                        ("otherName", "Q"),
                        ("mobileNumber", "+61 400"),
                        ("planId", "7"),
                        ("unmapped", "ignored"),
                    ],
                    &["ROLE_USER_ADMIN", "ROLE_COLLABORATOR"],
                ),
                json!({
                    "email": "b@x.io", "firstName": "Bé", "lastName": "O'Neil", "otherName": "Q",
                    "mobileNumber": "+61 400", "planId": "7",
                    "roles": ["ROLE_COLLABORATOR", "ROLE_USER_ADMIN"]
                }),
            ),
            (
                account(&[("email", "c@x.io")], &[]),
                json!({"email": "c@x.io", "roles": []}),
            ),
        ];
        for (a, want) in cases {
            assert_eq!(create_body(&a), want);
        }
    }

    #[test]
    fn update_bodies() {
        type Case = (Vec<FieldChange>, Result<Option<Value>, &'static str>);
        let cases: Vec<Case> = vec![
            (vec![], Ok(None)),
            (
                vec![change("firstName", Some("A"), Some("B"))],
                Ok(Some(json!({"firstName": "B"}))),
            ),
            (
                vec![
                    change("lastName", None, Some("L")),
                    change("otherName", Some("O"), None),
                    change("planId", Some("1"), Some("2")),
                    change("mobileNumber", Some("1"), Some("2")),
                ],
                Ok(Some(
                    json!({"lastName": "L", "otherName": "", "planId": "2", "mobileNumber": "2"}),
                )),
            ),
            (
                vec![
                    change("firstName", None, Some("F")),
                    change("email", Some("a@x"), Some("b@x")),
                ],
                Err("cannot change a user's email"),
            ),
            (
                vec![change("roles", None, Some("x"))],
                Err("cannot update the field \"roles\""),
            ),
        ];
        for (changes, want) in cases {
            let got = update_body(&changes);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
                (g, w) => panic!("{changes:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn small_bodies() {
        assert_eq!(
            roles_body(&["A".into(), "B".into()]),
            json!({"roles": ["A", "B"]})
        );
        assert_eq!(ids_body(&["1", "x/y"]), json!({"ids": ["1", "x/y"]}));
        assert_eq!(ids_body(&[]), json!({"ids": []}));
        assert_eq!(created_id(&json!({"id": "u1"})), Some("u1".into()));
        assert_eq!(created_id(&json!({"id": 42})), Some("42".into()));
        assert_eq!(created_id(&json!({"email": "x"})), None);
    }

    #[test]
    fn import_csv_body() {
        let a = account(
            &[
                ("email", "a@x.io"),
                ("firstName", "Ann"),
                ("lastName", "Lee, Jr"),
                ("planId", "p1"),
            ],
            &["ROLE_COLLABORATOR", "ROLE_ORIGINATOR"],
        );
        let b = account(
            &[
                ("email", "b@x.io"),
                ("mobileNumber", "+1 555"),
                ("otherName", "not in csv"),
            ],
            &["ROLE_COLLABORATOR"],
        );
        let csv = String::from_utf8(import_csv(&[&a, &b]).unwrap()).unwrap();
        assert_eq!(
            csv,
            "Email,First Name,Last Name,Mobile Number,Role,Account Type,Plan\n\
             a@x.io,Ann,\"Lee, Jr\",,ROLE_COLLABORATOR;ROLE_ORIGINATOR,,p1\n\
             b@x.io,,,+1 555,ROLE_COLLABORATOR,,\n"
        );
    }

    #[test]
    fn importable_accounts() {
        assert!(importable(&account(&[("email", "a@x")], &["R"])));
        assert!(!importable(&account(&[("firstName", "A")], &["R"])));
        assert!(!importable(&account(
            &[("email", "a@x"), ("lastName", "a\nb")],
            &["R"]
        )));
    }

    #[test]
    fn import_error_matching() {
        let a = account(&[("email", "ann@x.io")], &[]);
        let b = account(&[("email", "Jo.Ann@X.io")], &[]);
        let c = account(&[("email", "c@x.io")], &[]);
        let accounts = [&a, &b, &c];
        let cases: &[(&str, Option<usize>)] = &[
            ("User ann@x.io already exists", Some(0)),
            ("User with email JO.ANN@x.io already exists.", Some(1)),
            ("Duplicate email: c@x.io.", Some(2)),
            // `ann@x.io` inside `jo.ann@x.io` is not ann's address.
            ("jo.ann@x.io: invalid plan", Some(1)),
            ("Line 2: invalid role ROLE_X", Some(0)),
            ("line: 4 mobile number too long", Some(2)),
            ("Error in line #3", Some(1)),
            ("Line 5: out of range", None),
            ("Line 1: bad header", None),
            ("Headline 3 is not a line number", None),
            ("something went wrong", None),
            ("ann@x.io.au exists", None),
        ];
        let errors: Vec<String> = cases.iter().map(|(e, _)| e.to_string()).collect();
        let (per, unmatched) = match_import_errors(&accounts, &errors);
        for (text, want) in cases {
            let got = per.iter().position(|v| v.iter().any(|e| e == text));
            assert_eq!(got, *want, "{text:?}");
            assert_eq!(
                unmatched.iter().any(|e| e == text),
                want.is_none(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn duplicate_wording() {
        for (text, dup) in [
            ("User already exists", true),
            ("Email address is already in use", true),
            ("duplicate email", true),
            ("A user with this email exists", true),
            ("Plan does not exist", false),
            ("Invalid role ROLE_X", false),
            ("mobileNumber: must match pattern", false),
        ] {
            assert_eq!(is_duplicate_message(text), dup, "{text}");
        }
        assert!(matches!(
            import_error(200, &["x@y already exists".into()]),
            OpError::Conflict { .. }
        ));
        assert_eq!(
            import_error(200, &["bad role".into(), "bad plan".into()]),
            OpError::Rejected {
                status: 200,
                message: "bad role; bad plan".into()
            }
        );
    }

    #[test]
    fn import_error_lists() {
        assert_eq!(import_errors(&json!({})).unwrap(), Vec::<String>::new());
        assert_eq!(
            import_errors(&json!({"errors": null})).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            import_errors(&json!({"errors": ["a", 3]})).unwrap(),
            vec!["a", "3"]
        );
        assert!(import_errors(&json!({"errors": "a"})).is_err());
    }

    #[test]
    fn page_parsing() {
        let page = parse_page(&json!({
            "items": [
                {"id": "u1", "email": "a@x.io", "firstName": "Ann", "lastName": "", "otherName": null,
                 "mobileNumber": "+1", "planId": 5, "plan": {"id": 9}, "enabled": false,
                 "roles": ["ROLE_COLLABORATOR", "ROLE_ORIGINATOR"], "accountType": "x"},
                {"id": 17, "email": "b@x.io", "plan": {"id": "p2", "name": "Gold"},
                 "roles": [{"name": "ROLE_USER_ADMIN"}]}
            ],
            "count": 12,
            "offset": 0
        }))
        .unwrap();
        assert_eq!(page.count, Some(12));
        let a = &page.items[0];
        assert_eq!(a.remote_id, "u1");
        assert_eq!(a.login.as_deref(), Some("a@x.io"));
        assert_eq!(a.email.as_deref(), Some("a@x.io"));
        let want: BTreeMap<String, String> = [
            ("email", "a@x.io"),
            ("firstName", "Ann"),
            ("mobileNumber", "+1"),
            ("planId", "5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(a.fields, want);
        assert!(!a.enabled);
        assert_eq!(a.roles.len(), 2);
        let b = &page.items[1];
        assert_eq!(b.remote_id, "17");
        assert_eq!(b.fields.get("planId").map(String::as_str), Some("p2"));
        assert!(b.enabled);
        assert!(b.roles.contains("ROLE_USER_ADMIN"));

        let bare = parse_page(&json!([{"id": "z", "email": "z@x"}])).unwrap();
        assert_eq!(bare.count, Some(1));
        assert_eq!(parse_page(&json!({"items": []})).unwrap().count, None);

        for bad in [
            json!({"users": []}),
            json!("x"),
            json!({"items": [{"email": "no id"}]}),
            json!({"items": [], "count": "many"}),
        ] {
            assert!(parse_page(&bad).is_err(), "{bad}");
        }
    }
}
