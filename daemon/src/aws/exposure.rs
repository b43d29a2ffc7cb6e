//! Other security groups on the gateway's instance that open one of its
//! guarded TCP ports (22, the portal, the jump port) wider than the config
//! allows (pure, no I/O). `aws plan` warns of each; with
//! `aws.exclusive_groups = true` the plan detaches those groups.

use super::desired::{Desired, GuardedPort, Rule, RuleSource};
use super::observed::ObservedGroup;

/// One rule of a foreign group that reaches past the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub group_id: String,
    pub group_name: String,
    pub rule: Rule,
    /// What the config allows on the port it opens.
    pub guarded: GuardedPort,
}

/// Every rule of `foreign` (the instance's groups that are not gatehouse's
/// own) that lets a guarded port be reached from outside what the config
/// names. A group reference or prefix list counts as outside: the config
/// speaks only of CIDRs.
pub fn exposures(desired: &Desired, foreign: &[ObservedGroup]) -> Vec<Exposure> {
    let mut found = Vec::new();
    for group in foreign {
        for rule in &group.rules {
            // One warning per rule: the first guarded port it reaches past.
            let past = desired
                .guarded
                .iter()
                .filter(|g| opens(rule, g.port))
                .find(|g| !allowed_on(desired, g.port, &rule.source));
            if let Some(guarded) = past {
                found.push(Exposure {
                    group_id: group.id.clone(),
                    group_name: group.name.clone(),
                    rule: rule.clone(),
                    guarded: guarded.clone(),
                });
            }
        }
    }
    found
}

/// The groups `exposures` names, each once, in order.
pub fn exposing_groups(exposures: &[Exposure]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for e in exposures {
        if !ids.contains(&e.group_id) {
            ids.push(e.group_id.clone());
        }
    }
    ids
}

/// True when `rule` lets TCP `port` in.
fn opens(rule: &Rule, port: u16) -> bool {
    let port = i32::from(port);
    match rule.protocol.as_str() {
        "-1" | "all" => true,
        "tcp" | "6" => rule.from_port == -1 || (rule.from_port <= port && port <= rule.to_port),
        _ => false,
    }
}

/// True when some guarded entry for `port` allows all of `source`.
fn allowed_on(desired: &Desired, port: u16, source: &RuleSource) -> bool {
    let RuleSource::Cidr(net) = source else {
        return false;
    };
    desired
        .guarded
        .iter()
        .filter(|g| g.port == port)
        .flat_map(|g| &g.allowed)
        .any(|allowed| allowed.contains(net))
}

impl Exposure {
    /// What a person reads, e.g. `sg-1 (team-ssh) opens TCP 22 from
    /// 0.0.0.0/0 (the gateway's own SSH), wider than aws.admin_cidrs (nobody)`.
    pub fn describe(&self) -> String {
        let allowed = if self.guarded.allowed.is_empty() {
            "nobody".to_string()
        } else {
            self.guarded
                .allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "security group {} ({}) on the gateway instance lets {} reach {} (TCP {}), wider than {} ({allowed})",
            self.group_id,
            self.group_name,
            self.rule,
            self.guarded.what,
            self.guarded.port,
            self.guarded.key,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::aws::desired::desired;

    const CONFIG: &str = r#"
[gateway]
name = "gw"
public_endpoint = "auto"
[portal]
listen = "0.0.0.0:8443"
[ssh]
listen = "0.0.0.0:2222"
[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
[aws]
region = "eu-west-3"
admin_cidrs = ["203.0.113.0/24"]
public_cidrs = ["198.51.100.0/24"]
"#;

    fn want() -> Desired {
        let config = gatehouse_config::Config::parse(CONFIG, "t.toml").unwrap();
        desired(&config)
    }

    fn rule(protocol: &str, from: i32, to: i32, source: RuleSource) -> Rule {
        Rule {
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            source,
        }
    }

    fn cidr(s: &str) -> RuleSource {
        RuleSource::Cidr(s.parse().unwrap())
    }

    fn group(rules: Vec<Rule>) -> ObservedGroup {
        ObservedGroup {
            id: "sg-team".into(),
            name: "team-own".into(),
            rules: rules.into_iter().collect::<BTreeSet<_>>(),
        }
    }

    #[test]
    fn rules_within_the_configured_cidrs_or_on_other_ports_are_fine() {
        let fine = group(vec![
            rule("tcp", 22, 22, cidr("203.0.113.7/32")),
            rule("tcp", 8443, 8443, cidr("198.51.100.0/25")),
            rule("tcp", 2222, 2222, cidr("198.51.100.0/24")),
            rule("tcp", 80, 80, cidr("0.0.0.0/0")),
            rule("udp", 22, 22, cidr("0.0.0.0/0")),
            rule("icmp", -1, -1, cidr("0.0.0.0/0")),
        ]);
        assert_eq!(exposures(&want(), &[fine]), []);
    }

    #[test]
    fn each_way_of_opening_a_guarded_port_wider_is_found() {
        let cases = [
            rule("tcp", 22, 22, cidr("0.0.0.0/0")),
            rule("tcp", 22, 22, cidr("::/0")),
            rule("tcp", 22, 22, cidr("203.0.112.0/23")),
            rule("tcp", 0, 65535, cidr("10.0.0.0/8")),
            rule("tcp", 8000, 9000, cidr("0.0.0.0/0")),
            rule("tcp", 2222, 2222, cidr("192.0.2.0/24")),
            rule("-1", -1, -1, cidr("0.0.0.0/0")),
            rule("tcp", 22, 22, RuleSource::OtherGroup("sg-else".into())),
            rule("tcp", 8443, 8443, RuleSource::PrefixList("pl-1".into())),
        ];
        for case in cases {
            let found = exposures(&want(), &[group(vec![case.clone()])]);
            assert_eq!(found.len(), 1, "{case}");
            assert_eq!(found[0].rule, case);
            assert_eq!(exposing_groups(&found), ["sg-team"]);
        }
    }

    #[test]
    fn the_description_names_group_rule_port_and_key() {
        let found = exposures(
            &want(),
            &[group(vec![rule("tcp", 22, 22, cidr("0.0.0.0/0"))])],
        );
        let text = found[0].describe();
        for part in [
            "sg-team (team-own)",
            "TCP 22 from 0.0.0.0/0",
            "the gateway's own SSH (TCP 22)",
            "aws.admin_cidrs (203.0.113.0/24)",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }

    #[test]
    fn with_no_admin_cidrs_any_port_22_rule_is_wider() {
        let config = CONFIG.replace(r#"admin_cidrs = ["203.0.113.0/24"]"#, "");
        let want = desired(&gatehouse_config::Config::parse(&config, "t.toml").unwrap());
        let found = exposures(
            &want,
            &[group(vec![rule("tcp", 22, 22, cidr("203.0.113.7/32"))])],
        );
        assert!(found[0].describe().contains("(nobody)"), "{found:?}");
    }
}
