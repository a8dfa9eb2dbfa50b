//! A real, ephemeral OpenLDAP server (`slapd`) per test.
//!
//! [`Slapd::start`] writes a `slapd.conf` in a temp dir (mdb backend, the memberof overlay,
//! the syncprov overlay with a session log for live sync, schema core / cosine /
//! inetorgperson / nis plus a small test schema with `nsAccountLock`, `objectGUID` and
//! `userAccountControl`), loads the given LDIF with `slapadd` (fast, no overlays: `memberOf`
//! is only maintained for what is added later with [`Slapd::modify`]), and starts
//! `slapd -d 0` on a free port of 127.0.0.1.
//!
//! As root, `slapadd` and `slapd` run as the `openldap` system user (or `nobody`). The server
//! is spawned by a keeper thread that lives as long as the server, with
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test process whatever happens; dropping
//! the [`Slapd`] kills it and removes the temp dir. [`Slapd::stop`] kills it at once (to
//! simulate a server going away mid-search).
//!
//! The database is `dc=example,dc=com`; [`ROOT_DN`] / [`ROOT_PASSWORD`] is the rootdn (no
//! limits apply to it), [`READER_DN`] / [`READER_PASSWORD`] an ordinary entry for binding,
//! to which the size limit applies.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::child::{
    Kept, free_port, is_exe, open_log, run_as, server_command, server_user, tail, temp_root,
};

const NOT_FOUND: &str = "slapd not found (on PATH or /usr/sbin): install the Debian packages \
     slapd and ldap-utils (apt-get install -y slapd ldap-utils)";

pub const SUFFIX: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const ROOT_PASSWORD: &str = "admin-secret";
pub const READER_DN: &str = "cn=reader,dc=example,dc=com";
pub const READER_PASSWORD: &str = "reader-secret";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server is named in errors.
const WHAT: &str = "test slapd";

/// Attributes that OpenLDAP lacks but the LDAP source handles: 389-DS's `nsAccountLock` and
/// Active Directory's `objectGUID` (binary), `userAccountControl`, `uSNChanged` and
/// `invocationId` (a string here), on an auxiliary class; and the rootDSE attributes the USN
/// stream reads (`highestCommittedUSN`, `dnsHostName`, `dsServiceName`), for
/// [`Slapd::start_with_root_dse`].
const TEST_SCHEMA: &str = "\
attributetype ( 2.16.840.1.113730.3.1.610 NAME 'nsAccountLock'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.2 NAME 'objectGUID'
  EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.11.99.2.1 NAME 'uSNChanged'
  EQUALITY integerMatch ORDERING integerOrderingMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.11.99.2.2 NAME 'invocationId'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.11.99.2.3 NAME 'highestCommittedUSN'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.11.99.2.4 NAME 'dnsHostName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.11.99.2.5 NAME 'dsServiceName'
  EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.11.99.1 NAME 'dirsyncTestAccount' AUXILIARY
  MAY ( nsAccountLock $ objectGUID $ userAccountControl $ uSNChanged $ invocationId ) )
";

/// How to configure the server.
#[derive(Debug, Clone)]
pub struct SlapdOptions {
    /// The server's size limit (`sizelimit size.soft=N size.hard=N`); None: unlimited.
    pub size_limit: Option<u32>,
    /// Let paged searches return more than the size limit in total
    /// (`size.prtotal=unlimited`), as directories meant to be read with paging are set up.
    /// False: OpenLDAP's default, paged results are capped at the hard limit too.
    pub paged_total_unlimited: bool,
    /// Also listen on `ldaps://` and offer StartTLS, with a certificate for 127.0.0.1 issued
    /// by a CA generated for this server ([`Slapd::ca_file`]; needs the `openssl` command).
    pub tls: bool,
}

impl Default for SlapdOptions {
    fn default() -> Self {
        SlapdOptions {
            size_limit: None,
            paged_total_unlimited: true,
            tls: false,
        }
    }
}

/// The base entries every server has: the suffix, `ou=people`, `ou=groups` and the reader.
pub fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: {READER_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: reader\n\
         sn: reader\nuserPassword: {READER_PASSWORD}\n\n"
    )
}

pub struct Slapd {
    port: u16,
    tls_port: Option<u16>,
    root: PathBuf,
    log: PathBuf,
    kept: Kept,
}

