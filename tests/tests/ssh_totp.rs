//! `ssh.require_totp` end to end: on the jump host a registered key is only
//! half a login; the stock OpenSSH client must then answer a
//! keyboard-interactive "TOTP code: " prompt with a current code of the
//! secret its user enrolled in the portal. The client answers through
//! `SSH_ASKPASS` (forced, as a script would; the jump hop's ssh inherits
//! it), and the askpass script records every prompt it was shown, so a test
//! can tell "refused before any prompt" from "refused after a code".
//!
//! paramiko (PyPI, the client of Fabric and Ansible's paramiko transport)
//! must finish the same two steps: `ssh_common/paramiko_jump.py`.
//!
//! Runs in the network namespaces of `gatehouse_tests::netns` with OpenSSH
//! as client and private host, like `ssh_logins.rs`; enrollment goes through
//! the portal's JSON API from the gateway namespace (the portal listens on
//! its 127.0.0.1 there).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use gatehouse_tests::netns::{Host, Topology};
use gatehouse_tests::portal::{Account, PASSWORD};
use gatehouse_tests::ssh::{Identity, SshLab, SshRun, wait_audit};
use gatehouse_tests::{Daemon, stdout};
use serde_json::{Value, json};

mod ssh_common;

use ssh_common::*;

/// An OpenSSH client that answers keyboard-interactive prompts through an
/// askpass script: the code it answers is whatever the test last put in
/// `code_file`; every prompt it is shown is appended to `prompts_file`.
struct TotpClient {
    id: Identity,
    askpass: PathBuf,
    code_file: PathBuf,
    prompts_file: PathBuf,
}

impl TotpClient {
    /// `id` with BatchMode off (so the client may answer prompts) and
    /// `prompts` keyboard-interactive attempts per connection.
    fn new(lab: &SshLab<'_>, id: &Identity, prompts: u32) -> TotpClient {
        let dir = lab.dir().join(format!("totp-{}-{prompts}", id.name));
        std::fs::create_dir_all(&dir).unwrap();
        let config = std::fs::read_to_string(&id.config).unwrap();
        assert!(config.contains("BatchMode yes"), "{config}");
        let config = config.replacen(
            "BatchMode yes",
            &format!(
                "BatchMode no\n  NumberOfPasswordPrompts {prompts}\n  \
                 PreferredAuthentications publickey,keyboard-interactive"
            ),
            1,
        );
        let mut interactive = id.clone();
        interactive.config = dir.join("ssh_config");
        std::fs::write(&interactive.config, config).unwrap();
        let code_file = dir.join("code");
        let prompts_file = dir.join("prompts");
        let askpass = dir.join("askpass");
        std::fs::write(&code_file, "").unwrap();
        std::fs::write(&prompts_file, "").unwrap();
        std::fs::write(
            &askpass,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\ncat '{}'\n",
                prompts_file.display(),
                code_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        TotpClient {
            id: interactive,
            askpass,
            code_file,
            prompts_file,
        }
    }

    /// `ssh -J <jump> root@research true`, answering every prompt with
    /// `code`. Returns the run and the prompts shown during it.
    fn login(&self, lab: &SshLab<'_>, host: Host, user: &str, code: &str) -> (SshRun, String) {
        std::fs::write(&self.code_file, format!("{code}\n")).unwrap();
        std::fs::write(&self.prompts_file, "").unwrap();
        let askpass = self.askpass.to_str().unwrap();
        let run = lab.ssh_env(
            host,
            &self.id,
            &["-J", &lab.jump(user), &format!("root@{RESEARCH}"), "true"],
            LOGIN,
            &[("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", "force")],
        );
        let prompts = std::fs::read_to_string(&self.prompts_file).unwrap();
        (run, prompts)
    }
}

/// `accessctl user add` with an SSH key, then enrollment through the
/// portal's JSON API with a password and a verified TOTP code. Returns the
/// account (its secret, and the step the enrollment used).
/// The targets and a broker with `require_totp`, and alice enrolled in the
/// portal (password and TOTP) with her SSH key.
fn start_with_alice_enrolled(topo: &Topology, lab: &SshLab) -> (Daemon, Identity, Account) {
    lab.start_targets();
    let gw = lab.start_broker(&lab.broker_config("require_totp = true"));
    let alice = lab.identity("alice");
    let account = enroll_with_key(topo, &gw, "alice", &alice);
    (gw, alice, account)
}

fn enroll_with_key(topo: &Topology, gw: &Daemon, user: &str, id: &Identity) -> Account {
    let key = id.public_key_file.to_str().unwrap();
    let added = gw.ctl_json(&["user", "add", user, "--group", "research", "--ssh-key", key]);
    let token = added["enrollment"]["token"].as_str().unwrap().to_string();
    let url = format!("https://127.0.0.1:8443/api/v1/enroll/{token}");
    let (status, offer) = portal(topo, &url, None);
    assert_eq!(status, 200, "{offer}");
    let mut account = Account::new(user, offer["totp_secret"].as_str().unwrap());
    let code = account.next_code();
    let body = json!({ "password": PASSWORD, "totp_secret": account.secret, "totp_code": code });
    let (status, answer) = portal(topo, &url, Some(&body));
    assert_eq!(status, 200, "enroll {user}: {answer}");
    account
}

/// GET (or POST `body`) to the portal from the gateway namespace.
fn portal(topo: &Topology, url: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string);
    let mut argv = vec!["curl", "-sk", "--max-time", "20", "-w", "\n%{http_code}"];
    if let Some(body) = &body {
        argv.extend(["-H", "content-type: application/json", "-d", body]);
    }
    argv.push(url);
    let text = stdout(&topo.exec(Host::Gateway, &argv));
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (status.trim().parse().unwrap_or(0), body)
}

