//! [`WgClient`]: a stock WireGuard client, as a team member runs it:
//! Debian's wireguard-go and `wg`, configured from the wg-quick file that
//! `accessctl device config` wrote, applied the way `wg-quick up` applies it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{COMMAND_LIMIT, Host, Topology, iface_name, next_id, uapi_socket};
use crate::{output_within, stderr, tail};

/// A stock WireGuard client in one of the client namespaces: wireguard-go
/// (in the foreground, so drop can stop it) configured from a wg-quick file
/// the way `wg-quick up` does it: `wg-quick strip FILE` → `wg setconf`, then
/// `ip address add` each `Address`, `ip link set mtu <MTU> up`, and `ip route
/// add <cidr> dev <iface>` for each allowed IP. No hand edits.
pub struct WgClient<'t> {
    topo: &'t Topology,
    host: Host,
    iface: String,
    pid: u32,
    address: String,
    gateway_key: String,
}

impl<'t> WgClient<'t> {
    /// Brings a client up in [`Host::Client`] from the wg-quick file `conf`.
    /// wg-quick wants the file named `<interface-like name>.conf` (at most 15
    /// characters before `.conf`), e.g. `alice-laptop.conf`.
    pub fn up(topo: &'t Topology, conf: &Path) -> Self {
        Self::up_in(topo, Host::Client, conf)
    }

    /// Like [`WgClient::up`], in `host` (a client namespace).
    pub fn up_in(topo: &'t Topology, host: Host, conf: &Path) -> Self {
        let text = std::fs::read_to_string(conf)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", conf.display()));
        let quick = WgQuick::parse(&text);
        let iface = iface_name("ghc", &format!("{}-{}", std::process::id(), next_id()));
        let pid = topo.spawn(
            host,
            &iface,
            &[
                "env",
                "WG_PROCESS_FOREGROUND=1",
                "wireguard-go",
                "-f",
                &iface,
            ],
        );
        let client = WgClient {
            topo,
            host,
            address: quick
                .addresses
                .first()
                .map(|a| a.split('/').next().unwrap_or(a).to_owned())
                .unwrap_or_default(),
            gateway_key: quick.peer_keys.first().cloned().unwrap_or_default(),
            iface,
            pid,
        };
        client.wait_for_uapi();

        let mut strip = Command::new("wg-quick");
        strip.arg("strip").arg(conf);
        let stripped = output_within(strip, COMMAND_LIMIT);
        assert!(
            stripped.status.success(),
            "wg-quick strip {} failed: {}",
            conf.display(),
            stderr(&stripped)
        );
        let wg_conf = topo.dir().join(format!("{}.wg", client.iface));
        std::fs::write(&wg_conf, &stripped.stdout).unwrap();
        let ifc = client.iface.as_str();
        topo.exec_ok(host, &["wg", "setconf", ifc, wg_conf.to_str().unwrap()]);
        for address in &quick.addresses {
            topo.exec_ok(host, &["ip", "address", "add", address, "dev", ifc]);
        }
        let mtu = quick.mtu.unwrap_or(1420).to_string();
        topo.exec_ok(host, &["ip", "link", "set", "mtu", &mtu, "up", "dev", ifc]);
        let mut routes = client.allowed_ips();
        // As wg-quick does: most specific first.
        routes.sort_by_key(|cidr| std::cmp::Reverse(prefix_len(cidr)));
        for cidr in routes {
            topo.exec_ok(host, &["ip", "route", "add", &cidr, "dev", ifc]);
        }
        client
    }

    /// The WireGuard interface (and UAPI socket) name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The namespace it runs in.
    pub fn host(&self) -> Host {
        self.host
    }

    /// The first `Address` of the config, without its prefix length.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// This client's public key (`wg show <iface> public-key`).
    pub fn public_key(&self) -> String {
        self.wg(&["public-key"]).trim().to_owned()
    }

    /// The UDP port wireguard-go picked (`wg show <iface> listen-port`).
    pub fn listen_port(&self) -> u16 {
        self.wg(&["listen-port"]).trim().parse().unwrap()
    }

