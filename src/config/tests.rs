use std::path::{Path, PathBuf};

use super::*;

const GOOD: &str = r#"
[source]
kind = "csv"
[source.csv]
path = "users.csv"
[source.csv.columns]
key = "id"
[source.csv.extra]
department = "dept"

[[target]]
name = "covata-prod"
kind = "covata"
base_url = "https://access.example.com"
username = "svc"
password = "pw-inline-secret"
client_id = "dirsync"
client_secret_file = "client-secret.txt"

[[target]]
name = "vk"
kind = "valuekeep"
base_url = "https://vk.example.com"
client_id = "app"
client_secret = "vk-secret"
tenant_key = "t"
org_key = "o"
[target.fields]
name = "{given_name} {family_name} ({department})"
"#;

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new(config: &str) -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dirsync.toml"), config).unwrap();
        std::fs::write(dir.path().join("client-secret.txt"), "file-secret\n").unwrap();
        Dir { dir }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("dirsync.toml")
    }
    fn load(&self, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_with_env(&self.path(), &env)
    }
}

fn problems(r: Result<Config, ConfigError>) -> Vec<String> {
    match r {
        Ok(_) => vec![],
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn good_config_loads_with_defaults() {
    let d = Dir::new(GOOD);
    let c = d.load(&[]).unwrap();
    assert_eq!(c.targets.len(), 2);
    let cov = &c.targets[0];
    assert_eq!(
        cov.credentials.password.as_ref().unwrap().expose(),
        "pw-inline-secret"
    );
    assert_eq!(
        cov.credentials.client_secret.as_ref().unwrap().expose(),
        "file-secret"
    );
    assert_eq!(
        cov.mapping.default_roles,
        vec!["ROLE_COLLABORATOR".to_string()]
    );
    assert_eq!(cov.on_missing, OnMissing::Disable);
    let vk = &c.targets[1];
    assert_eq!(vk.credentials.scope.as_deref(), Some("application"));
    assert!(vk.credentials.token_url.is_some());
    assert_eq!(c.safety, SafetySettings::default());
    assert_eq!(c.schedule.interval, Some(Duration::from_secs(900)));
    match &c.source {
        SourceConfig::Csv(csv) => {
            assert_eq!(csv.path, d.dir.path().join("users.csv"));
            assert_eq!(csv.columns.email, "email");
        }
        SourceConfig::Ldap(_) => panic!("csv source expected"),
    }
    assert!(matches!(c.state.location, StoreLocation::Sqlite { .. }));
    // Debug output of the whole config never shows a secret.
    let dbg = format!("{c:?}");
    for s in ["pw-inline-secret", "file-secret", "vk-secret"] {
        assert!(!dbg.contains(s), "secret {s} in Debug output");
    }
}

#[test]
fn environment_overrides() {
    let d = Dir::new(GOOD);
    let c = d
        .load(&[
            ("DIRSYNC_SAFETY__MAX_DELETES", "7"),
            ("DIRSYNC_SAFETY__MAX_DISABLE_PERCENT", "2.5"),
            ("DIRSYNC_STATE__DATABASE_URL", "postgres://u:p@localhost/db"),
            ("DIRSYNC_TARGET__COVATA_PROD__PASSWORD", "from-env"),
            ("DIRSYNC_CONFIG", "/ignored/not/config"),
            ("DIRSYNC_TEST_DATABASE_URL", "ignored"),
        ])
        .unwrap();
    assert_eq!(c.safety.max_deletes, Some(7));
    assert_eq!(c.safety.max_disable_percent, 2.5);
    assert!(matches!(c.state.location, StoreLocation::Postgres { .. }));
    assert_eq!(
        c.targets[0].credentials.password.as_ref().unwrap().expose(),
        "from-env"
    );
}

#[test]
fn bad_configs_report_every_problem_with_its_key() {
    // (description, config text, expected problem prefixes — all must appear)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown keys anywhere",
            &GOOD
                .replace("[source]", "[source]\nkindd = \"x\"")
                .replace(
                    "username = \"svc\"",
                    "username = \"svc\"\nbase_urll = \"x\"",
                )
                .replace(
                    "[source.csv.columns]",
                    "[source.csv.columns]\nemial = \"e\"",
                ),
            &[
                "source.kindd: unknown key",
                "target[0].base_urll: unknown key",
                "source.csv.columns.emial: unknown key",
            ],
        ),
        (
            "relative url and bad kind",
            &GOOD
                .replace("https://access.example.com", "/api")
                .replace("kind = \"valuekeep\"", "kind = \"workday\""),
            &[
                "target[0].base_url: relative URL not allowed",
                "target[1].kind: unknown kind \"workday\"",
            ],
        ),
        (
            "missing secret file and missing credential",
            &GOOD
                .replace("client-secret.txt", "nope.txt")
                .replace("username = \"svc\"\n", ""),
            &[
                "target[0].client_secret_file: cannot read secret file",
                "target[0].username: required for kind covata",
            ],
        ),
        (
            "secret given twice",
            &GOOD.replace(
                "password = \"pw-inline-secret\"",
                "password = \"a\"\npassword_file = \"client-secret.txt\"",
            ),
            &["target[0].password: set either"],
        ),
        (
            "credential not of this kind",
            &GOOD.replace("org_key = \"o\"", "org_key = \"o\"\nusername = \"x\""),
            &["target[1].username: not a setting of kind valuekeep"],
        ),
        (
            "template errors",
            &GOOD
                .replace("({department})", "({dept})")
                .replace("[target.fields]", "[target.fields]\nfoo = \"{email}\""),
            &[
                "target[1].fields.name: unknown field \"dept\"",
                "target[1].fields.foo: valuekeep has no field",
            ],
        ),
        (
            "unknown role and duplicate names",
            &GOOD
                .replace("name = \"vk\"", "name = \"covata-prod\"")
                .replace(
                    "client_secret_file = \"client-secret.txt\"",
                    "client_secret_file = \"client-secret.txt\"\ndefault_roles = [\"ROLE_GOD\"]",
                ),
            &[
                "target[1].name: duplicate target name",
                "target[0].default_roles: unknown covata role \"ROLE_GOD\"",
            ],
        ),
        (
            "safety and schedule values",
            &format!("{GOOD}\n[safety]\nmax_disable_percent = 150\n[schedule]\ncron = \"* * *\"\n"),
            &[
                "safety.max_disable_percent: must be between 0 and 100",
                "schedule.cron: expected 5 fields",
            ],
        ),
        (
            "lifecycle values",
            &GOOD.replace(
                "client_id = \"app\"",
                "client_id = \"app\"\non_missing = \"purge\"\ndelete_after = \"soon\"",
            ),
            &[
                "target[1].on_missing: unknown value \"purge\"",
                "target[1].delete_after: invalid duration",
            ],
        ),
        (
            "state timeout",
            &format!("{GOOD}\n[state]\ndatabase_url = \"postgres://localhost/d\"\ntimeout = \"0s\"\n"),
            &["state.timeout: must be more than 0s"],
        ),
        (
            "state timeout not a duration",
            &format!("{GOOD}\n[state]\ndatabase_url = \"postgres://localhost/d\"\ntimeout = \"soon\"\n"),
            &["state.timeout: invalid duration"],
        ),
        (
            "no source, no target",
            "[state]\n",
            &["source: missing", "target: no [[target]]"],
        ),
        (
            "primavera needs organization",
            "[source]\nkind=\"csv\"\n[source.csv]\npath=\"u.csv\"\ncolumns={key=\"id\"}\n[[target]]\nname=\"p\"\nkind=\"primavera\"\nbase_url=\"https://p.example.com/cloudapi/restapi\"\nusername=\"u\"\npassword=\"p\"\n",
            &["target[0].fields.organization: required by primavera"],
        ),
        (
            "wrong type names the key",
            &GOOD.replace(
                "[source.csv.columns]",
                "[safety]\nmax_deletes = \"many\"\n[source.csv.columns]",
            ),
            &["safety.max_deletes:"],
        ),
        ("bad toml", "[source\nkind = 1", &["config: "]),
        (
            "groups only where the vendor has them",
            &GOOD.replace("client_secret_file = \"client-secret.txt\"", "client_secret_file = \"client-secret.txt\"\ndefault_groups = [\"X\"]"),
            &["target[0].groups: covata has no user groups"],
        ),
        (
            "ldap without its section",
            &GOOD.replace("kind = \"csv\"", "kind = \"ldap\""),
            &["source.ldap: missing [source.ldap] section"],
        ),
        (
            "ldap: every problem of [source.ldap] with its key",
            &GOOD.replace(
                "kind = \"csv\"",
                "kind = \"ldap\"\n[source.ldap]\nurl = \"https://dc1\"\nbind_dn = \"cn=svc\"\n\
                 page_size = -1\nscope = \"deep\"\nfilter = \"(objectClass=person\"\n\
                 connect_timeout = \"soon\"\nserver_type = \"novell\"\nkey_format = \"b64\"\n\
                 groups = \"search\"\ndisabled_values = [\"TRUE\"]\nmissing_email = \"ignore\"\n\
                 tls_skip_verify = true\n[source.ldap.extra]\nemail = \"mail\"",
            ),
            &[
                "source.ldap.server_type: unknown server type \"novell\"",
                "source.ldap.url: scheme \"https\" not supported",
                "source.ldap.bind_password: required with bind_dn",
                "source.ldap.connect_timeout: invalid duration",
                "source.ldap.base_dn: missing",
                "source.ldap.scope: unknown scope \"deep\"",
                "source.ldap.filter: invalid LDAP filter",
                "source.ldap.page_size: must be 0 (no paging) or more",
                "source.ldap.key_format: unknown format",
                "source.ldap.disabled_attribute: missing",
                "source.ldap.group_search.base_dn: missing",
                "source.ldap.missing_email: unknown value",
                "source.ldap.extra.email: is a built-in field",
            ],
        ),
        (
            "ldap: bind settings and TLS settings that contradict",
            &GOOD.replace(
                "kind = \"csv\"",
                "kind = \"ldap\"\n[source.ldap]\nurl = \"ldaps://dc1\"\nstarttls = true\n\
                 anonymous = true\nbind_dn = \"cn=svc\"\nbind_password = \"ldap-pw-secret\"\n\
                 bind_password_file = \"client-secret.txt\"\nbase_dn = \"dc=x\"\n\
                 ca_file = \"nope.pem\"\ndisabled_attribute = \"nsAccountLock\"",
            ),
            &[
                "source.ldap.starttls: StartTLS is for ldap:// URLs",
                "source.ldap.anonymous: set either bind_dn or anonymous = true",
                "source.ldap.bind_password: set either",
                "source.ldap.ca_file: cannot read",
                "source.ldap.disabled_values: missing",
            ],
        ),
        (
            "ldap: a URL with a path, no bind at all",
            &GOOD.replace(
                "kind = \"csv\"",
                "kind = \"ldap\"\n[source.ldap]\nurl = \"ldap://dc1/dc=x??sub\"\nbase_dn = \"people\"\n\
                 ca_file = \"client-secret.txt\"",
            ),
            &[
                "source.ldap.url: only scheme, host and port",
                "source.ldap.bind_dn: missing",
                "source.ldap.base_dn: \"people\" is not a DN",
            ],
        ),
        (
            "postgres url must be postgres",
            &format!("[state]\ndatabase_url = \"mysql://u:hunter2@h/db\"\n{GOOD}"),
            &["state.database_url: must be a postgres://"],
        ),
    ];
    for (name, text, want) in cases {
        let d = Dir::new(text);
        let got = problems(d.load(&[]));
        for w in *want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "case {name}: expected {w:?} in {got:#?}"
            );
        }
        for g in &got {
            assert!(
                !g.contains("hunter2") && !g.contains("pw-inline-secret"),
                "case {name}: secret leaked: {g}"
            );
        }
    }
}