/// The `ssh.auth.fail` record of `user` with `reason` (waits for it).
fn auth_fail(gw: &Daemon, user: &str, reason: &str) -> Value {
    wait_audit(gw, "ssh.auth.fail", AUDIT_WITHIN, |r| {
        r["actor"] == user && r["detail"]["reason"] == reason
    })
    .unwrap_or_else(|all| panic!("no ssh.auth.fail for {user} with reason {reason}: {all:#?}"))
}

/// The client was refused at authentication (not cut off some other way).
fn refused(run: &SshRun) -> bool {
    !run.success()
        && (run.stderr.contains("Permission denied")
            || run.stderr.contains("Too many authentication attempts"))
}

/// True when `text` holds `code` as a number of its own (a six-digit code
/// turns up inside hashes and timestamps by chance).
fn holds_code(text: &str, code: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|word| word == code)
}

fn prompted(prompts: &str) -> usize {
    prompts.lines().filter(|l| l.contains("TOTP code")).count()
}

#[test]
fn with_require_totp_a_key_needs_a_fresh_code_of_the_portal_enrolled_secret() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    let (gw, alice, mut account) = start_with_alice_enrolled(&topo, &lab);
    let portal_code = totp_of(&account, account.last_step.unwrap());
    let client = TotpClient::new(&lab, &alice, 1);

    // The key alone (BatchMode: the client will not answer a prompt).
    let target = format!("root@{RESEARCH}");
    let run = lab.ssh(
        Host::Client,
        &alice,
        &["-J", &lab.jump("alice"), &target, "true"],
        LOGIN,
    );
    assert!(refused(&run), "a key without a code logged in: {run}");
    auth_fail(&gw, "alice", "totp_missing");

    // The code the portal took at enrollment: a code works once, anywhere.
    let (run, prompts) = client.login(&lab, Host::Client, "alice", &portal_code);
    assert!(refused(&run), "the portal's code was taken again: {run}");
    assert_eq!(prompted(&prompts), 1, "prompts shown: {prompts:?}");
    auth_fail(&gw, "alice", "totp_reused");

    // A fresh code: in, and the relay works.
    let code = account.next_code();
    let (run, prompts) = client.login(&lab, Host::Client, "alice", &code);
    assert!(run.success(), "{run}\n{}", gw.log_tail(40));
    assert_eq!(prompted(&prompts), 1, "prompts shown: {prompts:?}");
    wait_audit(&gw, "ssh.session.start", AUDIT_WITHIN, |r| {
        r.to_string().contains("alice")
    })
    .unwrap_or_else(|all| panic!("no ssh.session.start for alice: {all:#?}"));

    // The same code once more: refused.
    let (run, _) = client.login(&lab, Host::Client2, "alice", &code);
    assert!(refused(&run), "a code was used twice: {run}");

    // A wrong code.
    let wrong = wrong_code(&account);
    let (run, _) = client.login(&lab, Host::Client2, "alice", &wrong);
    assert!(refused(&run), "a wrong code logged in: {run}");
    auth_fail(&gw, "alice", "totp_mismatch");

    // bob has a registered key and is active, but never enrolled TOTP: he
    // is refused at the key, before any prompt.
    let bob = lab.identity("bob");
    add_active_user(&gw, "bob", "research", &bob);
    let bob_client = TotpClient::new(&lab, &bob, 1);
    let (run, prompts) = bob_client.login(&lab, Host::Client2, "bob", "000000");
    assert!(refused(&run), "bob without TOTP logged in: {run}");
    assert_eq!(prompted(&prompts), 0, "bob was prompted: {prompts:?}");
    auth_fail(&gw, "bob", "totp_not_enrolled");

    // Nothing of a code or the secret reaches the audit log or the log.
    let records = gw.ctl_ok(&["--json", "audit"]);
    let log = gw.log_tail(10_000);
    assert!(
        !records.contains(&account.secret),
        "the audit log holds the secret"
    );
    assert!(
        !log.contains(&account.secret),
        "accessd's log holds the secret"
    );
    for code in [code.as_str(), wrong.as_str()] {
        assert!(!holds_code(&records, code), "the audit log holds {code}");
        assert!(!holds_code(&log, code), "accessd's log holds {code}");
    }
}

