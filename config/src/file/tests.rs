//! One test per rule: each asserts the message names the key and its line.

#![allow(clippy::unwrap_used)]

use super::*;

fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    Config::parse(text, file)
}

const SAMPLE: &str = include_str!("../../../packaging/gatehouse.toml");

const MINIMAL: &str = r#"
[gateway]
name = "gw"
public_endpoint = "vpn.example.com"

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
"#;

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "test.toml") {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(err) => err.problems().to_vec(),
    }
}

/// Asserts exactly one problem, at `key` on `line`, whose message contains `needle`.
fn assert_one(text: &str, key: &str, line: usize, needle: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    let p = &found[0];
    assert_eq!((p.key.as_str(), p.line), (key, line), "{p}");
    assert!(p.message.contains(needle), "{p}");
    let shown = p.to_string();
    assert!(
        shown.starts_with(&format!("test.toml:{line}:")) && shown.contains(key),
        "{shown}"
    );
}

#[test]
fn the_sample_config_passes_and_documents_the_defaults() {
    let config = parse(SAMPLE, "gatehouse.toml").unwrap();
    let defaults = parse(MINIMAL, "minimal.toml").unwrap();
    assert_eq!(
        config.vpn, defaults.vpn,
        "the sample's [vpn] must show the defaults"
    );
    assert_eq!(config.ssh, defaults.ssh);
    assert_eq!(config.portal, defaults.portal);
    assert_eq!(config.admin, defaults.admin);
    assert_eq!(config.metrics, defaults.metrics);
    assert_eq!(config.audit, defaults.audit);
    assert_eq!(config.groups.len(), 2);
    assert_eq!(config.aws, None);
}

#[test]
fn defaults_and_derived_values() {
    let config = parse(MINIMAL, "m.toml").unwrap();
    assert_eq!(config.vpn.session_lifetime, Duration::from_secs(12 * 3600));
    assert_eq!(
        config.vpn.gateway_address(),
        "10.200.0.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        config.audit.mirror,
        PathBuf::from("/var/lib/gatehouse/audit.jsonl")
    );
    assert_eq!(
        config.vpn_endpoint().as_deref(),
        Some("vpn.example.com:51820")
    );
    assert_eq!(
        config.portal_url().as_deref(),
        Some("https://vpn.example.com")
    );
    assert_eq!(config.portal.enrollment_ttl, Duration::from_secs(24 * 3600));
}

#[test]
fn ipv6_endpoint_is_bracketed() {
    let text = MINIMAL.replace("vpn.example.com", "2001:db8::1");
    let config = parse(&text, "m.toml").unwrap();
    assert_eq!(
        config.vpn_endpoint().as_deref(),
        Some("[2001:db8::1]:51820")
    );
}

#[test]
fn unknown_keys_are_refused_with_their_place() {
    let text =
        "[gateway]\nname = \"gw\"\npublic_endpoint = \"h\"\n\n[vpn]\npoool = \"10.0.0.0/24\"\n";
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, 6, "{}", found[0]);
    assert!(
        found[0].message.contains("unknown field `poool`"),
        "{}",
        found[0]
    );
    assert!(found[0].key.contains("vpn"), "{}", found[0]);
}

#[test]
fn a_wrong_type_names_the_key() {
    let text = MINIMAL.replace(
        "[[group]]",
        "[ssh]\nmax_channels_per_user = \"many\"\n\n[[group]]",
    );
    let found = problems(&text);
    assert_eq!(found[0].key, "ssh.max_channels_per_user", "{}", found[0]);
    assert_eq!(found[0].line, 7);
}

#[test]
fn syntax_errors_have_a_line() {
    let found = problems("[gateway\nname = 1\n");
    assert_eq!(found[0].line, 1, "{}", found[0]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[gateway]
public_endpoint = "auto"
state_dir = "relative"

[vpn]
pool = "10.0.0.0/8"
session_lifetime = "0s"
nat = "bridge"

[[group]]
name = "Research"
subnets = ["0.0.0.0/0", "10.0.3.0/33"]
"#;
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "gateway.name",
            "gateway.public_endpoint",
            "gateway.state_dir",
            "vpn.session_lifetime",
            "vpn.nat",
            "group[0].name",
            "group[0].subnets[0]",
            "group[0].subnets[1]",
        ],
        "{found:#?}"
    );
    let err = parse(text, "bad.toml").unwrap_err().to_string();
    assert!(err.starts_with("bad.toml: 8 problems"), "{err}");
}

