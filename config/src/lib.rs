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
//! - [`audit_facets`]: what a record says about who reached which host
//!   (user, via, outcome, host, port, bytes), read once for every review.
//! - [`audit_csv`]: records as CSV, for the CLI's export and the portal.
//! - [`wg_quick`]: rendering a device's wg-quick file.
//! - [`known_hosts`]: the host patterns of the SSH host CA's
//!   `@cert-authority` line.
//!
//! Pure: no sockets, no database, no clock beyond what callers pass in.

pub mod api;
pub mod audit_csv;
pub mod audit_facets;
pub mod audit_kind;
pub mod file;
pub mod known_hosts;
pub mod names;
pub mod policy;
pub mod wg_quick;

pub use file::{Config, ConfigError};
