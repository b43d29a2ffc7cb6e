//! Rendering a device's wg-quick file from what the admin API returns.
//!
//! The file is a split tunnel: `AllowedIPs` is exactly the user's reachable
//! subnets, there is no `DNS` line, and a default route is never written even
//! if one were handed in. The gateway never holds a device's private key, so
//! `PrivateKey` is written only when the caller generated the key pair itself
//! (as `accessctl device config` does); otherwise a comment says where it goes.

use std::fmt::Write as _;

use crate::api::DeviceConfigResponse;

/// Renders the wg-quick file for `cfg`. `private_key` (base64) is written as
/// `PrivateKey` when given; without it the file carries a comment in its place.
pub fn render(cfg: &DeviceConfigResponse, private_key: Option<&str>) -> String {
    let allowed: Vec<&str> = cfg
        .allowed_ips
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    let (allowed, dropped_default): (Vec<&str>, Vec<&str>) =
        allowed.into_iter().partition(|s| !is_default_route(s));

    let mut out = String::new();
    // `writeln!` into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        out,
        "# gatehouse device config for {}/{}",
        cfg.device.user, cfg.device.name
    );
    let _ = writeln!(
        out,
        "# Only the subnets below go through the tunnel (split tunnel); all other \
         traffic uses this device's usual connection."
    );
    if !dropped_default.is_empty() {
        let _ = writeln!(
            out,
            "# A default route in the gateway's answer was left out: gatehouse \
             configs are split tunnel only."
        );
    }
    let _ = writeln!(out, "[Interface]");
    match private_key {
        Some(key) => {
            let _ = writeln!(out, "PrivateKey = {key}");
        }
        None => {
            let _ = writeln!(
                out,
                "# PrivateKey = <this device's own private key: add this line yourself; \
                 the gateway never had it>"
            );
        }
    }
    let _ = writeln!(out, "Address = {}", cfg.interface_address);
    let _ = writeln!(out, "MTU = {}", cfg.mtu);
    let _ = writeln!(out);
    let _ = writeln!(out, "[Peer]");
    let _ = writeln!(out, "PublicKey = {}", cfg.gateway_public_key);
    let _ = writeln!(out, "Endpoint = {}", cfg.endpoint);
    if allowed.is_empty() {
        let _ = writeln!(
            out,
            "# No AllowedIPs: this user's groups reach no subnet yet, so nothing is routed \
             through the tunnel."
        );
    } else {
        let _ = writeln!(out, "AllowedIPs = {}", allowed.join(", "));
    }
    if cfg.persistent_keepalive > 0 {
        let _ = writeln!(out, "PersistentKeepalive = {}", cfg.persistent_keepalive);
    }
    out
}

/// True for a prefix of length 0 (`0.0.0.0/0`, `::/0`, or any address `/0`).
fn is_default_route(cidr: &str) -> bool {
    match cidr.parse::<ipnet::IpNet>() {
        Ok(net) => net.prefix_len() == 0,
        // Not our job to validate the rest; a bare "/0" is still a default route.
        Err(_) => cidr.ends_with("/0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeviceInfo;

    fn response(allowed: &[&str]) -> DeviceConfigResponse {
        DeviceConfigResponse {
            device: DeviceInfo {
                user: "alice".into(),
                name: "laptop".into(),
                public_key: "cHVibGljLWtleS1vZi10aGUtZGV2aWNlLTMyYnl0ZXM=".into(),
                address: "10.200.0.2".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
                last_activation: None,
                last_handshake: None,
                ..DeviceInfo::default()
            },
            interface_address: "10.200.0.2/32".into(),
            gateway_public_key: "Z2F0ZXdheS1wdWJsaWMta2V5LTMyLWJ5dGVzLWxvbmc=".into(),
            endpoint: "gw.example.org:51820".into(),
            allowed_ips: allowed.iter().map(|s| s.to_string()).collect(),
            persistent_keepalive: 25,
            mtu: 1420,
        }
    }

    fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn renders_the_whole_file() {
        let out = render(
            &response(&["10.0.3.0/24", "10.0.4.0/24"]),
            Some("cHJpdmF0ZQ=="),
        );
        let expected = "\
# gatehouse device config for alice/laptop
# Only the subnets below go through the tunnel (split tunnel); all other traffic uses this device's usual connection.
[Interface]
PrivateKey = cHJpdmF0ZQ==
Address = 10.200.0.2/32
MTU = 1420

[Peer]
PublicKey = Z2F0ZXdheS1wdWJsaWMta2V5LTMyLWJ5dGVzLWxvbmc=
Endpoint = gw.example.org:51820
AllowedIPs = 10.0.3.0/24, 10.0.4.0/24
PersistentKeepalive = 25
";
        assert_eq!(out, expected);
    }

    #[test]
    fn allowed_ips_are_exactly_the_given_list() {
        let out = render(
            &response(&["10.0.3.0/24", "10.0.4.0/24", "fd12::/64"]),
            None,
        );
        assert_eq!(
            lines_starting(&out, "AllowedIPs"),
            ["AllowedIPs = 10.0.3.0/24, 10.0.4.0/24, fd12::/64"]
        );
    }

    #[test]
    fn no_private_key_line_without_a_key() {
        let out = render(&response(&["10.0.3.0/24"]), None);
        assert!(lines_starting(&out, "PrivateKey").is_empty(), "{out}");
        assert!(out.contains("# PrivateKey = <this device's own private key"));
    }

    #[test]
    fn never_a_default_route_and_no_dns() {
        for given in [&["0.0.0.0/0"][..], &["10.0.3.0/24", "0.0.0.0/0", "::/0"]] {
            let out = render(&response(given), Some("cHJpdmF0ZQ=="));
            assert!(!out.contains("0.0.0.0/0"), "{out}");
            assert!(!out.contains("::/0"), "{out}");
            assert!(lines_starting(&out, "DNS").is_empty(), "{out}");
        }
        let out = render(&response(&["10.0.3.0/24", "0.0.0.0/0"]), None);
        assert_eq!(
            lines_starting(&out, "AllowedIPs"),
            ["AllowedIPs = 10.0.3.0/24"]
        );
    }

    #[test]
    fn no_subnets_means_no_allowed_ips_line() {
        let out = render(&response(&[]), None);
        assert!(lines_starting(&out, "AllowedIPs").is_empty(), "{out}");
        assert!(out.contains("# No AllowedIPs"));
    }
}
