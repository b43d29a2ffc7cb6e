//! The reload table against the schema, the sample config and the README,
//! and each key's comparison, changed one at a time.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::raw::{RawAudit, RawAws, RawConfig, RawGroup};
use super::examples::{FULL, OTHER, with_value};
use super::*;

const SAMPLE: &str = include_str!("../../../../packaging/gatehouse.toml");
const README: &str = include_str!("../../../../packaging/README.md");

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
        store: Some(Default::default()),
        ha: Some(Default::default()),
        oidc: Some(Default::default()),
        groups: vec![RawGroup::default()],
        audit: RawAudit {
            syslog: Some(Default::default()),
            s3: Some(Default::default()),
            ..RawAudit::default()
        },
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
            "gateway.secrets_key_file",
            "vpn.enabled",
            "vpn.listen",
            "vpn.interface",
            "vpn.pool",
            "vpn.mtu",
            "vpn.nat",
            "vpn.private_key_file",
            "ssh.enabled",
            "ssh.listen",
            "ssh.host_key_file",
            "ssh.certificates",
            "ssh.ca_key_file",
            "ssh.host_ca_key_file",
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
            "audit.syslog.address",
            "audit.syslog.server_name",
            "audit.syslog.ca_file",
            "audit.syslog.client_cert_file",
            "audit.syslog.client_key_file",
            "audit.syslog.app_name",
            "audit.syslog.hostname",
            "audit.checkpoint_interval",
            "audit.s3.bucket",
            "audit.s3.prefix",
            "audit.s3.retention",
            "store.url",
            "store.password_file",
            "store.ca_file",
            "ha.node",
            "ha.lease_ttl",
            "oidc.issuer",
            "oidc.client_id",
            "oidc.client_secret_file",
            "oidc.ca_file",
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
fn adding_tls_files_aws_or_a_shared_store_is_seen_as_their_keys() {
    let bare = FULL
        .replace("tls_cert = \"/etc/gatehouse/tls/fullchain.pem\"\n", "")
        .replace("tls_key = \"/etc/gatehouse/tls/privkey.pem\"\n", "");
    let (bare, _) = bare.split_once("[aws]").unwrap();
    let (old, new) = (parse(bare), parse(FULL));
    assert_eq!(
        restart_required(&old, &new),
        [
            "portal.tls_cert",
            "portal.tls_key",
            "audit.s3.bucket",
            "audit.s3.prefix",
            "audit.s3.retention",
            "store.url",
            "store.password_file",
            "store.ca_file",
            "ha.node",
            "ha.lease_ttl"
        ]
    );
    let aws: Vec<&str> = changed_keys(&old, &new)
        .into_iter()
        .filter(|k| k.starts_with("aws."))
        .collect();
    assert_eq!(aws.len(), 13, "{aws:?}");
    let shared: Vec<&str> = changed_keys(&old, &new)
        .into_iter()
        .filter(|k| k.starts_with("store.") || k.starts_with("ha."))
        .collect();
    assert_eq!(shared.len(), 5, "{shared:?}");
}

#[test]
fn a_group_added_changes_the_group_keys_only() {
    let old = parse(FULL);
    let text = format!("{FULL}\n[[group]]\nname = \"db\"\nsubnets = [\"10.0.5.0/24\"]\n");
    let new = parse(&text);
    assert_eq!(
        changed_keys(&old, &new),
        [
            "group.name",
            "group.subnets",
            "group.ports",
            "group.oidc_groups",
            "group.ssh_principals"
        ]
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
