//! The reload table against the schema, the sample config and the README,
//! and each key's comparison, changed one at a time.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::raw::{RawAws, RawConfig, RawGroup};
use super::*;

const SAMPLE: &str = include_str!("../../../../packaging/gatehouse.toml");
const README: &str = include_str!("../../../../packaging/README.md");

/// Every key set, none left to its default where a default is "unset".
const FULL: &str = r#"
[gateway]
name = "gw"
public_endpoint = "vpn.example.com"
state_dir = "/var/lib/gatehouse"

[vpn]
enabled = true
listen = "0.0.0.0:51820"
interface = "gatehouse0"
pool = "10.200.0.0/24"
mtu = 1420
persistent_keepalive = 25
session_lifetime = "12h"
require_login = true
nat = "route"

[ssh]
enabled = true
listen = "0.0.0.0:2222"
allowed_ports = [22]
connect_timeout = "10s"
idle_timeout = "1h"
max_channels_per_user = 32
require_totp = false
max_startups = 64
max_startups_per_source = 8
login_grace_time = "30s"

[portal]
enabled = true
listen = "0.0.0.0:443"
url = "https://vpn.example.com"
tls_cert = "/etc/gatehouse/tls/fullchain.pem"
tls_key = "/etc/gatehouse/tls/privkey.pem"
require_totp = true
enrollment_ttl = "24h"
session_idle = "30m"
session_max = "12h"
login_lockout = "15m"
requests_per_minute = 600

[admin]
socket = "/run/gatehouse/admin.sock"
group = "gatehouse-admin"

[metrics]
listen = "127.0.0.1:9586"

[audit]
mirror = "/var/log/gatehouse/audit.jsonl"
mirror_max_mib = 100
mirror_keep = 10

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
ports = [22]

[[group]]
name = "ops"
subnets = ["10.0.2.0/24"]

[aws]
region = "eu-west-3"
apply_on_start = false
private_route_tables = ["rtb-0123456789abcdef0"]
admin_cidrs = ["203.0.113.7/32"]
public_cidrs = ["0.0.0.0/0", "::/0"]
endpoint_url = "http://127.0.0.1:5000"
imds_endpoint = "http://127.0.0.1:8111"
instance_id = "i-0123456789abcdef0"
network_interface_id = "eni-0123456789abcdef0"
vpc_id = "vpc-0123456789abcdef0"
subnet_id = "subnet-0123456789abcdef0"
availability_zone = "eu-west-3a"
"#;

