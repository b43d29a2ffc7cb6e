//! The packaging files: the hardened systemd unit says what the issue asks
//! (dedicated user, two ambient capabilities, strict sandbox, notify,
//! watchdog, reload by SIGHUP) and `systemd-analyze security` scores it
//! below 3.0; the cloud-init files write what accessd and sshd accept. The
//! private host's host certificate script has a file of its own
//! ([`packaging_host_cert`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod packaging_host_cert;

use std::process::Command;

use gatehouse_tests::packaging::{cloud_init_files, packaging_file, sshd};
use gatehouse_tests::{have_tool, require, stdout};

/// Every `Key=value` line of a unit, comments and sections dropped.
fn directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_unit_is_hardened_as_the_issue_asks() {
    let unit = std::fs::read_to_string(packaging_file("systemd/accessd.service")).unwrap();
    let all = directives(&unit);
    let value = |key: &str| -> Vec<&str> {
        all.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let expect = [
        ("Type", "notify"),
        ("User", "gatehouse"),
        ("AmbientCapabilities", "CAP_NET_ADMIN CAP_NET_BIND_SERVICE"),
        (
            "CapabilityBoundingSet",
            "CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
        ),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "gatehouse"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ),
        ("SystemCallFilter", "@system-service"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("WatchdogSec", "30s"),
    ];
    for (key, want) in expect {
        assert!(
            value(key).contains(&want),
            "{key}={want} missing: {:?}",
            value(key)
        );
    }
    assert!(
        value("RuntimeDirectory")[0]
            .split(' ')
            .any(|d| d == "gatehouse")
    );
    let sysusers = std::fs::read_to_string(packaging_file("systemd/gatehouse.sysusers")).unwrap();
    assert!(sysusers.contains("u gatehouse "), "{sysusers}");
    assert!(sysusers.contains("g gatehouse-admin "), "{sysusers}");
}

#[test]
fn systemd_analyze_scores_the_unit_below_3() {
    if !require(
        have_tool("systemd-analyze"),
        "systemd-analyze (Debian package systemd)",
    ) {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(packaging_file("systemd/accessd.service"))
        .output()
        .unwrap();
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in: {text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable score: {line}"));
    eprintln!("systemd-analyze security: {score}");
    assert!(score < 3.0, "{line}");
}

/// A cloud-init file of `packaging/`, parsed, and the gatehouse.toml it
/// writes; `None` (printed) without PyYAML.
fn cloud_init(name: &str) -> Option<(serde_json::Value, String)> {
    let data = cloud_init_files(name)?;
    let config = data["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/gatehouse/gatehouse.toml")
        .expect("the config file")["content"]
        .as_str()
        .unwrap()
        .to_owned();
    Some((data, config))
}

/// `accessd check-config` on `config`; the output.
fn check_config(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gatehouse.toml");
    std::fs::write(&file, config).unwrap();
    Command::new(gatehouse_tests::bin("accessd"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap()
}

/// The cloud-init user data is valid YAML, writes a config that accessd
/// accepts (with `aws.apply_on_start` and the elastic IP as endpoint), and
/// starts accessd after installing the package.
#[test]
fn cloud_init_installs_and_starts_accessd_with_apply_on_start() {
    let Some((data, config)) = cloud_init("cloud-init.yaml") else {
        return;
    };
    assert!(config.contains("apply_on_start = true"), "{config}");
    assert!(config.contains("public_endpoint = \"auto\""), "{config}");
    let checked = check_config(&config);
    assert!(
        checked.status.success(),
        "the cloud-init config is refused: {}",
        gatehouse_tests::stderr(&checked)
    );
    let runcmd = data["runcmd"].to_string();
    assert!(
        runcmd.contains("\"enable\",\"--now\",\"accessd\""),
        "{runcmd}"
    );
    assert!(runcmd.contains("--force-confold"), "{runcmd}");
}

/// The pair's cloud-init: valid YAML; its config is one of an HA pair on
/// the shared store, which accessd accepts once the shared files it names
/// are in place (the node name set at boot, the files fetched from SSM);
/// it fetches those files and names the node before accessd starts.
#[test]
fn the_pair_cloud_init_writes_a_pair_config_and_fetches_the_shared_files() {
    let Some((data, config)) = cloud_init("cloud-init-pair.yaml") else {
        return;
    };
    for needle in ["[store]", "[ha]", "sslmode=verify-full", "tls_cert"] {
        assert!(config.contains(needle), "{needle}: {config}");
    }
    // The SSH host key is accessd's to keep in SSM (with [aws]).
    assert!(!config.contains("host_key_file"), "{config}");
    let bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    if !require(
        bundle.exists(),
        "a CA bundle (Debian package ca-certificates)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let place = |name: &str, content: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    };
    let booted = config
        .replace("node = \"NODE\"", "node = \"i-0123456789abcdef0\"")
        .replace("/etc/gatehouse/pg-password", &place("pg-password", "pw\n"))
        .replace("/etc/gatehouse/rds-ca.pem", &bundle.display().to_string());
    let checked = check_config(&booted);
    assert!(
        checked.status.success(),
        "the pair's config is refused: {}",
        gatehouse_tests::stderr(&checked)
    );
    assert!(
        stdout(&checked).contains("shared store postgresql://gatehouse-db."),
        "{}",
        stdout(&checked)
    );
    let runcmd = data["runcmd"].to_string();
    for needle in [
        "instance-id",
        "pg-password",
        "portal-cert",
        "portal-key",
        "umask 077",
    ] {
        assert!(runcmd.contains(needle), "{needle}: {runcmd}");
    }
    let fetched = runcmd.find("get pg-password").unwrap();
    let started = runcmd.find("\"enable\",\"--now\",\"accessd\"").unwrap();
    assert!(
        fetched < started,
        "the shared files come before accessd starts"
    );
}

/// The private host's cloud-init fragment (SSH certificates) is valid YAML
/// and its sshd_config.d file, with its paths moved into a scratch
/// directory and a real CA line, passes `sshd -t`.
#[test]
fn the_private_host_fragment_trusts_the_ca_in_a_config_sshd_accepts() {
    let Some(sshd) = sshd() else {
        return;
    };
    let Some(data) = cloud_init_files("cloud-init-private-host.yaml") else {
        return;
    };
    let files = data["write_files"].as_array().unwrap();
    let file = |path: &str| {
        files
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in the fragment"))["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let snippet = file("/etc/ssh/sshd_config.d/gatehouse.conf");
    assert!(file("/etc/ssh/gatehouse_user_ca.pub").starts_with("ssh-ed25519 "));
    assert_eq!(
        file("/etc/ssh/gatehouse_principals/ec2-user").trim(),
        "ec2-user"
    );
    for directive in [
        "TrustedUserCAKeys /etc/ssh/gatehouse_user_ca.pub",
        "AuthorizedPrincipalsFile /etc/ssh/gatehouse_principals/%u",
    ] {
        assert!(snippet.contains(directive), "{snippet}");
    }
    let dir = tempfile::tempdir().unwrap();
    let host_key = dir.path().join("host_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .output()
        .unwrap();
    assert!(made.status.success());
    let scratch = dir.path().display().to_string();
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "{}\nHostKey {}\nUsePAM no\n",
            snippet.replace("/etc/ssh", &scratch),
            host_key.display()
        ),
    )
    .unwrap();
    let checked = Command::new(sshd)
        .arg("-t")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "sshd -t: {}",
        gatehouse_tests::stderr(&checked)
    );
}
