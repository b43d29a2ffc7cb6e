//! A filled audit log, for the review and verify tests and benchmarks: the
//! records a busy team makes, written through accessd's own store (so the
//! chain, the checkpoints and the review index are what accessd writes).

use std::net::IpAddr;

use accessd::store::Store;

/// Fills `store`'s audit log with `n` records spread evenly over `days`
/// days ending at `end_unix`, as a busy team would make them: per 100
/// records, 60 `vpn.flow`, 16 jump host sessions (start and end), 6 tunnels
/// up or down, 5 portal logins, 3 failed logins, 4 data plane denials, 2
/// refused channels, 2 changes, and a signed checkpoint every 1,000. For
/// the review and verify benchmarks (1 million records); `progress` is
/// called after each batch with the records written so far.
pub fn fill_audit_log(
    store: &Store,
    n: u64,
    end_unix: u64,
    days: u64,
    mut progress: impl FnMut(u64),
) {
    use std::time::{Duration, UNIX_EPOCH};

    use accessd::audit::event::{Actor, Kind, Source, event};

    const BATCH: u64 = 1_000;
    let span = days * 86_400;
    let start = end_unix - span;
    let mut written = 0;
    while written < n {
        let batch = BATCH.min(n - written);
        store
            .write_blocking(move |w| {
                for i in written..written + batch {
                    let at = UNIX_EPOCH + Duration::from_secs(start + i * span / n.max(1));
                    let user = format!("user{}", i % 50);
                    let device = format!("dev{}", i % 3);
                    let vpn_addr: IpAddr = format!("10.200.{}.{}", (i % 50) / 250, 2 + i % 50 % 250)
                        .parse()
                        .unwrap();
                    let client: std::net::SocketAddr =
                        format!("198.51.100.{}:{}", 1 + i % 200, 30_000 + i % 30_000)
                            .parse()
                            .unwrap();
                    let host = format!("10.0.{}.{}", 3 + i % 4, 1 + (i / 7) % 250);
                    let port = [22u16, 443, 5432, 5201, 8080][(i % 5) as usize];
                    let time = humantime::format_rfc3339_seconds(at).to_string();
                    let label = format!("{user}/{device}");
                    let e = match i % 100 {
                        0..60 => event(Kind::VpnFlow, Actor::User(user), Source::Addr(vpn_addr))
                            .on(format!("{host}:{port}"))
                            .detail(serde_json::json!({
                                "device": device, "dst": host, "dport": port, "proto": "tcp",
                                "packets_up": 10 + i % 1000, "packets_down": 20 + i % 2000,
                                "bytes_up": 1_000 + i % 100_000, "bytes_down": 5_000 + i % 1_000_000,
                                "first_seen": time, "last_seen": time,
                            })),
                        60..76 => event(
                            if i % 2 == 0 { Kind::SshSessionStart } else { Kind::SshSessionEnd },
                            Actor::User(user),
                            Source::Peer(client),
                        )
                        .on(format!("{host}:22"))
                        .detail(if i % 2 == 0 {
                            serde_json::json!({
                                "channel": i, "resolved": format!("{host}:22"),
                                "requested": format!("{host}:22"),
                                "key_fingerprint": "SHA256:uV5cI0c3zG8Ub6QGd9ux4KkPjyKGJ6b0wOQmmE3QnNk",
                            })
                        } else {
                            serde_json::json!({
                                "channel": i, "resolved": format!("{host}:22"),
                                "key_fingerprint": "SHA256:uV5cI0c3zG8Ub6QGd9ux4KkPjyKGJ6b0wOQmmE3QnNk",
                                "bytes_up": i % 10_000, "bytes_down": i % 100_000,
                                "duration_ms": i % 600_000, "reason": "client closed",
                            })
                        }),
                        76..82 => event(
                            if i % 2 == 0 { Kind::VpnConnect } else { Kind::VpnDisconnect },
                            Actor::User(user),
                            Source::Peer(client),
                        )
                        .on(label),
                        82..87 => event(Kind::PortalLoginOk, Actor::User(user), Source::Addr(client.ip()))
                            .detail(serde_json::json!({"method": "password"})),
                        87..90 => event(Kind::PortalLoginFail, Actor::Claimed(user), Source::Addr(client.ip()))
                            .detail(serde_json::json!({"reason": "wrong_password"})),
                        90..94 => event(Kind::VpnAclDeny, Actor::User(user), Source::Addr(vpn_addr))
                            .on(label)
                            .detail(serde_json::json!({"packets": i % 50, "reasons": {"not_in_groups": i % 50}, "samples": [format!("10.0.9.1:{port}")]})),
                        94..96 => event(Kind::SshForwardDeny, Actor::User(user), Source::Peer(client))
                            .on(format!("10.0.9.{}:5432", i % 250))
                            .detail(serde_json::json!({"reason": "not_allowed"})),
                        96..98 => event(Kind::DeviceCreate, Actor::User(user), Source::Addr(client.ip()))
                            .on(label),
                        _ => event(Kind::UserSetGroups, Actor::Admin { uid: Some(0) }, Source::AdminSocket { pid: Some(7) })
                            .on(user)
                            .detail(serde_json::json!({"groups": ["research"]})),
                    };
                    w.audit_at(e, at)?;
                    if (i + 1) % 1_000 == 0 {
                        w.audit_checkpoint(at)?;
                    }
                }
                Ok(())
            })
            .unwrap();
        written += batch;
        progress(written);
    }
}

/// Stops `gw`, fills its log with `n` records over `days` days ending now
/// (through its store, opened as accessd opens it), and starts it again;
/// how long the filling took.
pub fn fill_daemon(gw: &mut crate::Daemon, n: u64, days: u64) -> std::time::Duration {
    use std::sync::Arc;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use accessd::keys::secrets::SecretsKey;
    use accessd::store::StoreOptions;

    gw.stop();
    let started = Instant::now();
    let mut config = gatehouse_config::Config::load(&gw.config).unwrap();
    config.gateway.state_dir = gw.state_dir.clone();
    config.audit.mirror = gw.state_dir.join(gatehouse_config::file::AUDIT_MIRROR_FILE);
    let secrets = match &config.gateway.secrets_key_file {
        Some(file) => SecretsKey::load_file(file).unwrap(),
        None => SecretsKey::load_local(&gw.state_dir).unwrap().unwrap(),
    };
    let store =
        Store::open(&StoreOptions::from_config(&config, Arc::new(secrets)).unwrap()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    fill_audit_log(&store, n, now, days, |done| {
        if done % 100_000 == 0 {
            eprintln!("filled {done} of {n} records");
        }
    });
    drop(store);
    let took = started.elapsed();
    gw.spawn();
    took
}