#[test]
fn default_routes_are_refused_in_any_group() {
    let text = MINIMAL.replace("\"10.0.3.0/24\"", "\"10.0.3.0/24\", \"::/0\"");
    assert_one(&text, "group[0].subnets[1]", 8, "default route");
    let text = MINIMAL.replace("10.0.3.0/24", "0.0.0.0/0");
    assert_one(&text, "group[0].subnets[0]", 8, "split tunnels only");
}

#[test]
fn the_pool_may_not_overlap_a_group() {
    let text = MINIMAL.replace("10.0.3.0/24", "10.200.0.128/25");
    assert_one(
        &text,
        "group[0].subnets[0]",
        8,
        "overlaps the VPN pool 10.200.0.0/24",
    );
    let text = MINIMAL
        .replace("10.0.3.0/24", "10.0.0.0/8")
        .replace("[[group]]", "[vpn]\npool = \"10.9.0.0/24\"\n\n[[group]]");
    assert_one(&text, "group[0].subnets[0]", 11, "overlaps the VPN pool");
}

#[test]
fn group_names_are_checked_and_unique() {
    let text = format!("{MINIMAL}\n[[group]]\nname = \"research\"\nsubnets = [\"10.0.4.0/24\"]\n");
    assert_one(&text, "group[1].name", 11, "defined twice");
    let text = MINIMAL.replace("name = \"research\"", "name = \"Re search\"");
    assert_one(&text, "group[0].name", 7, "not a valid group name");
    let text = MINIMAL.replace("name = \"research\"\n", "");
    assert_one(&text, "group[0]", 6, "has no name");
}

#[test]
fn subnets_must_parse_and_have_no_host_bits() {
    let text = MINIMAL.replace("10.0.3.0/24", "10.0.3.1/24");
    assert_one(&text, "group[0].subnets[0]", 8, "did you mean 10.0.3.0/24");
    let text = MINIMAL.replace("10.0.3.0/24", "ten.zero/8");
    assert_one(&text, "group[0].subnets[0]", 8, "is not a CIDR");
    let text = MINIMAL.replace("[\"10.0.3.0/24\"]", "[]");
    assert_one(&text, "group[0].subnets", 8, "is empty");
}

#[test]
fn an_auditor_group_may_have_no_subnets_and_grants_no_access() {
    let text = format!(
        "[portal]\nauditor_groups = [\"auditors\"]\n{MINIMAL}\n[[group]]\nname = \"auditors\"\noidc_groups = [\"security\"]\n\n[oidc]\nissuer = \"https://idp.example.org\"\nclient_id = \"g\"\n"
    );
    let config = parse(&text, "t.toml").unwrap();
    assert_eq!(config.portal.auditor_groups, ["auditors"]);
    assert_eq!(config.groups[1].name, "auditors");
    assert!(config.groups[1].subnets.is_empty());
    assert_eq!(config.groups[1].oidc_groups, ["security"]);
    // Being an auditor reaches nothing; with another group, that group's.
    let policy = config.policy();
    assert!(policy.access_for(&["auditors"]).subnets().is_empty());
    assert!(
        policy
            .access_for(&["auditors"])
            .check_address("10.0.3.140".parse().unwrap())
            .is_err()
    );
    assert_eq!(
        policy.access_for(&["auditors", "research"]).subnets(),
        policy.access_for(&["research"]).subnets()
    );
    // `subnets = []` too.
    let empty = text.replace(
        "name = \"auditors\"\n",
        "name = \"auditors\"\nsubnets = []\n",
    );
    assert!(
        parse(&empty, "t.toml").unwrap().groups[1]
            .subnets
            .is_empty()
    );
    // A group not named an auditor group still needs its subnets.
    let not_named = text.replace("auditor_groups = [\"auditors\"]", "auditor_groups = []");
    assert_one(&not_named, "group[1]", 12, "portal.auditor_groups");
}

#[test]
fn auditor_groups_name_defined_groups() {
    let text = format!("[portal]\nauditor_groups = [\"research\", \"auditers\"]\n{MINIMAL}");
    assert_one(
        &text,
        "portal.auditor_groups[1]",
        2,
        "\"auditers\" names no [[group]]",
    );
    let config = parse(MINIMAL, "t.toml").unwrap();
    assert!(config.portal.auditor_groups.is_empty(), "none by default");
}

