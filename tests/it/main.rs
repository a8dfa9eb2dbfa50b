//! The integration test binary: real Postgres, real SQLite, the real CLI.

mod cli;
mod covata_fake;
mod csv_source;
mod daemon;
mod drift;
mod faults;
mod faults_state;
mod faults_target;
mod field_config;
mod field_engine;
mod field_http;
mod field_service;
mod hostile;
mod ldap_hostile;
mod ldap_prefilter;
mod ldap_source;
mod monitoring;
mod notify;
mod primavera;
mod quarantine;
mod quarantine_held;
mod saved_plan;
mod store;
mod support;
mod sync;
mod valuekeep;
