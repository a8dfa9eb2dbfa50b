//! A real, ephemeral Postgres for the tests of this process.
//!
//! The first [`pg_url`] call starts one cluster (`initdb` in a temp dir, `postgres` on a free
//! port of 127.0.0.1) that every test of the process shares; each call then creates a fresh,
//! empty database on it, so tests are isolated. With `DIRSYNC_TEST_DATABASE_URL` set, that
//! server is used instead (still a fresh database per call).
//!
//! Postgres refuses to run as root: as root, `initdb` and `postgres` run as the `postgres`
//! system user (or `nobody`). The server is spawned by a dedicated thread that lives as long as
//! the process, with `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test process whatever
//! happens; on a normal exit an `atexit` handler shuts it down (SIGQUIT, which also frees its
//! shared memory) and removes the temp dir.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::child::{
    Kept, free_port, is_exe, open_log, run_as, server_command, server_user, tail, temp_root,
};

/// How the server is named in errors.
const WHAT: &str = "test Postgres";

/// Use this server (a `postgres://` URL of a user allowed to create databases) instead of
/// starting one.
pub const DATABASE_URL_ENV: &str = "DIRSYNC_TEST_DATABASE_URL";

const NOT_FOUND: &str = "Postgres server binaries not found (initdb): install the Debian package \
     `postgresql` (apt-get install -y postgresql) or set DIRSYNC_TEST_DATABASE_URL";

/// How long a started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

