//! SSH certificates (issue 16), end to end in the network namespaces of
//! `gatehouse_tests::netns`, with the stock OpenSSH client and sshd: the
//! research host's sshd trusts the gateway's user CA (`TrustedUserCAKeys`,
//! an `AuthorizedPrincipalsFile`, the gateway's KRL as `RevokedKeys`) and
//! has no `authorized_keys` at all. A member enrolls on the portal, fetches
//! a certificate through the portal API, saves it beside their key (where
//! ssh finds it by itself), and `ssh -J` reaches the host; each refusal of
//! the issue's list follows, on the same host.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_tests::Daemon;
use gatehouse_tests::netns::{Host, POOL, Topology};
use gatehouse_tests::ssh::{BROKER_PORT, Identity, SshLab, wait_audit};
use serde_json::{Value, json};

mod ssh_common;

use ssh_common::*;

/// A form POST to the portal (a GET without fields); (status, page).
fn portal_form(topo: &Topology, jar: &Path, url: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let args: Vec<String> = fields
        .iter()
        .flat_map(|(name, value)| ["--data-urlencode".to_string(), format!("{name}={value}")])
        .collect();
    curl(topo, jar, &args, url)
}

/// Where ssh looks for `id`'s certificate by itself.
fn cert_path(id: &Identity) -> PathBuf {
    PathBuf::from(format!("{}-cert.pub", id.key.display()))
}

/// `ssh -J alice@gateway root@research true` as `id`.
fn reach_research(lab: &SshLab<'_>, id: &Identity, user: &str) -> bool {
    let run = lab.ssh(
        Host::Client,
        id,
        &["-J", &lab.jump(user), &format!("root@{RESEARCH}"), "true"],
        LOGIN,
    );
    if !run.success() {
        eprintln!("ssh -J as {user}: {run}");
    }
    run.success()
}

fn write_krl(gw: &Daemon, path: &Path) -> Value {
    gw.ctl_json(&["ssh", "krl", "--out", path.to_str().unwrap()])
}

