//! The integration test binary: real Postgres, real SQLite, the real CLI.

mod cli;
mod csv_source;
mod store;
mod support;