#[test]
fn always_refused_ranges_cannot_be_granted() {
    let text = MINIMAL.replace("10.0.3.0/24", "169.254.169.254/32");
    assert_one(&text, "group[0].subnets[0]", 8, "always refused");
}

#[test]
fn group_ports_are_checked() {
    let text = MINIMAL.replace(
        "subnets = [\"10.0.3.0/24\"]",
        "subnets = [\"10.0.3.0/24\"]\nports = [22, 0]",
    );
    assert_one(&text, "group[0].ports[1]", 9, "port 0");
    let text = MINIMAL.replace(
        "subnets = [\"10.0.3.0/24\"]",
        "subnets = [\"10.0.3.0/24\"]\nports = [70000]",
    );
    let found = problems(&text);
    assert_eq!(found[0].key, "group[0].ports[0]", "{}", found[0]);
}

#[test]
fn listen_addresses_must_parse() {
    let text = MINIMAL.replace("[[group]]", "[ssh]\nlisten = \"0.0.0.0\"\n\n[[group]]");
    assert_one(&text, "ssh.listen", 7, "an address with a port");
    let text = MINIMAL.replace(
        "[[group]]",
        "[portal]\nlisten = \"0.0.0.0:2222\"\n\n[[group]]",
    );
    assert_one(&text, "portal.listen", 7, "clashes with ssh.listen");
}

#[test]
fn durations_are_human_and_positive() {
    let text = MINIMAL.replace(
        "[[group]]",
        "[vpn]\nsession_lifetime = \"twelve hours\"\n\n[[group]]",
    );
    assert_one(&text, "vpn.session_lifetime", 7, "is not a duration");
    let text = MINIMAL.replace(
        "[[group]]",
        "[portal]\nenrollment_ttl = \"0h\"\n\n[[group]]",
    );
    assert_one(&text, "portal.enrollment_ttl", 7, "longer than zero");
}

#[test]
fn auto_endpoint_needs_aws() {
    let text = MINIMAL.replace("\"vpn.example.com\"", "\"auto\"");
    assert_one(&text, "gateway.public_endpoint", 4, "no [aws] section");
    let with_aws = format!("{text}\n[aws]\nregion = \"eu-west-3\"\n");
    let config = parse(&with_aws, "t.toml").unwrap();
    assert_eq!(config.gateway.public_endpoint, PublicEndpoint::Auto);
    assert_eq!(config.vpn_endpoint(), None);
}

#[test]
fn endpoint_is_a_bare_host() {
    let text = MINIMAL.replace("vpn.example.com", "https://vpn.example.com:51820");
    assert_one(
        &text,
        "gateway.public_endpoint",
        4,
        "without scheme or port",
    );
}

#[test]
fn pool_must_be_a_usable_network() {
    let text = MINIMAL.replace("[[group]]", "[vpn]\npool = \"10.200.0.0/31\"\n\n[[group]]");
    assert_one(&text, "vpn.pool", 7, "too small");
    let text = MINIMAL.replace("[[group]]", "[vpn]\npool = \"10.200.0.5/24\"\n\n[[group]]");
    assert_one(&text, "vpn.pool", 7, "host bits");
}

#[test]
fn aws_values_are_checked() {
    let text = format!(
        "{MINIMAL}\n[aws]\nprivate_route_tables = [\"main\"]\nadmin_cidrs = [\"1.2.3.4\"]\n"
    );
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["aws.private_route_tables[0]", "aws.admin_cidrs[0]"],
        "{found:#?}"
    );
    assert_eq!(found[0].line, 11);
}

#[test]
fn tls_files_come_in_pairs() {
    let text = MINIMAL.replace(
        "[[group]]",
        "[portal]\ntls_cert = \"/etc/c.pem\"\n\n[[group]]",
    );
    assert_one(&text, "portal.tls_cert", 7, "without portal.tls_key");
}

#[test]
fn policy_of_a_config_refuses_the_gateway_tunnel_address() {
    let config = parse(MINIMAL, "m.toml").unwrap();
    let access = config.policy().access_for(&["research"]);
    assert!(
        access
            .check(
                "10.0.3.9".parse().unwrap(),
                crate::policy::Transport::Port(22)
            )
            .is_ok()
    );
    assert!(
        access
            .check(
                "10.200.0.1".parse().unwrap(),
                crate::policy::Transport::Port(22)
            )
            .is_err()
    );
}

