//! `Session`: what one command works with — the configuration, its selected targets, their
//! connectors and the state store — opened once, in the order a command reports errors.

use crate::config::{Config, TargetConfig};
use std::sync::Arc;

use crate::connector::{ConnectError, Connector};
use crate::run::{self, Connectors, RunError};
use crate::store::{self, Store};

use super::fail;

/// The targets, connectors and store of one command.
pub(super) struct Session<'a> {
    pub config: &'a Config,
    /// The selected targets, in config order.
    pub targets: Vec<&'a TargetConfig>,
    /// Built by [`Session::connect`] (or by [`Session::open`] with `connect`); empty otherwise.
    pub connectors: Connectors,
    store: Box<dyn Store>,
}

impl<'a> Session<'a> {
    /// Selects the targets named (every enabled target when none is), builds their connectors
    /// when `connect` (before the store is opened: a missing credential is reported first),
    /// then opens the store. Errors are printed; the exit code is returned.
    pub async fn open(config: &'a Config, names: &[String], connect: bool) -> Result<Self, u8> {
        let targets = run::select_targets(config, names).map_err(fail)?;
        let mut connectors = Connectors::new();
        if connect {
            connect_all(&targets, &mut connectors)?;
        }
        let store = open_store(config, config.state.auto_migrate)
            .await
            .map_err(fail)?;
        Ok(Session {
            config,
            targets,
            connectors,
            store,
        })
    }

    /// Builds the connectors of the selected targets (when a command connects only after
    /// other checks, as `apply` does).
    pub fn connect(&mut self) -> Result<(), u8> {
        connect_all(&self.targets, &mut self.connectors)
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The connector of a selected target (built by `connect`).
    pub fn connector(&self, t: &TargetConfig) -> Result<&dyn Connector, u8> {
        self.connectors
            .get(&t.name)
            .map(|c| c.as_ref())
            .ok_or_else(|| fail(RunError::NoConnector(t.name.clone())))
    }
}

/// The store alone (`runs`, `migrate`): no target is selected.
pub(super) async fn store_only(config: &Config, migrate: bool) -> Result<Box<dyn Store>, u8> {
    open_store(config, migrate).await.map_err(fail)
}

fn connect_all(targets: &[&TargetConfig], connectors: &mut Connectors) -> Result<(), u8> {
    let built: Connectors = crate::connector::connect_all(targets.iter().copied()).map_err(fail)?;
    connectors.extend(built);
    Ok(())
}

/// Builds one target's connector: the only place the command line does.
pub(super) fn connect(t: &TargetConfig) -> Result<Arc<dyn Connector>, ConnectError> {
    crate::connector::connect(t)
}

/// Opens the configured store and marks the runs left `running` by a process that is gone as
/// `interrupted` (every command that opens the store does, so `dirsync runs` never shows a dead
/// run as running).
pub(super) async fn open_store(
    config: &Config,
    migrate: bool,
) -> Result<Box<dyn Store>, store::StoreError> {
    let store = store::open(&config.state.location, migrate).await?;
    store::interrupt_abandoned_runs(store.as_ref()).await;
    Ok(store)
}