#[test]
fn missing_and_unreadable_config_file() {
    let e = load_with_env(Path::new("/nonexistent/dirsync.toml"), &[]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/dirsync.toml"), "{e}");
    assert!(e.to_string().contains("cannot read"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = load_with_env(dir.path(), &[]).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn env_for_unknown_target_is_a_problem() {
    let d = Dir::new(GOOD);
    let got = problems(d.load(&[("DIRSYNC_TARGET__NOPE__PASSWORD", "x")]));
    assert!(
        got.iter()
            .any(|g| g.starts_with("DIRSYNC_TARGET__NOPE__PASSWORD: no [[target]]")),
        "{got:?}"
    );
}

#[test]
fn ldap_config_loads_with_defaults_per_server_type() {
    use crate::source::ldap::{GroupSource, KeyFormat, MissingEmail, SearchScope};
    let ldap = "kind = \"ldap\"\n[source.ldap]\nurl = \"ldaps://dc1.corp.example\"\n\
                server_type = \"active_directory\"\nbind_dn = \"CN=svc,DC=corp\"\n\
                bind_password_file = \"client-secret.txt\"\nbase_dn = \"DC=corp\"\n\
                nested_groups = true\n[source.ldap.attributes]\nemail = [\"mail\", \"userPrincipalName\"]\n\
                [source.ldap.extra]\ndepartment = \"department\"";
    let d = Dir::new(&GOOD.replace("kind = \"csv\"", ldap));
    let c = d.load(&[]).unwrap();
    let SourceConfig::Ldap(l) = &c.source else {
        panic!("ldap expected")
    };
    assert_eq!(c.source.kind(), "ldap");
    assert_eq!(c.source.extra_attributes(), vec!["department".to_string()]);
    assert_eq!(l.url, "ldaps://dc1.corp.example");
    assert_eq!(l.bind_password.as_ref().unwrap().expose(), "file-secret");
    assert_eq!(l.attributes.key, "objectGUID");
    assert_eq!(l.attributes.email, vec!["mail", "userPrincipalName"]);
    assert_eq!(l.attributes.mobile, vec!["mobile", "telephoneNumber"]);
    assert_eq!(l.filter, "(&(objectCategory=person)(objectClass=user))");
    assert!(l.user_account_control);
    assert_eq!(l.key_format, KeyFormat::Auto);
    assert_eq!(l.scope, SearchScope::Sub);
    assert_eq!(l.page_size, 500);
    assert_eq!(l.missing_email, MissingEmail::Skip);
    assert!(l.nested_groups);
    assert_eq!(
        l.groups,
        GroupSource::MemberOf {
            attribute: "memberOf".into()
        }
    );
    assert!(!format!("{c:?}").contains("file-secret"));

    // Generic directory, anonymous, group search, presence-means-disabled.
    let ldap = "kind = \"ldap\"\n[source.ldap]\nurl = \"ldap://ldap.example.com\"\nstarttls = true\n\
                anonymous = true\nbase_dn = \"ou=people,dc=example,dc=com\"\nscope = \"one\"\n\
                disabled_attribute = \"pwdAccountLockedTime\"\ndisabled_when_present = true\n\
                groups = \"search\"\n[source.ldap.group_search]\nbase_dn = \"ou=groups,dc=example,dc=com\"\n\
                [source.ldap.extra]\ndepartment = \"departmentNumber\"";
    let d = Dir::new(&GOOD.replace("kind = \"csv\"", ldap));
    let c = d.load(&[]).unwrap();
    let SourceConfig::Ldap(l) = &c.source else {
        panic!("ldap expected")
    };
    assert_eq!(l.attributes.key, "entryUUID");
    assert_eq!(l.bind_dn, None);
    assert!(l.starttls);
    assert!(!l.user_account_control);
    assert_eq!(l.scope, SearchScope::One);
    assert_eq!(l.disabled.as_ref().unwrap().values, Vec::<String>::new());
    let GroupSource::Search(g) = &l.groups else {
        panic!("group search expected")
    };
    assert_eq!(g.base_dn, "ou=groups,dc=example,dc=com");
    assert_eq!(g.member_uid_attribute.as_deref(), Some("memberUid"));
}

#[test]
fn example_ldap_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example-ldap.toml");
    let dir = tempfile::tempdir().unwrap();
    // The example reads its bind password from a file next to it: copy both.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(dir.path().join("dirsync.toml"), &text).unwrap();
    std::fs::write(dir.path().join("ldap-bind-password"), "pw\n").unwrap();
    std::fs::write(dir.path().join("covata-client-secret"), "s\n").unwrap();
    std::fs::write(dir.path().join("ca.pem"), "").unwrap();
    let c = load_with_env(&dir.path().join("dirsync.toml"), &[]).unwrap();
    assert_eq!(c.source.kind(), "ldap");
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let c = load_with_env(&path, &[]).unwrap();
    assert_eq!(c.targets.len(), 3);
}
