//! Sources of truth: each returns a complete [`crate::model::Snapshot`] or an error, never a
//! partial one.

pub mod csv;
pub mod ldap;
