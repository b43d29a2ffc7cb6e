//! Private EC2 hosts joining by instance identity (issue 28, item 5),
//! against moto: a host in the gateway's VPC, tagged `gatehouse:host`,
//! whose identity document carries a PKCS #7 signature of the configured
//! signer, gets a host certificate for its private address and DNS name
//! from `POST /api/v1/hosts/join`. The signer is a test-only certificate
//! made here with the stock `openssl` (AWS's own certificate signs only
//! real instances' documents); the documents are signed as instance
//! metadata signs them (`openssl cms -sign`, SHA-256, the document
//! inside). Refused, each with its reason and an audit record: a document
//! that is not signed, one signed by another certificate, a stale one, a
//! replayed one, an unknown instance, one outside the VPC and one without
//! the tag. And the private host's side: the host certificate script of
//! `cloud-init-private-host.yaml`, as shipped, joining once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use gatehouse_tests::aws::{AwsLab, in_netns};
use gatehouse_tests::packaging::private_host::{PrivateHost, said};
use gatehouse_tests::portal::Portal;
use gatehouse_tests::{have_tool, output_within, require, stderr, stdout};
use serde_json::{Value, json};

/// A test-only signer: `<name>.pem` and `<name>.key` in `dir`.
fn make_signer(dir: &Path, name: &str) {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={name}"), "-keyout"])
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// An identity document for `instance` at `ip`, launched `age` ago.
fn document(instance: &str, ip: &str, age: Duration) -> String {
    let launched = SystemTime::now() - age;
    let pending = humantime::format_rfc3339_seconds(launched);
    format!(
        "{{\n  \"accountId\" : \"123456789012\",\n  \"availabilityZone\" : \"us-east-1a\",\n  \
         \"instanceId\" : \"{instance}\",\n  \"instanceType\" : \"t3.micro\",\n  \
         \"pendingTime\" : \"{pending}\",\n  \"privateIp\" : \"{ip}\",\n  \
         \"region\" : \"us-east-1\",\n  \"version\" : \"2017-09-30\"\n}}"
    )
}

/// `document` signed by `signer` as instance metadata serves it: base64
/// of the DER.
fn sign(dir: &Path, signer: &str, document: &str) -> String {
    let input = dir.join("document.json");
    std::fs::write(&input, document).unwrap();
    let out_file = dir.join("document.p7");
    let out = Command::new("openssl")
        .args([
            "cms",
            "-sign",
            "-nodetach",
            "-binary",
            "-md",
            "sha256",
            "-outform",
            "DER",
        ])
        .arg("-signer")
        .arg(dir.join(format!("{signer}.pem")))
        .arg("-inkey")
        .arg(dir.join(format!("{signer}.key")))
        .arg("-in")
        .arg(&input)
        .arg("-out")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(out_file).unwrap())
}

/// A fresh ed25519 host key line.
fn host_key(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(format!("{}.pub", path.display()))
        .unwrap()
        .trim()
        .to_string()
}

/// Private hosts in moto: `host` and `second` in the gateway's VPC
/// tagged, `untagged` there without the tag, and `elsewhere` tagged in
/// another VPC; each with its `id`, `ip` and `dns`.
fn private_instances(lab: &AwsLab) -> Value {
    let vpc = &lab.world.vpc;
    lab.python(&format!(
        "image = ec2.describe_images(Owners=['amazon'])['Images'][0]['ImageId']\n\
         private = ec2.create_subnet(VpcId='{vpc}', CidrBlock='10.0.3.0/24')['Subnet']['SubnetId']\n\
         other_vpc = ec2.create_vpc(CidrBlock='10.9.0.0/16')['Vpc']['VpcId']\n\
         elsewhere = ec2.create_subnet(VpcId=other_vpc, CidrBlock='10.9.3.0/24')['Subnet']['SubnetId']\n\
         def run(subnet, tagged):\n\
         \x20   tags = [{{'ResourceType': 'instance', 'Tags': [{{'Key': 'gatehouse:host', 'Value': 'yes'}}]}}] if tagged else []\n\
         \x20   i = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType='t3.micro', SubnetId=subnet, TagSpecifications=tags)['Instances'][0]\n\
         \x20   return dict(id=i['InstanceId'], ip=i['PrivateIpAddress'], dns=i.get('PrivateDnsName', ''))\n\
         out = dict(host=run(private, True), second=run(private, True), untagged=run(private, False), elsewhere=run(elsewhere, True))\n"
    ))
}