/// A different valid value for every key (the first `[[group]]`'s for
/// the group keys).
const OTHER: &[(&str, &str)] = &[
    ("gateway.name", r#""gw2""#),
    ("gateway.public_endpoint", r#""gw.example.org""#),
    ("gateway.state_dir", r#""/srv/gatehouse""#),
    ("vpn.enabled", "false"),
    ("vpn.listen", r#""0.0.0.0:51821""#),
    ("vpn.interface", r#""gatehouse1""#),
    ("vpn.pool", r#""10.201.0.0/24""#),
    ("vpn.mtu", "1380"),
    ("vpn.persistent_keepalive", "0"),
    ("vpn.session_lifetime", r#""8h""#),
    ("vpn.require_login", "false"),
    ("vpn.nat", r#""masquerade""#),
    ("ssh.enabled", "false"),
    ("ssh.listen", r#""0.0.0.0:2223""#),
    ("ssh.allowed_ports", "[22, 2022]"),
    ("ssh.connect_timeout", r#""5s""#),
    ("ssh.idle_timeout", r#""2h""#),
    ("ssh.max_channels_per_user", "16"),
    ("ssh.require_totp", "true"),
    ("ssh.max_startups", "65"),
    ("ssh.max_startups_per_source", "9"),
    ("ssh.login_grace_time", r#""20s""#),
    ("portal.enabled", "false"),
    ("portal.listen", r#""0.0.0.0:8443""#),
    ("portal.url", r#""https://portal.example.org""#),
    (
        "portal.tls_cert",
        r#""/etc/gatehouse/tls/new-fullchain.pem""#,
    ),
    ("portal.tls_key", r#""/etc/gatehouse/tls/new-privkey.pem""#),
    ("portal.require_totp", "false"),
    ("portal.enrollment_ttl", r#""48h""#),
    ("portal.session_idle", r#""10m""#),
    ("portal.session_max", r#""8h""#),
    ("portal.login_lockout", r#""30m""#),
    ("portal.requests_per_minute", "300"),
    ("admin.socket", r#""/run/gatehouse/other.sock""#),
    ("admin.group", r#""wheel""#),
    ("metrics.listen", r#""127.0.0.1:9587""#),
    ("audit.mirror", r#""/var/log/gatehouse/other.jsonl""#),
    ("audit.mirror_max_mib", "200"),
    ("audit.mirror_keep", "5"),
    ("group.name", r#""science""#),
    ("group.subnets", r#"["10.0.4.0/24"]"#),
    ("group.ports", "[22, 443]"),
    ("aws.region", r#""eu-west-1""#),
    ("aws.apply_on_start", "true"),
    ("aws.private_route_tables", r#"["rtb-1", "rtb-2"]"#),
    ("aws.admin_cidrs", "[]"),
    ("aws.public_cidrs", r#"["198.51.100.0/24"]"#),
    ("aws.endpoint_url", r#""http://127.0.0.1:5001""#),
    ("aws.imds_endpoint", r#""http://127.0.0.1:8112""#),
    ("aws.instance_id", r#""i-0fedcba987654321""#),
    ("aws.network_interface_id", r#""eni-0fedcba987654321""#),
    ("aws.vpc_id", r#""vpc-0fedcba987654321""#),
    ("aws.subnet_id", r#""subnet-0fedcba987654321""#),
    ("aws.availability_zone", r#""eu-west-3b""#),
];

fn parse(text: &str) -> Config {
    Config::parse(text, "t.toml").unwrap_or_else(|err| panic!("{err}\n{text}"))
}

fn table_keys() -> BTreeSet<&'static str> {
    reload_keys().iter().map(|k| k.key).collect()
}

/// The schema's keys, from the raw structs: a config with `[aws]` and a
/// `[[group]]` present, serialized, walked down to its leaves. An unset
/// optional key serializes as null, so it is a leaf too.
fn schema_keys() -> BTreeSet<String> {
    let raw = RawConfig {
        aws: Some(RawAws::default()),
        groups: vec![RawGroup::default()],
        ..RawConfig::default()
    };
    let mut keys = BTreeSet::new();
    leaves("", &serde_json::to_value(raw).unwrap(), &mut keys);
    keys
}

fn leaves(path: &str, value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            for (name, value) in fields {
                let path = match path {
                    "" => name.clone(),
                    parent => format!("{parent}.{name}"),
                };
                leaves(&path, value, out);
            }
        }
        // An array of tables: its tables' keys, under the array's name.
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for item in items {
                leaves(path, item, out);
            }
        }
        _ => {
            out.insert(path.to_string());
        }
    }
}

/// `text` with `key`'s line in its table (the first `[[group]]` for
/// group keys) set to `value`; panics if `text` does not set the key.
fn with_value(text: &str, key: &str, value: &str) -> String {
    let (table, field) = key.split_once('.').unwrap();
    let header = if table == "group" {
        "[[group]]".to_string()
    } else {
        format!("[{table}]")
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let start = lines.iter().position(|l| *l == header).expect(&header);
    let line = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('['))
        .position(|l| l.starts_with(&format!("{field} = ")))
        .map(|at| start + 1 + at)
        .unwrap_or_else(|| panic!("FULL does not set {key}"));
    lines[line] = format!("{field} = {value}");
    lines.join("\n")
}

#[test]
fn every_schema_key_has_an_entry_and_every_entry_is_a_key() {
    let schema = schema_keys();
    let table: BTreeSet<String> = table_keys().into_iter().map(String::from).collect();
    let missing: Vec<_> = schema.difference(&table).collect();
    let unknown: Vec<_> = table.difference(&schema).collect();
    assert!(
        missing.is_empty(),
        "keys of the config file with no reload entry in file/reload.rs: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "reload entries for keys the config file does not have: {unknown:?}"
    );
    assert_eq!(table.len(), reload_keys().len(), "a key named twice");
}

/// The sample config documents every key (set, or shown commented out
/// as `# key = ...`), so an entry here without one there fails too.
#[test]
fn the_sample_config_shows_every_key() {
    let mut documented = BTreeSet::new();
    let mut table = String::new();
    for line in SAMPLE.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .map(|l| l.trim_matches(['[', ']']))
        {
            table = name.to_string();
        } else if let Some((key, _)) = line.split_once(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            documented.insert(format!("{table}.{key}"));
        }
    }
    let table = table_keys().into_iter().map(String::from).collect();
    assert_eq!(documented, table, "packaging/gatehouse.toml vs reload keys");
}

#[test]
fn each_key_changed_alone_is_seen_alone_and_waits_only_when_restart() {
    let base = parse(FULL);
    assert_eq!(changed_keys(&base, &base), Vec::<&str>::new());
    let others: BTreeSet<&str> = OTHER.iter().map(|(k, _)| *k).collect();
    assert_eq!(others, table_keys(), "OTHER names each key once");
    assert_eq!(others.len(), OTHER.len());
    for (key, value) in OTHER {
        let new = parse(&with_value(FULL, key, value));
        assert_eq!(changed_keys(&base, &new), [*key], "changing {key}");
        let waits = restart_required(&base, &new);
        match reload_of(key) {
            Some(Reload::Restart) => assert_eq!(waits, [*key], "{key}"),
            Some(Reload::Live) => assert!(waits.is_empty(), "{key}: {waits:?}"),
            None => panic!("{key} has no entry"),
        }
        assert_eq!(changed_keys(&new, &base), [*key], "changing {key} back");
    }
}

#[test]
fn keys_read_only_at_start_up_need_a_restart() {
    let restart: Vec<&str> = reload_keys()
        .iter()
        .filter(|k| k.reload == Reload::Restart)
        .map(|k| k.key)
        .collect();
    assert_eq!(
        restart,
        [
            "gateway.name",
            "gateway.state_dir",
            "vpn.enabled",
            "vpn.listen",
            "vpn.interface",
            "vpn.pool",
            "vpn.mtu",
            "vpn.nat",
            "ssh.enabled",
            "ssh.listen",
            "portal.enabled",
            "portal.listen",
            "portal.tls_cert",
            "portal.tls_key",
            "portal.login_lockout",
            "portal.requests_per_minute",
            "admin.socket",
            "admin.group",
            "metrics.listen",
            "audit.mirror",
            "audit.mirror_max_mib",
            "audit.mirror_keep",
        ]
    );
}

#[test]
fn the_default_mirror_moves_with_the_state_dir() {
    let text = FULL.replace("mirror = \"/var/log/gatehouse/audit.jsonl\"\n", "");
    let base = parse(&text);
    let new = parse(&with_value(
        &text,
        "gateway.state_dir",
        r#""/srv/gatehouse""#,
    ));
    assert_eq!(
        restart_required(&base, &new),
        ["gateway.state_dir", "audit.mirror"]
    );
}

#[test]
fn adding_tls_files_or_aws_is_seen_as_their_keys() {
    let bare = FULL
        .replace("tls_cert = \"/etc/gatehouse/tls/fullchain.pem\"\n", "")
        .replace("tls_key = \"/etc/gatehouse/tls/privkey.pem\"\n", "");
    let (bare, _) = bare.split_once("[aws]").unwrap();
    let (old, new) = (parse(bare), parse(FULL));
    assert_eq!(
        restart_required(&old, &new),
        ["portal.tls_cert", "portal.tls_key"]
    );
    let aws: Vec<&str> = changed_keys(&old, &new)
        .into_iter()
        .filter(|k| k.starts_with("aws."))
        .collect();
    assert_eq!(aws.len(), 12, "{aws:?}");
}

#[test]
fn a_group_added_changes_the_group_keys_only() {
    let old = parse(FULL);
    let text = format!("{FULL}\n[[group]]\nname = \"db\"\nsubnets = [\"10.0.5.0/24\"]\n");
    let new = parse(&text);
    assert_eq!(
        changed_keys(&old, &new),
        ["group.name", "group.subnets", "group.ports"]
    );
    assert!(restart_required(&old, &new).is_empty());
}

/// packaging/README.md's paragraph "Keys read only at start-up ..."
/// names exactly the keys marked restart (a misspelt key is not a key,
/// so the one it meant goes missing).
#[test]
fn the_readme_names_the_keys_that_need_a_restart() {
    let paragraph = README
        .split("\n\n")
        .find(|p| p.starts_with("Keys read only at start-up"))
        .expect("packaging/README.md: a paragraph \"Keys read only at start-up ...\"");
    let named: BTreeSet<&str> = paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| reload_of(word).is_some())
        .collect();
    let restart: BTreeSet<&str> = reload_keys()
        .iter()
        .filter(|k| k.reload == Reload::Restart)
        .map(|k| k.key)
        .collect();
    assert_eq!(named, restart);
}
