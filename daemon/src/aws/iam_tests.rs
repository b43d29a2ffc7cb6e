//! `packaging/iam-policy.json` grants exactly the AWS calls this module
//! makes: the test reads the provisioner's source for every `ec2.<op>(` and
//! `ssm.<op>(` call and compares with the policy's actions.

use std::collections::BTreeSet;

const POLICY: &str = include_str!("../../../packaging/iam-policy.json");
const SOURCES: [&str; 6] = [
    include_str!("../export/s3.rs"),
    include_str!("apply.rs"),
    include_str!("observed.rs"),
    include_str!("ssm_key.rs"),
    include_str!("discovery.rs"),
    include_str!("startup.rs"),
];
/// Needed by IAM, never called: tagging on create (AllocateAddress and
/// CreateSecurityGroup with tag specifications, PutParameter with tags),
/// retention set on create (PutObject with Object Lock headers).
const AUTHORIZATION_ONLY: [&str; 3] = [
    "ec2:CreateTags",
    "ssm:AddTagsToResource",
    "s3:PutObjectRetention",
];

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
    for service in ["ec2", "ssm", "s3"] {
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
        granted.extend(actions_of(statement));
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

/// What the operator puts in place of each placeholder (packaging/README.md).
const PLACEHOLDERS: [&str; 6] = [
    "GATEWAY_NAME",
    "VPC_ID",
    "ROUTE_TABLE_ID",
    "AUDIT_BUCKET",
    "AUDIT_PREFIX",
    "AUDIT_RETENTION_DAYS",
];

/// Each action that changes something, and every resource type AWS
/// authorises it against for the calls gatehouse makes.
const MUTATING: [(&str, &[&str]); 12] = [
    ("ec2:AllocateAddress", &["elastic-ip"]),
    ("ec2:CreateSecurityGroup", &["security-group", "vpc"]),
    ("ec2:CreateTags", &["elastic-ip", "security-group"]),
    ("ec2:AuthorizeSecurityGroupIngress", &["security-group"]),
    ("ec2:RevokeSecurityGroupIngress", &["security-group"]),
    ("ec2:AssociateAddress", &["elastic-ip", "network-interface"]),
    (
        "ec2:ModifyInstanceAttribute",
        &["instance", "security-group"],
    ),
    ("ec2:CreateRoute", &["route-table"]),
    ("ec2:ReplaceRoute", &["route-table"]),
    ("ssm:PutParameter", &["parameter"]),
    ("s3:PutObject", &["object"]),
    ("s3:PutObjectRetention", &["object"]),
];

/// A statement's `field` (`Action` or `Resource`): one string or a list.
fn strings_of(statement: &serde_json::Value, field: &str) -> Vec<String> {
    match &statement[field] {
        serde_json::Value::String(one) => vec![one.clone()],
        serde_json::Value::Array(list) => list
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        other => panic!("unexpected {field} {other}"),
    }
}

fn actions_of(statement: &serde_json::Value) -> Vec<String> {
    strings_of(statement, "Action")
}

fn resources_of(statement: &serde_json::Value) -> Vec<String> {
    strings_of(statement, "Resource")
}

/// The resource type of an ARN: `instance` in `arn:aws:ec2:*:*:instance/*`.
fn resource_type(arn: &str) -> &str {
    // S3 ARNs name no type: a bucket, or an object when there is a key.
    if let Some(path) = arn.strip_prefix("arn:aws:s3:::") {
        return if path.contains('/') {
            "object"
        } else {
            "bucket"
        };
    }
    arn.rsplit(':')
        .next()
        .and_then(|tail| tail.split('/').next())
        .unwrap_or("")
}

/// How `statement` narrows `arn` to this gateway: by a placeholder in the
/// ARN itself, or by a condition that names this gateway's tag value or its
/// VPC. `None`: not narrowed at all.
fn narrowing(statement: &serde_json::Value, arn: &str) -> Option<String> {
    if let Some(p) = PLACEHOLDERS.iter().find(|p| arn.contains(*p)) {
        return Some(format!("resource {p}"));
    }
    let condition = statement.get("Condition")?.as_object()?;
    for (operator, tests) in condition {
        for (key, value) in tests.as_object()? {
            let value = value.to_string();
            let narrows = match operator.as_str() {
                "StringEquals" => {
                    key.ends_with("Tag/gatehouse:gateway") && value == "\"GATEWAY_NAME\""
                }
                "ArnEquals" => key == "ec2:Vpc" && value == "\"arn:aws:ec2:*:*:vpc/VPC_ID\"",
                _ => false,
            };
            if narrows {
                return Some(format!("{operator} {key}"));
            }
        }
    }
    None
}

#[test]
fn every_mutating_action_is_narrowed_to_this_gateway_on_every_resource() {
    // Against the old policy this fails: ModifyInstanceAttribute on any
    // instance, CreateRoute on any route table, SSM on all of /gatehouse/*,
    // and tag conditions that any gateway's tag value satisfied ("Null").
    let policy: serde_json::Value = serde_json::from_str(POLICY).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    for (action, types) in MUTATING {
        for kind in types.iter() {
            let granting: Vec<(&serde_json::Value, String)> = statements
                .iter()
                .filter(|s| actions_of(s).iter().any(|a| a == action))
                .flat_map(|s| resources_of(s).into_iter().map(move |r| (s, r)))
                .filter(|(_, arn)| resource_type(arn) == *kind || arn == "*")
                .collect();
            assert!(!granting.is_empty(), "{action} is not granted on {kind}");
            for (statement, arn) in granting {
                assert!(
                    narrowing(statement, &arn).is_some(),
                    "{action} on {arn} is not narrowed to this gateway (statement {})",
                    statement["Sid"]
                );
            }
        }
    }
    // No statement grants a mutating action on "*", and no condition is a
    // bare "the tag exists" (which every gateway's resources pass).
    for statement in statements {
        let mutating = actions_of(statement)
            .iter()
            .any(|a| MUTATING.iter().any(|(m, _)| m == a) || a == "ssm:AddTagsToResource");
        if mutating {
            assert!(
                resources_of(statement).iter().all(|r| r != "*"),
                "{}",
                statement["Sid"]
            );
        }
        assert!(
            statement
                .get("Condition")
                .and_then(|c| c.get("Null"))
                .is_none(),
            "a Null condition lets any gateway's resources pass: {}",
            statement["Sid"]
        );
    }
    // Only descriptions are unscoped (EC2 cannot scope Describe* calls).
    for statement in statements {
        if resources_of(statement).iter().any(|r| r == "*") {
            assert!(
                actions_of(statement)
                    .iter()
                    .all(|a| a.starts_with("ec2:Describe")),
                "{}",
                statement["Sid"]
            );
        }
    }
    // Every ssm action is on this gateway's own parameters only.
    for statement in statements {
        if actions_of(statement).iter().any(|a| a.starts_with("ssm:")) {
            assert_eq!(
                resources_of(statement),
                ["arn:aws:ssm:*:*:parameter/gatehouse/GATEWAY_NAME/*"]
            );
        }
    }
    // The parameters the gateway uses lie under that prefix.
    assert!(
        crate::keys::ssm::wireguard_key_parameter_name("GATEWAY_NAME")
            .starts_with("/gatehouse/GATEWAY_NAME/")
    );
    assert!(
        crate::keys::ssm::secrets_key_parameter_name("GATEWAY_NAME")
            .starts_with("/gatehouse/GATEWAY_NAME/")
    );
}

#[test]
fn the_readme_says_what_each_statement_allows_and_what_to_substitute() {
    let readme = include_str!("../../../packaging/README.md");
    let policy: serde_json::Value = serde_json::from_str(POLICY).unwrap();
    for statement in policy["Statement"].as_array().unwrap() {
        let sid = statement["Sid"].as_str().unwrap();
        assert!(
            readme.contains(&format!("`{sid}`")),
            "{sid} is not explained"
        );
    }
    for placeholder in PLACEHOLDERS {
        assert!(
            readme.contains(&format!("`{placeholder}`")),
            "{placeholder} is not explained"
        );
        assert!(POLICY.contains(placeholder), "{placeholder} is not used");
    }
}