#[test]
fn ssh_limits_are_checked() {
    let text = MINIMAL.replace(
        "[[group]]",
        "[ssh]\nmax_startups = 4\nmax_startups_per_source = 5\n\n[[group]]",
    );
    assert_one(
        &text,
        "ssh.max_startups_per_source",
        8,
        "more than ssh.max_startups",
    );
    let text = MINIMAL.replace("[[group]]", "[ssh]\nmax_startups = 0\n\n[[group]]");
    let found = problems(&text);
    assert!(
        found.iter().any(|p| p.key == "ssh.max_startups"),
        "{found:#?}"
    );
    let text = MINIMAL.replace("[[group]]", "[ssh]\nlogin_grace_time = \"0s\"\n\n[[group]]");
    assert_one(&text, "ssh.login_grace_time", 7, "longer than zero");
    let config = parse(MINIMAL, "minimal.toml").unwrap();
    assert!(config.ssh.enabled);
    assert_eq!(config.ssh.max_startups, 64);
    assert_eq!(config.ssh.max_startups_per_source, 8);
    assert_eq!(config.ssh.login_grace_time, Duration::from_secs(30));
}

#[test]
fn disabled_ssh_and_port_zero_never_clash() {
    let text = MINIMAL.replace(
        "[[group]]",
        "[ssh]\nenabled = false\nlisten = \"127.0.0.1:9586\"\n\n[[group]]",
    );
    assert!(!parse(&text, "t.toml").unwrap().ssh.enabled);
    let text = MINIMAL.replace(
        "[[group]]",
        "[ssh]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[[group]]",
    );
    parse(&text, "t.toml").unwrap();
}

#[test]
fn the_audit_mirror_rotates_by_size_and_keeps_at_least_one_file() {
    let config = Config::parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(config.audit.mirror_max_bytes, 100 * 1024 * 1024);
    assert_eq!(config.audit.mirror_keep, 10);
    let text = MINIMAL.replace(
        "[[group]]",
        "[audit]\nmirror_max_mib = 0\nmirror_keep = 0\n\n[[group]]",
    );
    assert_one(&text, "audit.mirror_keep", 8, "at least 1");
}

#[test]
fn flows_per_device_defaults_to_32_and_stays_within_1_to_1024() {
    let config = Config::parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(config.audit.flows_per_device, 32);
    let with = |n: u32| {
        MINIMAL.replace(
            "[[group]]",
            &format!("[audit]\nflows_per_device = {n}\n\n[[group]]"),
        )
    };
    assert_eq!(
        Config::parse(&with(1024), "t.toml")
            .unwrap()
            .audit
            .flows_per_device,
        1024
    );
    assert_one(&with(0), "audit.flows_per_device", 7, "outside 1 to 1024");
    assert_one(
        &with(1025),
        "audit.flows_per_device",
        7,
        "outside 1 to 1024",
    );
}

#[test]
fn aws_discovery_overrides_are_checked_and_kept() {
    let text = format!(
        "{MINIMAL}\n[aws]\ninstance_id = \"i-0abc\"\nnetwork_interface_id = \"eni-12\"\nvpc_id = \"vpc-9\"\nsubnet_id = \"subnet-1f\"\navailability_zone = \"eu-west-3a\"\n"
    );
    let config = parse(&text, "t.toml").unwrap();
    let found = config.aws.unwrap().discovery;
    assert!(found.complete());
    assert_eq!(found.instance_id.as_deref(), Some("i-0abc"));
    assert_eq!(found.network_interface_id.as_deref(), Some("eni-12"));

    let text = format!(
        "{MINIMAL}\n[aws]\ninstance_id = \"0abc\"\nnetwork_interface_id = \"eni-\"\nvpc_id = \"vpc-XYZ\"\nsubnet_id = \"sn-1\"\navailability_zone = \"\"\n"
    );
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "aws.instance_id",
            "aws.network_interface_id",
            "aws.vpc_id",
            "aws.subnet_id",
            "aws.availability_zone"
        ]
    );
    let partial = format!("{MINIMAL}\n[aws]\ninstance_id = \"i-1\"\n");
    assert!(
        !parse(&partial, "t.toml")
            .unwrap()
            .aws
            .unwrap()
            .discovery
            .complete()
    );
}

