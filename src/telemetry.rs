//! Logging: `tracing` events with fields on stderr, human text or JSON lines.

use std::io::IsTerminal;

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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false);
    // `try_init` fails only if a subscriber is already set (tests): keep the existing one.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
