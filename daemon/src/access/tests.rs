//! The front doors over the access service, in-process: the real admin and
//! portal routers on a whole gateway in a temp dir ([`TestGateway`]).

#![allow(clippy::unwrap_used)]

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::testing::{CONFIG, Login, TestGateway, check_typed_details, login_of};

const KEY_A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY_B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

/// `CONFIG` with `public_endpoint = "auto"`: the elastic IP stands in.
fn auto_config() -> String {
    CONFIG.replace(
        "public_endpoint = \"vpn.example.org\"",
        "public_endpoint = \"auto\"",
    ) + "\n[aws]\nregion = \"eu-west-3\"\n"
}

pub(super) async fn member(gw: &TestGateway, name: &str) -> Login {
    let token = gw.add_user(name, "research").await;
    gw.enroll(name, &token).await
}

#[tokio::test]
async fn on_an_auto_gateway_both_doors_give_the_elastic_ip() {
    let gw = TestGateway::new(&auto_config()).await;
    let alice = member(&gw, "alice").await;

    // Before the provisioner has seen the elastic IP, neither door makes a
    // config that points nowhere, and nothing is stored.
    let admin = gw.admin_add_device("alice", "laptop", KEY_A).await;
    assert_eq!(admin.status, StatusCode::UNPROCESSABLE_ENTITY, "{admin:?}");
    assert!(
        admin.json["message"]
            .as_str()
            .unwrap()
            .contains("elastic IP")
    );
    let portal = gw.portal_add_device(&alice, "phone", KEY_B).await;
    assert_eq!(portal.status, StatusCode::SERVICE_UNAVAILABLE, "{portal:?}");
    assert_eq!(portal.json["code"], "endpoint_unknown");
    let none = gw.admin(Method::GET, "/v1/devices", None).await;
    assert_eq!(none.json, json!([]));

    gw.core
        .aws()
        .set_elastic_ip(Some("198.51.100.9".parse().unwrap()));
    let admin = gw.admin_add_device("alice", "laptop", KEY_A).await;
    assert_eq!(admin.status, StatusCode::OK, "{admin:?}");
    let portal = gw.portal_add_device(&alice, "phone", KEY_B).await;
    assert_eq!(portal.status, StatusCode::OK, "{portal:?}");
    for config in [&admin.json, &portal.json] {
        assert_eq!(config["endpoint"], "198.51.100.9:51820");
        assert_eq!(config["allowed_ips"], json!(["10.0.3.0/24"]));
        assert_eq!(config["gateway_public_key"], gw.core.key().public_base64());
    }

    // Links and the jump host line use it too.
    let created = gw
        .admin(
            Method::POST,
            "/v1/users",
            Some(json!({ "name": "bob", "groups": ["research"] })),
        )
        .await;
    let url = created.json["enrollment"]["url"].as_str().unwrap();
    assert!(url.starts_with("https://198.51.100.9/enroll/"), "{url}");
    let jump = gw.access.jump_host().unwrap();
    assert_eq!(jump.host, "198.51.100.9");
    assert!(
        jump.known_hosts
            .starts_with("[198.51.100.9]:2222 ssh-ed25519 ")
    );
    let snippet = gw
        .portal(Method::GET, "/ssh_config", None, Some(&alice))
        .await;
    assert!(
        snippet.text.contains("HostName 198.51.100.9"),
        "{}",
        snippet.text
    );
}

