//! Fuzzes the data plane's TUN entry point: `Engine::handle_tun_packet`
//! (what the kernel routes into the interface, towards a device) and the IP
//! header parser the policy relies on, `accessd::vpn::packet::parse`, with
//! the policy check on whatever it reads.
//!
//! The first input byte's low bit says whether the device has completed a
//! handshake first (then its packets are encrypted and sent, not dropped for
//! want of an endpoint).

#![no_main]

mod common;

use accessd::vpn::packet;
use common::{Fixture, MAX_PACKET, with_established, with_idle};
use gatehouse_config::policy::AccessSet;
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// The device's access set, as the engine holds it.
    static ACCESS: AccessSet = Fixture::policy().access_for(&["research", "app-admins"]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rest = &rest[..rest.len().min(MAX_PACKET)];
    if let Ok(flow) = packet::parse(rest) {
        let _ = ACCESS.with(|access| access.check(flow.dst, flow.transport));
    }
    let send = |fx: &mut common::Fixture| {
        let mut buf = std::mem::take(&mut fx.buf);
        fx.engine
            .handle_tun_packet(rest, &mut buf, &mut common::NoopSink);
        fx.buf = buf;
    };
    if mode & 1 == 1 {
        with_established(false, send);
    } else {
        with_idle(false, send);
    }
});