/// The instance id and private IP of `name` in [`private_instances`].
fn instance_of(made: &Value, name: &str) -> (String, String) {
    (
        made[name]["id"].as_str().unwrap().to_string(),
        made[name]["ip"].as_str().unwrap().to_string(),
    )
}

/// The lab's config with joining on, signer `aws.pem` in the lab's dir.
fn join_config(lab: &AwsLab) -> String {
    lab.config("").replacen(
        "[ssh]\nlisten = \"127.0.0.1:2222\"\n",
        &format!(
            "[ssh]\nlisten = \"127.0.0.1:2222\"\ncertificates = true\nhost_join = true\n\
             host_join_signer_file = \"{}\"\nhost_join_window = \"10m\"\n",
            lab.dir().join("aws.pem").display()
        ),
        1,
    )
}

#[test]
fn private_ec2_hosts_join_by_instance_identity_and_the_rest_are_refused() {
    if !require(
        have_tool("openssl"),
        "openssl (to sign test identity documents)",
    ) {
        return;
    }
    let Some(lab) = AwsLab::create() else { return };
    let dir = lab.dir().to_path_buf();
    make_signer(&dir, "aws");
    make_signer(&dir, "other");
    let made = private_instances(&lab);
    let instance = |name: &str| instance_of(&made, name);
    let gw = lab.start_gateway(&join_config(&lab));
    let join = |body: &Value| -> (u16, Value) {
        in_netns(&lab.ns, || {
            let portal = Portal::of(&gw);
            let answer = portal.post_json("/api/v1/hosts/join", body, None);
            let status = answer.status().as_u16();
            (status, answer.json().unwrap_or(Value::Null))
        })
    };
    let minute = Duration::from_secs(60);
    let request = |who: &str, signer: &str, age: Duration, key: &str| {
        let (id, ip) = instance(who);
        let doc = document(&id, &ip, age);
        json!({ "public_key": key, "pkcs7": sign(&dir, signer, &doc), "document": doc })
    };

    // The tagged host in the VPC joins: its address and DNS name.
    let key = host_key(&dir, "host_ed25519");
    let (status, signed) = join(&request("host", "aws", minute, &key));
    assert_eq!(status, 200, "{signed}\n{}", gw.log_tail(20));
    let (host_id, host_ip) = instance("host");
    let mut principals = vec![host_ip.clone()];
    let dns = made["host"]["dns"].as_str().unwrap();
    if !dns.is_empty() {
        principals.push(dns.to_string());
    }
    assert_eq!(signed["info"]["principals"], json!(principals), "{signed}");
    let cert = dir.join("host_ed25519-cert.pub");
    std::fs::write(&cert, signed["certificate"].as_str().unwrap()).unwrap();
    let shown = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.contains("host certificate") && shown.contains(&host_ip),
        "{shown}"
    );
    let issued = gw.audit_of("ssh.host_cert.issue");
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["actor"], format!("instance:{host_id}"));

    // Refusals, each with its reason.
    let other_key = host_key(&dir, "other_ed25519");
    let mut unsigned = request("second", "aws", minute, &other_key);
    unsigned["pkcs7"] = json!(base64::engine::general_purpose::STANDARD.encode(b"unsigned"));
    let mut unknown = request("second", "aws", minute, &other_key);
    let doc = document("i-0000000000000000f", "10.0.3.99", minute);
    unknown["document"] = json!(doc);
    unknown["pkcs7"] = json!(sign(&dir, "aws", &doc));
    let cases = [
        ("an unsigned document", unsigned, "signature"),
        (
            "another signer",
            request("second", "other", minute, &other_key),
            "signature",
        ),
        (
            "a stale document",
            request("second", "aws", 60 * minute, &other_key),
            "stale",
        ),
        (
            "a host key that is no key",
            request("second", "aws", minute, "ssh-ed25519 nonsense"),
            "malformed",
        ),
        (
            "a replayed document",
            request("host", "aws", minute, &other_key),
            "replayed",
        ),
        ("an unknown instance", unknown, "unknown_instance"),
        (
            "another VPC",
            request("elsewhere", "aws", minute, &other_key),
            "outside_vpc",
        ),
        (
            "no tag",
            request("untagged", "aws", minute, &other_key),
            "untagged",
        ),
    ];
    for (case, body, code) in &cases {
        let (status, answer) = join(body);
        assert_eq!(status, 403, "{case}: {answer}");
        assert_eq!(answer["code"], *code, "{case}: {answer}");
    }
    let refused = gw.audit_of("ssh.host_join.fail");
    let reasons: Vec<&str> = refused
        .iter()
        .map(|r| r["detail"]["reason"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(_, _, code)| *code).collect();
    assert_eq!(reasons, expected, "{refused:?}");
    // The second host, with a good document, still joins.
    let (status, second) = join(&request("second", "aws", minute, &other_key));
    assert_eq!(status, 200, "{second}");
    assert_eq!(gw.audit_of("ssh.host_cert.issue").len(), 2);
}

