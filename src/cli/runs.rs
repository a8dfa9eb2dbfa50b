//! `dirsync runs` (the run history, `runs show ID`), `dirsync prune` (run retention) and
//! `dirsync migrate`: the commands that need only the state store.

use crate::config::{self, Config};
use crate::report;
use crate::store;

use super::session;
use super::{PruneArgs, RunsArgs, RunsCommand, fail};

pub(super) async fn migrate(config: &Config) -> u8 {
    match session::store_only(config, true).await {
        Ok(s) => {
            outln!("migrations applied ({})", config.state.location.describe());
            drop(s);
            0
        }
        Err(code) => code,
    }
}

pub(super) async fn runs(config: &Config, args: RunsArgs) -> u8 {
    let store = match session::store_only(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match args.command {
        None => match store.list_runs(args.limit).await {
            Ok(list) => {
                out!(
                    "{}",
                    report::render_runs(&config.state.location.describe(), &list, args.format)
                );
                0
            }
            Err(e) => fail(e),
        },
        Some(RunsCommand::Show { id, format }) => match store.get_run(id).await {
            Ok(Some(r)) => match store.run_operations(id).await {
                Ok(ops) => {
                    out!("{}", report::render_run(&r, &ops, format));
                    0
                }
                Err(e) => fail(e),
            },
            Ok(None) => fail(format!("no run with id {id} (see `dirsync runs`)")),
            Err(e) => fail(e),
        },
    }
}

pub(super) async fn prune(config: &Config, args: &PruneArgs) -> u8 {
    let keep = match args.keep.as_deref() {
        None => config.state.keep_runs,
        Some(v) => match config::parse_keep_runs(v) {
            Ok(d) => d,
            Err(e) => return fail(format!("--keep: {e}")),
        },
    };
    let store = match session::store_only(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let before = store::prune_before(chrono::Utc::now(), keep);
    match store.prune_runs(before).await {
        Ok(pruned) => {
            outln!(
                "pruned {} runs and {} journal rows finished before {}",
                pruned.runs,
                pruned.operations,
                before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            0
        }
        Err(e) => fail(e),
    }
}
