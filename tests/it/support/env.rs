//! `TestEnv`: one temporary directory with a store backend (SQLite file or a fresh Postgres
//! database), a source file and a config, and the ways to run the binary against it; and
//! `ConfigText`, the builder of the config the suites write (state × source × targets).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dirsync::store::Store;

use super::slapd::{READER_DN, READER_PASSWORD};
use super::{covata, valuekeep};

/// The state backend of a test.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `Postgres` when `postgres`, else `Sqlite`.
    pub fn of(postgres: bool) -> Backend {
        if postgres {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// A temporary directory holding `dirsync.toml`, `users.csv` and (SQLite) `state.db`.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    /// The Postgres database of this test; `None` on SQLite.
    pub db_url: Option<String>,
}

impl TestEnv {
    /// A new directory; on Postgres a fresh database.
    pub async fn new(backend: Backend) -> TestEnv {
        let db_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(super::pg::pg_url().await),
        };
        TestEnv {
            dir: tempfile::tempdir().unwrap(),
            db_url,
        }
    }

    /// A file of the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("dirsync.toml")
    }

    /// Writes `users.csv`: `header` then `body`.
    pub fn write_users_csv(&self, header: &str, body: &str) {
        std::fs::write(self.path("users.csv"), format!("{header}{body}")).unwrap();
    }

    /// The `[state]` keys of this backend: the test's Postgres database or `state.db`.
    pub fn state_keys(&self) -> String {
        match &self.db_url {
            Some(url) => format!("database_url = \"{url}\""),
            None => "path = \"state.db\"".to_string(),
        }
    }

    /// A config of this backend's state, to be given a source and targets.
    pub fn config(&self) -> ConfigText {
        ConfigText::new(self.dir.path(), &self.state_keys())
    }

    /// The config most Covata suites use: the CSV of [`USERS_HEADER`], the Covata target at
    /// `base_url` (client secret in a file, `max_backoff = "2s"`, then `extra` keys) and members
    /// of `admins` made system admins.
    pub fn write_covata_config(&self, base_url: &str, extra: &str) {
        self.config()
            .csv("")
            .covata_with_admins(base_url, &format!("max_backoff = \"2s\"\n{extra}"))
            .write();
    }

    /// `dirsync <args> --config dirsync.toml` (see [`super::cmd::dirsync`]).
    pub fn command(&self, args: &[&str]) -> Command {
        super::cmd::dirsync(&self.config_path(), args)
    }

    /// Runs `dirsync <args>` to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `dirsync <args>` to its end and asserts its exit code (its output in the message).
    #[track_caller]
    pub fn run_code(&self, args: &[&str], want: i32) -> Output {
        let o = self.run(args);
        assert_eq!(super::cmd::code(&o), want, "{}", super::cmd::out(&o));
        o
    }

    /// `dirsync <args>` exits 0 saying `Nothing to do.`.
    #[track_caller]
    pub fn assert_nothing_to_do(&self, args: &[&str]) {
        let o = self.run_code(args, 0);
        assert!(
            super::cmd::stdout(&o).contains("Nothing to do."),
            "{}",
            super::cmd::out(&o)
        );
    }

    /// The store the config names, migrated.
    pub async fn store(&self) -> Box<dyn Store> {
        super::cmd::store(&self.config_path()).await
    }
}

/// How a Covata target is given its client secret.
#[derive(Clone, Copy, Debug)]
pub enum SecretStyle {
    /// `client_secret = "..."`.
    Inline,
    /// `client_secret_file = "client-secret"` (the file is written next to the config).
    File,
}

/// The text of a `dirsync.toml`, built table by table; files it refers to (secrets) are
/// written into its directory as it goes.
pub struct ConfigText {
    dir: PathBuf,
    text: String,
}

impl ConfigText {
    /// `[state]` with these keys (TOML lines).
    pub fn new(dir: &Path, state: &str) -> ConfigText {
        ConfigText {
            dir: dir.to_path_buf(),
            text: format!("\n[state]\n{state}\n"),
        }
    }

    /// Appends TOML as written.
    pub fn raw(mut self, toml: &str) -> ConfigText {
        self.text.push_str(toml);
        self.text.push('\n');
        self
    }

    /// The CSV source `users.csv` with the columns `id`, `first`, `last`, `status`, `groups`;
    /// `more_columns`: more lines of `[source.csv.columns]`.
    pub fn csv(self, more_columns: &str) -> ConfigText {
        self.csv_columns(&format!(
            "key = \"id\"\ngiven_name = \"first\"\nfamily_name = \"last\"\n\
             enabled = \"status\"\ngroups = \"groups\"\n{more_columns}"
        ))
    }

