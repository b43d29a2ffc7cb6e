//! Desired state: what the gateway's AWS footprint should be, computed from
//! the config alone (pure, no I/O). The plan compares it with what AWS says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use gatehouse_config::Config;
use gatehouse_config::file::NatMode;
use ipnet::IpNet;

use crate::keys::ssm::wireguard_key_parameter_name;

/// The tag on everything gatehouse creates; its value is `gateway.name`.
pub const TAG_GATEWAY: &str = "gatehouse:gateway";
/// The tag that tells gatehouse's two security groups apart.
pub const TAG_ROLE: &str = "gatehouse:role";

/// gatehouse's two security groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupRole {
    /// On the gateway's own network interface.
    Gateway,
    /// For the team to attach to private hosts.
    Targets,
}

/// Where an ingress rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleSource {
    Cidr(IpNet),
    /// gatehouse's gateway security group (a group reference).
    GatewayGroup,
    /// Any other security group (only ever seen as drift).
    OtherGroup(String),
    /// A managed prefix list (only ever seen as drift).
    PrefixList(String),
}

/// One ingress rule: a protocol (`tcp`, `udp`, or AWS's `-1` for all), a
/// port range and one source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub source: RuleSource,
}

/// The footprint the config asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub gateway: String,
    /// Each rule with the reason it exists.
    pub gateway_rules: BTreeMap<Rule, String>,
    pub targets_rules: BTreeMap<Rule, String>,
    /// `vpn.nat = "route"`: source/dest check off and the pool routes.
    pub route_mode: bool,
    pub pool: IpNet,
    pub route_tables: Vec<String>,
    pub ssm_parameter: String,
    /// The TCP ports on the gateway that only the configured CIDRs may
    /// reach, whatever other security group the instance carries.
    pub guarded: Vec<GuardedPort>,
    /// `aws.exclusive_groups`: detach other groups that open them wider.
    pub exclusive_groups: bool,
}

/// A TCP port of the gateway's own and who may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedPort {
    /// E.g. `the portal`.
    pub what: &'static str,
    pub port: u16,
    /// E.g. `aws.public_cidrs`.
    pub key: &'static str,
    pub allowed: Vec<IpNet>,
}

/// Computes the desired state of `config` (which has an `[aws]` section;
/// without one the defaults apply, but nothing calls this then).
pub fn desired(config: &Config) -> Desired {
    let aws = config
        .aws
        .clone()
        .unwrap_or_else(|| gatehouse_config::file::AwsConfig {
            region: None,
            endpoint_url: None,
            imds_endpoint: None,
            apply_on_start: false,
            exclusive_groups: false,
            private_route_tables: Vec::new(),
            admin_cidrs: Vec::new(),
            public_cidrs: Vec::new(),
            discovery: Default::default(),
        });
    let mut gateway_rules = BTreeMap::new();
    if config.vpn.enabled && config.vpn.listen.port() != 0 {
        let port = config.vpn.listen.port();
        for any in ["0.0.0.0/0", "::/0"] {
            if let Ok(net) = any.parse() {
                gateway_rules.insert(
                    rule("udp", port, RuleSource::Cidr(net)),
                    format!("WireGuard (UDP {port}) from anywhere"),
                );
            }
        }
    }
    let public_ports = [
        ("portal", true, config.portal.listen.port()),
        (
            "SSH jump host",
            config.ssh.enabled,
            config.ssh.listen.port(),
        ),
    ];
    let mut guarded = vec![GuardedPort {
        what: "the gateway's own SSH",
        port: 22,
        key: "aws.admin_cidrs",
        allowed: aws.admin_cidrs.clone(),
    }];
    for (what, enabled, port) in public_ports {
        if !enabled || port == 0 {
            continue;
        }
        guarded.push(GuardedPort {
            what,
            port,
            key: "aws.public_cidrs",
            allowed: aws.public_cidrs.clone(),
        });
        for net in &aws.public_cidrs {
            gateway_rules.insert(
                rule("tcp", port, RuleSource::Cidr(*net)),
                format!("{what} (TCP {port}) from aws.public_cidrs"),
            );
        }
    }
    for net in &aws.admin_cidrs {
        gateway_rules
            .entry(rule("tcp", 22, RuleSource::Cidr(*net)))
            .or_insert_with(|| "the gateway's own SSH (TCP 22) from aws.admin_cidrs".to_string());
    }

    let route_mode = config.vpn.enabled && config.vpn.nat == NatMode::Route;
    let mut targets_rules = BTreeMap::new();
    let mut tcp: BTreeSet<u16> = config.ssh.allowed_ports.iter().copied().collect();
    let mut udp = BTreeSet::new();
    for group in &config.groups {
        for port in group.ports.iter().flatten() {
            tcp.insert(*port);
            udp.insert(*port);
        }
    }
    for (protocol, ports) in [("tcp", &tcp), ("udp", &udp)] {
        for &port in ports {
            targets_rules.insert(
                rule(protocol, port, RuleSource::GatewayGroup),
                format!(
                    "{} {port} from the gateway's security group",
                    protocol.to_uppercase()
                ),
            );
            if route_mode {
                // Routed VPN traffic keeps the devices' pool addresses as its
                // source, so a group reference alone would not match it.
                targets_rules.insert(
                    rule(protocol, port, RuleSource::Cidr(config.vpn.pool)),
                    format!(
                        "{} {port} from the VPN pool (vpn.nat = \"route\")",
                        protocol.to_uppercase()
                    ),
                );
            }
        }
    }

    Desired {
        gateway: config.gateway.name.clone(),
        gateway_rules,
        targets_rules,
        route_mode,
        pool: config.vpn.pool,
        route_tables: if route_mode {
            aws.private_route_tables.clone()
        } else {
            Vec::new()
        },
        ssm_parameter: wireguard_key_parameter_name(&config.gateway.name),
        guarded,
        exclusive_groups: aws.exclusive_groups,
    }
}

