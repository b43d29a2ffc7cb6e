//! The foundation, end to end: the real `accessd` on a temp state dir, driven
//! by the real `accessctl`, as an admin would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;

use gatehouse_tests::{
    Daemon, bin, have_tool, is_root, require, sample_config, ssh_public_key, stderr, stdout,
};
use nix::sys::signal::Signal;
use serde_json::Value;

fn my_uid() -> String {
    format!("uid:{}", nix::unistd::geteuid().as_raw())
}

/// The issue's "done when": user add, device config, wg-quick strip, audit,
/// verify, and verify failing after a hand edit of one audit row.
#[test]
fn admin_story_from_user_add_to_a_verified_audit_log() {
    let daemon = Daemon::start();

    let added = daemon.ctl_json(&["user", "add", "alice", "--group", "research"]);
    let token = added["enrollment"]["token"].as_str().unwrap().to_string();
    assert!(
        added["enrollment"]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/enroll/{token}"))
    );
    assert_eq!(added["user"]["state"], "pending");
    assert_eq!(added["user"]["subnets"], serde_json::json!(["10.0.3.0/24"]));

    let conf = daemon.dir.path().join("alice.conf");
    let summary = daemon.ctl_ok(&[
        "device",
        "config",
        "alice",
        "laptop",
        "--out",
        conf.to_str().unwrap(),
    ]);
    assert!(summary.contains("10.200.0.2"), "{summary}");
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "device config must be 0600");
    let text = std::fs::read_to_string(&conf).unwrap();
    let allowed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("AllowedIPs"))
        .collect();
    assert_eq!(allowed, ["AllowedIPs = 10.0.3.0/24"], "{text}");
    assert!(text.contains("Address = 10.200.0.2/32"), "{text}");
    assert!(text.contains("Endpoint = vpn.example.com:51820"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("PrivateKey = ")),
        "{text}"
    );
    let status = daemon.ctl_json(&["status"]);
    let gateway_key = status["wireguard_public_key"].as_str().unwrap();
    assert!(
        text.contains(&format!("PublicKey = {gateway_key}")),
        "{text}"
    );

    if require(
        have_tool("wg-quick") && is_root(),
        "wg-quick (wireguard-tools) as root is needed to check the device config",
    ) {
        // wg-quick names the interface after the file: at most 15 characters.
        let out = Command::new("wg-quick")
            .arg("strip")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wg-quick strip refused the config:\n{}",
            stderr(&out)
        );
        let stripped = stdout(&out);
        assert!(
            stripped.contains("AllowedIPs = 10.0.3.0/24") && !stripped.contains("Address"),
            "{stripped}"
        );
    }

    let records = daemon.audit_json(&[]);
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["gateway.start", "user.add", "device.create"]);
    for record in &records[1..] {
        assert_eq!(record["actor"], my_uid().as_str());
    }
    assert_eq!(records[2]["target"], "alice/laptop");
    let table = daemon.ctl_ok(&["audit"]);
    assert!(
        table.contains("user.add") && table.contains("device.create") && table.contains(&my_uid()),
        "{table}"
    );

    let verified = daemon.ctl(&["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
    // A new log is keyed from its first record (issue 25).
    assert!(
        stdout(&verified).contains("3 records, keyed from record 1"),
        "{}",
        stdout(&verified)
    );
    // The checkpoints' public key, for whoever checks the log.
    let key = daemon.ctl_ok(&["audit", "key"]);
    assert!(
        key.starts_with("ssh-ed25519 ") && key.trim_end().ends_with(" gatehouse-audit@research-gw"),
        "{key}"
    );

    // One audit row edited by hand: verify must fail and name it.
    // The database itself refuses edits of audit rows; someone with the file
    // can drop that guard, which is what this simulates.
    let db = rusqlite::Connection::open(daemon.db_path()).unwrap();
    let refused = db.execute("UPDATE audit_log SET actor = 'uid:4242' WHERE seq = 2", []);
    assert!(
        refused.is_err(),
        "audit rows must be immutable in the database"
    );
    db.execute("DROP TRIGGER audit_log_immutable_update", [])
        .unwrap();
    let changed = db
        .execute("UPDATE audit_log SET actor = 'uid:4242' WHERE seq = 2", [])
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let broken = daemon.ctl(&["audit", "verify"]);
    assert_eq!(
        broken.status.code(),
        Some(1),
        "{}{}",
        stdout(&broken),
        stderr(&broken)
    );
    let said = format!("{}{}", stdout(&broken), stderr(&broken));
    assert!(
        said.contains("record 2") && said.contains("altered"),
        "{said}"
    );
}

#[test]
fn no_secret_reaches_the_audit_log_the_database_or_the_daemon_log() {
    let daemon = Daemon::start();
    let added = daemon.ctl_json(&["user", "add", "bob", "--group", "research"]);
    let token = added["enrollment"]["token"].as_str().unwrap().to_string();
    let device = daemon.ctl_json(&["device", "config", "bob", "phone"]);
    let private_key = device["config"]
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .unwrap()
        .to_string();
    let gateway_secret = std::fs::read_to_string(daemon.state_dir.join("wireguard.key")).unwrap();
    let mut haystack = Vec::new();
    for entry in std::fs::read_dir(&daemon.state_dir).unwrap() {
        let path = entry.unwrap().path();
        // Files only: the portal keeps its certificate in a subdirectory.
        if path.is_file() && path.file_name().is_some_and(|n| n != "wireguard.key") {
            haystack.extend(std::fs::read(&path).unwrap());
        }
    }
    haystack.extend(daemon.log_text().into_bytes());
    haystack.extend(daemon.ctl_ok(&["--json", "audit"]).into_bytes());
    let haystack = String::from_utf8_lossy(&haystack);
    for (what, secret) in [
        ("enrollment token", token.as_str()),
        ("device private key", &private_key),
        ("gateway key", gateway_secret.trim()),
    ] {
        assert!(
            !haystack.contains(secret),
            "the {what} leaked into the state dir, log or audit"
        );
    }
    let key_mode = std::fs::metadata(daemon.state_dir.join("wireguard.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let db_mode = std::fs::metadata(daemon.db_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(db_mode, 0o600);
    let sock_mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(sock_mode, 0o660);
}

#[test]
fn unreachable_daemon_exits_3_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let out = Command::new(bin("accessctl"))
        .arg("--socket")
        .arg(&socket)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not reachable"), "{}", stderr(&out));
}

#[test]
fn malformed_requests_get_json_errors_and_the_daemon_lives_on() {
    let daemon = Daemon::start();
    let cases: [(&str, &str); 4] = [
        ("POST /v1/users", "{not json"),
        ("POST /v1/users", r#"{"name": 7}"#),
        ("GET /v1/audit?limit=many", ""),
        ("GET /v1/nowhere", ""),
    ];
    for (request_line, body) in cases {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        let request = format!(
            "{request_line} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status: u16 = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((400..500).contains(&status), "{request_line}: {response}");
        let json: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(
            json["code"].is_string() && json["message"].is_string(),
            "{response}"
        );
    }
    // Garbage that is not even HTTP.
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.write_all(b"\x00\x01\x02 hello\r\n\r\n").unwrap();
    let _ = stream.read(&mut [0u8; 256]);
    daemon.ctl_ok(&["status"]);
}

#[test]
fn clear_errors_for_unknown_names_and_bad_input() {
    let daemon = Daemon::start();
    for (args, needle) in [
        (vec!["user", "show", "nobody"], "not found"),
        (
            vec!["user", "add", "carol", "--group", "astronauts"],
            "unknown group",
        ),
        (vec!["device", "config", "nobody", "laptop"], "not found"),
        (vec!["device", "revoke", "nobody", "laptop"], "not found"),
    ] {
        let out = daemon.ctl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let out = daemon.ctl(&["user", "add", "Bad Name", "--group", "research"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("name"), "{}", stderr(&out));
    daemon.ctl_ok(&["user", "add", "dave", "--group", "research"]);
    let dup = daemon.ctl(&["user", "add", "dave", "--group", "research"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
}

#[test]
fn concurrent_admins_get_distinct_addresses() {
    let daemon = Daemon::start();
    daemon.ctl_ok(&["user", "add", "erin", "--group", "research"]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(bin("accessctl"))
                .arg("--socket")
                .arg(&daemon.socket)
                .args(["--json", "device", "config", "erin", &format!("dev{i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut addresses: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
            v["device"]["address"].as_str().unwrap().to_string()
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 8, "{addresses:?}");
    let devices = daemon.ctl_json(&["device", "list", "--user", "erin"]);
    assert_eq!(devices.as_array().unwrap().len(), 8);
}

#[test]
fn a_restart_keeps_users_devices_addresses_keys_and_the_chain() {
    let mut daemon = Daemon::start();
    daemon.ctl_ok(&[
        "user",
        "add",
        "frank",
        "--group",
        "research",
        "--group",
        "app-admins",
    ]);
    let device = daemon.ctl_json(&["device", "config", "frank", "laptop"]);
    let key_before = daemon.ctl_json(&["status"])["wireguard_public_key"].clone();
    let status = daemon.stop();
    assert!(
        status.success(),
        "SIGTERM must stop accessd cleanly: {status}"
    );
    assert!(
        !daemon.socket.exists(),
        "the admin socket is removed on a clean stop"
    );

    daemon.spawn();
    let shown = daemon.ctl_json(&["user", "show", "frank"]);
    assert_eq!(
        shown["groups"],
        serde_json::json!(["app-admins", "research"])
    );
    assert_eq!(shown["devices"][0]["address"], device["device"]["address"]);
    assert_eq!(
        shown["devices"][0]["public_key"],
        device["device"]["public_key"]
    );
    assert_eq!(
        daemon.ctl_json(&["status"])["wireguard_public_key"],
        key_before
    );
    let kinds: Vec<String> = daemon
        .audit_json(&[])
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "gateway.start",
            "user.add",
            "device.create",
            "gateway.stop",
            "gateway.start"
        ]
    );
    daemon.ctl_ok(&["audit", "verify"]);
}

#[test]
fn reload_refuses_an_invalid_file_and_keeps_the_running_config() {
    let daemon = Daemon::start();
    let good = gatehouse_tests::host_sample_config();
    std::fs::write(
        &daemon.config,
        good.replace("subnets = [\"10.0.3.0/24\"]", "subnets = [\"0.0.0.0/0\"]"),
    )
    .unwrap();
    let out = daemon.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    let line = good
        .lines()
        .position(|l| l.starts_with("subnets = [\"10.0.3.0/24\"]"))
        .unwrap()
        + 1;
    let place = format!("gatehouse.toml:{line}:");
    assert!(
        said.contains("group[0].subnets[0]")
            && said.contains("default route")
            && said.contains(&place),
        "{said}"
    );
    let groups = daemon.ctl_json(&["group", "list"]);
    assert_eq!(
        groups[0]["subnets"],
        serde_json::json!(["10.0.3.0/24"]),
        "the running config stays"
    );

    // SIGHUP with a valid file that adds a group.
    let extra = format!("{good}\n[[group]]\nname = \"ops\"\nsubnets = [\"10.0.9.0/24\"]\n");
    std::fs::write(&daemon.config, extra).unwrap();
    daemon.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let groups = daemon.ctl_json(&["group", "list"]);
        if groups.as_array().unwrap().len() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload: {groups}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kinds: Vec<String> = daemon
        .audit_of("config")
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["config.reload.fail", "config.reload"]);
}

#[test]
fn check_config_reports_every_problem_with_exit_64() {
    let ok = Command::new(bin("accessd"))
        .arg("check-config")
        .arg(sample_config())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "the sample config must pass: {}",
        stderr(&ok)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[gateway]\nname = \"gw\"\npublic_endpoint = \"h\"\n\n[vpn]\npool = \"10.0.0.0/8\"\n\n[[group]]\nname = \"x\"\nsubnets = [\"10.0.3.0/24\", \"::/0\"]\n").unwrap();
    let out = Command::new(bin("accessd"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let said = stderr(&out);
    assert!(
        said.contains("bad.toml:10:")
            && said.contains("group[0].subnets[0]")
            && said.contains("group[0].subnets[1]"),
        "{said}"
    );
}

#[test]
fn user_lifecycle_and_audit_filters() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let key = ssh_public_key(dir.path(), "grace");
    let mut add = vec![
        "user",
        "add",
        "grace",
        "--group",
        "research",
        "--expires",
        "30d",
    ];
    let key_path = dir.path().join("grace.pub");
    if key.is_some() {
        add.extend(["--ssh-key", key_path.to_str().unwrap()]);
    }
    daemon.ctl_ok(&add);
    daemon.ctl_ok(&["user", "add", "heidi", "--group", "app-admins"]);
    daemon.ctl_ok(&["user", "disable", "grace"]);
    assert_eq!(
        daemon.ctl_json(&["user", "show", "grace"])["state"],
        "disabled"
    );
    daemon.ctl_ok(&["user", "enable", "grace"]);
    daemon.ctl_ok(&["user", "set-groups", "grace", "research", "app-admins"]);
    let shown = daemon.ctl_json(&["user", "show", "grace"]);
    assert_eq!(shown["subnets"], serde_json::json!(["10.0.2.0/23"]));
    assert!(shown["expires_at"].is_string());
    if key.is_some() {
        let fingerprint = shown["ssh_keys"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .to_string();
        let listed = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&key_path)
            .output()
            .unwrap();
        assert!(
            stdout(&listed).contains(&fingerprint),
            "fingerprint as ssh-keygen prints it"
        );
        daemon.ctl_ok(&["user", "remove-key", "grace", &fingerprint]);
        assert_eq!(
            daemon.ctl_json(&["user", "show", "grace"])["ssh_keys"],
            serde_json::json!([])
        );
    }
    let members = daemon.ctl_json(&["group", "list"]);
    assert_eq!(members[1]["members"], 2, "{members}");

    let grace: Vec<String> = daemon
        .audit_json(&["--user", "grace"])
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    let mut expected = vec!["user.add", "user.disable", "user.enable", "user.set_groups"];
    if key.is_some() {
        expected.push("user.key.remove");
    }
    assert_eq!(grace, expected);
    assert_eq!(daemon.audit_of("user.add").len(), 2);
    assert_eq!(
        daemon.audit_json(&["--kind", "user", "--limit", "1"]).len(),
        1
    );
    assert_eq!(
        daemon.audit_json(&["--since", "1h"]).len(),
        daemon.audit_json(&[]).len()
    );
    assert!(
        daemon
            .audit_json(&["--until", "2000-01-01T00:00:00Z"])
            .is_empty()
    );

    daemon.ctl_ok(&["user", "remove", "grace"]);
    let out = daemon.ctl(&["user", "show", "grace"]);
    assert_eq!(out.status.code(), Some(1));
    let users = daemon.ctl_ok(&["user", "list"]);
    assert!(
        users.contains("heidi") && !users.contains("grace"),
        "{users}"
    );
}

/// `--no-login` marks a machine account: shown by `user show`, changed by
/// `user set-no-login` and audited; everyone else waits for a portal login
/// under the default `vpn.require_login = true`.
#[test]
fn no_login_machine_accounts_are_shown_changed_and_audited() {
    let daemon = Daemon::start();
    daemon.ctl_ok(&["user", "add", "runner", "--group", "research", "--no-login"]);
    daemon.ctl_ok(&["user", "add", "ivan", "--group", "research"]);

    let runner = daemon.ctl_json(&["user", "show", "runner"]);
    assert_eq!(runner["no_login"], true);
    assert_eq!(runner["state"], "active", "a machine never enrolls");
    assert_eq!(runner["vpn_access"], "always");
    let ivan = daemon.ctl_json(&["user", "show", "ivan"]);
    assert_eq!(ivan["no_login"], false);
    assert_eq!(ivan["vpn_access"], "login_needed");
    let text = daemon.ctl_ok(&["user", "show", "runner"]);
    assert!(text.contains("machine account (--no-login)"), "{text}");

    let changed = daemon.ctl_ok(&["user", "set-no-login", "runner", "off"]);
    assert!(changed.contains("waits for a portal login"), "{changed}");
    assert_eq!(
        daemon.ctl_json(&["user", "show", "runner"])["state"],
        "pending",
        "a person who never enrolled"
    );
    let link = daemon.ctl_ok(&["user", "enrollment-link", "runner"]);
    assert!(link.contains("enrollment link  https://"), "{link}");
    assert_eq!(
        daemon.ctl_json(&["user", "show", "runner"])["vpn_access"],
        "login_needed"
    );
    let bad = daemon.ctl(&["user", "set-no-login", "runner", "maybe"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    let records = daemon.audit_json(&["--user", "runner"]);
    assert_eq!(records[0]["kind"], "user.add");
    assert_eq!(records[0]["detail"]["no_login"], true);
    assert_eq!(records[1]["kind"], "user.set_no_login");
    assert_eq!(records[1]["detail"]["no_login"], false);
    assert_eq!(records[1]["detail"]["state"], "pending");
    assert_eq!(records[2]["kind"], "user.enrollment_link");
}

/// Review finding 8: without the anchor (`audit.head`) a cut tail of the
/// log cannot be seen, so a lost anchor is never silently recreated.
#[test]
fn a_lost_audit_anchor_stops_the_start_and_is_only_recreated_on_request() {
    let mut daemon = Daemon::start();
    daemon.ctl_ok(&["user", "add", "alice", "--group", "research"]);
    assert!(daemon.stop().success());
    let head = daemon.state_dir.join("audit.head");
    std::fs::remove_file(&head).unwrap();

    let accessd = |args: &[&str]| {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        daemon.offline(&args)
    };
    // Refused at start, naming the file and the repair.
    let refused = accessd(&[]);
    assert!(!refused.status.success());
    let said = stderr(&refused);
    assert!(
        said.contains(&head.display().to_string()) && said.contains("accessd audit-anchor"),
        "{said}"
    );
    assert!(!head.exists(), "a refused start writes no anchor");

    // The admin re-anchors deliberately; then accessd starts and verifies.
    let anchored = accessd(&["audit-anchor"]);
    assert!(anchored.status.success(), "{}", stderr(&anchored));
    assert!(
        stdout(&anchored).contains("anchored the audit log at record"),
        "{}",
        stdout(&anchored)
    );
    daemon.spawn();
    let verified = daemon.ctl(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", stdout(&verified));

    // Deleted while accessd runs, `audit verify` says so (and fails).
    std::fs::remove_file(&head).unwrap();
    let broken = daemon.ctl(&["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1), "{}", stdout(&broken));
    let said = format!("{}{}", stdout(&broken), stderr(&broken));
    assert!(
        said.contains("anchor missing") && said.contains("audit.head"),
        "{said}"
    );
}

/// Issue 28, `ssh.ca_key_file` and `ssh.host_ca_key_file`: two gateways
/// without `[aws]` given the same two CA key files sign with those CAs:
/// `accessctl status` and `accessctl ssh ca [--host]` show the same CAs on
/// both, neither makes a CA key of its own, a certificate one issues names
/// the CA the other trusts, and the host CA's `@cert-authority` line covers
/// the groups' subnets and nothing else (as `ssh-keygen -F` reads it). A CA
/// key file others can read stops the start, naming the key and the fix.
#[test]
fn two_gateways_given_one_ca_key_file_sign_with_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = |args: &[&str]| {
        let out = Command::new("ssh-keygen").args(args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // A new ed25519 key file, and its fingerprint as ssh-keygen prints it.
    let new_key = |name: &str| {
        let path = dir.path().join(name);
        gatehouse_tests::ssh::new_key(&path, name);
        let listed = keygen(&["-lf", path.to_str().unwrap()]);
        let fingerprint = listed.split_whitespace().nth(1).unwrap().to_string();
        (path, fingerprint)
    };
    let (ca, ca_fingerprint) = new_key("ssh_user_ca_ed25519_key");
    let (host_ca, host_ca_fingerprint) = new_key("ssh_host_ca_ed25519_key");
    let (member, _) = new_key("id_ed25519");
    let member_pub = format!("{}.pub", member.display());
    let config = gatehouse_tests::host_sample_config()
        .replacen(
            "\ncertificates = false\n",
            &format!(
                "\ncertificates = true\nca_key_file = \"{}\"\nhost_ca_key_file = \"{}\"\n",
                ca.display(),
                host_ca.display()
            ),
            1,
        )
        .replacen(
            "name = \"research\"\n",
            "name = \"research\"\nssh_principals = [\"ec2-user\"]\n",
            1,
        );
    let mut a = Daemon::start_with(&config);
    let b = Daemon::start_with(&config);
    let mut public_lines = Vec::new();
    for gw in [&a, &b] {
        let status = gw.ctl_json(&["status"]);
        assert_eq!(
            status["ssh"]["user_ca_fingerprint"],
            ca_fingerprint.as_str(),
            "{status}"
        );
        let shown = gw.ctl_json(&["ssh", "ca"]);
        assert_eq!(shown["fingerprint"], ca_fingerprint.as_str(), "{shown}");
        public_lines.push(shown["public_key"].as_str().unwrap().to_string());
        assert_eq!(
            status["ssh"]["host_ca_fingerprint"],
            host_ca_fingerprint.as_str(),
            "{status}"
        );
        let host = gw.ctl_json(&["ssh", "ca", "--host"]);
        assert_eq!(host["fingerprint"], host_ca_fingerprint.as_str(), "{host}");
        for file in ["ssh_user_ca_ed25519_key", "ssh_host_ca_ed25519_key"] {
            assert!(
                !gw.state_dir.join(file).exists(),
                "no CA key of its own is generated: {file}"
            );
        }
    }
    // The @cert-authority line, as OpenSSH reads it from known_hosts.
    let line = a.ctl_ok(&["ssh", "ca", "--host", "--known-hosts-only"]);
    assert!(
        line.starts_with("@cert-authority 10.0.3.*,10.0.2.* ssh-ed25519 "),
        "{line}"
    );
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, &line).unwrap();
    let lookup = |host: &str| {
        Command::new("ssh-keygen")
            .args(["-F", host, "-f"])
            .arg(&known_hosts)
            .output()
            .unwrap()
    };
    let found = lookup("10.0.3.140");
    assert!(
        found.status.success() && stdout(&found).contains("found: line 1 CA"),
        "{}",
        stdout(&found)
    );
    assert!(!lookup("10.0.4.1").status.success(), "outside every group");
    let key_part = |line: &str| {
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(key_part(&public_lines[0]), key_part(&public_lines[1]));

    // A certificate from A names the CA that B's jump host and the private
    // hosts trust.
    a.ctl_ok(&[
        "user",
        "add",
        "alice",
        "--group",
        "research",
        "--ssh-key",
        &member_pub,
    ]);
    a.ctl_ok(&["user", "enable", "alice"]);
    let cert = dir.path().join("id_ed25519-cert.pub");
    a.ctl_ok(&[
        "ssh",
        "cert",
        "issue",
        "alice",
        "--key",
        &member_pub,
        "--out",
        cert.to_str().unwrap(),
    ]);
    let shown = keygen(&["-L", "-f", cert.to_str().unwrap()]);
    assert!(
        shown.contains(&format!("Signing CA: ED25519 {ca_fingerprint}")),
        "{shown}"
    );
    drop(b);
    assert!(a.stop().success());

    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = a.offline(&[]);
    assert!(!refused.status.success());
    let said = stderr(&refused);
    assert!(
        said.contains("ssh.ca_key_file") && said.contains("chmod 600"),
        "{said}"
    );
}

/// Issue 14 (one identity on both nodes), the SSH host key: with
/// `ssh.host_key_file` two gateways serve the key the operator gave them,
/// and `accessctl status` shows the same fingerprint on both; a key file
/// others can read stops the start, naming the key and the fix.
#[test]
fn two_gateways_given_one_host_key_file_show_one_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ssh_host_ed25519_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let listed = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&key)
        .output()
        .unwrap();
    let expected = stdout(&listed)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let config = gatehouse_tests::host_sample_config().replacen(
        "\n[ssh]\n",
        &format!("\n[ssh]\nhost_key_file = \"{}\"\n", key.display()),
        1,
    );
    let mut a = Daemon::start_with(&config);
    let b = Daemon::start_with(&config);
    for gw in [&a, &b] {
        let status = gw.ctl_json(&["status"]);
        assert_eq!(
            status["ssh"]["host_key_fingerprint"],
            expected.as_str(),
            "{status}"
        );
        assert!(
            !gw.state_dir.join("ssh_host_ed25519_key").exists(),
            "no key of its own is generated"
        );
    }
    drop(b);
    assert!(a.stop().success());

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = a.offline(&[]);
    assert!(!refused.status.success());
    let said = stderr(&refused);
    assert!(
        said.contains("ssh.host_key_file") && said.contains("chmod 600"),
        "{said}"
    );
}
