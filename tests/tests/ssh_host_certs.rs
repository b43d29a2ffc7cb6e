//! SSH host certificates (issue 28), end to end with stock OpenSSH: the
//! research host's sshds (one per address, 10.0.3.140 to .144, port 22)
//! present host certificates that `accessctl ssh host-cert sign` made, and
//! a member whose ssh_config and known_hosts are the portal's downloads,
//! with `StrictHostKeyChecking yes`, reaches a signed host through `ssh -J`
//! with no entry for it; another principal, an expired certificate,
//! another CA and a revoked certificate (`@revoked`, or the host KRL as
//! `RevokedHostKeys`) are refused. And a pair on PostgreSQL without AWS,
//! both nodes given the same CA files: a certificate one node issues, the
//! other node's jump host accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gatehouse_tests::netns::{Host, Topology};
use gatehouse_tests::postgres::PgServer;
use gatehouse_tests::ssh::{Identity, SshLab};
use gatehouse_tests::{Daemon, stderr};
use serde_json::{Value, json};

mod ssh_common;

use ssh_common::*;

/// The research host's extra addresses, one sshd (and case) each.
const OTHER_PRINCIPAL: &str = "10.0.3.141";
const EXPIRED: &str = "10.0.3.142";
const OTHER_CA: &str = "10.0.3.143";
const REVOKED: &str = "10.0.3.144";

/// An sshd on `addr`:22 of the research host serving `host_key` and, when
/// given, its certificate.
fn start_host(lab: &SshLab<'_>, addr: &str, host_key: &Path, cert: Option<&Path>) {
    let options = cert
        .map(|c| format!("HostCertificate {}", c.display()))
        .unwrap_or_default();
    lab.start_named_sshd(
        &format!("sshd-{addr}"),
        Host::Research,
        addr,
        22,
        host_key,
        &options,
    );
}

/// Signs `host_key`'s public key with the gateway's host CA for
/// `principals`; the certificate is written beside the key, where sshd is
/// told to find it. Returns (the certificate's path, its serial).
fn sign(gw: &Daemon, host_key: &Path, principals: &str, lifetime: &str) -> (PathBuf, u64) {
    let cert = PathBuf::from(format!("{}-cert.pub", host_key.display()));
    let signed = gw.ctl_json(&[
        "ssh",
        "host-cert",
        "sign",
        "--key",
        &format!("{}.pub", host_key.display()),
        "--principals",
        principals,
        "--lifetime",
        lifetime,
        "--out",
        cert.to_str().unwrap(),
    ]);
    (cert, signed["info"]["serial"].as_u64().unwrap())
}

/// `ssh root@addr true` as the member, whose config (the portal's
/// snippet) sends it through the jump host; `extra` before the host.
fn reach(lab: &SshLab<'_>, member: &Identity, addr: &str, extra: &[&str]) -> SshRunResult {
    let mut args: Vec<&str> = extra.to_vec();
    let target = format!("root@{addr}");
    args.extend([target.as_str(), "true"]);
    let run = lab.ssh(Host::Client, member, &args, LOGIN);
    SshRunResult {
        ok: run.success(),
        text: run.text(),
    }
}

struct SshRunResult {
    ok: bool,
    text: String,
}

/// Refused because the host key could not be verified (not for any other
/// reason, such as the jump host or the login).
fn assert_host_refused(result: &SshRunResult, case: &str) {
    assert!(!result.ok, "{case}: let in:\n{}", result.text);
    assert!(
        result.text.contains("Host key verification failed"),
        "{case}: refused for another reason:\n{}",
        result.text
    );
}

