//! Config and inputs as a production install meets them: where the state lives and that every
//! output names it, secrets read only by the commands that use them (`_file` paths under
//! `/run/credentials`, `_credential` names under `$CREDENTIALS_DIRECTORY`), sources that never
//! answer (FIFOs, directories, devices, a hung LDAP server), target names the environment
//! cannot tell apart, and clear-text HTTP.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::cmd::{code, out, stdout};
use crate::support::covata::{self, FakeCovata};
use crate::support::env::{ConfigText, SecretStyle};

const HEADER: &str = "id,email,first,last,status,groups\n";
const USERS: &str = "\
E1,alice@example.com,Alice,Smith,active,staff
E2,bob@example.com,Bob,Jones,active,staff
E3,carol@example.com,Carol,Wu,active,staff
";

/// The longest any command here may take: a hang fails the test instead of the suite.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `cmd` to its end, killing it after [`LIMIT`] and failing the test (a hang).
fn bounded(mut cmd: Command) -> Output {
    crate::support::cmd::output_within(&mut cmd, LIMIT)
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {LIMIT:?}: it hangs"))
}

/// Stdout and stderr together.
fn all(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Env {
    dir: tempfile::TempDir,
    fake: FakeCovata,
}

impl Env {
    async fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
            fake: FakeCovata::start().await,
        };
        std::fs::write(env.path("users.csv"), format!("{HEADER}{USERS}")).unwrap();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("dirsync.toml")
    }

    /// A config with `state` as the `[state]` body, `source` the CSV path, and `secrets` the
    /// target's password and client secret lines.
    fn write(&self, state: &str, csv_path: &str, secrets: &str, extra: &str) {
        let target = format!(
            r#"
[[target]]
name = "covata"
kind = "covata"
base_url = "{base}"
username = "{user}"
client_id = "{client}"
max_backoff = "1s"
max_retries = 1
{secrets}
{extra}
"#,
            base = self.fake.base_url(),
            user = covata::USERNAME,
            client = covata::CLIENT_ID,
        );
        ConfigText::new(self.dir.path(), state)
            .csv_file(
                csv_path,
                "key = \"id\"\ngiven_name = \"first\"\nfamily_name = \"last\"\nenabled = \"status\"",
            )
            .raw(&target)
            .write();
    }

    /// The working secrets, inline.
    fn good_secrets() -> String {
        format!(
            "password = \"{}\"\nclient_secret = \"{}\"",
            covata::PASSWORD,
            covata::CLIENT_SECRET
        )
    }

    /// `dirsync <args>` without any systemd variable of the test's own environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = crate::support::cmd::dirsync(&self.config(), args);
        c.env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        bounded(self.cmd(args))
    }
}

// ------------------------------------------------------------------------------------------
// State location: one default, named everywhere, never a silent new database.

