//! `dirsync runs` (the run history, `runs show ID`) and `dirsync migrate`: the commands that
//! need only the state store.

use crate::config::Config;
use crate::report;

use super::session;
use super::{RunsArgs, RunsCommand, fail};

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
