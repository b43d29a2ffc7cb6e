//! A gateway with `public_endpoint = "auto"` (its endpoint is the elastic IP
//! the AWS provisioner manages), against moto: every door that adds a device
//! hands out the same Endpoint, the elastic IP and the VPN port. The doors
//! are the portal's API (a member enrolled over the API), the portal's page
//! in Chromium (a member who enrolled on the page, with a key pair the page
//! made) and `accessctl device config`; all three are answered by one
//! function in accessd (`Access::create_device`). Before `accessctl aws
//! apply` no elastic IP is known: each door refuses plainly (the portal with
//! 503 `endpoint_unknown`) and nothing is stored.
//!
//! The portal listens on loopback inside the lab's namespace, so the HTTPS
//! client and the browser run there too ([`in_netns`]). Screenshots go to
//! `<target dir>/test-artifacts/portal-aws/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use gatehouse_tests::Daemon;
use gatehouse_tests::aws::{AwsLab, VPN_PORT, in_netns};
use gatehouse_tests::browser::{self, Browser};
use gatehouse_tests::portal::{Portal, add_user, conf_value, new_public_key, public_key_of};
use serde_json::{Value, json};

/// What the portal's two doors handed out once the elastic IP was known.
struct PortalAnswers {
    /// The API's answer to adding alice's "phone".
    api: Value,
    api_key: String,
    /// The config bob's browser downloaded for "laptop" (`None` without Chromium).
    browser_conf: Option<String>,
}

#[test]
fn on_an_auto_gateway_the_portal_api_the_browser_and_accessctl_give_the_elastic_ip() {
    let Some(lab) = AwsLab::create() else { return };
    let with_browser = browser::available();
    let gw = lab.start_gateway(&lab.config(""));
    assert_eq!(
        gw.ctl_json(&["status"])["endpoint"],
        Value::Null,
        "no elastic IP known yet"
    );
    let bob_token = add_user(&gw, "bob");

    let answers = in_netns(&lab.ns, || portal_doors(&gw, &bob_token, with_browser));

    let eip = elastic_ip_in_moto(&lab);
    let endpoint = format!("{eip}:{VPN_PORT}");
    assert_eq!(gw.ctl_json(&["status"])["endpoint"], endpoint.as_str());
    assert_eq!(
        answers.api["endpoint"], endpoint,
        "the portal's API gives the elastic IP"
    );
    assert_eq!(
        answers.api["device"]["public_key"],
        answers.api_key.as_str()
    );
    let ctl_conf = gw.ctl_ok(&["device", "config", "alice", "laptop"]);
    assert_eq!(
        conf_value(&ctl_conf, "Endpoint"),
        endpoint,
        "accessctl gives the elastic IP"
    );
    // The other fields come from the same place too.
    assert_eq!(
        conf_value(&ctl_conf, "PublicKey"),
        answers.api["gateway_public_key"]
    );
    assert_eq!(
        conf_value(&ctl_conf, "AllowedIPs"),
        answers.api["allowed_ips"][0]
    );
    let mut stored = vec![
        format!(
            "alice/laptop {}",
            public_key_of(conf_value(&ctl_conf, "PrivateKey"))
        ),
        format!("alice/phone {}", answers.api_key),
    ];
    if let Some(conf) = &answers.browser_conf {
        assert_eq!(
            conf_value(conf, "Endpoint"),
            endpoint,
            "the browser's config gives the elastic IP"
        );
        assert_eq!(
            conf_value(conf, "PublicKey"),
            answers.api["gateway_public_key"]
        );
        stored.push(format!(
            "bob/laptop {}",
            public_key_of(conf_value(conf, "PrivateKey"))
        ));
    }

    // Each device is stored with the key its door was given, and each
    // creation is audited alike, told apart only by the door it came through.
    assert_eq!(stored_devices(&gw), stored);
    let created = gw.audit_of("device.create");
    let vias: Vec<(&str, &str)> = created
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap(),
                r["detail"]["via"].as_str().unwrap(),
            )
        })
        .collect();
    let mut want = vec![("alice/phone", "portal")];
    if answers.browser_conf.is_some() {
        want.push(("bob/laptop", "portal"));
    }
    want.push(("alice/laptop", "admin"));
    assert_eq!(vias, want);
    for record in &created {
        assert_eq!(record["detail"]["key_made_by"], "client", "{record}");
    }
}

/// Inside the lab's namespace: alice enrolls over the portal's API, bob on
/// the portal's page; both try to add a device before `aws apply` and are
/// refused (as is accessctl), then add one after it.
fn portal_doors(gw: &Daemon, bob_token: &str, with_browser: bool) -> PortalAnswers {
    let portal = Portal::of(gw);
    let mut alice = portal.enroll(gw, "alice");
    let session = portal.login_ok(&mut alice);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let browser = with_browser.then(|| {
        runtime.block_on(async {
            let browser = Browser::start(&portal.base, "portal-aws").await;
            browser.enroll(bob_token, "bob").await;
            browser
        })
    });

    // Before `aws apply`: a clear refusal at every door, nothing stored.
    let refused = portal.post_json(
        "/api/v1/devices",
        &json!({ "name": "phone", "public_key": new_public_key() }),
        Some(&session),
    );
    assert_eq!(refused.status(), 503);
    let refused: Value = refused.json().unwrap();
    assert_eq!(refused["code"], "endpoint_unknown", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("public address is not known yet"),
        "{refused}"
    );
    if let Some(browser) = &browser {
        let said = runtime.block_on(browser.add_device_refused("laptop"));
        assert!(said.contains("public address is not known yet"), "{said}");
    }
    assert_refused_by_accessctl(gw);
    assert_eq!(gw.ctl_json(&["device", "list"]), json!([]));
    assert!(gw.audit_of("device.create").is_empty());

    // The provisioner makes the elastic IP; from now on it is the endpoint.
    let applied = gw.ctl_json(&["aws", "apply"]);
    assert!(applied["elastic_ip"].is_string(), "{applied}");

    let api_key = new_public_key();
    let added = portal.post_json(
        "/api/v1/devices",
        &json!({ "name": "phone", "public_key": api_key }),
        Some(&session),
    );
    let status = added.status();
    let api: Value = added.json().unwrap();
    assert_eq!(status, 200, "{api}");
    let browser_conf = browser.map(|browser| runtime.block_on(add_laptop_in(browser)));
    PortalAnswers {
        api,
        api_key,
        browser_conf,
    }
}

