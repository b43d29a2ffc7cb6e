//! The private host's host certificate (issue 28, "On the private host"):
//! the script `packaging/cloud-init-private-host.yaml` writes, taken from
//! the YAML and run as it is, unprivileged, on a scratch `/etc/ssh` (its
//! environment overrides), with a host key and a host CA made by
//! `ssh-keygen`, the real `sshd` checking the result, and for the SSM
//! source the real AWS CLI against a moto server. Part of the `packaging`
//! test (`mod packaging_host_cert` there). The private host itself is
//! `gatehouse_tests::packaging::private_host`, which the host join test
//! (`aws_host_join.rs`) runs the script on too.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gatehouse_tests::aws::{LoopbackMoto, aws_cli};
use gatehouse_tests::packaging::private_host::{
    FRAGMENT, PrivateHost, REGION, SCRIPT, Verdict, keygen, read, said, write_executable,
};
use gatehouse_tests::packaging::{cloud_init_files, packaging_file};
use gatehouse_tests::{have_tool, output_within, require, stderr, stdout};

const PARAMETER: &str = "/gatehouse/research-gw/host-certs/jupyter";

/// From a file: nothing there yet is no error; a certificate is installed
/// with its HostCertificate line, sshd accepts the result and presents it
/// (ssh trusting only the host CA connects without asking), a second run
/// changes nothing, and a renewal replaces it.
#[test]
fn from_a_file_the_certificate_is_installed_and_sshd_presents_it() {
    let Some(host) = PrivateHost::new() else {
        return;
    };
    let source = format!("file:{}", host.dir.path().join("incoming.pub").display());
    let waiting = host.run(&source, &[]);
    assert_eq!(waiting.status.code(), Some(0), "{}", said(&waiting));
    assert!(
        stdout(&waiting).contains("not signed yet"),
        "{}",
        said(&waiting)
    );
    // The key to sign, for the console log.
    let key = std::fs::read_to_string(host.key_pub()).unwrap();
    assert!(stdout(&waiting).contains(key.trim()), "{}", said(&waiting));
    assert_eq!(host.installed(), None);
    assert_eq!(host.snippet(), None);
    assert_eq!(
        host.connect(),
        Verdict::HostKeyRefused,
        "no certificate yet"
    );

    let first = host.sign(&host.key_pub(), &["-h", "-V", "-1m:+90d"]);
    let incoming = host.dir.path().join("incoming.pub");
    std::fs::copy(&first, &incoming).unwrap();
    // Copied there by someone with umask 077: installed 0644 all the same.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&incoming, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ran = host.run(&source, &[]);
    assert_eq!(ran.status.code(), Some(0), "{}", said(&ran));
    assert_eq!(host.installed(), Some(read(&first)));
    let cert = host.ssh_dir().join("ssh_host_ed25519_key-cert.pub");
    let mode = std::fs::metadata(&cert).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let snippet = host.snippet().unwrap();
    assert!(
        snippet.contains(&format!("\nHostCertificate {}\n", cert.display())),
        "{snippet}"
    );
    assert_eq!(host.reloads(), 1);
    // The real sshd, on its own: the configuration passes `sshd -t`, and the
    // line is in effect (the scratch sshd_config includes sshd_config.d).
    let checked = Command::new(&host.sshd)
        .arg("-t")
        .arg("-f")
        .arg(host.sshd_config())
        .output()
        .unwrap();
    assert!(checked.status.success(), "sshd -t: {}", stderr(&checked));
    assert!(stderr(&checked).is_empty(), "sshd -t: {}", stderr(&checked));
    let effective = Command::new(&host.sshd)
        .arg("-T")
        .arg("-f")
        .arg(host.sshd_config())
        .output()
        .unwrap();
    assert!(
        stdout(&effective).contains(&format!("hostcertificate {}\n", cert.display())),
        "{}",
        stdout(&effective)
    );
    assert_eq!(host.connect(), Verdict::HostKeyAccepted);

    let again = host.run(&source, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", said(&again));
    assert!(
        stdout(&again).contains("installed already"),
        "{}",
        said(&again)
    );
    assert_eq!(host.reloads(), 1, "nothing changed: no reload");

    let renewed = host.sign(&host.key_pub(), &["-h", "-V", "-1m:+120d"]);
    std::fs::copy(&renewed, host.dir.path().join("incoming.pub")).unwrap();
    let ran = host.run(&source, &[]);
    assert_eq!(ran.status.code(), Some(0), "{}", said(&ran));
    assert_eq!(host.installed(), Some(read(&renewed)));
    assert_eq!(host.reloads(), 2);
}

/// What the script refuses, each saying why and exiting 1: installing
/// nothing on a host that has no certificate yet, and leaving the
/// installed one (and its line) on a host that has one.
#[test]
fn refused_certificates_install_nothing_and_keep_the_previous_one() {
    let Some(host) = PrivateHost::new() else {
        return;
    };
    let other = host.dir.path().join("other_host_key");
    keygen(&other);
    let other_pub = other.with_extension("pub");
    let key = host.key_pub();
    let refusals = [
        (
            "a user certificate",
            host.sign(&key, &["-V", "-1m:+90d"]),
            "is not a host certificate",
        ),
        (
            "another key's certificate",
            host.sign(&other_pub, &["-h", "-V", "-1m:+90d"]),
            "certifies another key",
        ),
        (
            "an expired certificate",
            host.sign(&key, &["-h", "-V", "20200101:20200401"]),
            "expired at 2020-04-01",
        ),
        (
            "a certificate valid only from tomorrow",
            host.sign(&key, &["-h", "-V", "+1d:+90d"]),
            "is valid only from",
        ),
        ("a plain key", key.clone(), "holds no OpenSSH certificate"),
    ];
    let refuse_all = |before: Option<String>, snippet: Option<String>, reloads: usize| {
        for (what, file, reason) in &refusals {
            let ran = host.run(&format!("file:{}", file.display()), &[]);
            assert_eq!(ran.status.code(), Some(1), "{what}: {}", said(&ran));
            assert!(stderr(&ran).contains(reason), "{what}: {}", said(&ran));
            assert_eq!(host.installed(), before, "{what}");
            assert_eq!(host.snippet(), snippet, "{what}");
            assert_eq!(host.reloads(), reloads, "{what}");
        }
    };
    refuse_all(None, None, 0);

    let good = host.sign(&key, &["-h", "-V", "-1m:+90d"]);
    let ran = host.run(&format!("file:{}", good.display()), &[]);
    assert_eq!(ran.status.code(), Some(0), "{}", said(&ran));
    let snippet = host.snippet();
    assert!(snippet.is_some());
    refuse_all(Some(read(&good)), snippet, 1);
}

/// sshd has the last word, through `sshd -T` (`-t` that also prints the
/// configuration in effect): a configuration it refuses, one that does not
/// read sshd_config.d, or one whose host keys the certificate matches none
/// of, brings the previous files back and exits 1 without a reload.
#[test]
fn when_sshd_refuses_the_result_the_previous_files_come_back() {
    let Some(host) = PrivateHost::new() else {
        return;
    };
    let key = host.key_pub();
    let first = host.sign(&key, &["-h", "-V", "-1m:+90d"]);
    let renewed = host.sign(&key, &["-h", "-V", "-1m:+120d"]);
    let other = host.dir.path().join("other_host_key");
    keygen(&other);
    let ssh_dir = host.ssh_dir().display().to_string();
    let broken_configs = [
        (
            "a bad line",
            format!("{}NoSuchOption yes\n", host.sshd_config_text()),
            "sshd -t refuses the configuration",
        ),
        (
            "no Include of sshd_config.d",
            host.sshd_config_text()
                .lines()
                .filter(|l| !l.starts_with("Include"))
                .map(|l| format!("{l}\n"))
                .collect(),
            "sshd does not read",
        ),
        (
            "only another host key",
            host.sshd_config_text().replace(
                &format!("{ssh_dir}/ssh_host_ed25519_key"),
                &other.display().to_string(),
            ),
            "sshd cannot use the certificate",
        ),
    ];
    let refuse_all = |cert: &Path, before: Option<String>, snippet: Option<String>| {
        for (what, config, reason) in &broken_configs {
            std::fs::write(host.sshd_config(), config).unwrap();
            let ran = host.run(&format!("file:{}", cert.display()), &[]);
            assert_eq!(ran.status.code(), Some(1), "{what}: {}", said(&ran));
            assert!(stderr(&ran).contains(reason), "{what}: {}", said(&ran));
            assert_eq!(host.installed(), before, "{what}");
            assert_eq!(host.snippet(), snippet, "{what}");
            assert_eq!(host.reloads(), usize::from(before.is_some()), "{what}");
            assert_eq!(host.scratch_left(), Vec::<String>::new(), "{what}");
        }
        std::fs::write(host.sshd_config(), host.sshd_config_text()).unwrap();
    };
    refuse_all(&first, None, None);

    let ran = host.run(&format!("file:{}", first.display()), &[]);
    assert_eq!(ran.status.code(), Some(0), "{}", said(&ran));
    refuse_all(&renewed, Some(read(&first)), host.snippet());

    let ran = host.run(&format!("file:{}", renewed.display()), &[]);
    assert_eq!(ran.status.code(), Some(0), "{}", said(&ran));
    assert_eq!(host.installed(), Some(read(&renewed)));
    assert_eq!(host.reloads(), 2);
}

/// From SSM, with the real AWS CLI against moto: no parameter yet is "not
/// signed yet" (exit 0, nothing installed); the admin's put-parameter of
/// the README is installed on the next run; an unreachable SSM is an
/// error that leaves the certificate.
#[test]
fn from_ssm_the_certificate_the_admin_puts_is_installed() {
    let Some(host) = PrivateHost::new() else {
        return;
    };
    let Some(aws) = aws_cli() else {
        return;
    };
    let Some(moto) = LoopbackMoto::start() else {
        return;
    };
    let mut env = moto.cli_env();
    env.push(("AWS", aws.display().to_string()));
    let source = format!("ssm:{PARAMETER}");

    let waiting = host.run(&source, &env);
    assert_eq!(waiting.status.code(), Some(0), "{}", said(&waiting));
    assert!(
        stdout(&waiting).contains("not signed yet"),
        "{}",
        said(&waiting)
    );
    assert_eq!(host.installed(), None);
    assert_eq!(host.reloads(), 0);

    let cert = host.sign(&host.key_pub(), &["-h", "-V", "-1m:+90d"]);
    // The README's command, as the admin runs it.
    let mut put = Command::new(&aws);
    put.args([
        "ssm",
        "put-parameter",
        "--name",
        PARAMETER,
        "--type",
        "String",
    ])
    .arg("--value")
    .arg(format!("file://{}", cert.display()))
    .args(["--overwrite", "--region", REGION])
    .envs(env.iter().map(|(k, v)| (k, v)));
    let put = output_within(put, Duration::from_secs(60));
    assert!(put.status.success(), "{}", said(&put));

    let ran = host.run(&source, &env);
    assert_eq!(ran.status.code(), Some(0), "{}", said(&ran));
    assert_eq!(
        host.installed().map(|c| c.trim().to_owned()),
        Some(read(&cert).trim().to_owned())
    );
    assert!(host.snippet().is_some());
    assert_eq!(host.reloads(), 1);

    let mut unreachable = moto.cli_env();
    unreachable.push(("AWS", aws.display().to_string()));
    unreachable.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into()));
    unreachable.push(("AWS_MAX_ATTEMPTS", "1".into()));
    let failed = host.run(&source, &unreachable);
    assert_eq!(failed.status.code(), Some(1), "{}", said(&failed));
    assert!(
        stderr(&failed).contains("cannot read SSM"),
        "{}",
        said(&failed)
    );
    assert!(host.installed().is_some());
    assert_eq!(host.reloads(), 1);
}

