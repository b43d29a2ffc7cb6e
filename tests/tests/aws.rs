//! The AWS provisioner end to end: the real accessd and accessctl against
//! the moto server, with a fake IMDSv2 for discovery. Every check of AWS
//! state is an independent boto3 describe call on moto, not accessd's word.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeSet;

use gatehouse_tests::aws::{ADMIN_CIDR, AwsLab, POOL};
use gatehouse_tests::{Daemon, stderr, stdout};

use serde_json::Value;

/// The footprint as moto describes it, in comparable form.
#[derive(Debug, PartialEq)]
struct Footprint {
    gateway_rules: BTreeSet<String>,
    targets_rules: BTreeSet<String>,
    instance_groups: BTreeSet<String>,
    source_dest_check: bool,
    elastic_ip: Option<(String, Option<String>)>,
    route_target: Option<String>,
    ssm_type: Option<String>,
    gateway_group: Option<String>,
    tagged_groups: usize,
    tagged_addresses: usize,
}

fn footprint(lab: &AwsLab) -> Footprint {
    let w = &lab.world;
    let raw = lab.python(&format!(
        r#"
tag = [{{'Name': 'tag:gatehouse:gateway', 'Values': ['gh-aws']}}]
groups = ec2.describe_security_groups(Filters=tag)['SecurityGroups']
role = lambda g: [t['Value'] for t in g.get('Tags', []) if t['Key'] == 'gatehouse:role']
def rules(g):
    found = []
    for p in g['IpPermissions']:
        ports = '%s %s-%s' % (p['IpProtocol'], p.get('FromPort'), p.get('ToPort'))
        found += [ports + ' ' + r['CidrIp'] for r in p.get('IpRanges', [])]
        found += [ports + ' ' + r['CidrIpv6'] for r in p.get('Ipv6Ranges', [])]
        found += [ports + ' ' + r['GroupId'] for r in p.get('UserIdGroupPairs', [])]
        found += [ports + ' ' + r['PrefixListId'] for r in p.get('PrefixListIds', [])]
    return found
by_role = {{role(g)[0]: g for g in groups if role(g)}}
inst = ec2.describe_instances(InstanceIds=['{instance}'])['Reservations'][0]['Instances'][0]
addrs = ec2.describe_addresses(Filters=tag)['Addresses']
rtb = ec2.describe_route_tables(RouteTableIds=['{rtb}'])['RouteTables'][0]
route = [r.get('NetworkInterfaceId') for r in rtb['Routes'] if r.get('DestinationCidrBlock') == '{POOL}']
try:
    ssm_type = ssm.get_parameter(Name='/gatehouse/gh-aws/wireguard-key')['Parameter']['Type']
except ssm.exceptions.ParameterNotFound:
    ssm_type = None
out = dict(
    gateway=rules(by_role['gateway']) if 'gateway' in by_role else [],
    targets=rules(by_role['targets']) if 'targets' in by_role else [],
    gateway_id=by_role['gateway']['GroupId'] if 'gateway' in by_role else None,
    instance_groups=[g['GroupId'] for g in inst['SecurityGroups']],
    sdc=inst['SourceDestCheck'],
    eip=[[a['PublicIp'], a.get('NetworkInterfaceId') or None] for a in addrs],
    route=route[0] if route else None,
    ssm_type=ssm_type,
    tagged_groups=len(groups),
)
"#,
        instance = w.instance,
        rtb = w.route_table,
    ));
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let eips = raw["eip"].as_array().unwrap();
    Footprint {
        gateway_rules: strings(&raw["gateway"]),
        targets_rules: strings(&raw["targets"]),
        instance_groups: strings(&raw["instance_groups"]),
        source_dest_check: raw["sdc"].as_bool().unwrap(),
        elastic_ip: eips.first().map(|a| {
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().map(str::to_string),
            )
        }),
        route_target: raw["route"].as_str().map(str::to_string),
        ssm_type: raw["ssm_type"].as_str().map(str::to_string),
        gateway_group: raw["gateway_id"].as_str().map(str::to_string),
        tagged_groups: raw["tagged_groups"].as_u64().unwrap() as usize,
        tagged_addresses: eips.len(),
    }
}

