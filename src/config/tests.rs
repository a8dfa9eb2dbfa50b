use std::path::{Path, PathBuf};

use super::*;
use crate::connector::VendorSettings;
use crate::connector::covata::settings::CovataSettings;
use crate::connector::valuekeep::settings::ValuekeepSettings;
use crate::plan::OnMissing;

/// The Covata settings of a target.
fn covata(t: &TargetConfig) -> &CovataSettings {
    match &t.vendor {
        VendorSettings::Covata(s) => s,
        other => panic!("not a Covata target: {other:?}"),
    }
}

/// The Valuekeep settings of a target.
fn valuekeep(t: &TargetConfig) -> &ValuekeepSettings {
    match &t.vendor {
        VendorSettings::Valuekeep(s) => s,
        other => panic!("not a Valuekeep target: {other:?}"),
    }
}

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
fn state_keep_runs_defaults_to_90_days() {
    let c = Dir::new(GOOD).load(&[]).unwrap();
    assert_eq!(
        c.state.keep_runs,
        std::time::Duration::from_secs(90 * 24 * 3600)
    );
    let c = Dir::new(&format!("{GOOD}\n[state]\nkeep_runs = \"30d\"\n"))
        .load(&[])
        .unwrap();
    assert_eq!(
        c.state.keep_runs,
        std::time::Duration::from_secs(30 * 24 * 3600)
    );
}