#[test]
fn durations_that_would_overflow_are_refused_with_their_key() {
    for (table, key) in [
        ("portal", "login_lockout"),
        ("ssh", "login_grace_time"),
        ("vpn", "session_lifetime"),
        ("portal", "session_max"),
        ("portal", "enrollment_ttl"),
    ] {
        let text = format!("{MINIMAL}\n[{table}]\n{key} = \"1000000000y\"\n");
        let line = text.lines().count();
        assert_one(&text, &format!("{table}.{key}"), line, "too long");
    }
    // 100 years is still a duration.
    let text = format!("{MINIMAL}\n[portal]\nlogin_lockout = \"36500d\"\n");
    assert!(parse(&text, "t.toml").is_ok());
}

#[test]
fn a_shared_store_and_a_pair_are_checked() {
    // The pair shares its secrets key: a file given to both (or SSM).
    let with = |extra: &str| {
        format!("{MINIMAL}{extra}").replacen(
            "[gateway]\n",
            "[gateway]\nsecrets_key_file = \"/etc/gatehouse/secrets.key\"\n",
            1,
        )
    };
    let identity = "[vpn]\nprivate_key_file = \"/etc/gatehouse/wg.key\"\n\
         [ssh]\nhost_key_file = \"/etc/gatehouse/host_key\"\n\
         [portal]\ntls_cert = \"/etc/gatehouse/cert.pem\"\ntls_key = \"/etc/gatehouse/key.pem\"\n";
    let ok = with(&format!(
        "{identity}[store]\nurl = \"postgresql://gatehouse@db.internal/gh?sslmode=verify-full\"\n\
         password_file = \"/etc/gatehouse/pg-password\"\nca_file = \"/etc/gatehouse/ca.pem\"\n\
         [ha]\nnode = \"gw-a\"\n"
    ));
    let config = parse(&ok, "t.toml").unwrap();
    let store = config.store.unwrap();
    assert_eq!(
        store.password_file.as_deref(),
        Some(std::path::Path::new("/etc/gatehouse/pg-password"))
    );
    let ha = config.ha.unwrap();
    assert_eq!((ha.node.as_str(), ha.lease_ttl.as_secs()), ("gw-a", 5));
    assert!(parse(MINIMAL, "t.toml").unwrap().store.is_none());
    assert_eq!(
        config.vpn.private_key_file.as_deref(),
        Some(std::path::Path::new("/etc/gatehouse/wg.key"))
    );

    // A pair whose nodes would each show clients their own keys.
    let lonely = with("[store]\nurl = \"postgresql://g@127.0.0.1/gh\"\n[ha]\nnode = \"gw-a\"\n");
    let found = problems(&lonely);
    let said: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(found.len(), 3, "{said:?}");
    for needle in [
        "vpn.private_key_file",
        "ssh.host_key_file",
        "portal.tls_cert",
    ] {
        assert!(
            said.iter().any(|m| m.contains(needle)),
            "{needle}: {said:?}"
        );
    }
    // With [aws] accessd keeps all three in SSM.
    let paired = parse(
        &format!("{lonely}[aws]\nregion = \"eu-west-3\"\n"),
        "t.toml",
    );
    assert!(paired.is_ok(), "{paired:#?}");
    // The SSH user CA too: a pair without [aws] would sign with two.
    let signing = ok.replacen("[ssh]\n", "[ssh]\ncertificates = true\n", 1);
    let found = problems(&signing);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "ssh.certificates");
    assert!(found[0].message.contains("one SSH user CA"), "{}", found[0]);
    assert!(found[0].message.contains("ssh.ca_key_file"), "{}", found[0]);
    let with_aws = format!("{signing}[aws]\nregion = \"eu-west-3\"\n");
    assert!(parse(&with_aws, "t.toml").is_ok());
    // Or both nodes read one CA key file: no AWS needed.
    let user_ca_only = signing.replacen(
        "[ssh]\n",
        "[ssh]\nca_key_file = \"/etc/gatehouse/user_ca_key\"\n",
        1,
    );
    let found = problems(&user_ca_only);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].message.contains("ssh.host_ca_key_file"),
        "{}",
        found[0]
    );
    let shared_ca = user_ca_only.replacen(
        "[ssh]\n",
        "[ssh]\nhost_ca_key_file = \"/etc/gatehouse/host_ca_key\"\n",
        1,
    );
    let config = parse(&shared_ca, "t.toml").unwrap();
    assert_eq!(
        config.ssh.ca_key_file.as_deref(),
        Some(std::path::Path::new("/etc/gatehouse/user_ca_key"))
    );
    assert_eq!(
        config.ssh.host_ca_key_file.as_deref(),
        Some(std::path::Path::new("/etc/gatehouse/host_ca_key"))
    );
    let relative = shared_ca.replace("\"/etc/gatehouse/user_ca_key\"", "\"user_ca_key\"");
    let found = problems(&relative);
    assert!(
        found.iter().any(|p| p.key == "ssh.ca_key_file"),
        "{found:#?}"
    );

    assert_one(
        &with("[store]\nurl = \"postgresql://gatehouse:hunter2@db/gh\"\n"),
        "store.url",
        11,
        "must not carry the password",
    );
    assert!(
        !problems(&with("[store]\nurl = \"postgresql://g:hunter2@db/gh\"\n"))[0]
            .to_string()
            .contains("hunter2"),
        "the password is not echoed"
    );
    assert_one(
        &with("[store]\nurl = \"mysql://db/gh\"\n"),
        "store.url",
        11,
        "not a PostgreSQL URL",
    );
    assert_one(
        &with("[store]\nurl = \"postgresql://g@db/gh\"\npassword_file = \"pw\"\n"),
        "store.password_file",
        12,
        "absolute",
    );
    assert_one(
        &with("[ha]\nnode = \"gw-a\"\n"),
        "ha.node",
        11,
        "needs [store]",
    );
    let store = format!("{identity}[store]\nurl = \"postgresql://g@127.0.0.1/gh\"\n");
    assert_one(
        &with(&format!("{store}[ha]\nnode = \"gw a\"\n")),
        "ha.node",
        20,
        "not a node name",
    );
    assert_one(
        &with(&format!(
            "{store}[ha]\nnode = \"gw-a\"\nlease_ttl = \"1s\"\n"
        )),
        "ha.lease_ttl",
        21,
        "outside 3s..60s",
    );
    // Without the shared file (and without [aws]) each node would make its
    // own secrets key.
    let unshared = format!("{MINIMAL}{store}[ha]\nnode = \"gw-a\"\n");
    assert_one(&unshared, "ha.node", 19, "gateway.secrets_key_file");
    assert_one(
        &with("").replacen("\"/etc/gatehouse/secrets.key\"", "\"secrets.key\"", 1),
        "gateway.secrets_key_file",
        3,
        "absolute",
    );
}

