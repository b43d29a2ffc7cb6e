//! gatehouse's shared model, used by both `accessd` and `accessctl`.
//!
//! Layout:
//! - [`file`]: the config file: raw TOML schema, validation into [`Config`],
//!   and errors that name file, line, column and key.
//! - [`policy`]: which addresses and ports a user's groups may reach, and the
//!   addresses that are always refused whatever a group says.
//! - [`names`]: the naming rule for users, groups and devices.
//! - [`api`]: the admin API's request and response types.
//! - [`audit_kind`]: every kind of audit record, with its dotted name and a
//!   one-line summary for help and docs.
//! - [`wg_quick`]: rendering a device's wg-quick file.
//!
//! Pure: no sockets, no database, no clock beyond what callers pass in.

pub mod api;
pub mod audit_kind;
pub mod file;
pub mod names;
pub mod policy;
pub mod wg_quick;

pub use file::{Config, ConfigError};
