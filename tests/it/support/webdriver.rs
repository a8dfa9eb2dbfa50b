//! A real headless browser for the tests: Debian's `chromium`, driven through `chromedriver`
//! (started as a child server, see `child.rs`) over the W3C WebDriver HTTP protocol, with plain
//! blocking HTTP/1.1 requests carrying JSON (no client crate: a handful of calls).
//!
//! The browser runs with a fresh profile directory, no sandbox (the tests may run as root), and
//! every background network feature off (the test network is closed); the browser console is
//! recorded (`goog:loggingPrefs`) so a test can assert that a page logged no error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::child::{self, Kept};

/// What to install when the browser or its driver is missing.
const INSTALL_HINT: &str = "install Debian's chromium and chromium-driver \
(`apt-get install chromium chromium-driver`; .ci/run installs them)";

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The first of `names` found as an executable on `PATH` (or in `/usr/bin`).
fn find_exe(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .collect();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| child::is_exe(p))
}

/// A running `chromedriver` and one browser session of it. Dropping it ends the session (the
/// browser exits) and stops the driver.
pub struct Browser {
    driver: Kept,
    port: u16,
    session: String,
    dir: PathBuf,
    log: PathBuf,
}

impl Browser {
    /// Starts `chromedriver --port=P` and a headless chromium session. Panics, saying what to
    /// install, when either program is missing.
    pub fn start() -> Browser {
        let chromium = find_exe(&["chromium", "chromium-browser"])
            .unwrap_or_else(|| panic!("no chromium browser found: {INSTALL_HINT}"));
        let driver = find_exe(&["chromedriver"])
            .unwrap_or_else(|| panic!("no chromedriver found: {INSTALL_HINT}"));
        let dir = child::temp_root("dirsync-browser-", "headless chromium").unwrap();
        let log = dir.join("chromedriver.log");
        let (file, start_of_log) = child::open_log(&log, "chromedriver").unwrap();
        let port = child::free_port().unwrap();
        let mut cmd = Command::new(&driver);
        cmd.arg(format!("--port={port}"));
        child::server_command(&mut cmd, &dir, file, None, "chromedriver").unwrap();
        let kept = Kept::spawn(cmd, format!("chromedriver-{port}"), "chromedriver").unwrap();
        if let Err(e) = kept.wait_ready(
            "chromedriver",
            &log,
            start_of_log,
            Duration::from_secs(60),
            || {
                matches!(request(port, "GET", "/status", None),
                    Ok((200, v)) if v["value"]["ready"] == json!(true))
            },
        ) {
            kept.stop(libc::SIGKILL, Duration::from_secs(5));
            panic!("{e}");
        }
        let profile = dir.join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = match request(port, "POST", "/session", Some(&caps)) {
            Ok((200, v)) => v["value"]["sessionId"].as_str().map(str::to_string),
            Ok((status, v)) => {
                kept.stop(libc::SIGTERM, Duration::from_secs(10));
                panic!(
                    "chromedriver refused a session ({status}): {v}\n{}",
                    child::tail(&log, start_of_log)
                );
            }
            Err(e) => {
                kept.stop(libc::SIGTERM, Duration::from_secs(10));
                panic!(
                    "chromedriver: new session: {e}\n{}",
                    child::tail(&log, start_of_log)
                );
            }
        };
        let Some(session) = session else {
            kept.stop(libc::SIGTERM, Duration::from_secs(10));
            panic!("chromedriver: a session without an id");
        };
        Browser {
            driver: kept,
            port,
            session,
            dir,
            log,
        }
    }

    /// A command of this session (`path` after `/session/{id}`); panics on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        match request(self.port, method, &full, body) {
            Ok((200, v)) => v["value"].clone(),
            Ok((status, v)) => panic!("WebDriver {method} {path}: {status}: {v}"),
            Err(e) => panic!(
                "WebDriver {method} {path}: {e}\n{}",
                child::tail(&self.log, 0)
            ),
        }
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn title(&self) -> String {
        self.call("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The rendered text of every element `css` selects, in document order.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let found = self.call(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let id = e[ELEMENT_KEY].as_str().unwrap_or_default();
                self.call("GET", &format!("/element/{id}/text"), None)
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// The rendered text of the one element `css` selects (panics when there is none).
    pub fn text(&self, css: &str) -> String {
        self.texts(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css:?} on the page"))
    }

    /// The browser console entries logged since the last call: (level, message).
    pub fn console(&self) -> Vec<(String, String)> {
        self.call("POST", "/se/log", Some(&json!({"type": "browser"})))
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("?").to_string(),
                    e["message"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        self.driver.stop(libc::SIGTERM, Duration::from_secs(10));
        // The driver's log is kept when the test fails; the browser profile never is.
        if std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.dir.join("profile"));
            eprintln!("chromedriver log: {}", self.log.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One HTTP/1.1 request to the driver on 127.0.0.1 (connection closed after it): the status and
/// the JSON body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    // The driver may keep the connection open: read the head, then the body's length.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the connection closed before the answer's head ended".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Until the last (empty) chunk has arrived.
        while !payload.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            payload.extend_from_slice(&buf[..n]);
        }
        payload = dechunk(&payload)?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while payload.len() < len {
            let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the connection closed before the body ended".into());
            }
            payload.extend_from_slice(&buf[..n]);
        }
        payload.truncate(len);
    } else {
        s.read_to_end(&mut payload)
            .map_err(|e| format!("read: {e}"))?;
    }
    let value = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload)
            .map_err(|e| format!("a body that is not JSON ({e}): {head}"))?
    };
    Ok((status, value))
}

/// A chunked body's data.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without a size line")?;
        let size_text = String::from_utf8_lossy(&b[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("a bad chunk size {size_text:?}"))?;
        b = &b[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("a truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