#[test]
fn members_reach_private_hosts_with_certificates_and_nothing_else_passes() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    let gateway = topo.addr(Host::Gateway);
    let config = lab
        .broker_config("certificates = true\ncert_lifetime = \"1h\"")
        .replacen(
            "listen = \"127.0.0.1:8443\"",
            &format!("listen = \"{gateway}:8443\""),
            1,
        )
        .replacen(
            "name = \"research\"\n",
            "name = \"research\"\nssh_principals = [\"ec2-user\"]\n",
            1,
        )
        .replacen(
            "name = \"private2\"\n",
            "name = \"private2\"\nssh_principals = [\"admin\"]\n",
            1,
        );
    assert!(config.contains("\"admin\"") && config.contains(&format!("{gateway}:8443")));
    let gw = lab.start_broker(&config);

    // The CA line and the snippet, as an admin installs them on a host.
    let dir = lab.dir().to_path_buf();
    let ca_pub = dir.join("gatehouse_user_ca.pub");
    let line = gw.ctl_ok(&["ssh", "ca", "--public-key-only"]);
    std::fs::write(&ca_pub, &line).unwrap();
    let (ok, listed) = keygen(&["-l", "-f", ca_pub.to_str().unwrap()]);
    assert!(ok && listed.contains("ED25519"), "{listed}");
    let ca = gw.ctl_json(&["ssh", "ca"]);
    assert!(
        ca["sshd_snippet"]
            .as_str()
            .unwrap()
            .contains("TrustedUserCAKeys"),
        "{ca}"
    );
    assert!(
        listed.contains(ca["fingerprint"].as_str().unwrap()),
        "{listed} {ca}"
    );
    let principals = dir.join("principals");
    std::fs::create_dir_all(&principals).unwrap();
    std::fs::write(principals.join("root"), "ec2-user\n").unwrap();
    let krl = dir.join("revoked.krl");
    assert_eq!(write_krl(&gw, &krl)["revoked"], json!([]));
    lab.start_sshd_with(
        Host::Research,
        RESEARCH,
        22,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}\nAuthorizedPrincipalsFile {}/%u\nRevokedKeys {}",
            ca_pub.display(),
            principals.display(),
            krl.display()
        ),
    );

    // alice (research) enrolls on the portal; her key is registered.
    let alice = lab.identity_unauthorized("alice");
    let base = format!("https://{gateway}:8443");
    let jar = dir.join("alice.cookies");
    let login = enroll_on_portal(&topo, &gw, &base, &jar, ("alice", "research", &alice));
    let csrf = login["csrf_token"].as_str().unwrap().to_string();

    // Without a certificate the host lets her in with nothing.
    assert!(
        !reach_research(&lab, &alice, "alice"),
        "no authorized_keys: no way in"
    );

    let (status, issued) = portal(
        &topo,
        &jar,
        &format!("{base}/api/v1/ssh/certificates"),
        Some(&csrf),
        &json!({ "public_key": alice.public_key }),
    );
    assert_eq!(status, 200, "{issued}\n{}", gw.log_tail(20));
    assert_eq!(issued["principals"], json!(["ec2-user"]), "{issued}");
    let key_id = issued["key_id"].as_str().unwrap().to_string();
    // The devices page offers the same, with the file to save it as.
    let (status, devices) = portal_form(&topo, &jar, &format!("{base}/devices"), &[]);
    assert!(devices.contains("Get a certificate"), "{status} {devices}");
    let (status, shown_page) = portal_form(
        &topo,
        &jar,
        &format!("{base}/ssh-keys/certificate"),
        &[("csrf", &csrf), ("public_key", &alice.public_key)],
    );
    assert_eq!(status, 200, "{shown_page}");
    for part in [
        "~/.ssh/id_ed25519-cert.pub",
        "CertificateFile",
        "ssh-ed25519-cert-v01@openssh.com",
    ] {
        assert!(shown_page.contains(part), "no {part:?} in:\n{shown_page}");
    }
    let (status, _) = portal_form(
        &topo,
        &jar,
        &format!("{base}/ssh-keys/certificate"),
        &[("csrf", "forged"), ("public_key", &alice.public_key)],
    );
    assert_eq!(status, 403, "a forged form is refused");
    assert!(key_id.starts_with("alice@"), "{issued}");
    let cert_line = issued["certificate"].as_str().unwrap();
    std::fs::write(cert_path(&alice), format!("{cert_line}\n")).unwrap();
    let (ok, shown) = keygen(&["-L", "-f", cert_path(&alice).to_str().unwrap()]);
    assert!(ok, "{shown}");
    for part in [
        "user certificate",
        "ec2-user",
        "source-address",
        "permit-pty",
        "alice@",
    ] {
        assert!(shown.contains(part), "no {part:?} in:\n{shown}");
    }
    assert!(!shown.contains("permit-port-forwarding"), "{shown}");
    let serial = issued["serial"].as_u64().unwrap();
    assert!(shown.contains(&format!("Serial: {serial}")), "{shown}");
    let source = issued["source_address"].as_str().unwrap();
    assert!(
        source.contains(POOL)
            && source.contains(&format!("{gateway}/32"))
            && !source.contains("127.0.0.1"),
        "the gateway's addresses and the VPN pool: {source}"
    );

    // 1. Through the jump host, as a granted principal.
    assert!(
        reach_research(&lab, &alice, "alice"),
        "{}",
        lab.sshd_log(Host::Research, 22)
    );
    // The jump host took the certificate itself (not the plain key).
    let direct = lab.ssh(
        Host::Client,
        &alice,
        &[
            "-v",
            "-p",
            &BROKER_PORT.to_string(),
            &format!("alice@{gateway}"),
            "true",
        ],
        LOGIN,
    );
    assert!(
        direct.stderr.contains("Server accepts key") && direct.stderr.contains("CERT"),
        "{direct}"
    );
    let recorded = gw.audit_of("ssh.cert.issue");
    assert_eq!(recorded.len(), 2, "the API's and the page's: {recorded:?}");
    assert_eq!(recorded[0]["actor"], "alice");
    assert_eq!(recorded[0]["detail"]["serial"], serial.to_string());
    assert_eq!(recorded[0]["detail"]["key_fingerprint"], alice.fingerprint);

    // 2. The same certificate, where only another principal may log in.
    std::fs::write(principals.join("root"), "admin\n").unwrap();
    assert!(
        !reach_research(&lab, &alice, "alice"),
        "a principal not granted"
    );
    std::fs::write(principals.join("root"), "ec2-user\n").unwrap();

    // 3. Presented straight to the host from an address outside
    //    source-address (the research host itself).
    let outside = lab.ssh(
        Host::Research,
        &alice,
        &[&format!("root@{RESEARCH}"), "true"],
        REFUSED,
    );
    assert!(!outside.success(), "{outside}");
    let log = lab.sshd_log(Host::Research, 22);
    assert!(log.contains("source address"), "{log}");

    // 4. Another CA's certificate for the same key and principal.
    let rogue = new_key(&dir, "rogue_ca");
    let (ok, out) = keygen(&[
        "-s",
        rogue.to_str().unwrap(),
        "-I",
        &key_id,
        "-n",
        "ec2-user",
        "-z",
        "77",
        "-V",
        "-1m:+1h",
        alice.public_key_file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        !reach_research(&lab, &alice, "alice"),
        "another CA's certificate"
    );

    // 5. An expired certificate (a 1 s lifetime, from the admin side).
    gw.ctl_ok(&[
        "ssh",
        "cert",
        "issue",
        "alice",
        "--key",
        alice.public_key_file.to_str().unwrap(),
        "--lifetime",
        "1s",
        "--out",
        cert_path(&alice).to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !reach_research(&lab, &alice, "alice"),
        "an expired certificate"
    );
    let admin_issue = gw.audit_of("ssh.cert.issue");
    assert_eq!(admin_issue.len(), 3);
    assert_ne!(
        admin_issue[2]["actor"], "alice",
        "an admin asked: {}",
        admin_issue[2]
    );

    // bob (private2) gets no principal of research.
    let bob = lab.identity_unauthorized("bob");
    add_active_user(&gw, "bob", "private2", &bob);
    let bobs = gw.ctl_json(&[
        "ssh",
        "cert",
        "issue",
        "bob",
        "--key",
        bob.public_key_file.to_str().unwrap(),
    ]);
    assert_eq!(bobs["principals"], json!(["admin"]), "{bobs}");

    // A key that is not theirs, or a member who has not enrolled: refused.
    let stranger = lab.identity_unauthorized("stranger");
    let refused = gw.ctl(&[
        "ssh",
        "cert",
        "issue",
        "bob",
        "--key",
        stranger.public_key_file.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not one of bob's SSH keys"),
        "{refused:?}"
    );

    let carol = lab.identity_unauthorized("carol");
    let carol_key = carol.public_key_file.to_str().unwrap();
    gw.ctl_ok(&[
        "user",
        "add",
        "carol",
        "--group",
        "research",
        "--ssh-key",
        carol_key,
    ]);
    let pending = gw.ctl(&["ssh", "cert", "issue", "carol", "--key", carol_key]);
    assert!(!pending.status.success());
    assert!(
        String::from_utf8_lossy(&pending.stderr).contains("pending"),
        "a pending member: {pending:?}"
    );

    // 6. Disabled: a fresh certificate no longer gets through the jump host,
    //    and it is in the KRL the host reads.
    let fresh = gw.ctl_json(&[
        "ssh",
        "cert",
        "issue",
        "alice",
        "--key",
        alice.public_key_file.to_str().unwrap(),
        "--out",
        cert_path(&alice).to_str().unwrap(),
    ]);
    assert!(
        reach_research(&lab, &alice, "alice"),
        "the fresh certificate works"
    );
    gw.ctl_ok(&["user", "disable", "alice"]);
    let revoked = write_krl(&gw, &krl);
    let serials: Vec<u64> = revoked["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["serial"].as_u64().unwrap())
        .collect();
    assert!(
        serials.contains(&fresh["serial"].as_u64().unwrap()),
        "{revoked}"
    );
    assert!(
        !serials.contains(&bobs["serial"].as_u64().unwrap()),
        "{revoked}"
    );
    let (ok, out) = keygen(&[
        "-Q",
        "-f",
        krl.to_str().unwrap(),
        cert_path(&alice).to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("REVOKED"), "{out}");
    assert!(!reach_research(&lab, &alice, "alice"), "a disabled member");
    // Enabled again, the jump host would let her in, but the host's KRL
    // still holds her certificate until it is written again.
    gw.ctl_ok(&["user", "enable", "alice"]);
    let direct = lab.ssh(
        Host::Client,
        &alice,
        &[
            "-v",
            "-p",
            &BROKER_PORT.to_string(),
            &format!("alice@{gateway}"),
            "true",
        ],
        LOGIN,
    );
    assert!(direct.stderr.contains("Server accepts key"), "{direct}");
    assert!(
        !reach_research(&lab, &alice, "alice"),
        "the host's KRL still revokes it"
    );
}

/// What the private host's sshd wrote when it let a certificate in
/// (`LogLevel VERBOSE`): `Accepted publickey for root from ... ssh2:
/// ED25519-CERT SHA256:... ID <key id> (serial N) CA ED25519 SHA256:...`;
/// (key id, serial) of each such line.
fn accepted_certificates(sshd_log: &str) -> Vec<(String, String)> {
    sshd_log
        .lines()
        .filter(|line| line.contains("Accepted publickey for "))
        .filter_map(|line| {
            let (_, after_id) = line.split_once(" ID ")?;
            let (key_id, after) = after_id.split_once(" (serial ")?;
            let (serial, _) = after.split_once(')')?;
            Some((key_id.to_string(), serial.to_string()))
        })
        .collect()
}

#[test]
fn session_records_name_the_certificate_the_private_host_logged() {
    // Issue 26, item 2: a record at the jump host must meet the line sshd
    // writes on the private host, by the certificate's serial and key id.
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    let config = lab
        .broker_config("certificates = true\ncert_lifetime = \"1h\"")
        .replacen(
            "name = \"research\"\n",
            "name = \"research\"\nssh_principals = [\"root\"]\n",
            1,
        );
    assert!(config.contains("ssh_principals = [\"root\"]"), "{config}");
    let gw = lab.start_broker(&config);
    let ca_pub = lab.dir().join("gatehouse_user_ca.pub");
    std::fs::write(&ca_pub, gw.ctl_ok(&["ssh", "ca", "--public-key-only"])).unwrap();
    // No authorized_keys: only a certificate of the gateway's CA gets in,
    // and sshd logs its ID and serial (`LogLevel VERBOSE`).
    lab.start_sshd_with(
        Host::Research,
        RESEARCH,
        22,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}\nLogLevel VERBOSE",
            ca_pub.display()
        ),
    );

    let alice = lab.identity_unauthorized("alice");
    add_active_user(&gw, "alice", "research", &alice);
    let issued = gw.ctl_json(&[
        "ssh",
        "cert",
        "issue",
        "alice",
        "--key",
        alice.public_key_file.to_str().unwrap(),
        "--out",
        cert_path(&alice).to_str().unwrap(),
    ]);
    let serial = issued["serial"].as_u64().unwrap().to_string();
    let key_id = issued["key_id"].as_str().unwrap().to_string();
    // As the portal's ssh_config lines say: with CertificateFile, ssh
    // offers the certificate first, to the jump host too (beside the key
    // alone, OpenSSH 9.2 offers the plain key first, and the jump host
    // takes it: the member's key is registered).
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&alice.config)
        .unwrap();
    std::io::Write::write_all(
        &mut config,
        format!("  CertificateFile {}\n", cert_path(&alice).display()).as_bytes(),
    )
    .unwrap();

    assert!(
        reach_research(&lab, &alice, "alice"),
        "{}",
        lab.sshd_log(Host::Research, 22)
    );
    let sshd_log = lab.sshd_log(Host::Research, 22);
    let accepted = accepted_certificates(&sshd_log);
    assert_eq!(
        accepted,
        [(key_id.clone(), serial.clone())],
        "one certificate login at the host:\n{sshd_log}"
    );
    let (host_key_id, host_serial) = &accepted[0];

    let start = wait_audit(&gw, "ssh.session.start", AUDIT_WITHIN, |r| {
        r["actor"] == "alice"
    })
    .unwrap_or_else(|seen| panic!("no ssh.session.start of alice: {seen:#?}"));
    let end = wait_audit(&gw, "ssh.session.end", AUDIT_WITHIN, |r| {
        r["actor"] == "alice"
    })
    .unwrap_or_else(|seen| panic!("no ssh.session.end of alice: {seen:#?}"));
    for record in [&start, &end] {
        let detail = &record["detail"];
        assert_eq!(
            detail["cert_serial"].as_str(),
            Some(host_serial.as_str()),
            "the serial sshd logged, in decimal: {record}\n{}",
            gw.log_tail(20)
        );
        assert_eq!(
            detail["cert_key_id"].as_str(),
            Some(host_key_id.as_str()),
            "the ID sshd logged: {record}"
        );
        assert_eq!(detail["key_fingerprint"], alice.fingerprint, "{record}");
    }

    // bob logs in to the jump host with his plain key: his records carry
    // no certificate fields at all (absent, not null). The host refuses
    // him (no certificate), after the jump host opened his channel.
    let bob = lab.identity_unauthorized("bob");
    add_active_user(&gw, "bob", "research", &bob);
    assert!(!reach_research(&lab, &bob, "bob"), "bob has no certificate");
    let start = wait_audit(&gw, "ssh.session.start", AUDIT_WITHIN, |r| {
        r["actor"] == "bob"
    })
    .unwrap_or_else(|seen| panic!("no ssh.session.start of bob: {seen:#?}"));
    let end = wait_audit(&gw, "ssh.session.end", AUDIT_WITHIN, |r| {
        r["actor"] == "bob"
    })
    .unwrap_or_else(|seen| panic!("no ssh.session.end of bob: {seen:#?}"));
    for record in [&start, &end] {
        let detail = record["detail"].as_object().unwrap();
        assert!(
            !detail.contains_key("cert_serial") && !detail.contains_key("cert_key_id"),
            "no certificate, no certificate fields: {record}"
        );
        assert_eq!(detail["key_fingerprint"], bob.fingerprint, "{record}");
    }
}