/// Joining (`SOURCE=join:`), the parts that need no gateway (the whole
/// join is in `aws_host_join.rs`): an unreadable JOIN_CA or a portal not
/// on HTTPS is refused before anything is sent; with nothing kept, or a
/// copy kept for another key (an image made from a host that joined), it
/// goes to IMDS (absent here); a certificate kept from joining, for this
/// host's key, is installed again with no request, then found installed.
#[test]
fn a_joined_host_reinstalls_its_kept_certificate_and_asks_nothing() {
    let Some(host) = PrivateHost::new() else {
        return;
    };
    // Nothing answers there: any request fails.
    let nowhere = "http://127.0.0.1:9";
    let run = |conf: &str| {
        let mut cmd = host.command(conf);
        cmd.env("IMDS_ENDPOINT", nowhere);
        output_within(cmd, Duration::from_secs(120))
    };
    let join = "SOURCE=join:https://127.0.0.1:9\n".to_owned();
    let refusals = [
        (
            format!(
                "{join}JOIN_CA={}\n",
                host.dir.path().join("no-ca.pem").display()
            ),
            "cannot read JOIN_CA",
        ),
        (
            "SOURCE=join:http://127.0.0.1:9\n".to_owned(),
            "or join:https://<portal>, not 'join:http:",
        ),
        (
            join.clone(),
            "cannot get an IMDSv2 token from http://127.0.0.1:9",
        ),
    ];
    for (conf, reason) in &refusals {
        let ran = run(conf);
        assert_eq!(ran.status.code(), Some(1), "{conf}: {}", said(&ran));
        assert!(stderr(&ran).contains(reason), "{conf}: {}", said(&ran));
        assert_eq!(host.installed(), None, "{conf}");
    }

    let kept = host.state_dir().join("joined-cert.pub");
    std::fs::create_dir_all(host.state_dir()).unwrap();
    let other = host.dir.path().join("other_host_key");
    keygen(&other);
    let theirs = host.sign(&other.with_extension("pub"), &["-h", "-V", "-1m:+90d"]);
    std::fs::copy(&theirs, &kept).unwrap();
    let ran = run(&join);
    assert_eq!(ran.status.code(), Some(1), "{}", said(&ran));
    assert!(
        stderr(&ran).contains("cannot get an IMDSv2 token"),
        "{}",
        said(&ran)
    );
    assert_eq!(host.installed(), None);

    let ours = host.sign(&host.key_pub(), &["-h", "-V", "-1m:+90d"]);
    std::fs::copy(&ours, &kept).unwrap();
    let ran = run(&join);
    assert_eq!(ran.status.code(), Some(0), "{}", said(&ran));
    assert_eq!(host.installed(), Some(read(&ours)));
    assert_eq!(host.reloads(), 1);
    let again = run(&join);
    assert_eq!(again.status.code(), Some(0), "{}", said(&again));
    assert!(
        stdout(&again).contains("already joined"),
        "{}",
        said(&again)
    );
    assert_eq!(host.reloads(), 1);
}

