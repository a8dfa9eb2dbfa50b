//! `dirsync adopt`: existing accounts of one target matched to source users and recorded as
//! owned.

use crate::config::Config;
use crate::run::{self, RunError};

use super::session::Session;
use super::{AdoptArgs, fail};

pub(super) async fn adopt(config: &Config, args: &AdoptArgs) -> u8 {
    let session = match Session::open(config, std::slice::from_ref(&args.target), true).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    // One name selects exactly that target (an unknown name fails the selection).
    let Some(target) = session.targets.first().copied() else {
        return fail(RunError::NoTargets);
    };
    let connector = match session.connector(target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let snapshot = match run::read_source(&config.source).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match crate::adopt::adopt(
        session.store(),
        connector,
        target,
        &snapshot,
        args.match_on,
        args.dry_run,
    )
    .await
    {
        Ok(result) => {
            out!("{}", crate::adopt::render(&result, args.format));
            0
        }
        Err(e) => fail(e),
    }
}