/// The member's ssh_config: the portal's snippet with its files moved into
/// `dir`, then the identity's settings and `StrictHostKeyChecking yes`
/// for every host (ssh takes the first value it reads).
fn member_config(dir: &Path, snippet: &str, id: &Identity, known_hosts: &Path) -> PathBuf {
    let tofu = dir.join("member_known_hosts");
    let text = snippet
        .replace(
            "~/.ssh/gatehouse_known_hosts",
            known_hosts.to_str().unwrap(),
        )
        .replace("~/.ssh/known_hosts", tofu.to_str().unwrap());
    let path = dir.join("member.ssh_config");
    std::fs::write(
        &path,
        format!(
            "{text}\n\
             Host *\n\
             \x20 IdentityFile {key}\n\
             \x20 IdentitiesOnly yes\n\
             \x20 IdentityAgent none\n\
             \x20 BatchMode yes\n\
             \x20 StrictHostKeyChecking yes\n\
             \x20 UserKnownHostsFile {tofu}\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 UpdateHostKeys no\n\
             \x20 ConnectTimeout 10\n\
             \x20 ControlMaster no\n\
             \x20 ControlPath none\n\
             \x20 LogLevel ERROR\n",
            key = id.key.display(),
            tofu = tofu.display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn members_reach_signed_hosts_without_a_prompt_and_refuse_the_rest() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    let gateway = topo.addr(Host::Gateway);
    let config = lab.broker_config("certificates = true").replacen(
        "listen = \"127.0.0.1:8443\"",
        &format!("listen = \"{gateway}:8443\""),
        1,
    );
    assert!(config.contains(&format!("{gateway}:8443")));
    let gw = lab.start_broker(&config);
    for addr in [OTHER_PRINCIPAL, EXPIRED, OTHER_CA, REVOKED] {
        let added = topo.exec(
            Host::Research,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        );
        assert!(added.status.success(), "{}", stderr(&added));
    }
    let dir = lab.dir().to_path_buf();

    // alice (research) enrolls on the portal and downloads her SSH files.
    let alice = lab.identity("alice");
    let base = format!("https://{gateway}:8443");
    let jar = dir.join("alice.cookies");
    enroll_on_portal(&topo, &gw, &base, &jar, ("alice", "research", &alice));
    let (status, snippet) = curl(&topo, &jar, &[], &format!("{base}/ssh_config"));
    assert_eq!(status, 200, "{snippet}");
    let (status, known_hosts_text) = curl(&topo, &jar, &[], &format!("{base}/ssh/known_hosts"));
    assert_eq!(status, 200, "{known_hosts_text}");
    let ca_line = gw.ctl_ok(&["ssh", "ca", "--host", "--public-key-only"]);
    assert!(
        known_hosts_text.contains(&format!("@cert-authority 10.0.3.* {}", ca_line.trim())),
        "{known_hosts_text}"
    );
    assert!(
        !known_hosts_text.contains("10.0.4."),
        "not private2's hosts: {known_hosts_text}"
    );
    let known_hosts = dir.join("gatehouse_known_hosts");
    std::fs::write(&known_hosts, &known_hosts_text).unwrap();
    let member = Identity {
        config: member_config(&dir, &snippet, &alice, &known_hosts),
        ..alice.clone()
    };

    // 1. A signed host: no prompt, no entry for it anywhere.
    let key = lab.host_key("research-signed");
    let (cert, _) = sign(&gw, &key, "10.0.3.140,research.internal", "1d");
    let (ok, shown) = keygen(&["-L", "-f", cert.to_str().unwrap()]);
    assert!(ok && shown.contains("host certificate"), "{shown}");
    start_host(&lab, RESEARCH, &key, Some(&cert));
    let signed = reach(&lab, &member, RESEARCH, &[]);
    assert!(
        signed.ok,
        "{}\n{}",
        signed.text,
        lab.named_sshd_log(&format!("sshd-{RESEARCH}"))
    );
    let tofu = dir.join("member_known_hosts");
    assert!(
        !tofu.exists() || std::fs::read_to_string(&tofu).unwrap().is_empty(),
        "nothing was learned on first use"
    );
    // ... and without the CA line the same host is refused: the line is
    // what let the member in.
    let pin_only = dir.join("pin_only_known_hosts");
    std::fs::write(&pin_only, known_hosts_text.lines().next().unwrap()).unwrap();
    std::fs::create_dir_all(dir.join("pin")).unwrap();
    let pinned = Identity {
        config: member_config(&dir.join("pin"), &snippet, &alice, &pin_only),
        ..alice.clone()
    };
    assert_host_refused(&reach(&lab, &pinned, RESEARCH, &[]), "no CA line");

    // 2. A certificate for another principal (the .140 host's name).
    let key = lab.host_key("other-principal");
    let (cert, _) = sign(&gw, &key, RESEARCH, "1d");
    start_host(&lab, OTHER_PRINCIPAL, &key, Some(&cert));
    assert_host_refused(
        &reach(&lab, &member, OTHER_PRINCIPAL, &[]),
        "another principal",
    );

    // 3. An expired certificate (valid for one second).
    let key = lab.host_key("expired");
    let (cert, _) = sign(&gw, &key, EXPIRED, "1s");
    start_host(&lab, EXPIRED, &key, Some(&cert));
    std::thread::sleep(Duration::from_secs(2));
    assert_host_refused(&reach(&lab, &member, EXPIRED, &[]), "expired");

    // 4. A certificate from another CA, for the right principal.
    let rogue = new_key(&dir, "rogue_host_ca");
    let key = lab.host_key("other-ca");
    let (ok, out) = keygen(&[
        "-q",
        "-s",
        rogue.to_str().unwrap(),
        "-h",
        "-I",
        "rogue",
        "-n",
        OTHER_CA,
        "-V",
        "-5m:+1h",
        &format!("{}.pub", key.display()),
    ]);
    assert!(ok, "{out}");
    let cert = PathBuf::from(format!("{}-cert.pub", key.display()));
    start_host(&lab, OTHER_CA, &key, Some(&cert));
    assert_host_refused(&reach(&lab, &member, OTHER_CA, &[]), "another CA");

    // 5. Revoked: let in before; refused after, by the host KRL, and by the
    //    @revoked line.
    let key = lab.host_key("revoked");
    let (cert, serial) = sign(&gw, &key, REVOKED, "1d");
    start_host(&lab, REVOKED, &key, Some(&cert));
    let krl = dir.join("revoked_hosts.krl");
    let before = gw.ctl_json(&["ssh", "krl", "--host", "--out", krl.to_str().unwrap()]);
    assert_eq!(before["revoked"], json!([]));
    let krl_option = format!("RevokedHostKeys={}", krl.display());
    let alive = reach(&lab, &member, REVOKED, &["-o", &krl_option]);
    assert!(alive.ok, "before the revocation: {}", alive.text);
    let listed = gw.ctl_json(&["ssh", "host-cert", "list"]);
    assert!(
        listed["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["serial"] == serial),
        "{listed}"
    );
    gw.ctl_ok(&["ssh", "host-cert", "revoke", &serial.to_string()]);
    let after = gw.ctl_json(&["ssh", "krl", "--host", "--out", krl.to_str().unwrap()]);
    assert_eq!(after["revoked"][0]["serial"], serial, "{after}");
    let (_, queried) = keygen(&["-Q", "-f", krl.to_str().unwrap(), cert.to_str().unwrap()]);
    assert!(queried.contains("REVOKED"), "ssh-keygen -Q: {queried}");
    assert_host_refused(
        &reach(&lab, &member, REVOKED, &["-o", &krl_option]),
        "the host KRL",
    );
    let with_revoked = format!(
        "{known_hosts_text}{}\n",
        after["known_hosts_revoked"][0].as_str().unwrap()
    );
    std::fs::write(&known_hosts, with_revoked).unwrap();
    assert_host_refused(&reach(&lab, &member, REVOKED, &[]), "@revoked");
    // The others keep working with that line in place.
    assert!(reach(&lab, &member, RESEARCH, &[]).ok);

    let records = gw.audit_of("ssh.host_cert");
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "ssh.host_cert.issue")
            .count(),
        4,
        "{records:?}"
    );
    assert_eq!(kinds.last(), Some(&"ssh.host_cert.revoke"), "{records:?}");
}

/// `ssh -v -p PORT alice@127.0.0.1 true` with `key` and the certificate
/// beside it (`<key>-cert.pub`, named as `CertificateFile`, which ssh then
/// offers first), trusting any host
/// key: whether the jump host authenticated alice with the certificate,
/// the only key offered (the plain key is one of alice's too: were the
/// certificate refused, ssh would offer it next). The jump host opens no
/// session, so the command itself fails.
fn jump_host_accepts_certificate(port: u16, key: &Path) -> Result<(), String> {
    let out = Command::new("timeout")
        .args(["20", "ssh", "-v", "-F", "/dev/null", "-i"])
        .arg(key)
        .args([
            "-o",
            &format!("CertificateFile={}-cert.pub", key.display()),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-p",
            &port.to_string(),
            "alice@127.0.0.1",
            "true",
        ])
        .output()
        .unwrap();
    let text = stderr(&out);
    let offered: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Offering public key"))
        .collect();
    let only_the_cert = !offered.is_empty() && offered.iter().all(|l| l.contains("CERT"));
    let authenticated = text.lines().any(|l| l.contains("Authenticated to"));
    match only_the_cert && authenticated {
        true => Ok(()),
        false => Err(text),
    }
}

fn jump_port(gw: &Daemon) -> u16 {
    let status = gw.ctl_json(&["status"]);
    let listen = status["ssh"]["listen"].as_str().unwrap().to_string();
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

/// Issue 28, item 6: a pair on PostgreSQL without `[aws]`, both nodes
/// given the same CA files. A certificate node A issues, node B's jump
/// host accepts (and A's own); a host certificate B signs is one A lists,
/// signed by the host CA file.
#[test]
fn a_pair_without_aws_shares_its_cas_from_files() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let new_key = |name: &str| {
        let path = new_key(dir.path(), name);
        let (_, listed) = keygen(&["-lf", path.to_str().unwrap()]);
        (path, listed.split_whitespace().nth(1).unwrap().to_string())
    };
    let (user_ca, _) = new_key("ssh_user_ca_ed25519_key");
    let (host_ca, host_ca_fingerprint) = new_key("ssh_host_ca_ed25519_key");
    let (member, _) = new_key("id_ed25519");
    let member_pub = format!("{}.pub", member.display());
    let config = |node: &str| {
        pg.pair_config(dir.path(), node)
            .replacen(
                "\ncertificates = false\n",
                &format!(
                    "\ncertificates = true\nca_key_file = \"{}\"\nhost_ca_key_file = \"{}\"\n",
                    user_ca.display(),
                    host_ca.display()
                ),
                1,
            )
            .replacen(
                "name = \"research\"\n",
                "name = \"research\"\nssh_principals = [\"ec2-user\"]\n",
                1,
            )
    };
    let a = Daemon::start_with(&config("gw-a"));
    let b = Daemon::start_with(&config("gw-b"));

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
    for (name, gw) in [("gw-a", &a), ("gw-b", &b)] {
        if let Err(log) = jump_host_accepts_certificate(jump_port(gw), &member) {
            panic!(
                "{name}'s jump host did not log alice in with gw-a's certificate:\n{log}\n{}",
                gw.log_tail(20)
            );
        }
    }
    // A certificate of another CA for the same key: refused by both (the
    // check above can fail).
    let (rogue_ca, _) = new_key("rogue_user_ca");
    let rogue = dir.path().join("rogue");
    std::fs::copy(&member, &rogue).unwrap();
    std::fs::copy(&member_pub, dir.path().join("rogue.pub")).unwrap();
    let (ok, out) = keygen(&[
        "-q",
        "-s",
        rogue_ca.to_str().unwrap(),
        "-I",
        "alice@gh-test",
        "-n",
        "ec2-user",
        "-V",
        "-5m:+1h",
        dir.path().join("rogue.pub").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let rogue_login = jump_host_accepts_certificate(jump_port(&b), &rogue);
    assert!(
        rogue_login.is_err(),
        "another CA's certificate: {rogue_login:?}"
    );

    // A host certificate B signs, A lists; the host CA file signed it.
    let (host_key, _) = new_key("private_host_ed25519_key");
    let host_cert = dir.path().join("private_host-cert.pub");
    b.ctl_ok(&[
        "ssh",
        "host-cert",
        "sign",
        "--key",
        &format!("{}.pub", host_key.display()),
        "--principals",
        "10.0.3.7",
        "--out",
        host_cert.to_str().unwrap(),
    ]);
    let (_, shown) = keygen(&["-L", "-f", host_cert.to_str().unwrap()]);
    assert!(
        shown.contains(&format!("Signing CA: ED25519 {host_ca_fingerprint}")),
        "{shown}"
    );
    let listed: Value = a.ctl_json(&["ssh", "host-cert", "list"]);
    assert_eq!(
        listed["certificates"][0]["principals"],
        json!(["10.0.3.7"]),
        "{listed}"
    );
}