impl GroupRole {
    pub const ALL: [GroupRole; 2] = [GroupRole::Gateway, GroupRole::Targets];

    /// The value of the `gatehouse:role` tag.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Targets => "targets",
        }
    }

    pub fn group_name(self, gateway: &str) -> String {
        format!("gatehouse-{gateway}-{}", self.tag())
    }

    pub fn description(self, gateway: &str) -> String {
        match self {
            Self::Gateway => format!("gatehouse {gateway}: the access gateway itself"),
            Self::Targets => {
                format!(
                    "gatehouse {gateway}: attach to private hosts reachable through the gateway"
                )
            }
        }
    }
}

impl Desired {
    pub fn rules(&self, role: GroupRole) -> &BTreeMap<Rule, String> {
        match role {
            GroupRole::Gateway => &self.gateway_rules,
            GroupRole::Targets => &self.targets_rules,
        }
    }
}

fn rule(protocol: &str, port: u16, source: RuleSource) -> Rule {
    Rule {
        protocol: protocol.to_string(),
        from_port: i32::from(port),
        to_port: i32::from(port),
        source,
    }
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr(net) => write!(f, "{net}"),
            Self::GatewayGroup => f.write_str("the gateway's security group"),
            Self::OtherGroup(id) => write!(f, "security group {id}"),
            Self::PrefixList(id) => write!(f, "prefix list {id}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = match (self.from_port, self.to_port) {
            (-1, _) | (0, 65535) => "all ports".to_string(),
            (a, b) if a == b => format!("{a}"),
            (a, b) => format!("{a}-{b}"),
        };
        let protocol = match self.protocol.as_str() {
            "-1" => "all traffic".to_string(),
            other => other.to_uppercase(),
        };
        write!(f, "{protocol} {ports} from {}", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[gateway]
name = "gw"
public_endpoint = "auto"
[vpn]
pool = "10.200.0.0/24"
[ssh]
listen = "0.0.0.0:2222"
allowed_ports = [22]
[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
[[group]]
name = "apps"
subnets = ["10.0.2.0/24"]
ports = [22, 9000]
[aws]
region = "eu-west-3"
admin_cidrs = ["203.0.113.7/32"]
public_cidrs = ["198.51.100.0/24"]
private_route_tables = ["rtb-1"]
"#;

    fn shown(rules: &BTreeMap<Rule, String>) -> Vec<String> {
        rules.keys().map(ToString::to_string).collect()
    }

    #[test]
    fn port_22_is_open_only_to_admin_cidrs() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let want = desired(&config);
        assert_eq!(
            shown(&want.gateway_rules),
            [
                "TCP 22 from 203.0.113.7/32",
                "TCP 443 from 198.51.100.0/24",
                "TCP 2222 from 198.51.100.0/24",
                "UDP 51820 from 0.0.0.0/0",
                "UDP 51820 from ::/0",
            ]
        );
        let no_admins = CONFIG.replace("admin_cidrs = [\"203.0.113.7/32\"]", "");
        let config = Config::parse(&no_admins, "t.toml").unwrap();
        assert!(
            desired(&config)
                .gateway_rules
                .keys()
                .all(|r| r.from_port != 22),
            "empty admin_cidrs closes port 22"
        );
    }

    #[test]
    fn targets_admit_the_gateway_group_and_in_route_mode_the_pool() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let want = desired(&config);
        assert_eq!(
            shown(&want.targets_rules),
            [
                "TCP 22 from 10.200.0.0/24",
                "TCP 22 from the gateway's security group",
                "TCP 9000 from 10.200.0.0/24",
                "TCP 9000 from the gateway's security group",
                "UDP 22 from 10.200.0.0/24",
                "UDP 22 from the gateway's security group",
                "UDP 9000 from 10.200.0.0/24",
                "UDP 9000 from the gateway's security group",
            ]
        );
        assert!(want.route_mode);
        assert_eq!(want.route_tables, ["rtb-1"]);
        assert_eq!(want.ssm_parameter, "/gatehouse/gw/wireguard-key");

        let masquerade = CONFIG.replace("[vpn]\n", "[vpn]\nnat = \"masquerade\"\n");
        let want = desired(&Config::parse(&masquerade, "t.toml").unwrap());
        assert!(!want.route_mode);
        assert!(want.route_tables.is_empty());
        assert!(
            want.targets_rules
                .keys()
                .all(|r| r.source == RuleSource::GatewayGroup)
        );
    }
}