#[test]
fn guessing_codes_is_counted_per_code_and_locks_the_user_out_across_connections() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    let (gw, alice, mut account) = start_with_alice_enrolled(&topo, &lab);

    // One connection, six guesses: the first three are forgiven (typos);
    // from the fourth on each costs a growing penalty, during which a code
    // is refused before it is even checked. (Past three records a minute
    // from one source, failures are audited in the minute's summary.)
    let guesser = TotpClient::new(&lab, &alice, 6);
    let wrong = wrong_code(&account);
    let (run, prompts) = guesser.login(&lab, Host::Client2, "alice", &wrong);
    assert!(refused(&run), "{run}");
    let shown = prompted(&prompts);
    eprintln!(
        "the guesser was shown {shown} prompts before {:?}",
        run.stderr.trim()
    );
    assert!(
        shown >= 5,
        "the client gave up after {shown} prompts: {prompts:?}\n{run}"
    );
    auth_fail(&gw, "alice", "totp_mismatch");

    // Right away, from another address, with a right code: alice is
    // penalised as a user, whatever the source.
    let client = TotpClient::new(&lab, &alice, 1);
    let code = account.next_code();
    let (run, _) = client.login(&lab, Host::Client, "alice", &code);
    assert!(
        refused(&run),
        "a right code right after a guessing run got in: {run}\n{}",
        gw.log_tail(30)
    );
    let penalised = auth_fail(&gw, "alice", "penalised");
    let from_client = topo.addr(Host::Client).to_string();
    assert!(
        penalised["source"]
            .as_str()
            .is_some_and(|s| s.contains(&from_client)),
        "the refusal must name the new source {from_client}: {penalised}"
    );
}