    /// The CSV source `users.csv` with these lines of `[source.csv.columns]` only.
    pub fn csv_columns(self, columns: &str) -> ConfigText {
        self.csv_file("users.csv", columns)
    }

    /// The CSV source at `path` with these lines of `[source.csv.columns]`.
    pub fn csv_file(self, path: &str, columns: &str) -> ConfigText {
        self.raw(&format!(
            "[source]\nkind = \"csv\"\n[source.csv]\npath = \"{path}\"\n\
             [source.csv.columns]\n{columns}"
        ))
    }

    /// The LDAP source at `url` bound as the slapd reader (password in `bind-password`);
    /// `settings`: more lines of `[source.ldap]` (`base_dn` among them), possibly subtables.
    pub fn ldap(self, url: &str, settings: &str) -> ConfigText {
        self.secret_file("bind-password", READER_PASSWORD);
        self.raw(&format!(
            r#"
[source]
kind = "ldap"
[source.ldap]
url = "{url}"
bind_dn = "{READER_DN}"
bind_password_file = "bind-password"
{settings}"#
        ))
    }

    /// The LDAP source at `url`, bound anonymously; `source_keys`: more keys of `[source]`,
    /// `settings`: more lines of `[source.ldap]`.
    pub fn ldap_anonymous(self, url: &str, source_keys: &str, settings: &str) -> ConfigText {
        self.raw(&format!(
            "[source]\nkind = \"ldap\"\n{source_keys}\n[source.ldap]\nurl = \"{url}\"\n\
             anonymous = true\n{settings}"
        ))
    }

    /// A Covata target named `covata` at `base_url` with the fake's credentials; `keys`: more
    /// keys of the `[[target]]` table.
    pub fn covata(self, base_url: &str, secret: SecretStyle, keys: &str) -> ConfigText {
        self.covata_named("covata", base_url, secret, keys)
    }

    /// [`Self::covata`] with its client secret in a file and the members of `admins` made
    /// system admins: the target most suites sync to.
    pub fn covata_with_admins(self, base_url: &str, keys: &str) -> ConfigText {
        self.covata(base_url, SecretStyle::File, keys)
            .role("admins", &["ROLE_SYSTEM_ADMIN"])
    }

    /// [`Self::covata`] named `name`.
    pub fn covata_named(
        self,
        name: &str,
        base_url: &str,
        secret: SecretStyle,
        keys: &str,
    ) -> ConfigText {
        let secret = match secret {
            SecretStyle::Inline => format!("client_secret = \"{}\"", covata::CLIENT_SECRET),
            SecretStyle::File => {
                self.secret_file("client-secret", covata::CLIENT_SECRET);
                "client_secret_file = \"client-secret\"".to_string()
            }
        };
        self.raw(&target_table(
            name,
            "covata",
            &[
                ("base_url", base_url),
                ("username", covata::USERNAME),
                ("password", covata::PASSWORD),
                ("client_id", covata::CLIENT_ID),
            ],
            &format!("{secret}\n{keys}"),
        ))
    }

    /// A Valuekeep target named `vk` on the fake at `base_url` / `token_url` with the fake's
    /// client id, tenant and organization, this client secret, `default_roles =
    /// ["REQUESTER"]`, then `keys` (more keys, then possibly `[target.fields]`).
    pub fn valuekeep(
        self,
        base_url: &str,
        token_url: &str,
        secret: &str,
        keys: &str,
    ) -> ConfigText {
        self.raw(&target_table(
            "vk",
            "valuekeep",
            &[
                ("base_url", base_url),
                ("token_url", token_url),
                ("client_id", valuekeep::CLIENT_ID),
                ("client_secret", secret),
                ("tenant_key", valuekeep::TENANT),
                ("org_key", valuekeep::ORG),
            ],
            &format!("default_roles = [\"REQUESTER\"]\n{keys}"),
        ))
    }

    /// A `[[target]]` table ([`target_table`]).
    pub fn target(self, name: &str, kind: &str, keys: &[(&str, &str)], more: &str) -> ConfigText {
        self.raw(&target_table(name, kind, keys, more))
    }

    /// Safety limits that let a test disable and delete everything it set up.
    pub fn no_disable_limits(self) -> ConfigText {
        self.raw("[safety]\nmax_disable_percent = 100\nmax_delete_percent = 100")
    }