    /// The gateway peer's allowed IPs as the client has them now.
    pub fn allowed_ips(&self) -> Vec<String> {
        self.wg(&["allowed-ips"])
            .lines()
            .flat_map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|c| c != "(none)")
            .collect()
    }

    /// What a user editing their config would do: add `cidr` to the gateway
    /// peer's AllowedIPs (`wg set ... allowed-ips <old list>,<cidr>`) and route
    /// it into the tunnel.
    pub fn add_route(&self, cidr: &str) {
        let mut allowed = self.allowed_ips();
        allowed.push(cidr.to_owned());
        let list = allowed.join(",");
        self.wg_set(&["peer", &self.gateway_key, "allowed-ips", &list]);
        let now = self.allowed_ips();
        assert!(
            now.iter().any(|c| c == cidr),
            "wg did not take {cidr} (write it the way wg prints it): {now:?}"
        );
        self.topo
            .exec_ok(self.host, &["ip", "route", "add", cidr, "dev", &self.iface]);
    }

    /// Adds another address to the tunnel interface (to send spoofed packets).
    pub fn add_address(&self, cidr: &str) {
        self.topo.exec_ok(
            self.host,
            &["ip", "address", "add", cidr, "dev", &self.iface],
        );
    }

    /// Unix time of the latest handshake with the gateway, if any.
    pub fn latest_handshake(&self) -> Option<u64> {
        self.wg(&["latest-handshakes"])
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.parse().ok())
            .filter(|&t| t > 0)
    }

    /// Bytes (received, sent) through the tunnel so far.
    pub fn transfer(&self) -> (u64, u64) {
        let text = self.wg(&["transfer"]);
        let mut fields = text
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0));
        (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
    }

    /// HTTP GET from this client's namespace, bounded by `timeout`.
    pub fn fetch(&self, url: &str, timeout: Duration) -> Result<String, String> {
        self.topo.http_get(self.host, url, timeout, None)
    }

    /// HTTP GET with the source address bound to `source`.
    pub fn fetch_from(&self, source: &str, url: &str, timeout: Duration) -> Result<String, String> {
        self.topo.http_get(self.host, url, timeout, Some(source))
    }

    /// Retries [`WgClient::fetch`] until it succeeds or `within` has passed
    /// (the first packet triggers the handshake); Err is the last error.
    pub fn wait_fetch(&self, url: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            // Each attempt gets 2 s (a handshake round trip included), so the
            // last one may end up to 2 s after `within`.
            match self.fetch(url, Duration::from_secs(2)) {
                Ok(body) => return Ok(body),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("{e} (still failing after {within:?})"));
                }
                Err(_) => {
                    if let Some(status) = self.topo.exited(self.pid) {
                        return Err(format!("wireguard-go exited ({status}):\n{}", self.log()));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Pings `dst` from this client (see [`Topology::ping`]).
    pub fn ping(&self, dst: &str, count: u32, timeout: Duration, source: Option<&str>) -> u32 {
        self.topo.ping(self.host, dst, count, timeout, source)
    }

    /// `wg show <iface>`: the client's view of its tunnel, for failure messages.
    pub fn show(&self) -> String {
        self.wg(&[])
    }

    /// wireguard-go's output (the last 40 lines), for failure messages.
    pub fn log(&self) -> String {
        tail(&self.topo.process_log(&self.iface), 40)
    }

    fn wg(&self, what: &[&str]) -> String {
        let mut argv = vec!["wg", "show", self.iface.as_str()];
        argv.extend_from_slice(what);
        self.topo.exec_ok(self.host, &argv)
    }

    fn wg_set(&self, what: &[&str]) {
        let mut argv = vec!["wg", "set", self.iface.as_str()];
        argv.extend_from_slice(what);
        self.topo.exec_ok(self.host, &argv);
    }

    fn wait_for_uapi(&self) {
        let socket = uapi_socket(&self.iface);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Some(status) = self.topo.exited(self.pid) {
                panic!("wireguard-go exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "wireguard-go did not open {} within 10 s:\n{}",
                socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WgClient<'_> {
    fn drop(&mut self) {
        self.topo.stop(self.pid);
        let _ = std::fs::remove_file(uapi_socket(&self.iface));
    }
}

/// The parts of a wg-quick file that wg-quick itself applies (everything
/// else is `wg` syntax and goes through `wg-quick strip` → `wg setconf`).
struct WgQuick {
    addresses: Vec<String>,
    mtu: Option<u16>,
    peer_keys: Vec<String>,
}

impl WgQuick {
    fn parse(text: &str) -> Self {
        let mut quick = WgQuick {
            addresses: Vec::new(),
            mtu: None,
            peer_keys: Vec::new(),
        };
        let mut section = String::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.starts_with('[') {
                section = line.to_ascii_lowercase();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            match (section.as_str(), key.as_str()) {
                ("[interface]", "address") => quick
                    .addresses
                    .extend(value.split(',').map(|a| a.trim().to_owned())),
                ("[interface]", "mtu") => quick.mtu = Some(value.parse().unwrap()),
                (
                    "[interface]",
                    "dns" | "table" | "preup" | "postup" | "predown" | "postdown" | "saveconfig",
                ) => {
                    panic!(
                        "WgClient does not apply wg-quick's {key} (the test's config has `{line}`)"
                    )
                }
                ("[peer]", "publickey") => quick.peer_keys.push(value.to_owned()),
                _ => {}
            }
        }
        quick
    }
}

fn prefix_len(cidr: &str) -> u8 {
    cidr.split_once('/')
        .and_then(|(_, len)| len.parse().ok())
        .unwrap_or(32)
}