/// Asserts the footprint is exactly what the lab's config asks for.
fn assert_complete(lab: &AwsLab, found: &Footprint) {
    let sg = found
        .gateway_group
        .clone()
        .expect("a gateway security group");
    let set = |items: &[&str]| {
        items
            .iter()
            .map(|s| (*s).to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        found.gateway_rules,
        set(&[
            "udp 51820-51820 0.0.0.0/0",
            "udp 51820-51820 ::/0",
            "tcp 8443-8443 0.0.0.0/0",
            "tcp 8443-8443 ::/0",
            "tcp 2222-2222 0.0.0.0/0",
            "tcp 2222-2222 ::/0",
            &format!("tcp 22-22 {ADMIN_CIDR}"),
        ]),
        "gateway group: VPN from anywhere, portal and jump port from public_cidrs, 22 only from admin_cidrs"
    );
    let mut targets = BTreeSet::new();
    for proto in ["tcp", "udp"] {
        for port in [22, 9000] {
            targets.insert(format!("{proto} {port}-{port} {sg}"));
            targets.insert(format!("{proto} {port}-{port} {POOL}"));
        }
    }
    assert_eq!(
        found.targets_rules, targets,
        "targets group: only the gateway's group (and the routed pool)"
    );
    assert!(found.instance_groups.contains(&sg), "{found:?}");
    assert!(
        found.instance_groups.len() >= 2,
        "the instance keeps its other groups: {found:?}"
    );
    assert!(!found.source_dest_check);
    let (_, eni) = found.elastic_ip.clone().expect("an elastic IP");
    assert_eq!(eni.as_deref(), Some(lab.world.eni.as_str()));
    assert_eq!(found.route_target.as_deref(), Some(lab.world.eni.as_str()));
    assert_eq!(found.ssm_type.as_deref(), Some("SecureString"));
    assert_eq!(
        (found.tagged_groups, found.tagged_addresses),
        (2, 1),
        "nothing duplicated"
    );
}

fn actions(plan: &Value) -> Vec<String> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}: {}",
                a["kind"].as_str().unwrap(),
                a["resource"].as_str().unwrap(),
                a["change"].as_str().unwrap()
            )
        })
        .collect()
}

/// The SSM key's public half, computed by Python (cryptography, a moto dependency).
fn ssm_public_key(lab: &AwsLab) -> String {
    lab.python(
        "from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey\n\
         v = ssm.get_parameter(Name='/gatehouse/gh-aws/wireguard-key', WithDecryption=True)['Parameter']['Value']\n\
         k = X25519PrivateKey.from_private_bytes(base64.b64decode(v)).public_key().public_bytes_raw()\n\
         out = base64.b64encode(k).decode()",
    )
    .as_str()
    .unwrap()
    .to_string()
}

