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
//! the tag.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use gatehouse_tests::aws::{AwsLab, in_netns};
use gatehouse_tests::portal::Portal;
use gatehouse_tests::{have_tool, require, stderr};
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
    // Private hosts in moto: in the gateway's VPC tagged and untagged, and
    // one tagged in another VPC.
    let vpc = &lab.world.vpc;
    let made = lab.python(&format!(
        "image = ec2.describe_images(Owners=['amazon'])['Images'][0]['ImageId']\n\
         private = ec2.create_subnet(VpcId='{vpc}', CidrBlock='10.0.3.0/24')['Subnet']['SubnetId']\n\
         other_vpc = ec2.create_vpc(CidrBlock='10.9.0.0/16')['Vpc']['VpcId']\n\
         elsewhere = ec2.create_subnet(VpcId=other_vpc, CidrBlock='10.9.3.0/24')['Subnet']['SubnetId']\n\
         def run(subnet, tagged):\n\
         \x20   tags = [{{'ResourceType': 'instance', 'Tags': [{{'Key': 'gatehouse:host', 'Value': 'yes'}}]}}] if tagged else []\n\
         \x20   i = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType='t3.micro', SubnetId=subnet, TagSpecifications=tags)['Instances'][0]\n\
         \x20   return dict(id=i['InstanceId'], ip=i['PrivateIpAddress'], dns=i.get('PrivateDnsName', ''))\n\
         out = dict(host=run(private, True), second=run(private, True), untagged=run(private, False), elsewhere=run(elsewhere, True))\n"
    ));
    let instance = |name: &str| {
        (
            made[name]["id"].as_str().unwrap().to_string(),
            made[name]["ip"].as_str().unwrap().to_string(),
        )
    };
    let config = lab.config("").replacen(
        "[ssh]\nlisten = \"127.0.0.1:2222\"\n",
        &format!(
            "[ssh]\nlisten = \"127.0.0.1:2222\"\ncertificates = true\nhost_join = true\n\
             host_join_signer_file = \"{}\"\nhost_join_window = \"10m\"\n",
            dir.join("aws.pem").display()
        ),
        1,
    );
    let gw = lab.start_gateway(&config);
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