/// A URL to a fresh, empty database, created for this call.
pub async fn pg_url() -> String {
    let server = match SERVER.get_or_init(Server::start) {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    };
    let name = format!(
        "dirsync_test_{}_{}",
        std::process::id(),
        NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = server.connect_admin().await;
    if matches!(server, Server::External(_)) {
        // A database left over by an earlier process with the same pid.
        exec(&mut admin, format!("DROP DATABASE IF EXISTS \"{name}\"")).await;
    }
    exec(&mut admin, format!("CREATE DATABASE \"{name}\"")).await;
    // Closing politely can only fail on a broken socket; the database exists either way.
    let _ = admin.close().await;
    server.url_of(&name)
}

async fn exec(conn: &mut PgConnection, sql: String) {
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(&mut *conn)
        .await
    {
        panic!("test Postgres: {sql}: {e}");
    }
}

enum Server {
    /// `DIRSYNC_TEST_DATABASE_URL`.
    External(url::Url),
    /// Our own cluster.
    Local(Cluster),
}

struct Cluster {
    port: u16,
    log: PathBuf,
    /// What [`OwnServer`] needs to stop and start the server again.
    postgres: PathBuf,
    root: PathBuf,
    data: PathBuf,
    user: Option<(u32, u32)>,
    running: Option<Kept>,
}

impl Server {
    fn start() -> Result<Server, String> {
        match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => url::Url::parse(url.trim())
                .map(Server::External)
                .map_err(|e| format!("{DATABASE_URL_ENV} is not a URL: {e}")),
            _ => Cluster::start().map(Server::Local),
        }
    }

    fn url_of(&self, database: &str) -> String {
        match self {
            Server::External(url) => {
                let mut url = url.clone();
                url.set_path(&format!("/{database}"));
                url.to_string()
            }
            Server::Local(cluster) => {
                format!("postgres://postgres@127.0.0.1:{}/{database}", cluster.port)
            }
        }
    }

    /// A connection to the server's maintenance database, to create databases from.
    async fn connect_admin(&self) -> PgConnection {
        let url = match self {
            Server::External(url) => url.to_string(),
            Server::Local(_) => self.url_of("postgres"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match PgConnection::connect(&url).await {
                Ok(conn) => return conn,
                Err(e) if Instant::now() >= deadline => match self {
                    Server::External(_) => {
                        panic!("test Postgres: cannot connect to {DATABASE_URL_ENV}: {e}")
                    }
                    Server::Local(cluster) => panic!(
                        "test Postgres: cannot connect to 127.0.0.1:{}: {e}\n{}",
                        cluster.port,
                        tail(&cluster.log, 0)
                    ),
                },
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// What the `atexit` handler stops and removes.
struct Started {
    pid: Option<u32>,
    exited: Option<Arc<Mutex<bool>>>,
    dir: PathBuf,
}

static STARTED: Mutex<Vec<Started>> = Mutex::new(Vec::new());
static ATEXIT: Once = Once::new();

extern "C" fn stop_all() {
    let Ok(mut started) = STARTED.lock() else {
        return;
    };
    let started: Vec<Started> = started.drain(..).collect();
    // Stop every server first, then remove the directories.
    for s in &started {
        let Some(pid) = s.pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
            continue;
        };
        if s.exited
            .as_ref()
            .is_some_and(|e| e.lock().map(|e| *e).unwrap_or(true))
        {
            continue; // already stopped (and reaped): the pid may be someone else's now
        }
        // SAFETY: a plain syscall on a pid we spawned and have not reaped yet (its keeper thread
        // reaps it and then sets `exited`).
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if s.exited
                .as_ref()
                .is_none_or(|e| e.lock().map(|e| *e).unwrap_or(true))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for s in started.iter().filter(|s| s.pid.is_none()) {
        for _ in 0..5 {
            if fs::remove_dir_all(&s.dir).is_ok() || !s.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn register(started: Started) {
    ATEXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` with the C runtime; it runs once at exit.
        unsafe {
            libc::atexit(stop_all);
        }
    });
    if let Ok(mut list) = STARTED.lock() {
        list.push(started);
    }
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let (initdb, postgres) = find_binaries()?;
        let user = server_user(WHAT, &["postgres", "nobody"])?;

        let root = temp_root("dirsync-pg-", WHAT)?;
        register(Started {
            pid: None,
            exited: None,
            dir: root.clone(),
        });
        let io_err = |what: &str, e: io::Error| format!("test Postgres: {what}: {e}");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .map_err(|e| io_err("chmod 0755 the temp dir", e))?;
        let data = root.join("data");
        fs::create_dir(&data).map_err(|e| io_err("create the data dir", e))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("chmod 0700 the data dir", e))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))
                .map_err(|e| io_err("chown the data dir to the postgres user", e))?;
        }

        let initdb_log = root.join("initdb.log");
        let mut cmd = Command::new(&initdb);
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C")
            .current_dir(&root)
            .stdin(Stdio::null());
        let log = File::create(&initdb_log).map_err(|e| io_err("create initdb.log", e))?;
        cmd.stdout(log.try_clone().map_err(|e| io_err("dup initdb.log", e))?)
            .stderr(log);
        run_as(&mut cmd, user);
        let status = cmd
            .status()
            .map_err(|e| io_err(&format!("run {}", initdb.display()), e))?;
        if !status.success() {
            return Err(format!(
                "test Postgres: {} failed ({status})\n{}",
                initdb.display(),
                tail(&initdb_log, 0)
            ));
        }

        let log = root.join("postgres.log");
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = free_port().map_err(|e| io_err("find a free port", e))?;
            match spawn_postgres(&postgres, &root, &data, &log, port, user) {
                Ok(running) => {
                    return Ok(Cluster {
                        port,
                        log,
                        postgres,
                        root,
                        data,
                        user,
                        running: Some(running),
                    });
                }
                // Another process may have taken the port between our probe and postgres' bind.
                Err(e) if e.contains("could not bind") || e.contains("already in use") => {
                    last_error = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error)
    }
}

/// Starts `postgres` from a keeper thread and waits until it is ready.
fn spawn_postgres(
    postgres: &Path,
    root: &Path,
    data: &Path,
    log: &Path,
    port: u16,
    user: Option<(u32, u32)>,
) -> Result<Kept, String> {
    let (log_file, start_of_log) = open_log(log, WHAT)?;
    let mut cmd = Command::new(postgres);
    cmd.arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(data)
        .args(["-h", "127.0.0.1", "-F"])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
    server_command(&mut cmd, root, log_file, user, WHAT)?;
    // The keeper lives as long as the process (the shared cluster serves every test).
    let kept = Kept::spawn(cmd, format!("postgres-{port}"), WHAT)?;
    register(Started {
        pid: Some(kept.pid),
        exited: Some(Arc::clone(&kept.exited)),
        dir: root.to_owned(),
    });
    // Ready when postmaster.pid says so (its 8th line, as pg_ctl reads it).
    let pid_file = data.join("postmaster.pid");
    kept.wait_ready(WHAT, log, start_of_log, READY_TIMEOUT, || {
        fs::read_to_string(&pid_file)
            .is_ok_and(|text| text.lines().nth(7).map(str::trim) == Some("ready"))
    })?;
    Ok(kept)
}

/// The directory holding `initdb` and `postgres`: on PATH, else the highest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_binaries() -> Result<(PathBuf, PathBuf), String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    for dir in dirs {
        let initdb = dir.join("initdb");
        let postgres = dir.join("postgres");
        if is_exe(&initdb) && is_exe(&postgres) {
            return Ok((initdb, postgres));
        }
    }
    Err(NOT_FOUND.to_owned())
}

/// A Postgres server of its own, for a test that stops and restarts it (the shared one of
/// [`pg_url`] must stay up for the other tests). Stopped at exit like the shared one.
pub struct OwnServer {
    cluster: Cluster,
}

impl OwnServer {
    /// Starts a new cluster (panics saying what to install when Postgres is missing).
    pub fn start() -> OwnServer {
        match Cluster::start() {
            Ok(cluster) => OwnServer { cluster },
            Err(message) => panic!("{message}"),
        }
    }

    /// A URL to the `postgres` database of this server.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.cluster.port
        )
    }

    /// Stops the server with a fast shutdown (SIGINT: clients are disconnected, as in a
    /// restart) and waits until it has exited.
    pub fn stop(&mut self) {
        let Some(kept) = self.cluster.running.take() else {
            return;
        };
        // SIGINT: a fast shutdown.
        assert!(
            kept.stop(libc::SIGINT, READY_TIMEOUT),
            "test Postgres: did not stop within {} s",
            READY_TIMEOUT.as_secs()
        );
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        let c = &self.cluster;
        match spawn_postgres(&c.postgres, &c.root, &c.data, &c.log, c.port, c.user) {
            Ok(running) => self.cluster.running = Some(running),
            Err(message) => panic!("{message}"),
        }
    }
}
