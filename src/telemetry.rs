//! Logging: `tracing` events with fields on stderr, human text or JSON lines; and the one
//! status line a terminal may show under them (progress), which a log line never mixes with.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `DIRSYNC_LOG` (an `EnvFilter` directive such as
/// `dirsync=debug`) overrides the level chosen by `-v`.
pub fn init(format: LogFormat, verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // Dependencies stay at warn unless asked for: their debug output can echo request details.
    let default = format!("warn,dirsync={level}");
    let filter = EnvFilter::try_from_env("DIRSYNC_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false);
    // `try_init` fails only if a subscriber is already set (tests): keep the existing one.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether a status line (see [`status_line`]) is on the terminal now, the cursor at its end.
/// Held while writing to stderr, so that a log line and the status line never interleave.
static STATUS_LINE: Mutex<bool> = Mutex::new(false);

/// Erases the line the cursor is on (carriage return, ANSI "erase line").
const ERASE_LINE: &[u8] = b"\r\x1b[2K";

/// Stderr for log events: a status line on the terminal is erased first (the next
/// [`status_line`] draws it again under the log line).
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut shown = STATUS_LINE.lock().unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        if *shown {
            err.write_all(ERASE_LINE)?;
            *shown = false;
        }
        err.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Shows `text` as the terminal's status line on stderr, replacing the one shown (no newline:
/// the next log line or status line erases it); `None` erases it. `keep`: end it with a
/// newline, so that it stays above what follows (a finished task's last figures). For
/// terminals only: the caller checks that stderr is one.
pub fn status_line(text: Option<&str>, keep: bool) {
    let mut shown = STATUS_LINE.lock().unwrap_or_else(|p| p.into_inner());
    let mut err = std::io::stderr().lock();
    // A status line that cannot be written is not worth an error: the run goes on.
    let _ = err.write_all(ERASE_LINE);
    *shown = false;
    if let Some(t) = text {
        let _ = err.write_all(t.as_bytes());
        if keep {
            let _ = err.write_all(b"\n");
        } else {
            *shown = true;
        }
    }
    let _ = err.flush();
}