#[test]
fn fresh_apply_creates_exactly_the_footprint_and_a_second_plan_is_empty() {
    let Some(lab) = AwsLab::create() else { return };
    // A security group nobody tagged, with port 22 open to the world: not ours, never touched.
    let foreign = lab.python(&format!(
        "g = ec2.create_security_group(GroupName='team-own', Description='x', VpcId='{}')['GroupId']\n\
         ec2.authorize_security_group_ingress(GroupId=g, IpProtocol='tcp', FromPort=22, ToPort=22, CidrIp='0.0.0.0/0')\n\
         out = g",
        lab.world.vpc
    ));
    let gw = lab.start_gateway(&lab.config(""));

    // At start the key went to SSM (audited), and SSM's key is the running key.
    let status = gw.ctl_json(&["status"]);
    assert_eq!(
        status["wireguard_public_key"].as_str().unwrap(),
        ssm_public_key(&lab)
    );
    assert_eq!(status["endpoint"], Value::Null, "no elastic IP known yet");

    let plan = gw.ctl_json(&["aws", "plan"]);
    let planned = actions(&plan);
    assert!(
        planned.iter().any(|a| a.starts_with("create elastic IP")),
        "{planned:#?}"
    );
    assert!(
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| !a["reason"].as_str().unwrap().is_empty())
    );
    assert_eq!(plan["facts"]["instance_id"], lab.world.instance.as_str());
    assert_eq!(plan["facts"]["from_metadata"], true);
    let human = gw.ctl_ok(&["aws", "plan"]);
    assert!(
        human.contains("  + elastic IP") && human.contains("Plan: "),
        "{human}"
    );
    assert!(
        footprint(&lab).gateway_group.is_none(),
        "plan changes nothing"
    );

    let started = std::time::Instant::now();
    let applied = gw.ctl_json(&["aws", "apply"]);
    eprintln!(
        "fresh apply of {} actions against moto took {:?}",
        planned.len(),
        started.elapsed()
    );
    assert_eq!(applied["applied"].as_array().unwrap().len(), planned.len());
    assert_eq!(applied["remaining"].as_array().unwrap().len(), 0);
    let found = footprint(&lab);
    assert_complete(&lab, &found);
    let eip = found.elastic_ip.clone().unwrap().0;
    assert_eq!(applied["elastic_ip"], eip.as_str());

    // Idempotent: nothing left to do, and a second apply does nothing.
    assert_eq!(
        actions(&gw.ctl_json(&["aws", "plan"])),
        Vec::<String>::new()
    );
    assert!(gw.ctl_ok(&["aws", "plan"]).contains("No changes."));
    assert_eq!(
        gw.ctl_json(&["aws", "apply"])["applied"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(footprint(&lab), found);

    // Each change audited as aws.change (plus the four keys stored at
    // start: the WireGuard key, the secrets key, the SSH host key and the
    // portal's self-signed certificate).
    let audited = gw.audit_of_exactly("aws.change");
    assert_eq!(audited.len(), planned.len() + 4, "{audited:#?}");
    let text = serde_json::to_string(&audited).unwrap();
    for parameter in ["wireguard-key", "secrets-key", "ssh-host-key", "portal-tls"] {
        let value = lab.python(&format!("out = ssm.get_parameter(Name='/gatehouse/gh-aws/{parameter}', WithDecryption=True)['Parameter']['Value']"));
        // The secret part (of the portal's: its key, after the certificate).
        let value = value.as_str().unwrap();
        let secret = value
            .find("-----BEGIN PRIVATE KEY-----")
            .map_or(value, |at| &value[at..]);
        assert!(
            !text.contains(secret),
            "the audit log never holds the {parameter}"
        );
        assert!(!gw.log_text().contains(secret), "nor does accessd's log");
    }

    // public_endpoint = "auto": device configs point at the elastic IP.
    gw.ctl_ok(&["user", "add", "alice", "--group", "research"]);
    let conf = gw.ctl_ok(&["device", "config", "alice", "laptop"]);
    assert!(conf.contains(&format!("Endpoint = {eip}:51820")), "{conf}");
    let status = gw.ctl_ok(&["aws", "status"]);
    assert!(
        status.contains("In sync") && status.contains(&eip),
        "{status}"
    );

    // The untagged group kept its world-open rule.
    let kept = lab.python(&format!(
        "out = ec2.describe_security_groups(GroupIds=['{}'])['SecurityGroups'][0]['IpPermissions'][0]['IpRanges'][0]['CidrIp']",
        foreign.as_str().unwrap()
    ));
    assert_eq!(kept, "0.0.0.0/0");
}

#[test]
fn drift_is_planned_with_reasons_and_repaired() {
    let Some(lab) = AwsLab::create() else { return };
    let gw = lab.start_gateway(&lab.config(""));
    gw.ctl_ok(&["aws", "apply"]);
    let synced = footprint(&lab);
    let sg = synced.gateway_group.clone().unwrap();

    // Out of band: port 22 opened to the world (and to a prefix list) on
    // the gateway's group, the elastic IP disassociated, the pool route deleted.
    lab.python(&format!(
        "ec2.authorize_security_group_ingress(GroupId='{sg}', IpProtocol='tcp', FromPort=22, ToPort=22, CidrIp='0.0.0.0/0')\n\
         pl = ec2.create_managed_prefix_list(PrefixListName='office', AddressFamily='IPv4', MaxEntries=5, Entries=[{{'Cidr': '192.0.2.0/24'}}])['PrefixList']['PrefixListId']\n\
         ec2.authorize_security_group_ingress(GroupId='{sg}', IpPermissions=[{{'IpProtocol': 'tcp', 'FromPort': 22, 'ToPort': 22, 'PrefixListIds': [{{'PrefixListId': pl}}]}}])\n\
         a = ec2.describe_addresses(Filters=[{{'Name': 'tag:gatehouse:gateway', 'Values': ['gh-aws']}}])['Addresses'][0]\n\
         ec2.disassociate_address(AssociationId=a['AssociationId'])\n\
         ec2.delete_route(RouteTableId='{rtb}', DestinationCidrBlock='{POOL}')",
        rtb = lab.world.route_table
    ));
    let drifted = footprint(&lab);
    assert!(drifted.gateway_rules.contains("tcp 22-22 0.0.0.0/0"));
    assert!(
        drifted
            .gateway_rules
            .iter()
            .any(|r| r.starts_with("tcp 22-22 pl-")),
        "{drifted:?}"
    );
    assert_eq!(drifted.elastic_ip.as_ref().unwrap().1, None);
    assert_eq!(drifted.route_target, None);

    let plan = gw.ctl_json(&["aws", "plan"]);
    let planned = actions(&plan);
    assert_eq!(planned.len(), 4, "{planned:#?}");
    let revoke = format!("delete security group {sg}");
    assert!(
        planned[0].starts_with(&revoke)
            && planned[0].ends_with("revoke ingress TCP 22 from 0.0.0.0/0"),
        "revoked first: {planned:#?}"
    );
    assert!(
        planned[1].starts_with(&revoke)
            && planned[1].contains("revoke ingress TCP 22 from prefix list pl-"),
        "{planned:#?}"
    );
    assert!(
        planned[2].starts_with("modify elastic IP") && planned[2].contains(&lab.world.eni),
        "{planned:#?}"
    );
    assert!(
        planned[3].starts_with(&format!("create route table {}", lab.world.route_table)),
        "{planned:#?}"
    );
    let reasons: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons[0].contains("drift") && reasons[1].contains("drift"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("not associated"), "{reasons:?}");
    assert!(reasons[3].contains("replies"), "{reasons:?}");
    let human = gw.ctl_ok(&["aws", "plan"]);
    assert!(
        human.contains("  - security group") && human.contains("# drift"),
        "{human}"
    );
    assert!(
        human.contains("Plan: 1 to create, 1 to modify, 2 to delete."),
        "{human}"
    );

    gw.ctl_ok(&["aws", "apply"]);
    assert_eq!(
        footprint(&lab),
        synced,
        "repaired to exactly the synced state"
    );
    assert_eq!(
        actions(&gw.ctl_json(&["aws", "plan"])),
        Vec::<String>::new()
    );
    let revoked = gw
        .audit_of_exactly("aws.change")
        .iter()
        .any(|r| r["detail"]["change"].as_str() == Some("revoke ingress TCP 22 from 0.0.0.0/0"));
    assert!(revoked, "the revocation is audited");
}

/// The instance's security groups as moto describes them.
fn instance_groups(lab: &AwsLab) -> Vec<String> {
    let groups = lab.python(&format!(
        "i = ec2.describe_instances(InstanceIds=['{}'])['Reservations'][0]['Instances'][0]\n\
         out = [g['GroupId'] for g in i['SecurityGroups']]",
        lab.world.instance
    ));
    serde_json::from_value(groups).unwrap()
}

#[test]
fn other_groups_opening_port_22_wider_are_warned_of_and_detached_only_when_exclusive() {
    let Some(lab) = AwsLab::create() else { return };
    // The team's own groups on the gateway instance: one opens TCP 22 to the
    // world (wider than aws.admin_cidrs), one only TCP 80.
    let made = lab.python(&format!(
        "wide = ec2.create_security_group(GroupName='team-ssh', Description='x', VpcId='{vpc}')['GroupId']\n\
         ec2.authorize_security_group_ingress(GroupId=wide, IpProtocol='tcp', FromPort=22, ToPort=22, CidrIp='0.0.0.0/0')\n\
         web = ec2.create_security_group(GroupName='team-web', Description='x', VpcId='{vpc}')['GroupId']\n\
         ec2.authorize_security_group_ingress(GroupId=web, IpProtocol='tcp', FromPort=80, ToPort=80, CidrIp='0.0.0.0/0')\n\
         i = ec2.describe_instances(InstanceIds=['{inst}'])['Reservations'][0]['Instances'][0]\n\
         have = [g['GroupId'] for g in i['SecurityGroups']]\n\
         ec2.modify_instance_attribute(InstanceId='{inst}', Groups=have + [wide, web])\n\
         out = dict(wide=wide, web=web)",
        vpc = lab.world.vpc,
        inst = lab.world.instance
    ));
    let wide = made["wide"].as_str().unwrap().to_string();
    let web = made["web"].as_str().unwrap().to_string();
    let mut gw = lab.start_gateway(&lab.config(""));

    let plan = gw.ctl_json(&["aws", "plan"]);
    let warnings: Vec<String> = serde_json::from_value(plan["warnings"].clone()).unwrap();
    eprintln!("warnings: {warnings:#?}");
    let of_wide: Vec<&String> = warnings.iter().filter(|w| w.contains(&wide)).collect();
    assert_eq!(of_wide.len(), 1, "{warnings:#?}");
    assert!(
        of_wide[0].contains("TCP 22 from 0.0.0.0/0")
            && of_wide[0].contains("aws.admin_cidrs")
            && of_wide[0].contains(ADMIN_CIDR)
            && of_wide[0].contains("aws.exclusive_groups"),
        "{warnings:#?}"
    );
    assert!(
        warnings.iter().all(|w| !w.contains(&web)),
        "port 80 is none of the gateway's: {warnings:#?}"
    );
    assert!(
        actions(&plan).iter().all(|a| !a.contains("detach")),
        "only a warning without aws.exclusive_groups: {:#?}",
        actions(&plan)
    );
    let human = gw.ctl_ok(&["aws", "plan"]);
    assert!(
        human.contains(&format!("Warning: security group {wide} (team-ssh)")),
        "{human}"
    );
    gw.ctl_ok(&["aws", "apply"]);
    let after = instance_groups(&lab);
    assert!(after.contains(&wide) && after.contains(&web), "{after:?}");
    assert!(
        gw.ctl_ok(&["aws", "status"])
            .contains(&format!("Warning: security group {wide}")),
        "status warns too"
    );

    // aws.exclusive_groups = true: apply detaches it, and keeps the rest.
    std::fs::write(&gw.config, lab.config("exclusive_groups = true")).unwrap();
    gw.ctl_ok(&["reload"]);
    let plan = gw.ctl_json(&["aws", "plan"]);
    let planned = actions(&plan);
    let detach: Vec<&String> = planned.iter().filter(|a| a.contains("detach")).collect();
    assert_eq!(detach.len(), 1, "{planned:#?}");
    let detached = detach[0]
        .split_once("detach ")
        .and_then(|(_, rest)| rest.split_once(" from it"))
        .map(|(ids, _)| ids)
        .unwrap();
    assert!(
        detach[0].starts_with(&format!("modify instance {}", lab.world.instance))
            && detached.contains(&wide)
            && !detached.contains(&web),
        "{planned:#?}"
    );
    assert_eq!(
        plan["warnings"],
        serde_json::json!([]),
        "planned, not warned of"
    );
    gw.ctl_ok(&["aws", "apply"]);
    let after = instance_groups(&lab);
    let gateway_group = footprint(&lab).gateway_group.unwrap();
    assert!(!after.contains(&wide), "{after:?}");
    assert!(
        after.contains(&web) && after.contains(&gateway_group),
        "{after:?}"
    );
    assert!(
        gw.audit_of_exactly("aws.change")
            .iter()
            .any(|r| r["detail"]["change"]
                .as_str()
                .is_some_and(|c| c.contains(&format!("detach {wide}")))),
        "the detach is audited"
    );
    assert_eq!(
        actions(&gw.ctl_json(&["aws", "plan"])),
        Vec::<String>::new()
    );

    // The IAM policy lets the gateway change only the instance tagged for
    // it: a plan on an untagged instance says so.
    let not_tagged = |plan: &Value| {
        plan["warnings"].as_array().unwrap().iter().any(|w| {
            w.as_str()
                .unwrap()
                .contains("not tagged gatehouse:gateway=gh-aws")
        })
    };
    assert!(!not_tagged(&gw.ctl_json(&["aws", "plan"])));
    lab.python(&format!(
        "ec2.delete_tags(Resources=['{}'], Tags=[{{'Key': 'gatehouse:gateway'}}])",
        lab.world.instance
    ));
    assert!(not_tagged(&gw.ctl_json(&["aws", "plan"])));
    gw.stop();
}

#[test]
fn the_ssm_keys_survive_instance_replacement_and_apply_on_start_moves_the_elastic_ip() {
    let Some(mut lab) = AwsLab::create() else {
        return;
    };
    // With the SSH user CA on: its key lives in SSM like the others.
    let with_ca = |text: String| text.replacen("[ssh]\n", "[ssh]\ncertificates = true\n", 1);
    let mut first = lab.start_gateway(&with_ca(lab.config("")));
    let ca_of = |gw: &Daemon| gw.ctl_json(&["ssh", "ca"])["fingerprint"].clone();
    let host_ca_of = |gw: &Daemon| gw.ctl_json(&["ssh", "ca", "--host"])["fingerprint"].clone();
    let ca = ca_of(&first);
    assert!(ca.as_str().unwrap().starts_with("SHA256:"), "{ca}");
    let host_ca = host_ca_of(&first);
    assert!(
        host_ca.as_str().unwrap().starts_with("SHA256:"),
        "{host_ca}"
    );
    assert_ne!(ca, host_ca, "two CAs, two keys");
    let identity = |status: &Value| {
        [
            &status["wireguard_public_key"],
            &status["ssh"]["host_key_fingerprint"],
            &status["portal"]["tls_fingerprint"],
        ]
        .map(|v| v.as_str().unwrap().to_string())
    };
    let before = identity(&first.ctl_json(&["status"]));
    let key = before[0].clone();
    first.ctl_ok(&["aws", "apply"]);
    let eip = footprint(&lab).elastic_ip.unwrap().0;
    assert!(first.stop().success());

    // A new instance, a new (empty) state dir: only SSM remembers the key.
    lab.replace_instance();
    let second = lab.start_gateway(&with_ca(lab.config("apply_on_start = true")));
    assert_ne!(second.state_dir, first.state_dir);
    assert_eq!(
        ca_of(&second),
        ca,
        "the same SSH user CA: the private hosts keep trusting it"
    );
    assert_eq!(
        host_ca_of(&second),
        host_ca,
        "the same SSH host CA: members' @cert-authority lines keep working"
    );
    for parameter in ["ssh-user-ca", "ssh-host-ca"] {
        let stored = lab.python(&format!("out = ssm.get_parameter(Name='/gatehouse/gh-aws/{parameter}', WithDecryption=True)['Parameter']['Type']"));
        assert_eq!(stored, "SecureString", "{parameter}");
    }
    let ca_key = lab.python("out = ssm.get_parameter(Name='/gatehouse/gh-aws/ssh-user-ca', WithDecryption=True)['Parameter']['Value']");
    let ca_key = ca_key.as_str().unwrap().trim();
    assert!(ca_key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let body = ca_key.lines().nth(1).unwrap();
    let audit = serde_json::to_string(&second.audit_json(&[])).unwrap();
    for text in [&audit, &second.log_text(), &first.log_text()] {
        assert!(!text.contains(body), "the CA private key leaked");
    }
    let status = second.ctl_json(&["status"]);
    assert_eq!(
        identity(&status),
        before,
        "same WireGuard key, SSH host key and portal certificate: client configs, known_hosts and pinned fingerprints keep working"
    );
    // apply_on_start ran before the admin socket opened: the elastic IP
    // already follows the new instance, and device configs use it.
    let found = footprint(&lab);
    assert_complete(&lab, &found);
    assert_eq!(
        found.elastic_ip.unwrap().0,
        eip,
        "the same elastic IP, reassociated"
    );
    assert_eq!(status["endpoint"].as_str().unwrap(), format!("{eip}:51820"));
    second.ctl_ok(&["user", "add", "bob", "--group", "research"]);
    let conf = second.ctl_ok(&["device", "config", "bob", "phone"]);
    assert!(conf.contains(&format!("Endpoint = {eip}:51820")), "{conf}");
    assert!(conf.contains(&format!("PublicKey = {key}")), "{conf}");
    let audited = second.audit_of_exactly("aws.change");
    assert!(
        audited.iter().any(|r| r["source"] == "apply_on_start"),
        "{audited:#?}"
    );
}

#[test]
fn an_interrupted_apply_names_the_missing_permission_and_completes_on_rerun() {
    let Some(lab) = AwsLab::create() else { return };
    let gw = lab.start_gateway(&lab.config(""));
    // The instance role lacks ec2:AssociateAddress: apply stops half-way.
    lab.proxy.deny("ec2:AssociateAddress");
    let out = gw.ctl(&["aws", "apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("\"ec2:AssociateAddress\"") && err.contains("iam-policy.json"),
        "{err}"
    );
    assert!(err.contains("run `accessctl aws apply` again"), "{err}");
    assert!(
        err.contains("done: security group"),
        "the changes made are listed: {err}"
    );
    let partial = footprint(&lab);
    assert!(
        partial.gateway_group.is_some(),
        "groups were made before the failure"
    );
    assert_eq!(
        partial.elastic_ip.as_ref().unwrap().1,
        None,
        "not associated"
    );
    assert_eq!(partial.route_target, None, "nothing after the failure ran");
    let failed = gw.audit_of("aws.change.fail");
    assert_eq!(failed.len(), 1, "{failed:#?}");

    let plan = actions(&gw.ctl_json(&["aws", "plan"]));
    assert!(
        plan.iter()
            .all(|a| !a.contains("allocate") && !a.contains("create in")),
        "the re-run plans only what is missing: {plan:#?}"
    );
    lab.proxy.allow_all();
    let applied = gw.ctl_json(&["aws", "apply"]);
    assert_eq!(applied["applied"].as_array().unwrap().len(), plan.len());
    assert_complete(&lab, &footprint(&lab));
    assert_eq!(
        actions(&gw.ctl_json(&["aws", "plan"])),
        Vec::<String>::new()
    );
}

#[test]
fn throttling_is_retried_with_backoff() {
    let Some(lab) = AwsLab::create() else { return };
    let gw = lab.start_gateway(&lab.config(""));
    lab.proxy.throttle("ec2:DescribeAddresses", 2);
    let before = lab.proxy.count("ec2:DescribeAddresses");
    let started = std::time::Instant::now();
    gw.ctl_json(&["aws", "plan"]);
    eprintln!("plan with 2 throttled calls took {:?}", started.elapsed());
    assert_eq!(
        lab.proxy.count("ec2:DescribeAddresses") - before,
        3,
        "two throttled answers, then success"
    );

    // Throttled beyond the retry budget: a plain error that says so.
    lab.proxy.throttle("ec2:DescribeAddresses", 100);
    let out = gw.ctl(&["aws", "plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("throttled ec2:DescribeAddresses"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_call_accessd_makes_is_in_the_iam_policy() {
    let Some(lab) = AwsLab::create() else { return };
    let mut gw = lab.start_gateway(&lab.config(""));
    gw.ctl_ok(&["aws", "apply"]);
    gw.ctl_ok(&["aws", "status"]);
    assert!(gw.stop().success());
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../packaging/iam-policy.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut allowed = BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        match &statement["Action"] {
            Value::String(a) => {
                allowed.insert(a.clone());
            }
            Value::Array(list) => {
                allowed.extend(list.iter().map(|a| a.as_str().unwrap().to_string()))
            }
            other => panic!("unexpected Action {other}"),
        }
    }
    let seen: BTreeSet<String> = lab.proxy.seen().into_iter().collect();
    let missing: Vec<&String> = seen.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "calls made but not in the policy: {missing:?}"
    );
}

/// Runs accessd in the lab's namespace until it exits; it must refuse to start.
fn accessd_refuses(lab: &AwsLab, config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns])
        .arg(gatehouse_tests::bin("accessd"))
        .arg("--config")
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"))
        .envs(gatehouse_tests::aws::aws_env());
    let out = gatehouse_tests::output_within(cmd, std::time::Duration::from_secs(120));
    assert!(!out.status.success(), "accessd started:\n{}", stdout(&out));
    format!("{}{}", stdout(&out), stderr(&out))
}

#[test]
fn without_ssm_a_new_instance_refuses_to_start_rather_than_make_a_new_key() {
    let Some(lab) = AwsLab::create() else { return };
    let mut gw = lab.start_gateway(&lab.config(""));
    let key = gw.ctl_json(&["status"])["wireguard_public_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(gw.stop().success());

    // The role lost ssm:GetParameter. A fresh state dir has no local copy:
    // starting with a new key would silently break every device config.
    lab.proxy.deny("ssm:GetParameter");
    let said = accessd_refuses(&lab, &lab.config(""));
    assert!(
        said.contains("\"ssm:GetParameter\"") && said.contains("no local copy"),
        "{said}"
    );

    // The instance that has its local copy starts, says why, and keeps its key.
    gw.spawn();
    assert_eq!(
        gw.ctl_json(&["status"])["wireguard_public_key"]
            .as_str()
            .unwrap(),
        key
    );
    assert!(
        gw.log_text().contains("running with the local copy"),
        "{}",
        gw.log_tail(20)
    );
}