impl Slapd {
    /// Starts a server holding [`base_ldif`] followed by `ldif` (loaded with slapadd).
    pub fn start(options: SlapdOptions, ldif: &str) -> Slapd {
        match Self::try_start(&options, ldif, None) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Slapd::start`], with user-defined rootDSE attributes (`rootDSE <file>` in
    /// slapd.conf; `root_dse` is the file's LDIF, `dn:` first). slapd reads the file at start
    /// only: [`Slapd::set_root_dse`] rewrites it and restarts the server on the same port.
    /// This is how a test stands in for Active Directory's `highestCommittedUSN`.
    pub fn start_with_root_dse(options: SlapdOptions, ldif: &str, root_dse: &str) -> Slapd {
        match Self::try_start(&options, ldif, Some(root_dse)) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Rewrites the rootDSE file and restarts the server on the same port (the database is
    /// kept; clients see their connections drop).
    pub fn set_root_dse(&mut self, root_dse: &str) {
        let file = self.root.join("rootdse.ldif");
        assert!(
            file.exists(),
            "set_root_dse: started without a rootDSE file"
        );
        fs::write(&file, root_dse).expect("write rootdse.ldif");
        self.stop();
        let (slapd, _) = find_binaries().unwrap_or_else(|e| panic!("{e}"));
        let user = server_user(WHAT, &["openldap", "nobody"]).unwrap_or_else(|e| panic!("{e}"));
        let conf = self.root.join("slapd.conf");
        let mut last = String::new();
        // The port was just released; a few tries in case it lingers.
        for _ in 0..50 {
            match spawn(
                &slapd,
                &self.root,
                &conf,
                &self.log,
                self.port,
                self.tls_port,
                user,
            ) {
                Ok(kept) => {
                    self.kept = kept;
                    return;
                }
                Err(e) if e.contains("Address already in use") => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last}");
    }

    fn try_start(
        options: &SlapdOptions,
        ldif: &str,
        root_dse: Option<&str>,
    ) -> Result<Slapd, String> {
        let (slapd, slapadd) = find_binaries()?;
        let user = server_user(WHAT, &["openldap", "nobody"])?;
        let io_err = |what: &str, e: io::Error| format!("test slapd: {what}: {e}");
        let root = temp_root("dirsync-slapd-", WHAT)?;
        // From here on a failure must remove `root`.
        let cleanup = |e: String| {
            let _ = fs::remove_dir_all(&root);
            e
        };
        let db = root.join("db");
        fs::create_dir(&db)
            .map_err(|e| io_err("create the db dir", e))
            .map_err(cleanup)?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .map_err(|e| io_err("chmod the temp dir", e))
            .map_err(cleanup)?;
        fs::write(root.join("test.schema"), TEST_SCHEMA)
            .map_err(|e| io_err("write test.schema", e))
            .map_err(cleanup)?;
        let limits = match options.size_limit {
            None => "sizelimit unlimited".to_string(),
            Some(n) if options.paged_total_unlimited => {
                format!("sizelimit size.soft={n} size.hard={n} size.prtotal=unlimited")
            }
            Some(n) => format!("sizelimit size.soft={n} size.hard={n}"),
        };
        let tls_conf = if options.tls {
            make_certificates(&root).map_err(cleanup)?;
            if let Some((uid, gid)) = user {
                for f in ["ca.pem", "server.pem", "server.key"] {
                    std::os::unix::fs::chown(root.join(f), Some(uid), Some(gid))
                        .map_err(|e| io_err("chown the TLS files", e))
                        .map_err(cleanup)?;
                }
            }
            format!(
                "TLSCACertificateFile {root}/ca.pem\n\
                 TLSCertificateFile {root}/server.pem\n\
                 TLSCertificateKeyFile {root}/server.key\n",
                root = root.display()
            )
        } else {
            String::new()
        };
        let root_dse_conf = match root_dse {
            Some(text) => {
                let file = root.join("rootdse.ldif");
                fs::write(&file, text)
                    .map_err(|e| io_err("write rootdse.ldif", e))
                    .map_err(cleanup)?;
                format!("rootDSE {}\n", file.display())
            }
            None => String::new(),
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include {root}/test.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload memberof\n\
             moduleload syncprov\n\
             pidfile {root}/slapd.pid\n\
             {tls_conf}\
             {root_dse_conf}\
             {limits}\n\
             database mdb\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PASSWORD}\n\
             directory {root}/db\n\
             maxsize 4294967296\n\
             dbnosync\n\
             index objectClass eq\n\
             index entryCSN,entryUUID eq\n\
             overlay memberof\n\
             overlay syncprov\n\
             syncprov-checkpoint 1 1\n\
             syncprov-sessionlog 1000\n",
            root = root.display()
        );
        let conf_path = root.join("slapd.conf");
        fs::write(&conf_path, conf)
            .map_err(|e| io_err("write slapd.conf", e))
            .map_err(cleanup)?;
        let data = root.join("data.ldif");
        {
            let mut f = File::create(&data)
                .map_err(|e| io_err("create data.ldif", e))
                .map_err(cleanup)?;
            f.write_all(base_ldif().as_bytes())
                .and_then(|()| f.write_all(ldif.as_bytes()))
                .map_err(|e| io_err("write data.ldif", e))
                .map_err(cleanup)?;
        }
        if let Some((uid, gid)) = user {
            for p in [&root, &db, &conf_path, &data] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| io_err("chown to the slapd user", e))
                    .map_err(cleanup)?;
            }
        }
        let slapadd_log = root.join("slapadd.log");
        let log_file = File::create(&slapadd_log)
            .map_err(|e| io_err("create slapadd.log", e))
            .map_err(cleanup)?;
        let mut cmd = Command::new(&slapadd);
        cmd.arg("-f")
            .arg(&conf_path)
            .arg("-q")
            .arg("-l")
            .arg(&data)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(|e| io_err("dup slapadd.log", e))
                    .map_err(cleanup)?,
            )
            .stderr(log_file);
        run_as(&mut cmd, user);
        let status = cmd
            .status()
            .map_err(|e| io_err(&format!("run {}", slapadd.display()), e))
            .map_err(cleanup)?;
        if !status.success() {
            return Err(cleanup(format!(
                "test slapd: slapadd failed ({status})\n{}",
                tail(&slapadd_log, 0)
            )));
        }
        let log = root.join("slapd.log");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()
                .map_err(|e| io_err("find a free port", e))
                .map_err(cleanup)?;
            let tls_port = if options.tls {
                Some(
                    free_port()
                        .map_err(|e| io_err("find a free port", e))
                        .map_err(cleanup)?,
                )
            } else {
                None
            };
            match spawn(&slapd, &root, &conf_path, &log, port, tls_port, user) {
                Ok(kept) => {
                    return Ok(Slapd {
                        port,
                        tls_port,
                        root,
                        log,
                        kept,
                    });
                }
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => return Err(cleanup(e)),
            }
        }
        Err(cleanup(last))
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:<port>` (with [`SlapdOptions::tls`]).
    pub fn ldaps_url(&self) -> String {
        format!(
            "ldaps://127.0.0.1:{}",
            self.tls_port.expect("started without tls")
        )
    }

    /// The PEM file of the CA that issued the server's certificate (with
    /// [`SlapdOptions::tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn stop(&self) {
        self.kept.stop(libc::SIGKILL, Duration::from_secs(10));
    }

