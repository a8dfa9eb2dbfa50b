//! The integration tests' harness: real servers started per test process, fakes and helpers.

pub mod child;
pub mod cmd;
pub mod covata;
pub mod daemon;
pub mod demo;
pub mod env;
pub mod fake;
pub mod faultrun;
pub mod killable;
pub mod ldap_fixture;
pub mod pg;
pub mod primavera;
pub mod scim;
pub mod scim_fake;
pub mod slapd;
pub mod smtp;
pub mod valuekeep;
pub mod webdriver;