#[test]
fn good_config_loads_with_defaults() {
    let d = Dir::new(GOOD);
    let c = d.load(&[]).unwrap();
    assert_eq!(c.targets.len(), 2);
    let cov = &c.targets[0];
    assert_eq!(
        covata(cov).password.resolve().unwrap().expose(),
        "pw-inline-secret"
    );
    assert_eq!(
        covata(cov).client_secret.resolve().unwrap().expose(),
        "file-secret"
    );
    assert_eq!(
        cov.mapping.default_roles,
        vec!["ROLE_COLLABORATOR".to_string()]
    );
    assert_eq!(cov.on_missing, OnMissing::Disable);
    let vk = &c.targets[1];
    assert_eq!(valuekeep(vk).scope, "application");
    assert_eq!(
        valuekeep(vk).token_url.as_str(),
        "https://identity.primaverabss.com/connect/token"
    );
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
        covata(&c.targets[0]).password.resolve().unwrap().expose(),
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
            "missing credential (a missing secret file is read only at connect)",
            &GOOD
                .replace("client-secret.txt", "nope.txt")
                .replace("username = \"svc\"\n", ""),
            &["target[0].username: required for kind covata"],
        ),
        (
            "secret given twice",
            &GOOD.replace(
                "password = \"pw-inline-secret\"",
                "password = \"a\"\npassword_file = \"client-secret.txt\"",
            ),
            &["target[0].password: set only one of"],
        ),
        (
            "credential not of this kind",
            &GOOD.replace("org_key = \"o\"", "org_key = \"o\"\nusername = \"x\""),
            &["target[1].username: not a setting of kind valuekeep"],
        ),
        (
            "a vendor key of another vendor names its owner",
            &GOOD.replace(
                "org_key = \"o\"",
                "org_key = \"o\"\njob_timeout = \"5m\"\nexpire_sessions_on_disable = false",
            ),
            &[
                "target[1].job_timeout: not a setting of kind valuekeep (only of primavera)",
                "target[1].expire_sessions_on_disable: not a setting of kind valuekeep (only of covata)",
            ],
        ),
        (
            "a vendor key of the wrong type names the key",
            &GOOD.replace("org_key = \"o\"", "org_key = \"o\"\nsend_invitation = \"yes\""),
            &["target[1].send_invitation: invalid type: string \"yes\", expected a boolean"],
        ),
        (
            "an unknown vendor key is unknown",
            &GOOD.replace("org_key = \"o\"", "org_key = \"o\"\norg_keyy = \"o\""),
            &["target[1].org_keyy: unknown key"],
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
            "state keep_runs under a day",
            &format!("{GOOD}\n[state]\nkeep_runs = \"12h\"\n"),
            &["state.keep_runs: \"12h\" is less than 1 day"],
        ),
        (
            "state keep_runs not a duration",
            &format!("{GOOD}\n[state]\nkeep_runs = \"off\"\n"),
            &["state.keep_runs: invalid duration \"off\""],
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
                "source.ldap.bind_password: set only one of",
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

/// A variable that sets an unknown key (or a wrong value) is named as the variable: the key
/// it sets is in no file the operator could search.
#[test]
fn env_var_problems_name_the_variable() {
    let d = Dir::new(GOOD);
    let got = problems(d.load(&[("DIRSYNC_SAFETY__MAX_DELETEZ", "10")]));
    assert!(
        got.iter()
            .any(|g| g.starts_with("DIRSYNC_SAFETY__MAX_DELETEZ: unknown key safety.max_deletez")),
        "{got:?}"
    );
    // Deeper than the schema: serde reports the first unknown part, the variable is named.
    let got = problems(d.load(&[("DIRSYNC_SAFETY__NOPE__DEEPER", "1")]));
    assert!(
        got.iter()
            .any(|g| g.starts_with("DIRSYNC_SAFETY__NOPE__DEEPER: unknown key safety.nope")),
        "{got:?}"
    );
    let got = problems(d.load(&[("DIRSYNC_TARGET__COVATA_PROD__PASSWROD", "x")]));
    assert!(
        got.iter().any(|g| g
            .starts_with("DIRSYNC_TARGET__COVATA_PROD__PASSWROD: unknown key target[0].passwrod")),
        "{got:?}"
    );
    // A wrong value names the variable and the key, never only the key.
    let got = problems(d.load(&[("DIRSYNC_SAFETY__MAX_DELETES", "many")]));
    assert!(
        got.iter()
            .any(|g| g.starts_with("DIRSYNC_SAFETY__MAX_DELETES: safety.max_deletes: ")),
        "{got:?}"
    );
    // A key of the file keeps its path.
    let d = Dir::new(&format!("{GOOD}\n[safety]\nmax_deletez = 1\n"));
    let got = problems(d.load(&[]));
    assert!(
        got.iter()
            .any(|g| g.starts_with("safety.max_deletez: unknown key")),
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
    assert_eq!(
        l.bind_password_ref
            .as_ref()
            .unwrap()
            .resolve()
            .unwrap()
            .expose(),
        "file-secret"
    );
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

/// Item: target secrets are references, read when a connector is built, so a command that
/// contacts no target loads a config whose secret files do not exist here.
#[test]
fn target_secrets_are_read_only_at_connect() {
    let text = GOOD
        .replace(
            "password = \"pw-inline-secret\"",
            "password_file = \"/run/credentials/dirsync.service/covata-password\"",
        )
        .replace(
            "client_secret = \"vk-secret\"",
            "client_secret_credential = \"vk-secret\"",
        );
    let d = Dir::new(&text);
    let c = d.load(&[]).unwrap();
    let cov = &c.targets[0];
    let pw = &covata(cov).password;
    assert_eq!(pw.key, "target[0].password_file");
    let e = crate::connector::connect(cov).err().unwrap().to_string();
    assert!(
        e.contains("target[0].password_file")
            && e.contains("/run/credentials/dirsync.service/covata-password")
            && e.contains("covata-prod"),
        "{e}"
    );
    let vk = &c.targets[1];
    let cred = &valuekeep(vk).client_secret;
    assert_eq!(cred.key, "target[1].client_secret_credential");
    let unset = cred.resolve_with(None).unwrap_err().to_string();
    assert!(
        unset.starts_with("target[1].client_secret_credential: ")
            && unset.contains("CREDENTIALS_DIRECTORY"),
        "{unset}"
    );
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("vk-secret"), "from-systemd\n").unwrap();
    assert_eq!(
        cred.resolve_with(Some(creds.path().as_os_str()))
            .unwrap()
            .expose(),
        "from-systemd"
    );
}

/// Every secret with a `_file` form also has a `_credential` form; secrets read at load
/// (the state's database URL, notification secrets) name the key when the credential is
/// missing; at most one form per secret.
#[test]
fn credential_keys_table() {
    let pg = "[state]\ndatabase_url_credential = \"db-url\"\n";
    let ldap = r#"
[source]
kind = "ldap"
[source.ldap]
url = "ldaps://ldap.example.com"
bind_dn = "cn=r,dc=x"
bind_password_credential = "ldap-pw"
base_dn = "dc=x"
[source.ldap.extra]
department = "departmentNumber"
"#;
    let csv_part = &GOOD[..GOOD.find("[[target]]").unwrap()];
    let targets = &GOOD[GOOD.find("[[target]]").unwrap()..];
    let hook = "\n[[notify]]\nkind = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nhmac_secret_credential = \"hook\"\n";
    let mail = "\n[[notify]]\nkind = \"email\"\nhost = \"smtp.example.com\"\nusername = \"u\"\npassword_credential = \"smtp\"\nfrom = \"a@example.com\"\nto = \"b@example.com\"\n";
    let creds = tempfile::tempdir().unwrap();
    for (f, v) in [
        ("db-url", "postgres://u:pw@db.example.com/dirsync"),
        ("ldap-pw", "pw"),
        ("hook", "h"),
        ("smtp", "s"),
    ] {
        std::fs::write(creds.path().join(f), format!("{v}\n")).unwrap();
    }
    let dir_env = creds.path().to_str().unwrap().to_string();
    // (name, config, with CREDENTIALS_DIRECTORY, expected problem prefix or None for OK)
    let cases: Vec<(&str, String, bool, Option<&str>)> = vec![
        ("database_url credential", format!("{pg}{GOOD}"), true, None),
        (
            "database_url credential, variable unset",
            format!("{pg}{GOOD}"),
            false,
            Some("state.database_url_credential: credential \"db-url\": $CREDENTIALS_DIRECTORY"),
        ),
        (
            "ldap bind password credential (read with the source)",
            format!("{ldap}{targets}"),
            false,
            None,
        ),
        (
            "webhook hmac credential",
            format!("{GOOD}{hook}"),
            true,
            None,
        ),
        (
            "webhook hmac credential missing",
            format!("{GOOD}{}", hook.replace("\"hook\"", "\"nope\"")),
            true,
            Some("notify[0].hmac_secret_credential: credential \"nope\": cannot read"),
        ),
        (
            "smtp password credential",
            format!("{GOOD}{mail}"),
            true,
            None,
        ),
        (
            "two forms of one secret",
            GOOD.replace(
                "client_secret_file = \"client-secret.txt\"",
                "client_secret_file = \"client-secret.txt\"\nclient_secret_credential = \"x\"",
            ),
            false,
            Some("target[0].client_secret: set only one of"),
        ),
        (
            "credential name with a slash",
            GOOD.replace(
                "client_secret = \"vk-secret\"",
                "client_secret_credential = \"../etc/shadow\"",
            ),
            false,
            Some("target[1].client_secret_credential: \"../etc/shadow\" is not a credential name"),
        ),
        (
            "credential satisfies a required secret",
            GOOD.replace(
                "client_secret = \"vk-secret\"",
                "client_secret_credential = \"vk\"",
            ),
            false,
            None,
        ),
    ];
    let _ = csv_part;
    for (name, text, with_dir, want) in cases {
        let d = Dir::new(&text);
        let env: &[(&str, &str)] = if with_dir {
            &[("CREDENTIALS_DIRECTORY", dir_env.as_str())]
        } else {
            &[]
        };
        let got = problems(d.load(env));
        match want {
            None => assert!(got.is_empty(), "case {name}: {got:#?}"),
            Some(w) => assert!(
                got.iter().any(|g| g.starts_with(w)),
                "case {name}: expected {w:?} in {got:#?}"
            ),
        }
    }
}

/// Target names the environment spells alike (`DIRSYNC_TARGET__<NAME>__*` upper-cases and
/// turns '-' and '.' into '_') are rejected, naming both.
#[test]
fn names_the_environment_cannot_tell_apart_table() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "covata-x",
            "covata_x",
            Some(
                "target[1].name: \"covata_x\" and target[0].name \"covata-x\" are the same name \
                 in DIRSYNC_TARGET__COVATA_X__*",
            ),
        ),
        (
            "Covata",
            "covata",
            Some("target[1].name: \"covata\" and target[0].name \"Covata\" are the same name"),
        ),
        (
            "a.b",
            "A-B",
            Some(
                "target[1].name: \"A-B\" and target[0].name \"a.b\" are the same name in DIRSYNC_TARGET__A_B__*",
            ),
        ),
        (
            "same",
            "same",
            Some("target[1].name: duplicate target name \"same\""),
        ),
        ("covata-x", "covata-y", None),
        ("prod", "prod2", None),
    ];
    for (first, second, want) in cases {
        let text = GOOD
            .replace("name = \"covata-prod\"", &format!("name = \"{first}\""))
            .replace("name = \"vk\"", &format!("name = \"{second}\""));
        let got = problems(Dir::new(&text).load(&[]));
        match want {
            Some(w) => assert!(
                got.iter().any(|g| g.starts_with(w)),
                "{first} / {second}: expected {w:?} in {got:#?}"
            ),
            None => assert!(got.is_empty(), "{first} / {second}: {got:#?}"),
        }
    }
}

