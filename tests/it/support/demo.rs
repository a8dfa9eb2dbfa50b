//! The demo's vendors: the fakes of Covata, Primavera and Valuekeep on fixed loopback ports,
//! as `cargo run --example demo-vendors` serves them for `config/demo.toml` (the example
//! includes this file and the fakes with `#[path]`), and as `tests/it/demo.rs` starts them
//! (on free ports) to run the README's walk-through.

use super::covata::FakeCovata;
use super::fake::Listener;
use super::primavera::FakePrimavera;
use super::valuekeep::FakeValuekeep;

/// The ports `config/demo.toml` names.
pub const COVATA_PORT: u16 = 18461;
pub const PRIMAVERA_PORT: u16 = 18462;
pub const VALUEKEEP_PORT: u16 = 18463;

/// The three stand-ins, served until dropped.
pub struct DemoVendors {
    pub covata: FakeCovata,
    pub primavera: FakePrimavera,
    pub valuekeep: FakeValuekeep,
}

impl DemoVendors {
    /// Starts the three on `127.0.0.1` at these ports (0: a free port). The Valuekeep
    /// stand-in has no rate limit (the demo's config paces it anyway).
    pub fn start(covata: u16, primavera: u16, valuekeep: u16) -> DemoVendors {
        let vendors = DemoVendors {
            covata: FakeCovata::start_on(Listener::bind_port("Covata", covata)),
            primavera: FakePrimavera::start_on(Listener::bind_port("Primavera", primavera)),
            valuekeep: FakeValuekeep::start_on(Listener::bind_port("Valuekeep", valuekeep)),
        };
        vendors.valuekeep.set_rate_limit(None);
        vendors
    }

    /// `DIRSYNC_*` variables pointing `config/demo.toml`'s targets at these servers (the
    /// test's free ports instead of the fixed ones).
    pub fn config_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "DIRSYNC_TARGET__DEMO_COVATA__BASE_URL".into(),
                self.covata.base_url(),
            ),
            (
                "DIRSYNC_TARGET__DEMO_PRIMAVERA__BASE_URL".into(),
                self.primavera.base_url(),
            ),
            (
                "DIRSYNC_TARGET__DEMO_VALUEKEEP__BASE_URL".into(),
                self.valuekeep.base_url(),
            ),
            (
                "DIRSYNC_TARGET__DEMO_VALUEKEEP__TOKEN_URL".into(),
                self.valuekeep.token_url(),
            ),
        ]
    }
}