    /// A `[[target.roles]]` rule of the last target: members of `group` get `roles`.
    pub fn role(self, group: &str, roles: &[&str]) -> ConfigText {
        let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
        self.raw(&format!(
            "[[target.roles]]\ngroup = '{group}'\nroles = [{}]",
            roles.join(", ")
        ))
    }

    /// Writes `name` (the value and a newline) next to the config.
    fn secret_file(&self, name: &str, value: &str) {
        std::fs::write(self.dir.join(name), format!("{value}\n")).unwrap();
    }

    /// Writes `dirsync.toml`; returns its path.
    pub fn write(self) -> PathBuf {
        let path = self.dir.join("dirsync.toml");
        std::fs::write(&path, self.text).unwrap();
        path
    }
}

/// `struct $name { env: TestEnv, fake: $fake }` that derefs to its [`TestEnv`]: a suite's
/// environment with the fake server it syncs to; `users.csv` starts with `$header`. With
/// `new`, also `$name::new(backend, csv)`: [`with_csv`] then the suite's `write_config("")`.
macro_rules! env_with_fake {
    ($name:ident, $fake:ty, $header:expr, new) => {
        $crate::support::env::env_with_fake!($name, $fake, $header);

        impl $name {
            /// [`Self::with_csv`], then the suite's default config.
            async fn new(backend: $crate::support::env::Backend, csv: &str) -> $name {
                let env = $name::with_csv(backend, csv).await;
                env.write_config("");
                env
            }
        }
    };
    ($name:ident, $fake:ty, $header:expr) => {
        $crate::support::env::suite_env!($name { fake: $fake });

        #[allow(dead_code)]
        impl $name {
            /// The fake started, the store on `backend`, `users.csv` holding `csv`.
            async fn with_csv(backend: $crate::support::env::Backend, csv: &str) -> $name {
                let env = $name {
                    fake: <$fake>::start().await,
                    env: $crate::support::env::TestEnv::new(backend).await,
                };
                env.write_csv(csv);
                env
            }

            /// `users.csv`: the header, then `body`.
            fn write_csv(&self, body: &str) {
                self.env.write_users_csv($header, body);
            }
        }
    };
}
pub(crate) use env_with_fake;

/// `struct $name { env: TestEnv, $field: $type, .. }` that derefs to its [`TestEnv`]: a
/// suite's environment with the servers it needs.
macro_rules! suite_env {
    ($name:ident { $($field:ident: $type:ty),* $(,)? }) => {
        struct $name {
            env: $crate::support::env::TestEnv,
            $($field: $type,)*
        }

        impl std::ops::Deref for $name {
            type Target = $crate::support::env::TestEnv;
            fn deref(&self) -> &$crate::support::env::TestEnv {
                &self.env
            }
        }
    };
}
pub(crate) use suite_env;

/// The two tests `$sqlite` and `$postgres` of one scenario, `async fn $scenario(Backend)`.
macro_rules! on_both_backends {
    ($sqlite:ident, $postgres:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $sqlite() {
            $scenario($crate::support::env::Backend::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $postgres() {
            $scenario($crate::support::env::Backend::Postgres).await;
        }
    };
}
pub(crate) use on_both_backends;

/// A `[[target]]` table: `name`, `kind`, `keys` as `key = "value"` lines, then `more` (TOML).
pub fn target_table(name: &str, kind: &str, keys: &[(&str, &str)], more: &str) -> String {
    let mut table = format!("\n[[target]]\nname = \"{name}\"\nkind = \"{kind}\"\n");
    for (key, value) in keys {
        table.push_str(&format!("{key} = \"{value}\"\n"));
    }
    table.push_str(more);
    table.push('\n');
    table
}

/// The header of the CSV the Covata suites write.
pub const USERS_HEADER: &str = "id,email,first,last,status,groups\n";

/// Rows of [`USERS_HEADER`] for the users `range`: `E00001,user1@example.com,First1,Last1,
/// active,staff`, in group `admins` too where `admin(i)`.
pub fn user_rows(range: impl IntoIterator<Item = usize>, admin: impl Fn(usize) -> bool) -> String {
    range
        .into_iter()
        .map(|i| {
            let groups = if admin(i) { "staff;admins" } else { "staff" };
            format!("E{i:05},user{i}@example.com,First{i},Last{i},active,{groups}\n")
        })
        .collect()
}