/// Adds "laptop" on the devices page and returns its downloaded config,
/// checked against the text and the QR code the page shows.
async fn add_laptop_in(browser: Browser) -> String {
    browser.goto("/devices").await;
    let laptop = browser.add_device("laptop").await;
    assert!(!laptop.gateway_keyed, "Chromium makes X25519 keys itself");
    let conf = browser.download(&laptop).await;
    let endpoint_line = format!("Endpoint = {}", conf_value(&conf, "Endpoint"));
    let rendered = browser.open_config_text().await;
    assert!(rendered.lines().any(|l| l == endpoint_line), "{rendered}");
    if browser::can_decode_qr() {
        let decoded = browser::decode_qr(&browser.shots, &laptop.qr_png, "qr-device.png");
        assert_eq!(
            decoded.trim_end(),
            conf.trim_end(),
            "the device QR is the .conf"
        );
    }
    browser.close().await;
    conf
}

/// `accessctl device config` before the elastic IP is known: it fails,
/// naming the cause and the fix.
fn assert_refused_by_accessctl(gw: &Daemon) {
    let out = gw.ctl(&["device", "config", "alice", "laptop"]);
    let said = gatehouse_tests::stderr(&out);
    assert!(!out.status.success(), "{}", gatehouse_tests::stdout(&out));
    assert!(
        said.contains("no elastic IP is known yet") && said.contains("accessctl aws apply"),
        "{said}"
    );
}

/// The gateway's one elastic IP, as moto describes it (not accessd's word).
/// Issue 24, finding 9: a gateway whose state dir knows no elastic IP
/// yet (a new instance, or the standby of a pair, which never applied)
/// learns the one tagged for it at start, by a read-only describe, instead
/// of refusing every device config with `endpoint_unknown` until someone
/// runs `accessctl aws apply`. Nothing is changed in AWS.
#[test]
fn a_gateway_that_knows_no_elastic_ip_learns_the_tagged_one_at_start() {
    let Some(lab) = AwsLab::create() else { return };
    let eip = lab.python(
        "out = ec2.allocate_address(Domain='vpc', TagSpecifications=[{'ResourceType': \
         'elastic-ip', 'Tags': [{'Key': 'gatehouse:gateway', 'Value': 'gh-aws'}]}])['PublicIp']",
    );
    let eip = eip.as_str().unwrap().to_string();
    let gw = lab.start_gateway(&lab.config(""));
    let endpoint = format!("{eip}:{VPN_PORT}");
    assert_eq!(
        gw.ctl_json(&["status"])["endpoint"],
        endpoint.as_str(),
        "the tagged elastic IP is known from the start:\n{}",
        gw.log_tail(20)
    );
    gw.ctl_ok(&["user", "add", "alice", "--group", "research", "--no-login"]);
    let conf = gw.ctl_ok(&["device", "config", "alice", "laptop"]);
    assert_eq!(conf_value(&conf, "Endpoint"), endpoint);
    // The keys' first start stores them in SSM; nothing else is changed.
    let mut changes = gw.audit_of("aws.change");
    changes.retain(|c| !c["target"].as_str().unwrap().starts_with("ssm parameter"));
    assert!(
        changes.is_empty(),
        "a describe changes nothing: {changes:#?}"
    );
    let associated = lab.python(&format!(
        "out = ec2.describe_addresses(PublicIps=['{eip}'])['Addresses'][0].get('AssociationId')"
    ));
    assert_eq!(associated, Value::Null, "the address was not moved");
}

fn elastic_ip_in_moto(lab: &AwsLab) -> String {
    let found = lab.python(
        "out = [a['PublicIp'] for a in ec2.describe_addresses(Filters=[\
         {'Name': 'tag:gatehouse:gateway', 'Values': ['gh-aws']}])['Addresses']]",
    );
    let ips = found.as_array().unwrap();
    assert_eq!(ips.len(), 1, "one elastic IP: {found}");
    ips[0].as_str().unwrap().to_string()
}

/// `user/device public-key` of every stored device, sorted.
fn stored_devices(gw: &Daemon) -> Vec<String> {
    let list = gw.ctl_json(&["device", "list"]);
    let mut rows: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let field = |key: &str| d[key].as_str().unwrap().to_string();
            format!(
                "{}/{} {}",
                field("user"),
                field("name"),
                field("public_key")
            )
        })
        .collect();
    rows.sort();
    rows
}