#[tokio::test]
async fn a_device_added_at_one_door_is_revoked_at_the_other() {
    let gw = TestGateway::new(CONFIG).await;
    let alice = member(&gw, "alice").await;
    let added = gw.portal_add_device(&alice, "laptop", KEY_A).await;
    assert_eq!(added.status, StatusCode::OK, "{added:?}");
    assert_eq!(added.json["endpoint"], "vpn.example.org:51820");
    assert_eq!(added.json["interface_address"], "10.200.0.2/32");
    let listed = gw.admin(Method::GET, "/v1/devices?user=alice", None).await;
    assert_eq!(listed.json[0]["name"], "laptop");
    let revoked = gw
        .admin(Method::DELETE, "/v1/users/alice/devices/laptop", None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    let mine = gw
        .portal(Method::GET, "/api/v1/devices", None, Some(&alice))
        .await;
    assert_eq!(mine.json, json!([]));

    // And the other way round.
    let added = gw.admin_add_device("alice", "desk", KEY_B).await;
    assert_eq!(added.status, StatusCode::OK, "{added:?}");
    let revoked = gw
        .portal(Method::DELETE, "/api/v1/devices/desk", None, Some(&alice))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_eq!(revoked.json["address"], "10.200.0.2");

    // The records say who, through which door; one place wrote them.
    let records = gw.audit_records().await;
    let devices: Vec<(String, String, String)> = records
        .iter()
        .filter(|r| r.kind.starts_with("device."))
        .map(|r| {
            (
                r.kind.clone(),
                r.actor.clone(),
                r.detail["via"].as_str().unwrap().into(),
            )
        })
        .collect();
    let row = |k: &str, a: &str, v: &str| (k.to_string(), a.to_string(), v.to_string());
    assert_eq!(
        devices,
        [
            row("device.create", "alice", "portal"),
            row("device.revoke", "uid:0", "admin"),
            row("device.create", "uid:0", "admin"),
            row("device.revoke", "alice", "portal"),
        ]
    );
    let created = records.iter().find(|r| r.kind == "device.create").unwrap();
    assert_eq!(created.source, "198.51.100.20");
    assert_eq!(created.detail["key_made_by"], "client");
}

#[tokio::test]
async fn enrollment_and_login_flows() {
    let gw = TestGateway::new(CONFIG).await;
    let token = gw.add_user("carol", "research").await;
    let pending = gw.admin(Method::GET, "/v1/users/carol", None).await;
    assert_eq!(pending.json["state"], "pending");
    let enrolled = gw.enroll("carol", &token).await;
    let active = gw.admin(Method::GET, "/v1/users/carol", None).await;
    assert_eq!(active.json["state"], "active");
    assert_eq!(active.json["vpn_access"], "session");

    // A link is single use.
    let again = gw
        .portal(Method::GET, &format!("/api/v1/enroll/{token}"), None, None)
        .await;
    assert_eq!(again.status, StatusCode::GONE);
    assert_eq!(again.json["code"], "token_used");

    let whoami = gw
        .portal(Method::GET, "/api/v1/whoami", None, Some(&enrolled))
        .await;
    assert_eq!(whoami.json["user"], "carol");
    assert_eq!(whoami.json["subnets"], json!(["10.0.3.0/24"]));
    assert_eq!(whoami.json["vpn_access"], "session");

    let logout = gw
        .portal(Method::POST, "/api/v1/logout", None, Some(&enrolled))
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let gone = gw
        .portal(Method::GET, "/api/v1/whoami", None, Some(&enrolled))
        .await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);

    // A wrong password gets the one generic answer; the log has the reason.
    let wrong = gw
        .portal(
            Method::POST,
            "/api/v1/login",
            Some(json!({ "user": "carol", "password": "not her password", "totp_code": "000000" })),
            None,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json["code"], "login_failed");
    // The next step's code (the enrollment used the current one).
    let ok = gw.login("carol").await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let session = login_of(&ok);
    let whoami = gw
        .portal(Method::GET, "/api/v1/whoami", None, Some(&session))
        .await;
    assert_eq!(whoami.json["user"], "carol");

    let kinds = gw.audit_kinds().await;
    assert_eq!(
        kinds,
        [
            "user.add",
            "portal.enroll",
            "portal.logout",
            "portal.login.fail",
            "portal.login.ok"
        ]
    );
    let fail = gw
        .audit_records()
        .await
        .into_iter()
        .find(|r| r.kind == "portal.login.fail")
        .unwrap();
    assert_eq!(
        (fail.actor.as_str(), fail.target.as_str()),
        ("anonymous", "carol")
    );
    assert_eq!(fail.detail["reason"], "bad_password");
}