#[tokio::test]
async fn reports_runs_and_check_name_the_store() {
    let env = Env::new().await;
    env.write(
        "path = \"state/dirsync.db\"",
        "users.csv",
        &Env::good_secrets(),
        "",
    );
    std::fs::create_dir(env.path("state")).unwrap();
    let db = env.path("state/dirsync.db");
    let named = format!("sqlite {}", db.display());

    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        stdout(&o).contains(&format!("state store: {named}")),
        "{}",
        out(&o)
    );
    assert_eq!(env.fake.users().len(), 3);

    let o = env.run(&["plan", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["store"], named.as_str(), "{}", out(&o));
    let o = env.run(&["plan", "--format", "markdown"]);
    assert!(
        stdout(&o).contains(&format!("State store: `{named}`")),
        "{}",
        out(&o)
    );

    let o = env.run(&["runs"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        stdout(&o).starts_with(&format!("store: {named}\n")),
        "{}",
        out(&o)
    );
    let o = env.run(&["runs", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["store"], named.as_str());
    assert_eq!(v["runs"].as_array().unwrap().len(), 3, "{v}");

    for args in [&["check"][..], &["check", "--offline"][..]] {
        let o = env.run(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", out(&o));
        assert!(
            stdout(&o).contains(&format!("state:  {named}")),
            "{}",
            out(&o)
        );
    }
}

#[tokio::test]
async fn a_missing_state_directory_is_reported_and_never_created() {
    let env = Env::new().await;
    env.write(
        "path = \"nowhere/dirsync.db\"",
        "users.csv",
        &Env::good_secrets(),
        "",
    );
    let dir = env.path("nowhere");
    for args in [
        &["check", "--offline"][..],
        &["check"][..],
        &["plan"][..],
        &["sync"][..],
        &["runs"][..],
        &["migrate"][..],
    ] {
        let o = env.run(args);
        assert_eq!(code(&o), 1, "{args:?}: {}", out(&o));
        let text = all(&o);
        assert!(
            text.contains("state.path") && text.contains(&dir.display().to_string()),
            "{args:?}: {}",
            out(&o)
        );
        assert!(!dir.exists(), "{args:?} created {}", dir.display());
    }
    assert!(env.fake.users().is_empty());
}

#[tokio::test]
async fn without_a_state_path_service_and_shell_share_the_state_directory() {
    let env = Env::new().await;
    env.write("", "users.csv", &Env::good_secrets(), "");
    let state_dir = env.path("var-lib-dirsync");
    std::fs::create_dir(&state_dir).unwrap();
    // The service: systemd sets $STATE_DIRECTORY.
    let mut c = env.cmd(&["sync"]);
    c.env("STATE_DIRECTORY", &state_dir);
    let o = bounded(c);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(state_dir.join("dirsync.db").is_file());
    // An admin shell elsewhere, with the same variable, sees the same runs.
    let mut c = env.cmd(&["runs", "--format", "json"]);
    c.env("STATE_DIRECTORY", &state_dir).current_dir("/");
    let o = bounded(c);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{}", out(&o));
    // Without it: the installed layout's path, never the working directory.
    let o = bounded({
        let mut c = env.cmd(&["check", "--offline"]);
        c.current_dir(env.dir.path());
        c
    });
    assert!(
        stdout(&o).contains("state:  sqlite /var/lib/dirsync/dirsync.db"),
        "{}",
        out(&o)
    );
    assert!(!env.path("dirsync.db").exists());
}

// ------------------------------------------------------------------------------------------
// Secrets: read only by the commands that need them.

#[tokio::test]
async fn commands_that_contact_no_target_read_no_target_secret() {
    let env = Env::new().await;
    env.write("path = \"state.db\"", "users.csv", &Env::good_secrets(), "");
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    // The service's credentials: not there in this shell.
    let service = "password_file = \"/run/credentials/dirsync.service/covata-password\"\n\
                   client_secret_credential = \"covata-client-secret\"";
    env.write("path = \"state.db\"", "users.csv", service, "");
    std::fs::write(
        env.path("users.csv"),
        format!("{HEADER}{USERS}E4,dave@example.com,Dave,Brown,active,staff\n"),
    )
    .unwrap();
    for (args, want) in [
        (&["plan"][..], 2),
        (&["sync", "--dry-run"][..], 2),
        (&["runs"][..], 0),
        (&["check", "--offline"][..], 0),
        (&["migrate"][..], 0),
    ] {
        let o = env.run(args);
        assert_eq!(code(&o), want, "{args:?}: {}", out(&o));
    }
    // A command that contacts the target fails, naming the key (and never a secret).
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let text = all(&o);
    assert!(
        text.contains("target[0].password_file")
            && text.contains("/run/credentials/dirsync.service/covata-password"),
        "{}",
        out(&o)
    );
    assert!(!text.contains(covata::PASSWORD), "{}", out(&o));
    let o = env.run(&["check"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(all(&o).contains("target[0].password_file"), "{}", out(&o));
    assert_eq!(env.fake.users().len(), 3, "nothing sent");
}

#[tokio::test]
async fn credentials_directory_serves_every_unit() {
    let env = Env::new().await;
    let creds = env.path("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(
        creds.join("covata-password"),
        format!("{}\n", covata::PASSWORD),
    )
    .unwrap();
    std::fs::write(creds.join("covata-client-secret"), covata::CLIENT_SECRET).unwrap();
    let secrets = "password_credential = \"covata-password\"\n\
                   client_secret_credential = \"covata-client-secret\"";
    env.write("path = \"state.db\"", "users.csv", secrets, "");
    // Unset (an admin shell): a clear error naming the key and the variable.
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let text = all(&o);
    assert!(
        text.contains("target[0].password_credential") && text.contains("CREDENTIALS_DIRECTORY"),
        "{}",
        out(&o)
    );
    assert!(env.fake.users().is_empty());
    // A directory without the credential: names the key and the credential.
    let empty = env.path("empty-credentials");
    std::fs::create_dir(&empty).unwrap();
    let mut c = env.cmd(&["sync"]);
    c.env("CREDENTIALS_DIRECTORY", &empty);
    let o = bounded(c);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        all(&o).contains("target[0].password_credential: credential \"covata-password\""),
        "{}",
        out(&o)
    );
    // Set (dirsync.service, dirsync-once.service, systemd-run -p LoadCredential=...): works.
    let mut c = env.cmd(&["sync"]);
    c.env("CREDENTIALS_DIRECTORY", &creds);
    let o = bounded(c);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(env.fake.users().len(), 3);
    let mut c = env.cmd(&["check"]);
    c.env("CREDENTIALS_DIRECTORY", &creds);
    let o = bounded(c);
    assert_eq!(code(&o), 0, "{}", out(&o));
}

#[tokio::test]
async fn database_url_credential_is_read_when_the_store_is_opened() {
    let env = Env::new().await;
    let url = crate::support::pg::pg_url().await;
    let creds = env.path("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("db-url"), format!("{url}\n")).unwrap();
    env.write(
        "database_url_credential = \"db-url\"",
        "users.csv",
        &Env::good_secrets(),
        "",
    );
    let o = env.run(&["runs"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        all(&o).contains("state.database_url_credential"),
        "{}",
        out(&o)
    );
    let mut c = env.cmd(&["sync"]);
    c.env("CREDENTIALS_DIRECTORY", &creds);
    let o = bounded(c);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let text = stdout(&o);
    assert!(text.contains("state store: postgres "), "{}", out(&o));
    if let Some(pw) = url::Url::parse(&url).unwrap().password() {
        assert!(!all(&o).contains(pw), "{}", out(&o));
    }
}

// ------------------------------------------------------------------------------------------
// Sources that never answer.

/// Every command that reads the source refuses a `source.csv.path` that is not a regular
/// file, at once (a FIFO no one writes to would block forever).
#[tokio::test]
async fn csv_path_must_be_a_regular_file() {
    let env = Env::new().await;
    let fifo = env.path("users.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let link = env.path("link-to-fifo.csv");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    std::fs::create_dir(env.path("a-directory")).unwrap();
    let cases: [(&Path, &str); 4] = [
        (&fifo, "a FIFO"),
        (&link, "a FIFO"),
        (&env.path("a-directory"), "a directory"),
        (Path::new("/dev/zero"), "a character device"),
    ];
    for (path, what) in cases {
        env.write(
            "path = \"state.db\"",
            path.to_str().unwrap(),
            &Env::good_secrets(),
            "",
        );
        for args in [&["plan"][..], &["sync"][..], &["check"][..]] {
            let o = env.run(args);
            assert_eq!(code(&o), 1, "{path:?} {args:?}: {}", out(&o));
            let text = all(&o);
            assert!(
                text.contains("source.csv.path")
                    && text.contains(what)
                    && text.contains(&path.display().to_string()),
                "{path:?} {args:?}: {}",
                out(&o)
            );
        }
    }
    assert!(env.fake.users().is_empty());
}

/// A TCP listener that accepts and never answers: a hung LDAP server.
async fn hung_server() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_hung_ldap_server_fails_the_read_within_its_timeouts() {
    use dirsync::source::ldap::{LdapSettings, ServerType};
    let (url, task) = hung_server().await;
    // (what, bind?, StartTLS?, operation_timeout, source.timeout, expected message)
    let cases = [
        ("bind", true, false, 1, 600, "operation_timeout"),
        (
            "anonymous search",
            false,
            false,
            1,
            600,
            "operation_timeout",
        ),
        (
            "bind, source.timeout first",
            true,
            false,
            600,
            1,
            "source.timeout (1s)",
        ),
        (
            "search, source.timeout first",
            false,
            false,
            600,
            1,
            "source.timeout (1s)",
        ),
        (
            "StartTLS never answered",
            true,
            true,
            600,
            1,
            "source.timeout (1s)",
        ),
    ];
    for (what, bind, starttls, op, whole, want) in cases {
        let mut s = LdapSettings::new(&url, "dc=example,dc=com", ServerType::Generic);
        s.starttls = starttls;
        if bind {
            s.bind_dn = Some("cn=reader,dc=example,dc=com".into());
            s.bind_password = Some(dirsync::secret::Secret::new("pw"));
        }
        s.operation_timeout = Duration::from_secs(op);
        s.timeout = Duration::from_secs(whole);
        let read = tokio::time::timeout(LIMIT, dirsync::source::ldap::load(&s))
            .await
            .unwrap_or_else(|_| panic!("{what}: the read hangs"));
        let e = read
            .err()
            .unwrap_or_else(|| panic!("{what}: read a snapshot"))
            .to_string();
        assert!(e.contains(want), "{what}: {e}");
    }
    // The CLI: `plan` with an LDAP source on the hung server ends with the error.
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigText::new(dir.path(), "path = \"state.db\"")
        .ldap_anonymous(&url, "timeout = \"2s\"", "base_dn = \"dc=example,dc=com\"")
        .covata("http://127.0.0.1:9", SecretStyle::Inline, "")
        .write();
    let o = bounded(crate::support::cmd::dirsync(&config, &["plan"]));
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(all(&o).contains("source.timeout (2s)"), "{}", out(&o));
    task.abort();
}

// ------------------------------------------------------------------------------------------
// Names and clear text, through the CLI.

#[tokio::test]
async fn check_refuses_names_the_environment_confuses_and_clear_text_http() {
    let env = Env::new().await;
    let second = |name: &str, base: &str, extra: &str| {
        format!(
            "\n[[target]]\nname = \"{name}\"\nkind = \"covata\"\nbase_url = \"{base}\"\n\
             username = \"u\"\npassword = \"p\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{extra}"
        )
    };
    // (extra config, expected exit of check --offline, expected text)
    let cases = [
        (
            second("COVATA", "https://b.example.com", ""),
            1,
            "target[1].name: \"COVATA\" and target[0].name \"covata\" are the same name in \
             DIRSYNC_TARGET__COVATA__*",
        ),
        (
            second("covata-x", "http://covata.example.com", ""),
            1,
            "target[1].base_url: http:// sends the credentials",
        ),
        (
            second(
                "covata-x",
                "http://covata.example.com",
                "allow_insecure_http = true",
            ),
            0,
            "target: covata-x (covata) http://covata.example.com/",
        ),
        (
            second("covata-x", "http://[::1]:9", ""),
            0,
            "target: covata-x (covata) http://[::1]:9/",
        ),
    ];
    for (extra, want, text) in cases {
        env.write(
            "path = \"state.db\"",
            "users.csv",
            &Env::good_secrets(),
            &extra,
        );
        let o = env.run(&["check", "--offline"]);
        assert_eq!(code(&o), want, "{extra}: {}", out(&o));
        assert!(all(&o).contains(text), "{extra}: {}", out(&o));
    }
}