#[test]
fn an_oidc_section_is_checked_offline_with_file_line_and_key() {
    let oidc = |body: &str| format!("{MINIMAL}\n[oidc]\n{body}");
    let config = parse(
        &oidc("issuer = \"https://accounts.example.org/\"\nclient_id = \"gatehouse\"\n"),
        "t.toml",
    )
    .unwrap();
    let sso = config.oidc.unwrap();
    assert_eq!(
        sso.issuer, "https://accounts.example.org",
        "no trailing slash"
    );
    assert_eq!(sso.display_name, "accounts.example.org");
    assert_eq!(sso.scopes, ["openid", "email", "profile", "groups"]);
    assert_eq!(
        (sso.groups_claim.as_str(), sso.username_claim.as_str()),
        ("groups", "preferred_username")
    );
    assert!(!sso.auto_provision && sso.client_secret_file.is_none());
    assert_eq!(
        sso.email_verified,
        crate::file::EmailVerified::Required,
        "only verified emails count by default"
    );
    assert!(
        config.portal.password_login,
        "password login stays on by default"
    );
    // A provider on loopback may be plain http (a test or a sidecar).
    assert!(
        parse(
            &oidc("issuer = \"http://127.0.0.1:9000\"\nclient_id = \"g\"\n"),
            "t.toml"
        )
        .is_ok()
    );

    // oidc.email_verified is one of two words, named with file and line.
    assert_one(
        &oidc(
            "issuer = \"https://idp.example.org\"\nclient_id = \"g\"\nemail_verified = \"maybe\"\n",
        ),
        "oidc.email_verified",
        MINIMAL.lines().count() + 5,
        "\"if_present\"",
    );
    assert_eq!(
        sso.totp_enrollment,
        crate::file::TotpEnrollment::AdminLink,
        "the first authenticator comes from an admin's link by default"
    );
    // oidc.totp_enrollment is one of two words, named with file and line.
    assert_one(
        &oidc(
            "issuer = \"https://idp.example.org\"\nclient_id = \"g\"\ntotp_enrollment = \"anyone\"\n",
        ),
        "oidc.totp_enrollment",
        MINIMAL.lines().count() + 5,
        "\"first_login\"",
    );
    let accepts = |rule: crate::file::EmailVerified| {
        [Some(true), None, Some(false)].map(|claim| rule.accepts(claim))
    };
    assert_eq!(
        accepts(crate::file::EmailVerified::Required),
        [true, false, false]
    );
    assert_eq!(
        accepts(crate::file::EmailVerified::IfPresent),
        [true, true, false]
    );

    let found = problems(&oidc(
        "issuer = \"http://idp.example.org\"\nclient_id = \"\"\nclient_secret_file = \"secret\"\n\
         scopes = [\"email\"]\nallowed_email_domains = [\"example\"]\n",
    ));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["oidc.issuer", "oidc.client_id", "oidc.client_secret_file",],
        "{found:#?}"
    );
    assert!(found[0].message.contains("must be https://"), "{found:#?}");
    let issuer_line = MINIMAL.lines().count() + 3;
    assert_eq!(found[0].line, issuer_line, "{found:#?}");
    let found = problems(&oidc(
        "issuer = \"https://idp.example.org?x=1\"\nclient_id = \"g\"\n\
         scopes = [\"email\"]\nallowed_email_domains = [\"example\"]\n",
    ));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "oidc.issuer",
            "oidc.scopes",
            "oidc.allowed_email_domains[0]"
        ],
        "{found:#?}"
    );
    assert_one(
        &oidc("client_id = \"g\"\n"),
        "oidc.issuer",
        issuer_line - 1,
        "is required",
    );

    // Every member must keep a way in, and IdP groups need a provider.
    assert_one(
        &MINIMAL.replacen(
            "[[group]]",
            "[portal]\npassword_login = false\n\n[[group]]",
            1,
        ),
        "portal.password_login",
        7,
        "no way to sign in",
    );
    assert_one(
        &format!("{MINIMAL}oidc_groups = [\"research-team\"]\n"),
        "group[0].oidc_groups",
        9,
        "without [oidc]",
    );
    let mapped = parse(
        &format!(
            "{MINIMAL}oidc_groups = [\"research-team\"]\n\n[oidc]\nissuer = \"https://idp.example.org\"\nclient_id = \"g\"\n"
        ),
        "t.toml",
    )
    .unwrap();
    assert_eq!(mapped.groups[0].oidc_groups, ["research-team"]);
}