#[tokio::test]
async fn refusals_get_clear_answers_and_change_nothing() {
    let gw = TestGateway::new(CONFIG).await;
    let alice = member(&gw, "alice").await;
    let cases = [
        (
            gw.admin(
                Method::POST,
                "/v1/users/nobody/devices",
                Some(json!({ "name": "laptop", "public_key": KEY_A })),
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            gw.admin_add_device("alice", "Bad Name", KEY_A).await,
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            gw.admin_add_device("alice", "laptop", "not a key").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            gw.admin(
                Method::POST,
                "/v1/users",
                Some(json!({ "name": "dave", "groups": ["no-such-group"] })),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            gw.admin(
                Method::POST,
                "/v1/users",
                Some(json!({ "name": "alice", "groups": ["research"] })),
            )
            .await,
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            // Past the year 9999 (it panicked formatting the expiry before).
            gw.admin(
                Method::POST,
                "/v1/users",
                Some(
                    json!({ "name": "erin", "groups": ["research"], "expires_in_secs": u64::MAX }),
                ),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            gw.admin(Method::GET, "/v1/no-such-path", None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (answer, status, code) in cases {
        assert_eq!(
            (answer.status, answer.json["code"].as_str()),
            (status, Some(code)),
            "{answer:?}"
        );
        assert!(!answer.json["message"].as_str().unwrap().is_empty());
    }
    let portal_cases = [
        (
            gw.portal(Method::GET, "/api/v1/devices", None, None).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            gw.portal(
                Method::POST,
                "/api/v1/devices",
                Some(json!({ "name": "x", "public_key": KEY_A })),
                Some(&Login {
                    csrf: "wrong".into(),
                    ..alice.clone()
                }),
            )
            .await,
            StatusCode::FORBIDDEN,
            "csrf",
        ),
        (
            gw.portal_add_device(&alice, "laptop", "not a key").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            gw.portal(
                Method::DELETE,
                "/api/v1/devices/nothing",
                None,
                Some(&alice),
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (answer, status, code) in portal_cases {
        assert_eq!(
            (answer.status, answer.json["code"].as_str()),
            (status, Some(code)),
            "{answer:?}"
        );
    }
    // A disabled member's session is gone and the admin cannot add devices.
    gw.admin(Method::POST, "/v1/users/alice/disable", None)
        .await;
    let disabled = gw.admin_add_device("alice", "laptop", KEY_A).await;
    assert_eq!(disabled.status, StatusCode::CONFLICT, "{disabled:?}");
    assert!(
        disabled.json["message"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    let devices = gw.admin(Method::GET, "/v1/devices", None).await;
    assert_eq!(devices.json, json!([]), "no refusal stored a device");
}

#[tokio::test]
async fn every_kind_written_is_named_by_the_vocabulary() {
    // Kinds are typed (`AuditKind`), so no code can write an unnamed one;
    // this reads back what a run of both doors wrote, as a reader would.
    // Typed details (issue 24, finding 11) parse back into their struct:
    // a field added, renamed or lost fails here.
    let gw = TestGateway::new(&cert_config()).await;
    let alice = member(&gw, "alice").await;
    gw.portal_add_device(&alice, "laptop", KEY_A).await;
    let issued = portal_cert(&gw, &alice, SSH_KEY).await;
    assert_eq!(issued.status, StatusCode::OK, "{issued:?}");
    gw.admin(Method::POST, "/v1/users/alice/disable", None)
        .await;
    gw.admin(Method::DELETE, "/v1/users/alice", None).await;
    let records = gw.audit_records().await;
    assert!(records.len() >= 6, "{records:?}");
    for record in &records {
        assert!(
            crate::audit::event::Kind::parse(&record.kind).is_some(),
            "{} is not in gatehouse_config::audit_kind",
            record.kind
        );
    }
    assert_eq!(check_typed_details(&records), ["CertIssued"]);
}

#[tokio::test]
async fn one_member_cannot_use_up_the_pool() {
    // Review finding 6: no per-user device cap; one member could take every
    // address of the pool.
    let config = CONFIG.replace("[vpn]\n", "[vpn]\nmax_devices_per_user = 2\n");
    let gw = TestGateway::new(&config).await;
    let alice = member(&gw, "alice").await;
    for (name, key) in [("a", KEY_A), ("b", KEY_B)] {
        let added = gw.portal_add_device(&alice, name, key).await;
        assert_eq!(added.status, StatusCode::OK, "{added:?}");
    }
    let third = "0Oq1Ai6XI9qW1Dxuo5eJcxRJ7MyCx7GwVbvKVN1eiHA=";
    let refused = gw.portal_add_device(&alice, "c", third).await;
    assert_eq!(
        (refused.status, refused.json["code"].as_str()),
        (StatusCode::CONFLICT, Some("device_limit"))
    );
    let by_admin = gw.admin_add_device("alice", "c", third).await;
    assert_eq!(by_admin.status, StatusCode::CONFLICT, "{by_admin:?}");
    assert!(
        by_admin.json["message"]
            .as_str()
            .unwrap()
            .contains("max_devices_per_user")
    );
    let devices = gw.admin(Method::GET, "/v1/devices", None).await;
    assert_eq!(devices.json.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_machine_account_is_active_at_once_and_the_states_say_what_they_mean() {
    let gw = TestGateway::new(CONFIG).await;
    let created = gw
        .admin(
            Method::POST,
            "/v1/users",
            Some(json!({ "name": "ci-runner", "groups": ["research"], "no_login": true })),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{created:?}");
    assert_eq!(created.json["user"]["state"], "active", "{created:?}");
    assert_eq!(
        created.json["enrollment"],
        json!(null),
        "a machine never enrolls"
    );
    let refused = gw
        .admin(Method::POST, "/v1/users/ci-runner/enrollment", None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(
        refused.json["message"]
            .as_str()
            .unwrap()
            .contains("machine account"),
        "{refused:?}"
    );

    // A person added as pending, then marked a machine: active, links gone.
    let token = gw.add_user("build-box", "research").await;
    let marked = gw
        .admin(
            Method::PUT,
            "/v1/users/build-box/no-login",
            Some(json!({ "no_login": true })),
        )
        .await;
    assert_eq!(marked.json["state"], "active", "{marked:?}");
    let gone = gw
        .portal(Method::GET, &format!("/api/v1/enroll/{token}"), None, None)
        .await;
    assert_ne!(
        gone.status,
        StatusCode::OK,
        "its link no longer works: {gone:?}"
    );
    // And back: a person who never enrolled is pending, and gets a new link.
    let person = gw
        .admin(
            Method::PUT,
            "/v1/users/build-box/no-login",
            Some(json!({ "no_login": false })),
        )
        .await;
    assert_eq!(person.json["state"], "pending", "{person:?}");
    let link = gw
        .admin(Method::POST, "/v1/users/build-box/enrollment", None)
        .await;
    assert_eq!(link.status, StatusCode::OK, "{link:?}");
    let new_token = link.json["token"].as_str().unwrap().to_string();
    gw.enroll("build-box", &new_token).await;

    // An enrolled person marked a machine can no longer log in to the portal.
    let alice = gw.add_user("alice", "research").await;
    gw.enroll("alice", &alice).await;
    let again = gw
        .admin(Method::POST, "/v1/users/alice/enrollment", None)
        .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "already enrolled: {again:?}"
    );
    // An active member without an authenticator (an SSO member from before
    // `oidc.require_totp` was turned on: under `totp_enrollment =
    // "admin_link"` the link is the only way to one) gets a link, and
    // enrolling with it sets the app up.
    gw.raw_sql("UPDATE users SET totp_secret = NULL WHERE name = 'alice'");
    let link = gw
        .admin(Method::POST, "/v1/users/alice/enrollment", None)
        .await;
    assert_eq!(
        link.status,
        StatusCode::OK,
        "no authenticator yet: {link:?}"
    );
    gw.enroll("alice", link.json["token"].as_str().unwrap())
        .await;
    let totp_set = gw
        .core
        .store()
        .read(|r| r.user("alice"))
        .await
        .unwrap()
        .unwrap()
        .totp_secret
        .is_some();
    assert!(totp_set, "the link set the authenticator up");
    gw.admin(
        Method::PUT,
        "/v1/users/alice/no-login",
        Some(json!({ "no_login": true })),
    )
    .await;
    let login = gw.login("alice").await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED, "{login:?}");
    let records = gw.audit_records().await;
    let fail = records
        .iter()
        .rfind(|r| r.kind == "portal.login.fail")
        .unwrap();
    assert_eq!(fail.detail["reason"], "no_login");
    let add = records
        .iter()
        .find(|r| r.kind == "user.add" && r.target == "ci-runner")
        .unwrap();
    assert_eq!(add.detail["state"], "active");
    assert_eq!(add.detail["enrollment_expires_at"], json!(null));
    assert!(
        records
            .iter()
            .any(|r| r.kind == "user.enrollment_link" && r.target == "build-box"),
        "the new link is audited"
    );
}

/// `POST /api/v1/ssh/certificates` for `public_key`, as `login`.
async fn portal_cert(gw: &TestGateway, login: &Login, public_key: &str) -> crate::testing::Answer {
    gw.portal(
        Method::POST,
        "/api/v1/ssh/certificates",
        Some(json!({ "public_key": public_key })),
        Some(login),
    )
    .await
}

/// `CONFIG` with the user CA on and principals for research.
pub(super) fn cert_config() -> String {
    CONFIG.replace(
        "name = \"research\"\n",
        "name = \"research\"\nssh_principals = [\"ec2-user\", \"ubuntu\"]\n",
    ) + "\n[ssh]\ncertificates = true\ncert_lifetime = \"2h\"\n"
}

const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl new@laptop";

/// tests/run.sh runs these tests twice: on the embedded SQLite, then with
/// `GATEHOUSE_TEST_GATEWAY_STORE=postgres` on the shared store. The second
/// run must really be on PostgreSQL.
#[tokio::test]
async fn the_test_gateway_runs_on_the_store_the_run_asked_for() {
    let gw = TestGateway::new(CONFIG).await;
    let asked = std::env::var("GATEHOUSE_TEST_GATEWAY_STORE").is_ok_and(|v| v == "postgres");
    assert_eq!(
        gw.core.store().is_shared(),
        asked,
        "{}",
        gw.core.store().db_name()
    );
}

/// A certificate works from either node of an HA pair (issue 24, finding
/// 5): its `source-address` lists every node's registered addresses, not
/// only the issuing node's, so a failover does not end it.
#[tokio::test]
async fn a_certificate_lists_every_ha_nodes_addresses() {
    let gw = TestGateway::new(&cert_config()).await;
    let alice = member(&gw, "alice").await;
    // The other node of the pair registered its own addresses.
    gw.raw_sql(
        "INSERT INTO ha_nodes (node, role, generation, seen_ms, detail, installation, addresses) \
         VALUES ('gw-b', 'standby', 0, 0, '{}', NULL, '[\"10.0.2.7\",\"2001:db8::7\"]')",
    );
    let issued = portal_cert(&gw, &alice, SSH_KEY).await;
    assert_eq!(issued.status, StatusCode::OK, "{issued:?}");
    let sources = issued.json["source_address"].as_str().unwrap();
    for net in ["10.0.2.7/32", "2001:db8::7/128", "10.200.0.0/24"] {
        assert!(
            sources.split(',').any(|s| s == net),
            "{net} missing from {sources}"
        );
    }
}

/// Both doors issue through the one service: on the portal a member's new
/// key becomes theirs (audited) and is certified; the admin door refuses a
/// key that is not the user's; lifetimes are capped by ssh.cert_lifetime
/// and by the account's expiry; a member of a group without principals
/// gets nothing; with the CA off, both doors say how to turn it on.
#[tokio::test]
async fn certificates_are_issued_once_for_both_doors() {
    let gw = TestGateway::new(&cert_config()).await;
    let alice = member(&gw, "alice").await;
    let body = json!({ "public_key": SSH_KEY });
    let admin_req = json!({ "user": "alice", "public_key": SSH_KEY, "lifetime_secs": 999_999 });
    let refused = gw
        .admin(
            Method::POST,
            "/v1/ssh/certificates",
            Some(admin_req.clone()),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{refused:?}"
    );
    assert!(
        refused.json["message"]
            .as_str()
            .unwrap()
            .contains("not one of alice's SSH keys")
    );

    let issued = gw
        .portal(
            Method::POST,
            "/api/v1/ssh/certificates",
            Some(body.clone()),
            Some(&alice),
        )
        .await;
    assert_eq!(issued.status, StatusCode::OK, "{issued:?}");
    assert_eq!(issued.json["principals"], json!(["ec2-user", "ubuntu"]));
    assert_eq!(issued.json["key_id"], "alice@test-gw");
    let window = issued.json["valid_before"].as_i64().unwrap()
        - issued.json["valid_after"].as_i64().unwrap();
    assert_eq!(window, 2 * 3600 + 60, "cert_lifetime plus the minute back");
    assert!(
        issued.json["source_address"]
            .as_str()
            .unwrap()
            .contains("10.200.0.0/24")
    );
    let keys = gw.admin(Method::GET, "/v1/users/alice", None).await;
    assert_eq!(
        keys.json["ssh_keys"].as_array().unwrap().len(),
        1,
        "{:?}",
        keys.json
    );

    // Now the key is hers, the admin door issues too, capped at 2h.
    let admin = gw
        .admin(Method::POST, "/v1/ssh/certificates", Some(admin_req))
        .await;
    assert_eq!(admin.status, StatusCode::OK, "{admin:?}");
    let window =
        admin.json["valid_before"].as_i64().unwrap() - admin.json["valid_after"].as_i64().unwrap();
    assert_eq!(window, 2 * 3600 + 60);
    assert_ne!(admin.json["serial"], issued.json["serial"]);
    let records = gw
        .admin(Method::GET, "/v1/audit?kind=ssh.cert.issue", None)
        .await;
    let via: Vec<&str> = records
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["detail"]["via"].as_str().unwrap())
        .collect();
    assert_eq!(via, ["portal", "admin"], "{:?}", records.json);

    // Disabled: no certificate, whoever asks.
    gw.admin(Method::POST, "/v1/users/alice/disable", None)
        .await;
    let req = json!({ "user": "alice", "public_key": SSH_KEY });
    let disabled = gw
        .admin(Method::POST, "/v1/ssh/certificates", Some(req))
        .await;
    assert_eq!(disabled.status, StatusCode::CONFLICT, "{disabled:?}");
    assert!(
        disabled.json["message"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );

    // A member of a group without principals: nothing to certify.
    let token = gw.add_user("bob", "app-admins").await;
    let bob = gw.enroll("bob", &token).await;
    let none = gw
        .portal(
            Method::POST,
            "/api/v1/ssh/certificates",
            Some(body),
            Some(&bob),
        )
        .await;
    assert_eq!(none.status, StatusCode::CONFLICT, "{none:?}");
    assert!(
        none.json["message"]
            .as_str()
            .unwrap()
            .contains("ssh_principals")
    );

    // The CA off: a clear answer.
    let off = TestGateway::new(CONFIG).await;
    let ca = off.admin(Method::GET, "/v1/ssh/ca", None).await;
    assert_eq!(ca.status, StatusCode::CONFLICT, "{ca:?}");
    assert!(
        ca.json["message"]
            .as_str()
            .unwrap()
            .contains("ssh.certificates = true")
    );
}

/// An OpenSSH public key line made from `seed` (a test key of its own).
pub(super) fn seeded_key(seed: u8) -> String {
    use russh::keys::ssh_key::private::Ed25519Keypair;
    let key = russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]));
    key.public_key().to_openssh().unwrap()
}

/// Review finding 6: the KRL listed only certificates of disabled or
/// removed members. A certificate whose key was removed from its member,
/// whose principals are no longer all the member's, or whose member is
/// pending again is dead too, until it expires.
#[tokio::test]
async fn the_krl_revokes_every_certificate_that_should_be_dead() {
    let config = cert_config().replace(
        "name = \"app-admins\"\n",
        "name = \"app-admins\"\nssh_principals = [\"admin\"]\n",
    );
    let gw = TestGateway::new(&config).await;
    let issue =
        |user: &str, key: &str| json!({ "user": user, "public_key": key, "lifetime_secs": 3600 });
    let mut serials = std::collections::BTreeMap::new();
    for (name, seed) in [("alice", 1), ("bob", 2), ("carol", 3)] {
        let key = seeded_key(seed);
        let login = member(&gw, name).await;
        let issued = portal_cert(&gw, &login, &key).await;
        assert_eq!(issued.status, StatusCode::OK, "{issued:?}");
        serials.insert(name, issued.json.clone());
    }
    let machine = json!({ "name": "ci", "groups": ["research"], "no_login": true, "ssh_keys": [seeded_key(4)] });
    let created = gw.admin(Method::POST, "/v1/users", Some(machine)).await;
    assert_eq!(created.status, StatusCode::OK, "{created:?}");
    let ci = gw
        .admin(
            Method::POST,
            "/v1/ssh/certificates",
            Some(issue("ci", &seeded_key(4))),
        )
        .await;
    assert_eq!(ci.status, StatusCode::OK, "{ci:?}");
    serials.insert("ci", ci.json.clone());
    let krl = gw.admin(Method::GET, "/v1/ssh/krl", None).await;
    assert_eq!(krl.json["revoked"], json!([]), "nothing to revoke yet");

    // alice moves to a group with other principals; bob's key is removed;
    // the machine account becomes a person who has not enrolled (pending);
    // carol is disabled.
    let moved = gw
        .admin(
            Method::PUT,
            "/v1/users/alice/groups",
            Some(json!({ "groups": ["app-admins"] })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:?}");
    let fingerprint = serials["bob"]["key_fingerprint"]
        .as_str()
        .unwrap()
        .replace(':', "%3A")
        .replace('+', "%2B")
        .replace('/', "%2F");
    let removed = gw
        .admin(
            Method::DELETE,
            &format!("/v1/users/bob/keys?fingerprint={fingerprint}"),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{removed:?}");
    let pending = gw
        .admin(
            Method::PUT,
            "/v1/users/ci/no-login",
            Some(json!({ "no_login": false })),
        )
        .await;
    assert_eq!(pending.status, StatusCode::OK, "{pending:?}");
    gw.admin(Method::POST, "/v1/users/carol/disable", None)
        .await;

    let krl = gw.admin(Method::GET, "/v1/ssh/krl", None).await;
    assert_eq!(krl.status, StatusCode::OK, "{krl:?}");
    let revoked: std::collections::BTreeMap<String, (u64, String)> = krl.json["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["user"].as_str().unwrap().to_string(),
                (
                    r["serial"].as_u64().unwrap(),
                    r["why"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let expect = |name: &str, why: &str| {
        (
            name.to_string(),
            (serials[name]["serial"].as_u64().unwrap(), why.to_string()),
        )
    };
    assert_eq!(
        revoked,
        std::collections::BTreeMap::from([
            expect("alice", "principals_changed"),
            expect("bob", "key_removed"),
            expect("carol", "disabled"),
            expect("ci", "pending"),
        ]),
        "{:?}",
        krl.json
    );
}

/// The KRL's rule at its boundaries, every reason.
#[test]
fn a_certificate_is_alive_only_while_member_key_and_principals_hold() {
    use gatehouse_config::api::UserState;

    use crate::access::certs::{Revoked, revocation};
    use crate::auth::standing::tests::user;
    use crate::store::ssh_certs::IssuedCertRow;

    let cert = IssuedCertRow {
        serial: 7,
        user: "alice".into(),
        key_fingerprint: "SHA256:k".into(),
        principals: vec!["ec2-user".into()],
        valid_after: 0,
        valid_before: 5_000,
        issued_at: 60,
        issued_by: "alice".into(),
        removed: false,
    };
    let keys = ["SHA256:k".to_string()];
    let principals = ["ec2-user".to_string(), "ubuntu".to_string()];
    let alice = user(UserState::Active, false, Some(1_000));
    let judge = |cert: &IssuedCertRow,
                 member: Option<&crate::store::User>,
                 keys: &[String],
                 principals: &[String],
                 now| { revocation(cert, member, keys, principals, now) };
    assert_eq!(judge(&cert, Some(&alice), &keys, &principals, 999), None);
    assert_eq!(
        judge(&cert, Some(&alice), &keys, &principals, 1_000),
        Some(Revoked::Expired),
        "expired at the account's expiry exactly"
    );
    assert_eq!(
        judge(&cert, None, &keys, &principals, 10),
        Some(Revoked::Removed)
    );
    let removed = IssuedCertRow {
        removed: true,
        ..cert.clone()
    };
    assert_eq!(
        judge(&removed, Some(&alice), &keys, &principals, 10),
        Some(Revoked::Removed),
        "a new member of the same name changes nothing"
    );
    let disabled = user(UserState::Disabled, false, None);
    assert_eq!(
        judge(&cert, Some(&disabled), &keys, &principals, 10),
        Some(Revoked::Disabled)
    );
    let pending = user(UserState::Pending, false, None);
    assert_eq!(
        judge(&cert, Some(&pending), &keys, &principals, 10),
        Some(Revoked::Pending)
    );
    assert_eq!(
        judge(&cert, Some(&alice), &[], &principals, 10),
        Some(Revoked::KeyRemoved)
    );
    assert_eq!(
        judge(&cert, Some(&alice), &keys, &["ubuntu".to_string()], 10),
        Some(Revoked::PrincipalsChanged)
    );
    let machine = user(UserState::Active, true, None);
    assert_eq!(judge(&cert, Some(&machine), &keys, &principals, 10), None);
}

/// Issue 28: the host CA's `@cert-authority` line names the groups' IPv4
/// subnets and nothing wider; with no IPv4 subnet at all it is a comment,
/// not a line that trusts the CA for every host. Off without certificates.
#[tokio::test]
async fn the_host_ca_line_covers_the_groups_subnets_only() {
    let gw = TestGateway::new(&cert_config()).await;
    let ca = gw.admin(Method::GET, "/v1/ssh/host-ca", None).await;
    assert_eq!(ca.status, 200, "{}", ca.text);
    let line = ca.json["known_hosts"].as_str().unwrap();
    let public_key = ca.json["public_key"].as_str().unwrap();
    assert_eq!(
        line,
        format!("@cert-authority 10.0.3.*,10.0.2.* {public_key}")
    );
    assert!(
        public_key.ends_with(" gatehouse-host-ca@test-gw"),
        "{public_key}"
    );
    assert_ne!(
        ca.json["fingerprint"],
        gw.admin(Method::GET, "/v1/ssh/ca", None).await.json["fingerprint"],
        "the host CA is not the user CA"
    );

    let v6_only = cert_config()
        .replace("subnets = [\"10.0.3.0/24\"]", "subnets = [\"fd00:3::/64\"]")
        .replace("subnets = [\"10.0.2.0/24\"]", "subnets = [\"fd00:2::/64\"]");
    let gw = TestGateway::new(&v6_only).await;
    let ca = gw.admin(Method::GET, "/v1/ssh/host-ca", None).await;
    let line = ca.json["known_hosts"].as_str().unwrap();
    assert!(line.starts_with("# no group has an IPv4 subnet"), "{line}");

    let gw = TestGateway::new(CONFIG).await;
    let off = gw.admin(Method::GET, "/v1/ssh/host-ca", None).await;
    assert_ne!(off.status, 200, "{}", off.text);
}
