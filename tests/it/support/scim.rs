//! The SCIM servers of the tests: the real `scim2-server` (a Python package serving RFC 7643
//! Users and Groups from memory, started per test as a child process on a free port) and
//! dirsync's own strict fake ([`super::scim_fake`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::child::{Kept, free_port, is_exe, open_log, server_command, tail, temp_root};

const WHAT: &str = "test scim2-server";

/// The bearer token the test servers accept.
pub const TOKEN: &str = "scim-test-token";

const NOT_FOUND: &str = "scim2-server not found: install it in a virtual environment \
     (python3 -m venv /opt/dirsync-venv && /opt/dirsync-venv/bin/pip install scim2-server; \
     .ci/run does this), or point DIRSYNC_SCIM2_SERVER at its command";

/// The `scim2-server` command: `$DIRSYNC_SCIM2_SERVER`, else the venv `.ci/run` installs.
fn find_command() -> Result<PathBuf, String> {
    let path = std::env::var_os("DIRSYNC_SCIM2_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/dirsync-venv/bin/scim2-server"));
    if is_exe(&path) {
        Ok(path)
    } else {
        Err(format!("{NOT_FOUND} (looked for {})", path.display()))
    }
}

/// A running `scim2-server` (killed when dropped, and with the test process).
pub struct Scim2Server {
    port: u16,
    root: PathBuf,
    log: PathBuf,
    kept: Kept,
}

impl Scim2Server {
    /// Starts a server with bearer-token auth ([`TOKEN`]) and waits until it answers.
    pub fn start() -> Scim2Server {
        match Self::try_start() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn try_start() -> Result<Scim2Server, String> {
        let command = find_command()?;
        let root = temp_root("dirsync-scim2-", WHAT)?;
        let log = root.join("server.log");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(|e| format!("{WHAT}: find a free port: {e}"))?;
            let (file, start) = open_log(&log, WHAT)?;
            let mut cmd = Command::new(&command);
            cmd.arg("--port")
                .arg(port.to_string())
                .arg("--bearer-token")
                .arg(TOKEN);
            server_command(&mut cmd, &root, file, None, WHAT)?;
            let kept = Kept::spawn(cmd, format!("scim2-server-{port}"), WHAT)?;
            let server = Scim2Server {
                port,
                root: root.clone(),
                log: log.clone(),
                kept,
            };
            let ready = server
                .kept
                .wait_ready(WHAT, &log, start, Duration::from_secs(60), || {
                    matches!(
                        server.request("GET", "/ServiceProviderConfig", None),
                        Ok((200, _))
                    )
                });
            match ready {
                Ok(()) => return Ok(server),
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The SCIM base URL (`http://127.0.0.1:PORT/v2`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v2", self.port)
    }

    /// One request (`path` under the base, with the token): the status and the JSON body
    /// (`Null` when empty).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} /v2{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Type: application/scim+json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line: {text}"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let json = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?
        };
        Ok((status, json))
    }

    /// [`Self::request`] that must answer 2xx.
    #[track_caller]
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        match self.request(method, path, body) {
            Ok((s, v)) if (200..300).contains(&s) => v,
            other => panic!("{method} {path}: {other:?}\n{}", self.log_tail()),
        }
    }

    /// Every resource of `/Users` or `/Groups`.
    pub fn all(&self, kind: &str) -> Vec<Value> {
        let v = self.call("GET", &format!("/{kind}?count=10000"), None);
        v["Resources"].as_array().cloned().unwrap_or_default()
    }

    /// The users, by userName.
    pub fn users(&self) -> std::collections::BTreeMap<String, Value> {
        self.all("Users")
            .into_iter()
            .map(|u| (u["userName"].as_str().unwrap_or("").to_string(), u))
            .collect()
    }

    /// The member user ids of the group `name` (empty when there is no such group).
    pub fn group_members(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .all("Groups")
            .into_iter()
            .filter(|g| g["displayName"] == name)
            .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m["value"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// How many users the server holds.
    pub fn user_count(&self) -> usize {
        let v = self.call("GET", "/Users?count=0", None);
        v["totalResults"].as_u64().unwrap_or(0) as usize
    }

    /// Every resource's `meta.version`, by id: equal before and after a run that wrote nothing.
    pub fn versions(&self) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for kind in ["Users", "Groups"] {
            for r in self.all(kind) {
                out.insert(
                    r["id"].as_str().unwrap_or("").to_string(),
                    r["meta"]["version"].as_str().unwrap_or("").to_string(),
                );
            }
        }
        out
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 0)
    }
}

impl Drop for Scim2Server {
    fn drop(&mut self) {
        self.kept.stop(libc::SIGKILL, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
