//! The integration test binary: real Postgres, real SQLite, the real CLI.

mod cli;
mod covata_fake;
mod csv_source;
mod daemon;
mod ldap_source;
mod primavera;
mod store;
mod support;
mod sync;
mod valuekeep;
