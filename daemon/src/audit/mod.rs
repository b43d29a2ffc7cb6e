//! The tamper-evident audit log.
//!
//! Owns the rules of the hash chain and the files beside the database:
//! - [`chain`]: canonical encoding, record hashes (HMAC-SHA256 under the
//!   audit chain key from the keyed chain's start), and `verify` (pure);
//! - [`checkpoint`]: signed checkpoints of the chain, and when one is due;
//! - [`mirror`]: the JSON-lines mirror for log shippers and the head file;
//! - [`event`]: the vocabulary — every kind, actor and source — and the
//!   one builder of events;
//! - [`detail`]: typed details (`.with(&Detail { .. })`), their fields named
//!   once and parsed back by the tests.
//!
//! Does not own storage: records live in the store's `audit_log` table and
//! are appended only through `store::Writer::audit`, inside the same SQLite
//! transaction as the action they record, so both commit together or not at
//! all. The store also reconciles the mirror and head file with the database
//! on start-up. Records are immutable: nothing offers to update or delete one.
//!
//! Event kinds are dotted (`user.add`, `device.create`, `ssh.session.end`, ...)
//! and all named in [`event`]. A record never holds a secret.

pub mod chain;
pub mod checkpoint;
pub mod detail;
pub mod event;
pub mod mirror;

pub use chain::{GENESIS_HASH, Head, verify};