#[test]
fn ssh_certificate_settings_are_checked() {
    let text = MINIMAL.replace(
        "subnets = [\"10.0.3.0/24\"]",
        "subnets = [\"10.0.3.0/24\"]\nssh_principals = [\"ec2-user\", \"-oops\"]",
    );
    assert_one(&text, "group[0].ssh_principals[1]", 9, "not a login name");
    let text = format!("{MINIMAL}\n[ssh]\ncertificates = true\ncert_lifetime = \"90d\"\n");
    assert_one(&text, "ssh.cert_lifetime", 12, "between 1m and 30d");
    let config = parse(
        &MINIMAL.replace(
            "subnets = [\"10.0.3.0/24\"]",
            "subnets = [\"10.0.3.0/24\"]\nssh_principals = [\"ec2-user\", \"ubuntu\"]",
        ),
        "test.toml",
    )
    .unwrap();
    assert!(!config.ssh.certificates);
    assert_eq!(
        config.ssh.cert_lifetime,
        std::time::Duration::from_secs(12 * 3600)
    );
    assert_eq!(config.groups[0].ssh_principals, ["ec2-user", "ubuntu"]);
}

/// Joining by instance identity needs the host CA, `[aws]` and the
/// signer's certificate; each missing one is named at `ssh.host_join`.
#[test]
fn host_join_needs_certificates_aws_and_a_signer() {
    let text = format!("{MINIMAL}\n[ssh]\nhost_join = true\n");
    let found = problems(&text);
    let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found.iter().all(|p| p.key == "ssh.host_join"), "{found:#?}");
    for needle in ["[aws]", "ssh.certificates", "ssh.host_join_signer_file"] {
        assert!(
            messages.iter().any(|m| m.contains(needle)),
            "{needle}: {messages:?}"
        );
    }
    let text = format!("{MINIMAL}\n[ssh]\ncertificates = true\nhost_join_window = \"2d\"\n");
    assert_one(&text, "ssh.host_join_window", 12, "between 1m and 24h");
}