/// The private host's own side, end to end: the real
/// `gatehouse-host-cert` of `cloud-init-private-host.yaml`, with
/// `SOURCE=join:`, in the lab's namespace, reading a signed identity
/// document from the fake IMDSv2 (the signature base64 in lines, as
/// served) and posting it to accessd's portal over TLS verified by
/// `JOIN_CA`. It installs the certificate, which names the instance's
/// private IP and which `sshd -T` takes; its next run installs the kept
/// copy and asks nothing (a second request would be refused as a replay).
/// A portal it cannot verify gets no request; an untagged instance is
/// refused, named, and nothing is installed.
#[test]
fn the_host_cert_script_joins_once_and_keeps_what_the_gateway_signed() {
    if !require(
        have_tool("openssl") && have_tool("curl"),
        "openssl (to sign test identity documents) and curl (the script's)",
    ) {
        return;
    }
    let Some(lab) = AwsLab::create() else { return };
    let (Some(host), Some(untagged)) = (PrivateHost::new(), PrivateHost::new()) else {
        return;
    };
    let dir = lab.dir().to_path_buf();
    make_signer(&dir, "aws");
    let made = private_instances(&lab);
    let gw = lab.start_gateway(&join_config(&lab));
    let portal = in_netns(&lab.ns, || Portal::of(&gw));
    let portal_ca = dir.join("portal-ca.pem");
    std::fs::write(&portal_ca, &portal.cert_pem).unwrap();
    // The fake IMDS speaks for one instance at a time.
    let launch = |name: &str| {
        let (id, ip) = instance_of(&made, name);
        let doc = document(&id, &ip, Duration::from_secs(60));
        let pkcs7 = sign(&dir, "aws", &doc);
        let lines: Vec<&str> = pkcs7
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        lab.imds.set_dynamic("instance-identity/document", &doc);
        lab.imds
            .set_dynamic("instance-identity/rsa2048", &lines.join("\n"));
        (id, ip)
    };
    let run = |host: &PrivateHost, conf: &str| {
        let mut cmd = host.command(conf);
        cmd.env("IMDS_ENDPOINT", lab.imds.url());
        in_netns(&lab.ns, move || {
            output_within(cmd, Duration::from_secs(120))
        })
    };
    let conf = format!(
        "SOURCE=join:{}\nJOIN_CA={}\n",
        portal.base,
        portal_ca.display()
    );
    let issued_to = |id: &str| {
        gw.audit_of("ssh.host_cert.issue")
            .into_iter()
            .filter(|r| r["actor"] == format!("instance:{id}"))
            .count()
    };
    let refused_for = |reason: &str| {
        gw.audit_of("ssh.host_join.fail")
            .into_iter()
            .filter(|r| r["detail"]["reason"] == reason)
            .count()
    };

    let (id, ip) = launch("host");
    let joined = run(&host, &conf);
    assert_eq!(joined.status.code(), Some(0), "{}", said(&joined));
    assert!(stdout(&joined).contains("joined: "), "{}", said(&joined));
    let installed = host.installed().expect("a certificate installed");
    let kept = std::fs::read_to_string(host.state_dir().join("joined-cert.pub")).unwrap();
    assert_eq!(installed, kept, "what it installed is what it kept");
    let cert = host.ssh_dir().join("ssh_host_ed25519_key-cert.pub");
    let shown = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let shown = stdout(&shown);
    let principals: Vec<&str> = shown
        .split("Principals:")
        .nth(1)
        .and_then(|rest| rest.split("Critical Options:").next())
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(shown.contains("host certificate"), "{shown}");
    assert!(principals.contains(&ip.as_str()), "{ip}: {shown}");
    let fingerprint = |file: &Path| {
        let out = Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(file)
            .output()
            .unwrap();
        stdout(&out).split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(fingerprint(&cert), fingerprint(&host.key_pub()));
    let effective = Command::new(&host.sshd)
        .arg("-T")
        .arg("-f")
        .arg(host.sshd_config())
        .output()
        .unwrap();
    assert!(effective.status.success(), "sshd -T: {}", said(&effective));
    assert!(
        stdout(&effective).contains(&format!("hostcertificate {}\n", cert.display())),
        "{}",
        stdout(&effective)
    );
    assert_eq!(host.reloads(), 1);
    assert_eq!(issued_to(&id), 1);

    // The timer's next run: the kept copy, no request.
    let again = run(&host, &conf);
    assert_eq!(again.status.code(), Some(0), "{}", said(&again));
    assert!(
        stdout(&again).contains("already joined"),
        "{}",
        said(&again)
    );
    assert_eq!(host.installed(), Some(installed));
    assert_eq!(host.reloads(), 1, "nothing changed: no reload");
    assert_eq!(issued_to(&id), 1, "{}", gw.log_tail(20));
    assert_eq!(refused_for("replayed"), 0, "it asked again");

    // Another instance, untagged. A portal whose certificate JOIN_CA does
    // not hold gets nothing (the request is a credential). The portal's
    // name may differ from where the host reaches it (JOIN_ADDRESS: its
    // certificate names the gateway's public name, the host reaches its
    // private IP); the certificate is checked for the name. The portal
    // refuses it.
    let (untagged_id, _) = launch("untagged");
    let port = portal.base.rsplit(':').next().unwrap();
    let by_name = |address: &str, ca: &Path| {
        format!(
            "SOURCE=join:https://localhost:{port}/\nJOIN_CA={}\nJOIN_ADDRESS={address}\n",
            ca.display()
        )
    };
    for (case, conf) in [
        (
            "another certificate",
            by_name("127.0.0.1", &dir.join("aws.pem")),
        ),
        ("another address", by_name("127.0.0.2", &portal_ca)),
    ] {
        let failed = run(&untagged, &conf);
        assert_eq!(failed.status.code(), Some(1), "{case}: {}", said(&failed));
        assert!(
            stderr(&failed).contains("cannot reach the portal at https://localhost:"),
            "{case}: {}",
            said(&failed)
        );
        assert_eq!(
            refused_for("untagged"),
            0,
            "{case}: the portal had a request"
        );
    }
    let refused = run(&untagged, &by_name("127.0.0.1", &portal_ca));
    assert_eq!(refused.status.code(), Some(1), "{}", said(&refused));
    assert!(
        stderr(&refused).contains(&format!(
            "refused this host (untagged): instance {untagged_id} "
        )),
        "{}",
        said(&refused)
    );
    assert_eq!(untagged.installed(), None);
    assert_eq!(untagged.snippet(), None);
    assert!(!untagged.state_dir().join("joined-cert.pub").exists());
    assert_eq!(untagged.reloads(), 0);
    assert_eq!(refused_for("untagged"), 1);
    assert_eq!(gw.audit_of("ssh.host_cert.issue").len(), 1);
}