#[test]
fn a_burst_of_parallel_connections_gets_no_more_codes_judged_than_the_lockout_allows() {
    // Issue 24, finding 1: the lockout was checked when a code arrived but
    // counted after it was judged, so connections racing in parallel all
    // had their codes judged. Charged before judging, a burst of 40 gets
    // at most the member's budget (5) judged; the rest are refused unjudged.
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    let Some(python) = gatehouse_tests::ssh::paramiko_python() else {
        return;
    };
    lab.start_targets();
    // Room for every connection of the burst at once: the per-source
    // start-up cap must not be what bounds the guesses.
    let mut gw = lab.start_broker(
        &lab.broker_config("require_totp = true\nmax_startups = 64\nmax_startups_per_source = 64"),
    );
    let alice = lab.identity("alice");
    let account = enroll_with_key(&topo, &gw, "alice", &alice);
    let wrong = wrong_code(&account);
    const BURST: usize = 40;
    let burst = paramiko(
        &topo,
        &python,
        &[
            "burst",
            &lab.gateway(),
            &gatehouse_tests::ssh::BROKER_PORT.to_string(),
            "alice",
            alice.key.to_str().unwrap(),
            &wrong,
            &BURST.to_string(),
        ],
    );
    let outcomes = burst["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), BURST, "{burst}");
    let got_in: Vec<&Value> = outcomes
        .iter()
        .filter(|o| o["result"] == "authenticated")
        .collect();
    assert!(got_in.is_empty(), "a wrong code logged in: {got_in:?}");
    let prompted = outcomes
        .iter()
        .filter(|o| o["prompted"].as_u64() > Some(0))
        .count();
    eprintln!("{prompted} of {BURST} connections reached the TOTP prompt");
    assert!(
        prompted >= BURST / 2,
        "the burst did not reach the TOTP step, so it shows nothing: {burst}"
    );

    // Every refusal is audited, in a record or, past a source's three a
    // minute, in the summary written on shutdown: stop, start again, read.
    gw.stop();
    gw.spawn();
    let mut reasons = std::collections::BTreeMap::<String, u64>::new();
    for record in gw.audit_of_exactly("ssh.auth.fail") {
        if let Some(summary) = record["detail"]["reasons"].as_object() {
            for (reason, count) in summary {
                *reasons.entry(reason.clone()).or_default() += count.as_u64().unwrap();
            }
        } else if let Some(reason) = record["detail"]["reason"].as_str() {
            *reasons.entry(reason.to_string()).or_default() += 1;
        }
    }
    eprintln!("ssh.auth.fail reasons after the burst: {reasons:?}");
    let judged = reasons.get("totp_mismatch").copied().unwrap_or(0);
    assert!(
        (1..=5).contains(&judged),
        "{judged} codes of a burst of {BURST} were judged (the budget is 5): {reasons:?}"
    );
    let unjudged: u64 = ["locked_out", "busy", "penalised", "source_locked_out"]
        .iter()
        .filter_map(|r| reasons.get(*r))
        .sum();
    assert!(
        judged + unjudged >= prompted as u64,
        "every code answered was either judged or refused unjudged: {reasons:?}"
    );
}

/// paramiko through the jump host, in the client namespace; its JSON line.
fn paramiko(topo: &Topology, python: &std::path::Path, args: &[&str]) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ssh_common/paramiko_jump.py"
    );
    let mut argv = vec![python.to_str().unwrap(), script];
    argv.extend(args);
    let out = topo.exec(Host::Client, &argv);
    let text = stdout(&out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "paramiko printed no result ({e}, {}):\n{text}\n{}",
            out.status,
            gatehouse_tests::stderr(&out)
        )
    })
}

#[test]
fn a_paramiko_client_finishes_the_totp_step_and_an_unknown_service_is_refused_at_once() {
    // Issue 13 ("also"): paramiko asks for the ssh-userauth service again
    // before each method; russh 0.65.1 gave no answer to the second request,
    // so the keyboard-interactive step hung until the login grace time.
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    let Some(python) = gatehouse_tests::ssh::paramiko_python() else {
        return;
    };
    let (gw, alice, mut account) = start_with_alice_enrolled(&topo, &lab);
    let gateway = lab.gateway();
    let port = gatehouse_tests::ssh::BROKER_PORT.to_string();
    let key = alice.key.to_str().unwrap();
    let code = account.next_code();
    let result = paramiko(
        &topo,
        &python,
        &[
            "login", &gateway, &port, "alice", key, &code, RESEARCH, "22",
        ],
    );
    eprintln!("paramiko: {result}");
    assert_eq!(
        result["publickey"],
        json!(["keyboard-interactive"]),
        "the key is half the login: {result}"
    );
    assert_eq!(
        result["authenticated"],
        true,
        "{result}\n{}",
        gw.log_tail(30)
    );
    assert!(
        result["prompts"][0].as_str().unwrap().contains("TOTP code"),
        "{result}"
    );
    assert!(
        result["banner"].as_str().unwrap().starts_with("SSH-2.0-"),
        "the jump works: {result}"
    );
    assert!(
        result["interactive_seconds"].as_f64().unwrap() < 5.0,
        "the TOTP step answered at once: {result}"
    );

    // A service the server does not offer: refused with a disconnect at
    // once, not left unanswered.
    let refused = paramiko(&topo, &python, &["bogus-service", &gateway, &port]);
    eprintln!("unknown service: {refused}");
    assert_eq!(refused["closed"], true, "{refused}");
    assert!(refused["seconds"].as_f64().unwrap() < 5.0, "{refused}");
}

/// The code of `account`'s secret at time step `step`.
fn totp_of(account: &Account, step: u64) -> String {
    gatehouse_tests::portal::totp_code(&account.secret, step * 30)
}

/// A six-digit code that matches no step the gateway accepts now.
fn wrong_code(account: &Account) -> String {
    let now = gatehouse_tests::portal::unix_now() / 30;
    let near: Vec<String> = (now.saturating_sub(2)..=now + 2)
        .map(|step| totp_of(account, step))
        .collect();
    (0..10u32)
        .map(|d| format!("{d}{d}{d}{d}{d}{d}"))
        .find(|c| !near.contains(c))
        .unwrap()
}
