//! `packaging/iam-policy.json` grants exactly the AWS calls this module
//! makes: the test reads the provisioner's source for every `ec2.<op>(` and
//! `ssm.<op>(` call and compares with the policy's actions.

use std::collections::BTreeSet;

const POLICY: &str = include_str!("../../../packaging/iam-policy.json");
const SOURCES: [&str; 5] = [
    include_str!("apply.rs"),
    include_str!("observed.rs"),
    include_str!("ssm_key.rs"),
    include_str!("discovery.rs"),
    include_str!("startup.rs"),
];
/// Needed by IAM, never called: tagging on create (AllocateAddress and
/// CreateSecurityGroup with tag specifications, PutParameter with tags).
const AUTHORIZATION_ONLY: [&str; 2] = ["ec2:CreateTags", "ssm:AddTagsToResource"];

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `service:Operation` for every `<service>.<operation>(` in `source`.
fn calls(source: &str) -> BTreeSet<String> {
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let mut found = BTreeSet::new();
    for service in ["ec2", "ssm"] {
        let needle = format!("{service}.");
        let mut rest = compact.as_str();
        while let Some(at) = rest.find(&needle) {
            rest = &rest[at + needle.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && rest[name.len()..].starts_with('(') {
                found.insert(format!("{service}:{}", pascal(&name)));
            }
        }
    }
    found
}

#[test]
fn the_policy_grants_exactly_the_calls_made() {
    let called: BTreeSet<String> = SOURCES.iter().flat_map(|s| calls(s)).collect();
    assert!(called.contains("ec2:DescribeAddresses") && called.contains("ssm:PutParameter"));
    let policy: serde_json::Value = serde_json::from_str(POLICY).unwrap();
    let mut granted = BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow");
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                granted.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                granted.extend(list.iter().map(|a| a.as_str().unwrap().to_string()));
            }
            other => panic!("unexpected Action {other}"),
        }
    }
    assert!(
        granted.iter().all(|a| !a.contains('*')),
        "no wildcard actions: {granted:?}"
    );
    let mut expected = called.clone();
    expected.extend(AUTHORIZATION_ONLY.map(String::from));
    assert_eq!(granted, expected, "policy actions vs calls in the source");
}

#[test]
fn every_named_action_is_a_call_made() {
    // The action names errors report (`const ACTION`) match real calls, so
    // "add ec2:X to the policy" always names a policy action.
    let called: BTreeSet<String> = SOURCES.iter().flat_map(|s| calls(s)).collect();
    for source in SOURCES {
        for piece in source.split('"').skip(1).step_by(2) {
            if (piece.starts_with("ec2:") || piece.starts_with("ssm:"))
                && piece[4..].chars().all(|c| c.is_ascii_alphabetic())
            {
                assert!(called.contains(piece), "{piece} is named but never called");
            }
        }
    }
}

#[test]
fn tag_conditions_guard_what_ec2_lets_us_condition() {
    let policy: serde_json::Value = serde_json::from_str(POLICY).unwrap();
    let conditioned = |action: &str| {
        policy["Statement"].as_array().unwrap().iter().any(|s| {
            s.to_string().contains(&format!("\"{action}\""))
                && s["Condition"].to_string().contains("gatehouse:gateway")
        })
    };
    for action in [
        "ec2:AllocateAddress",
        "ec2:CreateSecurityGroup",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:AssociateAddress",
    ] {
        assert!(
            conditioned(action),
            "{action} has no gatehouse tag condition"
        );
    }
}
