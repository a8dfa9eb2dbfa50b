//! dirsync keeps SaaS user accounts in line with a source of truth (LDAP or CSV).
//!
//! Module map (see ARCHITECTURE.md for the invariants):
//! - [`model`]: source users, snapshots, normalisation. Pure.
//! - [`mapping`]: source user → target account (templates, roles, filters, content hash). Pure.
//! - [`plan`]: the diff and the safety policy. Pure.
//! - [`config`]: load (figment) and validate the configuration.
//! - [`secret`]: a string that never prints itself.
//! - [`source`]: reading a snapshot from the source of truth.
//! - [`store`]: the state store (Postgres, SQLite): accounts, runs, operations.
//! - [`connector`]: the connectors: what each vendor's accounts look like and how to change them.
//! - [`engine`]: applies a plan through a connector; the journal and crash reconciliation.
//! - [`run`]: one run from source to judged plans, recorded in the store.
//! - [`outcome`]: the outcome of a run as plain data (what reports, notifications, metrics show).
//! - [`report`]: text / Markdown / JSON rendering of plans and run history; exit codes.
//! - [`adopt`]: taking over existing remote accounts.
//! - [`drift`]: `dirsync drift` and `sync --refresh`: remote accounts vs what was recorded.
//! - [`schedule`]: cron expressions (crontab's meaning) and next run times.
//! - [`daemon`]: `dirsync run`: schedule, signals, systemd notifications, the HTTP listener.
//! - [`progress`]: counters of the long steps, rendered by the front.
//! - [`metrics`]: counters for `/metrics`. [`build_info`]: version, commit, build date.
//! - [`notify`]: `[[notify]]` run notifications (signed webhook, SMTP e-mail).
//! - [`saved_plan`]: the plan file of `plan --out` / `apply`, and one-user scoping.
//! - [`cli`]: commands, one file per family, and the `Session` each opens. [`telemetry`]:
//!   logging.
//!
//! Layers (ARCHITECTURE.md, "Layers"; checked by `tests/layers.rs`): core (model, secret,
//! mapping, plan, schedule, metrics, telemetry, progress) < io (source, store, connector) < settings
//! (config, outcome) < render (report, notify) < steps (engine, drift, adopt, saved_plan) < run
//! < front (cli, daemon). No module imports a higher layer.

pub mod adopt;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod drift;
pub mod engine;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outcome;
pub mod plan;
pub mod problems;
pub mod progress;
pub mod report;
pub mod run;
pub mod saved_plan;
pub mod schedule;
pub mod secret;
pub mod source;
pub mod store;
pub mod telemetry;