/// `http://` targets carry credentials in clear text: refused (naming the key) unless the
/// target opts in; loopback hosts stay allowed.
#[test]
fn clear_text_http_table() {
    let vk = "base_url = \"https://vk.example.com\"";
    let cov = "base_url = \"https://access.example.com\"";
    // (case, replace, with, expected problem prefix or None)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "http base_url",
            cov,
            "base_url = \"http://covata.example.com\"",
            Some("target[0].base_url: http:// sends the credentials"),
        ),
        (
            "http base_url with the opt-out",
            cov,
            "base_url = \"http://covata.example.com\"\nallow_insecure_http = true",
            None,
        ),
        (
            "http token_url",
            vk,
            "base_url = \"https://vk.example.com\"\ntoken_url = \"http://id.example.com/connect/token\"",
            Some("target[1].token_url: http:// sends the credentials"),
        ),
        (
            "http token_url with the opt-out",
            vk,
            "base_url = \"https://vk.example.com\"\ntoken_url = \"http://id.example.com/t\"\nallow_insecure_http = true",
            None,
        ),
        (
            "127.0.0.1",
            cov,
            "base_url = \"http://127.0.0.1:8080\"",
            None,
        ),
        ("127.5.6.7", cov, "base_url = \"http://127.5.6.7\"", None),
        ("::1", cov, "base_url = \"http://[::1]:8080/api\"", None),
        ("localhost", cov, "base_url = \"http://LOCALHOST:9\"", None),
        (
            "not loopback: localhost.example.com",
            cov,
            "base_url = \"http://localhost.example.com\"",
            Some("target[0].base_url: http://"),
        ),
        (
            "not loopback: 10.0.0.1",
            cov,
            "base_url = \"http://10.0.0.1\"",
            Some("target[0].base_url: http://"),
        ),
        ("https", cov, cov, None),
    ];
    for (name, from, to, want) in cases {
        let got = problems(Dir::new(&GOOD.replace(from, to)).load(&[]));
        match want {
            Some(w) => assert!(
                got.iter().any(|g| g.starts_with(w)),
                "{name}: expected {w:?} in {got:#?}"
            ),
            None => assert!(got.is_empty(), "{name}: {got:#?}"),
        }
    }
}

