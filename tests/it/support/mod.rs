//! The integration tests' harness: real servers started per test process, fakes and helpers.

pub mod covata;
pub mod pg;
pub mod slapd;
pub mod primavera;
pub mod valuekeep;
