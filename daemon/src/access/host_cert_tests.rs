//! The host certificates through the admin API and the portal, in process:
//! signed for the principals asked (addresses only inside a group's
//! subnet), capped in time, listed soonest first with the ones expiring
//! soon marked, revoked once into the host KRL, audited; and a member's
//! known_hosts trusts the host CA for their own groups' hosts only.

#![allow(clippy::unwrap_used)]
use axum::http::{Method, StatusCode};
use russh::keys::ssh_key::Certificate;
use russh::keys::ssh_key::certificate::CertType;
use serde_json::json;

use super::tests::{cert_config, member, seeded_key};
use crate::testing::{CONFIG, TestGateway, check_typed_details};

const DAY: i64 = 86_400;

#[tokio::test]
async fn host_certificates_are_signed_listed_revoked_and_audited() {
    let gw = TestGateway::new(&cert_config()).await;
    let sign = |principals: serde_json::Value, days: u64| {
        json!({
            "public_key": seeded_key(7),
            "principals": principals,
            "lifetime_secs": days * 86_400,
        })
    };
    let soon = gw
        .admin(
            Method::POST,
            "/v1/ssh/host-certificates",
            Some(sign(json!(["10.0.3.140", "jupyter.internal"]), 10)),
        )
        .await;
    assert_eq!(soon.status, StatusCode::OK, "{soon:?}");
    let cert = Certificate::from_openssh(soon.json["certificate"].as_str().unwrap()).unwrap();
    assert_eq!(cert.cert_type(), CertType::Host);
    assert_eq!(cert.valid_principals(), ["10.0.3.140", "jupyter.internal"]);
    let host_ca = gw.admin(Method::GET, "/v1/ssh/host-ca", None).await;
    let ca_fingerprint = host_ca.json["fingerprint"].as_str().unwrap();
    assert_eq!(
        cert.signature_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string(),
        ca_fingerprint,
        "signed by the host CA"
    );
    let info = &soon.json["info"];
    assert_eq!(
        info["valid_before"].as_i64().unwrap() - info["valid_after"].as_i64().unwrap(),
        10 * DAY + 60
    );
    assert_eq!(info["expires_soon"], true);

    // Longer than ssh.host_cert_lifetime (90d) is cut to it.
    let long = gw
        .admin(
            Method::POST,
            "/v1/ssh/host-certificates",
            Some(sign(json!(["10.0.2.9"]), 1000)),
        )
        .await;
    assert_eq!(long.status, StatusCode::OK, "{long:?}");
    let info = &long.json["info"];
    assert_eq!(
        info["valid_before"].as_i64().unwrap() - info["valid_after"].as_i64().unwrap(),
        90 * DAY + 60
    );
    assert_eq!(info["expires_soon"], false);

    // An address outside every group's subnet, a wildcard, none: refused.
    for (principals, says) in [
        (json!(["10.9.9.9"]), "in no group's subnet"),
        (json!(["*.internal"]), "no wildcards"),
        (json!([]), "at least one principal"),
    ] {
        let refused = gw
            .admin(
                Method::POST,
                "/v1/ssh/host-certificates",
                Some(sign(principals.clone(), 10)),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{principals}"
        );
        assert!(
            refused.text.contains(says),
            "{principals}: {}",
            refused.text
        );
    }

    let list = gw
        .admin(Method::GET, "/v1/ssh/host-certificates", None)
        .await;
    let serials: Vec<u64> = list.json["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_u64().unwrap())
        .collect();
    let first = soon.json["info"]["serial"].as_u64().unwrap();
    let second = long.json["info"]["serial"].as_u64().unwrap();
    assert_eq!(serials, [first, second], "the soonest to expire first");

    let krl = gw.admin(Method::GET, "/v1/ssh/host-krl", None).await;
    assert_eq!(krl.json["revoked"], json!([]));
    let revoked = gw
        .admin(
            Method::DELETE,
            &format!("/v1/ssh/host-certificates/{first}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_eq!(revoked.json["revoked_by"], "uid:0");
    assert_eq!(
        revoked.json["expires_soon"], false,
        "revoked: nothing to renew"
    );
    let again = gw
        .admin(
            Method::DELETE,
            &format!("/v1/ssh/host-certificates/{first}"),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    let unknown = gw
        .admin(Method::DELETE, "/v1/ssh/host-certificates/12345", None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{unknown:?}");

    let krl = gw.admin(Method::GET, "/v1/ssh/host-krl", None).await;
    let listed: Vec<u64> = krl.json["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [first]);
    let host_key = seeded_key(7);
    let plain: Vec<&str> = host_key.split(' ').take(2).collect();
    assert_eq!(
        krl.json["known_hosts_revoked"],
        json!([format!("@revoked * {}", plain.join(" "))])
    );
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(krl.json["krl_base64"].as_str().unwrap())
        .unwrap();
    assert!(bytes.starts_with(b"SSHKRL\n\0"));

    let records = gw.audit_records().await;
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r.kind.as_str())
        .filter(|k| k.starts_with("ssh.host_cert"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ssh.host_cert.issue",
            "ssh.host_cert.issue",
            "ssh.host_cert.revoke"
        ]
    );
    let checked = check_typed_details(&records);
    assert!(checked.contains(&"HostCertIssued") && checked.contains(&"HostCertRevoked"));
    let issue = records
        .iter()
        .find(|r| r.kind == "ssh.host_cert.issue")
        .unwrap();
    assert_eq!(issue.target, "10.0.3.140");
    assert_eq!(issue.detail["serial"], first.to_string());

    // Without ssh.certificates there is no host CA to sign with.
    let off = TestGateway::new(CONFIG).await;
    let refused = off
        .admin(
            Method::POST,
            "/v1/ssh/host-certificates",
            Some(sign(json!(["10.0.3.140"]), 10)),
        )
        .await;
    assert_ne!(refused.status, StatusCode::OK, "{refused:?}");
    assert!(
        refused.text.contains("ssh.certificates"),
        "{}",
        refused.text
    );
}

/// A member's downloadable known_hosts and ssh_config snippet trust the
/// host CA for their own groups' hosts (research: 10.0.3.*), never for
/// another group's (10.0.2.*).
#[tokio::test]
async fn a_members_known_hosts_trusts_the_host_ca_for_their_hosts_only() {
    let gw = TestGateway::new(&cert_config()).await;
    let alice = member(&gw, "alice").await;
    let host_ca = gw.admin(Method::GET, "/v1/ssh/host-ca", None).await;
    let ca_line = host_ca.json["public_key"].as_str().unwrap();
    let file = gw
        .portal(Method::GET, "/ssh/known_hosts", None, Some(&alice))
        .await;
    assert_eq!(file.status, StatusCode::OK, "{file:?}");
    let jump = gw.access.jump_host().unwrap();
    assert_eq!(
        file.text,
        format!("{}\n@cert-authority 10.0.3.* {ca_line}\n", jump.known_hosts)
    );
    let snippet = gw
        .portal(Method::GET, "/ssh_config", None, Some(&alice))
        .await;
    assert!(
        snippet
            .text
            .contains(&format!("# @cert-authority 10.0.3.* {ca_line}\n")),
        "{}",
        snippet.text
    );
    assert!(!snippet.text.contains("10.0.2."), "{}", snippet.text);
    let anonymous = gw.portal(Method::GET, "/ssh/known_hosts", None, None).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);

    // Without certificates: the jump host's pin alone.
    let plain = TestGateway::new(CONFIG).await;
    let bob = member(&plain, "bob").await;
    let file = plain
        .portal(Method::GET, "/ssh/known_hosts", None, Some(&bob))
        .await;
    assert_eq!(
        file.text,
        format!("{}\n", plain.access.jump_host().unwrap().known_hosts)
    );
}