    /// Applies LDIF change records (`changetype: add / modify / delete / modrdn`) as the
    /// rootdn with `ldapmodify`, so that overlays (memberof) see them.
    pub fn modify(&self, ldif: &str) {
        let ldapmodify = find_tool("ldapmodify").unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(ldapmodify)
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ldapmodify");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .expect("write to ldapmodify");
        let out = child.wait_with_output().expect("wait for ldapmodify");
        assert!(
            out.status.success(),
            "ldapmodify failed ({}):\n{}\n{}\n--- input\n{ldif}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log, 0)
        );
    }

    /// The end of the server's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 0)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Starts `slapd` from a keeper thread and waits until its ports answer.
fn spawn(
    slapd: &Path,
    root: &Path,
    conf: &Path,
    log: &Path,
    port: u16,
    tls_port: Option<u16>,
    user: Option<(u32, u32)>,
) -> Result<Kept, String> {
    let (log_file, start_of_log) = open_log(log, WHAT)?;
    let mut cmd = Command::new(slapd);
    let mut urls = format!("ldap://127.0.0.1:{port}/");
    if let Some(p) = tls_port {
        urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
    }
    cmd.arg("-h")
        .arg(urls)
        .arg("-f")
        .arg(conf)
        .args(["-d", "0"]);
    server_command(&mut cmd, root, log_file, user, WHAT)?;
    let kept = Kept::spawn(cmd, format!("slapd-{port}"), WHAT)?;
    let answers = |p: u16| {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], p)),
            Duration::from_millis(200),
        )
        .is_ok()
    };
    if let Err(e) = kept.wait_ready(WHAT, log, start_of_log, READY_TIMEOUT, || {
        answers(port) && tls_port.is_none_or(answers)
    }) {
        kept.stop(libc::SIGKILL, Duration::from_secs(10));
        return Err(e);
    }
    Ok(kept)
}

fn make_certificates(root: &Path) -> Result<(), String> {
    let openssl = find_tool("openssl").map_err(|_| {
        "test slapd: openssl not found: install the Debian package openssl".to_string()
    })?;
    fs::write(
        root.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| format!("test slapd: write server.ext: {e}"))?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=dirsync test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("test slapd: run openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "test slapd: openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// A program on PATH, else in /usr/sbin or /usr/bin.
fn find_tool(name: &str) -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.push("/usr/bin".into());
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_exe(p))
        .ok_or_else(|| NOT_FOUND.replace("slapd not found", &format!("{name} not found")))
}

fn find_binaries() -> Result<(PathBuf, PathBuf), String> {
    Ok((find_tool("slapd")?, find_tool("slapadd")?))
}