#[test]
fn syslog_defaults_to_the_host_and_the_gateway_name() {
    let text = format!("{MINIMAL}\n[audit.syslog]\naddress = \"logs.example.org:6514\"\n");
    let syslog = parse(&text, "t.toml").unwrap().audit.syslog.unwrap();
    assert_eq!(
        syslog,
        SyslogConfig {
            host: "logs.example.org".into(),
            port: 6514,
            server_name: "logs.example.org".into(),
            ca_file: None,
            client_auth: None,
            app_name: "accessd".into(),
            hostname: "gw".into(),
        }
    );
    let text = format!("{MINIMAL}\n[audit.syslog]\naddress = \"[2001:db8::9]:6514\"\n");
    let syslog = parse(&text, "t.toml").unwrap().audit.syslog.unwrap();
    assert_eq!(
        (syslog.host.as_str(), syslog.server_name.as_str()),
        ("2001:db8::9", "2001:db8::9")
    );
    assert_eq!(parse(MINIMAL, "t.toml").unwrap().audit.syslog, None);
}

#[test]
fn syslog_values_are_checked_with_their_place() {
    for address in [
        "",
        "logs.example.org",
        "logs:0",
        "2001:db8::9:6514",
        "a b:1",
    ] {
        let text = format!("{MINIMAL}\n[audit.syslog]\naddress = \"{address}\"\n");
        assert_one(&text, "audit.syslog.address", 11, "");
    }
    let text = format!(
        "{MINIMAL}\n[audit.syslog]\naddress = \"logs:6514\"\nclient_cert_file = \"/etc/c.pem\"\n"
    );
    assert_one(
        &text,
        "audit.syslog.client_cert_file",
        12,
        "without audit.syslog.client_key_file",
    );
    let text = format!(
        "{MINIMAL}\n[audit.syslog]\naddress = \"logs:6514\"\nca_file = \"ca.pem\"\napp_name = \"a b\"\nhostname = \"\"\nserver_name = \"no/name\"\n"
    );
    let found = problems(&text);
    let keys: Vec<(&str, usize)> = found.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        keys,
        [
            ("audit.syslog.ca_file", 12),
            ("audit.syslog.app_name", 13),
            ("audit.syslog.hostname", 14),
            ("audit.syslog.server_name", 15),
        ],
        "{found:#?}"
    );
    let text = format!("{MINIMAL}\n[audit.syslog]\naddress = \"logs:6514\"\nport = 1\n");
    assert_one(&text, "audit.syslog.port", 12, "unknown field");
}

#[test]
fn s3_export_defaults_and_needs_aws() {
    let text = format!(
        "{MINIMAL}\n[aws]\nregion = \"eu-west-3\"\n\n[audit.s3]\nbucket = \"team-audit\"\n"
    );
    let s3 = parse(&text, "t.toml").unwrap().audit.s3.unwrap();
    assert_eq!(
        s3,
        S3ExportConfig {
            bucket: "team-audit".into(),
            prefix: "gatehouse-audit".into(),
            retention: std::time::Duration::from_secs(400 * 86400),
        }
    );
    let text = format!(
        "{MINIMAL}\n[aws]\nregion = \"eu-west-3\"\n\n[audit.s3]\nbucket = \"team-audit\"\nprefix = \"/logs/gw/\"\nretention = \"7d\"\n"
    );
    let s3 = parse(&text, "t.toml").unwrap().audit.s3.unwrap();
    assert_eq!(
        (s3.prefix.as_str(), s3.retention.as_secs()),
        ("logs/gw", 7 * 86400)
    );
    assert_eq!(parse(MINIMAL, "t.toml").unwrap().audit.s3, None);
    let text = format!("{MINIMAL}\n[audit.s3]\nbucket = \"team-audit\"\n");
    assert_one(&text, "audit.s3.bucket", 11, "add an [aws] section");
}

#[test]
fn s3_export_values_are_checked_with_their_place() {
    let aws = "\n[aws]\nregion = \"eu-west-3\"\n";
    let text = format!(
        "{MINIMAL}{aws}\n[audit.s3]\nbucket = \"Team_Audit\"\nprefix = \"a/../b\"\nretention = \"1h\"\n"
    );
    let found = problems(&text);
    let keys: Vec<(&str, usize)> = found.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        keys,
        [
            ("audit.s3.bucket", 14),
            ("audit.s3.prefix", 15),
            ("audit.s3.retention", 16),
        ],
        "{found:#?}"
    );
    let text = format!("{MINIMAL}{aws}\n[audit.s3]\nbucket = \"b-1\"\nlock = \"x\"\n");
    assert_one(&text, "audit.s3.lock", 15, "unknown field");
}
