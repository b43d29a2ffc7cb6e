//! The WireGuard data plane (in progress).
pub mod engine;
pub mod packet;
pub mod peers;