/// The rest of the fragment: the config file the script reads (marked
/// EDIT); the script's mode (and shellcheck's word on it, where installed);
/// the units, which `systemd-analyze verify` accepts: a timer at boot and
/// every 6 hours; runcmd running it once and enabling the timer; and the
/// README's IAM policy granting ssm:GetParameter on exactly the parameter
/// the config names.
#[test]
fn the_fragment_runs_the_script_now_and_by_a_timer_with_the_documented_policy() {
    let Some(data) = cloud_init_files(FRAGMENT) else {
        return;
    };
    let entry = |path: &str| -> serde_json::Value {
        data["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in the fragment"))
            .clone()
    };
    let content = |path: &str| entry(path)["content"].as_str().unwrap().to_owned();
    assert_eq!(entry(SCRIPT)["permissions"], "0755");
    assert!(content(SCRIPT).starts_with("#!/bin/sh\n"));
    let conf = content("/etc/gatehouse/host-cert.conf");
    let source_line = conf
        .lines()
        .find(|l| l.starts_with("SOURCE="))
        .unwrap_or_else(|| panic!("no SOURCE= in {conf}"));
    assert!(source_line.contains("# EDIT"), "{source_line}");
    assert!(
        source_line.starts_with(&format!("SOURCE=ssm:{PARAMETER} ")),
        "{source_line}"
    );

    let service = content("/etc/systemd/system/gatehouse-host-cert.service");
    let timer = content("/etc/systemd/system/gatehouse-host-cert.timer");
    assert!(
        service.contains(&format!("\nExecStart={SCRIPT}\n")),
        "{service}"
    );
    // Without Preserve, the end of each run would take /run/sshd from
    // under the running sshd, whose new connections need it.
    for line in ["RuntimeDirectory=sshd\n", "RuntimeDirectoryPreserve=yes\n"] {
        assert!(service.contains(line), "{line}: {service}");
    }
    // ProtectSystem=strict: the certificate from joining is kept where the
    // unit lets it write, and nowhere else.
    assert!(
        service.contains("\nStateDirectory=gatehouse-host-cert\n"),
        "{service}"
    );
    assert!(
        content(SCRIPT)
            .contains("\nSTATE_DIR=${GATEHOUSE_HOST_CERT_STATE:-/var/lib/gatehouse-host-cert}\n"),
        "the script keeps it in the unit's StateDirectory"
    );
    for line in ["OnBootSec=", "OnUnitActiveSec=6h", "WantedBy=timers.target"] {
        assert!(timer.contains(line), "{line}: {timer}");
    }
    let runcmd = data["runcmd"].to_string();
    let now = runcmd
        .find("\"start\",\"gatehouse-host-cert.service\"")
        .unwrap_or_else(|| panic!("runcmd does not run the script: {runcmd}"));
    let enabled = runcmd
        .find("\"enable\",\"--now\",\"gatehouse-host-cert.timer\"")
        .unwrap_or_else(|| panic!("runcmd does not enable the timer: {runcmd}"));
    assert!(now < enabled, "the first run comes before the timer's");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("gatehouse-host-cert");
    write_executable(&script, &content(SCRIPT));
    // Not a prerequisite (CI does not install it): a check where it is.
    if have_tool("shellcheck") {
        let checked = Command::new("shellcheck").arg(&script).output().unwrap();
        assert!(checked.status.success(), "shellcheck: {}", said(&checked));
    } else {
        eprintln!("shellcheck is not installed: the script is not linted");
    }

    if require(
        have_tool("systemd-analyze"),
        "systemd-analyze (Debian package systemd)",
    ) {
        let mut units = Vec::new();
        for (name, text) in [
            ("gatehouse-host-cert.service", &service),
            ("gatehouse-host-cert.timer", &timer),
        ] {
            let unit = dir.path().join(name);
            let text = text.replace(SCRIPT, &script.display().to_string());
            std::fs::write(&unit, text).unwrap();
            units.push(unit);
        }
        let verified = Command::new("systemd-analyze")
            .arg("verify")
            .args(&units)
            .output()
            .unwrap();
        // It only warns about an unknown key: any word from it is a failure.
        assert!(
            verified.status.success() && stderr(&verified).is_empty(),
            "systemd-analyze verify: {}",
            said(&verified)
        );
    }

    let readme = std::fs::read_to_string(packaging_file("README.md")).unwrap();
    let section = readme
        .split("\n### Host certificates on the private hosts\n")
        .nth(1)
        .expect("the README's section on host certificates");
    let policy = section
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section's IAM policy");
    let policy: serde_json::Value = serde_json::from_str(policy).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{policy}");
    assert_eq!(statements[0]["Effect"], "Allow");
    assert_eq!(statements[0]["Action"], "ssm:GetParameter");
    let resource = statements[0]["Resource"].as_str().unwrap();
    assert!(
        resource.starts_with("arn:aws:ssm:")
            && resource.ends_with(&format!(":parameter{PARAMETER}")),
        "{resource}"
    );
}