/// Without `[state]`, the SQLite file is the installed layout's (the service and a shell
/// agree), never one in the working directory.
#[test]
fn default_state_path_is_the_installed_layout() {
    let c = Dir::new(GOOD).load(&[]).unwrap();
    match &c.state.location {
        StoreLocation::Sqlite { path } => {
            let expected = match std::env::var_os("STATE_DIRECTORY") {
                Some(d) if !d.is_empty() => PathBuf::from(d).join("dirsync.db"),
                _ => PathBuf::from(DEFAULT_STATE_PATH),
            };
            assert_eq!(path, &expected);
            assert!(path.is_absolute());
        }
        other => panic!("sqlite expected, got {other:?}"),
    }
    assert_eq!(DEFAULT_STATE_PATH, "/var/lib/dirsync/dirsync.db");
}

/// What reports, `runs` and `check` print as the store: never the password or the query.
#[test]
fn store_descriptions_hold_no_secret() {
    let cases = [
        (
            "postgres://dirsync:s3cret-pw@db.example.com:5433/dirsync?sslmode=require&password=q",
            "postgres dirsync@db.example.com:5433/dirsync",
        ),
        (
            "postgresql://db.example.com/state",
            "postgres db.example.com/state",
        ),
    ];
    for (url, want) in cases {
        let text = format!("[state]\ndatabase_url = \"{url}\"\n{GOOD}");
        let c = Dir::new(&text).load(&[]).unwrap();
        let got = c.state.location.describe();
        assert_eq!(got, want);
        assert!(
            !got.contains("s3cret") && !got.contains("password"),
            "{got}"
        );
    }
    let c = Dir::new(&format!("[state]\npath = \"s/x.db\"\n{GOOD}"))
        .load(&[])
        .unwrap();
    assert!(c.state.location.describe().starts_with("sqlite /"));
}

/// `source.timeout`: parsed for both kinds, default 10m, zero and garbage refused.
#[test]
fn source_timeout_table() {
    let cases: &[(&str, Result<u64, &str>)] = &[
        ("", Ok(600)),
        ("timeout = \"30s\"\n", Ok(30)),
        ("timeout = \"1h\"\n", Ok(3600)),
        (
            "timeout = \"0s\"\n",
            Err("source.timeout: must be more than 0s"),
        ),
        (
            "timeout = \"soon\"\n",
            Err("source.timeout: invalid duration"),
        ),
    ];
    for (line, want) in cases {
        let text = GOOD.replace("kind = \"csv\"\n", &format!("kind = \"csv\"\n{line}"));
        let r = Dir::new(&text).load(&[]);
        match want {
            Ok(secs) => {
                let c = r.unwrap();
                let SourceConfig::Csv(csv) = &c.source else {
                    panic!("csv")
                };
                assert_eq!(csv.timeout, Duration::from_secs(*secs), "{line}");
            }
            Err(w) => {
                let got = problems(r);
                assert!(got.iter().any(|g| g.starts_with(w)), "{line}: {got:#?}");
            }
        }
    }
}
