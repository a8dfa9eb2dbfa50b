//! DEMO ONLY: local stand-ins of Covata, Primavera and Valuekeep on loopback, for trying
//! dirsync end to end with `config/demo.toml` (README.md, "Try it end to end"). They are the
//! integration tests' fake servers (included from `tests/it/support/`), not the vendors' APIs:
//! users live in memory and are gone when this stops.
//!
//! ```sh
//! cargo run --example demo-vendors                       # ports 18461, 18462, 18463
//! cargo run --example demo-vendors -- --covata-port 9001 --primavera-port 9002 --valuekeep-port 9003
//! ```
//!
//! Ctrl-C stops it (printing what each stand-in holds).

// The fakes carry helpers only the tests use.
#![allow(dead_code)]

#[path = "../tests/it/support/covata.rs"]
mod covata;
#[path = "../tests/it/support/demo.rs"]
mod demo;
#[path = "../tests/it/support/fake/mod.rs"]
mod fake;
#[path = "../tests/it/support/killable.rs"]
mod killable;
#[path = "../tests/it/support/primavera.rs"]
mod primavera;
#[path = "../tests/it/support/valuekeep.rs"]
mod valuekeep;

use std::process::ExitCode;

const USAGE: &str =
    "usage: demo-vendors [--covata-port N] [--primavera-port N] [--valuekeep-port N]
(defaults 18461, 18462, 18463: the ports config/demo.toml names)";

fn ports() -> Result<[u16; 3], String> {
    let mut ports = [
        demo::COVATA_PORT,
        demo::PRIMAVERA_PORT,
        demo::VALUEKEEP_PORT,
    ];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--covata-port" => 0,
            "--primavera-port" => 1,
            "--valuekeep-port" => 2,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a port number"))?;
        ports[slot] = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a port number"))?;
    }
    Ok(ports)
}

#[tokio::main]
async fn main() -> ExitCode {
    let [c, p, v] = match ports() {
        Ok(p) => p,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo-vendors: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let vendors = demo::DemoVendors::start(c, p, v);
    println!("dirsync demo vendors (stand-ins for trying config/demo.toml; not the real APIs):");
    println!("  covata     {}", vendors.covata.base_url());
    println!("  primavera  {}", vendors.primavera.base_url());
    println!(
        "  valuekeep  {} (token {})",
        vendors.valuekeep.base_url(),
        vendors.valuekeep.token_url()
    );
    println!("Ctrl-C stops them.");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("demo-vendors: waiting for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    println!("\nusers held when stopped:");
    for u in vendors.covata.users() {
        println!(
            "  covata     {} roles {:?}{}",
            u.email,
            u.roles,
            if u.enabled { "" } else { " (disabled)" }
        );
    }
    for u in vendors.primavera.users() {
        println!(
            "  primavera  {} roles {:?}{}",
            u.login_id,
            u.roles,
            if u.disabled { " (disabled)" } else { "" }
        );
    }
    for u in vendors.valuekeep.users() {
        println!(
            "  valuekeep  {} roles {:?}{}",
            u.user_key,
            u.roles,
            if u.is_active { "" } else { " (inactive)" }
        );
    }
    ExitCode::SUCCESS
}
