//! Fuzzes the data plane's network entry point, `Engine::handle_datagram`:
//! every UDP datagram anyone on the internet may send to `vpn.listen`.
//!
//! The first input byte picks how the rest is fed:
//! - raw, to an engine whose peer has no session (MAC checks, unknown
//!   indexes, malformed messages);
//! - raw, after a real handshake (forged receiver indexes now find a live
//!   session: decryption failures, replays, cookie replies);
//! - encrypted by the device's real session, so it reaches the per-packet
//!   policy as an authentic inner packet (anti-spoofing, IP parsing, ports).
//!
//! Bit 7 of that byte puts the client behind an IPv6 endpoint. Fixtures are
//! reused across inputs (see `common`); a crash that needs earlier inputs
//! reproduces by re-running the corpus directory.

#![no_main]

mod common;

use common::{MAX_PACKET, with_established, with_idle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rest = &rest[..rest.len().min(MAX_PACKET)];
    let v6 = mode & 0x80 != 0;
    match mode % 3 {
        0 => with_idle(v6, |fx| fx.datagram(rest)),
        1 => with_established(v6, |fx| fx.datagram(rest)),
        _ => with_established(v6, |fx| {
            fx.encrypted(rest);
            fx.tick();
        }),
    }
});
