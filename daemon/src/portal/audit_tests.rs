//! The auditor's view in-process: the real portal router on a whole
//! gateway in a temp dir ([`TestGateway`]): who may see it, what a filter
//! shows, the CSV, and the `audit.view` record each look leaves.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use axum::http::{Method, StatusCode, header};
use gatehouse_config::api::{AuditQuery, AuditRecord};
use gatehouse_config::audit_csv;
use serde_json::json;

use super::audit_pages::CSV_PAGE;
use crate::audit::event::{Actor, Kind, Source, event};
use crate::testing::{Answer, CONFIG, Login, TestGateway, check_typed_details};

/// A login key, as the jump host records it.
const FINGERPRINT: &str = "SHA256:uV5cI0c3zG8Ub6QGd9ux4KkPjyKGJ6b0wOQmmE3QnNk";

/// `CONFIG` with an auditor group that reaches nothing.
fn auditor_config() -> String {
    CONFIG.replace(
        "[portal]\nrequire_totp = true\n",
        "[portal]\nrequire_totp = true\nauditor_groups = [\"auditors\"]\n",
    ) + "\n[[group]]\nname = \"auditors\"\n"
}

async fn enrolled(gw: &TestGateway, name: &str, group: &str) -> Login {
    let token = gw.add_user(name, group).await;
    gw.enroll(name, &token).await
}

async fn get(gw: &TestGateway, path: &str, login: Option<&Login>) -> Answer {
    gw.portal(Method::GET, path, None, login).await
}

/// Jump host sessions as the jump host records them, an hour ago: alice to
/// 10.0.3.140 (and a refused channel there), bob to 10.0.2.5.
async fn sessions(gw: &TestGateway) {
    let at = SystemTime::now() - Duration::from_secs(3600);
    gw.core
        .store()
        .write(move |w| {
            for (user, host, bytes) in [("alice", "10.0.3.140", 4_000), ("bob", "10.0.2.5", 9)] {
                let peer = Source::Peer("198.51.100.7:40000".parse().unwrap());
                w.audit_at(
                    event(
                        Kind::SshSessionStart,
                        Actor::User(user.into()),
                        peer.clone(),
                    )
                    .on(format!("{host}:22"))
                    .detail(json!({"channel": 1, "resolved": format!("{host}:22"),
                                   "requested": format!("{host}:22"), "key_fingerprint": FINGERPRINT})),
                    at,
                )?;
                w.audit_at(
                    event(Kind::SshSessionEnd, Actor::User(user.into()), peer)
                        .on(format!("{host}:22"))
                        .detail(json!({"channel": 1, "resolved": format!("{host}:22"),
                                       "key_fingerprint": FINGERPRINT, "duration_ms": 1_000,
                                       "reason": "client closed",
                                       "bytes_up": bytes, "bytes_down": bytes * 2})),
                    at,
                )?;
            }
            w.audit_at(
                event(
                    Kind::SshForwardDeny,
                    Actor::User("alice".into()),
                    Source::Peer("198.51.100.7:40001".parse().unwrap()),
                )
                .on("10.0.3.140:5432")
                .detail(json!({"reason": "port_not_allowed"})),
                at,
            )?;
            Ok(())
        })
        .await
        .unwrap();
}

async fn views(gw: &TestGateway) -> Vec<AuditRecord> {
    gw.audit_records()
        .await
        .into_iter()
        .filter(|r| r.kind == "audit.view")
        .collect()
}

fn assert_csp(answer: &Answer) {
    let csp = answer
        .headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(csp, super::CSP);
    assert!(!answer.text.contains("<script>"), "no inline script");
    assert!(!answer.text.contains("style="), "no inline style");
}

#[tokio::test]
async fn anonymous_visitors_log_in_and_members_who_are_not_auditors_get_403() {
    let gw = TestGateway::new(&auditor_config()).await;
    let alice = enrolled(&gw, "alice", "research").await;
    sessions(&gw).await;
    for path in [
        "/audit",
        "/audit/users",
        "/audit/hosts?host=10.0.3.140",
        "/audit/export.csv",
    ] {
        let anonymous = get(&gw, path, None).await;
        assert_eq!(anonymous.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(anonymous.headers[header::LOCATION], "/login");
        let member = get(&gw, path, Some(&alice)).await;
        assert_eq!(member.status, StatusCode::FORBIDDEN, "{path}: {member:?}");
        assert!(member.text.contains("Not an auditor"), "{}", member.text);
        assert!(!member.text.contains("10.0.3.140:22"), "shows no record");
        assert_csp(&member);
    }
    assert!(views(&gw).await.is_empty(), "nothing was viewed");
    let devices = get(&gw, "/devices", Some(&alice)).await;
    assert!(!devices.text.contains("href=\"/audit\""), "no link for her");
}

#[tokio::test]
async fn an_auditor_sees_who_reached_a_host_and_each_view_is_audited() {
    let gw = TestGateway::new(&auditor_config()).await;
    let carol = enrolled(&gw, "carol", "auditors").await;
    sessions(&gw).await;
    let devices = get(&gw, "/devices", Some(&carol)).await;
    assert!(devices.text.contains("href=\"/audit\""), "{}", devices.text);

    let hosts = get(&gw, "/audit/hosts?host=10.0.3.140", Some(&carol)).await;
    assert_eq!(hosts.status, StatusCode::OK, "{}", hosts.text);
    assert_csp(&hosts);
    let page = &hosts.text;
    assert!(page.contains("href=\"/audit/users?user=alice\""), "{page}");
    assert!(
        page.contains(">4000<") && page.contains(">8000<"),
        "bytes: {page}"
    );
    assert!(
        !page.contains("bob") && !page.contains("10.0.2.5"),
        "{page}"
    );
    assert!(
        page.contains("value=\"10.0.3.140\""),
        "the form shows the filter"
    );
    // The user's page lists her hosts, linked back.
    let users = get(&gw, "/audit/users?user=alice", Some(&carol)).await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(
        users.text.contains("href=\"/audit/hosts?host=10.0.3.140\""),
        "{}",
        users.text
    );

    // Each view is recorded once, with its page and filter.
    let recorded = views(&gw).await;
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(
        (recorded[0].actor.as_str(), recorded[0].source.as_str()),
        ("carol", "198.51.100.20")
    );
    assert_eq!(
        recorded[0].detail,
        json!({"page": "hosts", "filter": {"host": "10.0.3.140"}})
    );
    assert_eq!(
        recorded[1].detail,
        json!({"page": "users", "filter": {"user": "alice"}})
    );
    // A reload in a loop adds nothing; another filter does.
    for _ in 0..5 {
        get(&gw, "/audit/hosts?host=10.0.3.140", Some(&carol)).await;
    }
    assert_eq!(views(&gw).await.len(), 2);
    get(&gw, "/audit/hosts?host=10.0.2.0/24", Some(&carol)).await;
    assert_eq!(views(&gw).await.len(), 3);
    let records = gw.audit_records().await;
    assert!(check_typed_details(&records).contains(&"AuditViewed"));

    // Being an auditor reaches nothing.
    let user = gw
        .core
        .store()
        .read(|r| r.user("carol"))
        .await
        .unwrap()
        .unwrap();
    let access = gw.access.member_access(&user, crate::time_fmt::now_unix());
    assert!(access.subnets.is_empty(), "{:?}", access.subnets);
}

#[tokio::test]
async fn the_timeline_marks_refusals_and_shows_the_chain() {
    let gw = TestGateway::new(&auditor_config()).await;
    let carol = enrolled(&gw, "carol", "auditors").await;
    sessions(&gw).await;
    let timeline = get(&gw, "/audit?user=alice", Some(&carol)).await;
    assert_eq!(timeline.status, StatusCode::OK, "{}", timeline.text);
    assert_csp(&timeline);
    let page = &timeline.text;
    assert!(
        page.contains("<tr class=\"alert\">"),
        "a refusal marks its hour: {page}"
    );
    assert!(
        page.contains("<strong class=\"refused\">1</strong>"),
        "{page}"
    );
    assert!(
        page.contains("<meter min=\"0\" max=\"3\" value=\"3\">"),
        "{page}"
    );
    assert!(page.contains("ssh.forward.deny") && page.contains("10.0.3.140:5432"));
    assert!(!page.contains("10.0.2.5"), "bob's records are filtered out");
    assert!(page.contains("id=\"newest\""), "{page}");
    assert!(page.contains("Not anchored outside this gateway"), "{page}");
    // With no time given the timeline covers the last week, and says so.
    let view = views(&gw).await.pop().unwrap();
    assert_eq!(view.detail["page"], "timeline");
    assert_eq!(view.detail["filter"]["user"], "alice");
    assert!(
        view.detail["filter"]["since"].as_str().is_some(),
        "{view:?}"
    );
}

#[tokio::test]
async fn the_csv_is_the_review_services_records_as_the_cli_writes_them() {
    let gw = TestGateway::new(&auditor_config()).await;
    let carol = enrolled(&gw, "carol", "auditors").await;
    sessions(&gw).await;
    // More than one page of matching records.
    let n = CSV_PAGE + 234;
    gw.core
        .store()
        .write(move |w| {
            for i in 0..n {
                w.audit(
                    event(
                        Kind::SshForwardDeny,
                        Actor::User("alice".into()),
                        Source::Peer("198.51.100.7:40001".parse().unwrap()),
                    )
                    .on(format!("10.0.3.{}:22", 1 + i % 200))
                    .detail(json!({"reason": "not_allowed", "n": i})),
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let csv = get(
        &gw,
        "/audit/export.csv?host=10.0.3.0/24&outcome=refused",
        Some(&carol),
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(
        csv.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("gatehouse-audit.csv")
    );
    let query = AuditQuery {
        host: Some("10.0.3.0/24".into()),
        outcome: Some(gatehouse_config::api::Outcome::Refused),
        after_seq: Some(0),
        ..AuditQuery::default()
    };
    let filter = crate::access::review::filter(&query).unwrap();
    let expected: Vec<AuditRecord> = gw
        .core
        .store()
        .read(move |r| r.audit_records(&filter))
        .await
        .unwrap();
    assert_eq!(
        expected.len() as u64,
        n + 1,
        "the page limit is no cut here"
    );
    let mut want = audit_csv::HEADER.to_string();
    want.extend(expected.iter().map(audit_csv::row));
    assert!(
        csv.text == want,
        "the CSV differs from the records rendered"
    );
    // The download is a view too, and not in its own file.
    let view = views(&gw).await.pop().unwrap();
    assert_eq!(
        view.detail,
        json!({"page": "csv", "filter": {"host": "10.0.3.0/24", "outcome": "refused"}})
    );
    assert!(!csv.text.contains("audit.view"));
}

#[tokio::test]
async fn a_bad_filter_is_refused_with_the_form_and_shows_nothing() {
    let gw = TestGateway::new(&auditor_config()).await;
    let carol = enrolled(&gw, "carol", "auditors").await;
    sessions(&gw).await;
    for (path, says) in [
        (
            "/audit/hosts?host=db.internal",
            "host=&quot;db.internal&quot;: not an address",
        ),
        (
            "/audit?since=yesterday",
            "since=&quot;yesterday&quot;: not an RFC 3339 time",
        ),
        (
            "/audit/users?via=carrier-pigeon",
            "via: &quot;carrier-pigeon&quot; is not one of",
        ),
        ("/audit/users?offset=many", "The filter is malformed"),
    ] {
        let refused = get(&gw, path, Some(&carol)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(refused.text.contains(says), "{path}: {}", refused.text);
        assert!(refused.text.contains("id=\"filter\""), "the form again");
        for table in [
            "id=\"hours\"",
            "id=\"records\"",
            "id=\"uses\"",
            "id=\"chain\"",
        ] {
            assert!(!refused.text.contains(table), "{path}: {table}");
        }
    }
    assert!(views(&gw).await.is_empty(), "nothing was shown");
}

#[tokio::test]
async fn nothing_is_shown_unaudited_and_the_auditor_groups_reload_live() {
    let gw = TestGateway::new(&auditor_config()).await;
    let carol = enrolled(&gw, "carol", "auditors").await;
    sessions(&gw).await;
    gw.refuse_audit_inserts(true);
    let refused = get(&gw, "/audit/hosts", Some(&carol)).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!refused.text.contains("10.0.3.140"), "{}", refused.text);
    let csv = get(&gw, "/audit/export.csv", Some(&carol)).await;
    assert_eq!(csv.status, StatusCode::SERVICE_UNAVAILABLE);
    gw.refuse_audit_inserts(false);
    let shown = get(&gw, "/audit/hosts", Some(&carol)).await;
    assert_eq!(shown.status, StatusCode::OK, "tried again: {}", shown.text);
    assert_eq!(views(&gw).await.len(), 1);

    // Out of portal.auditor_groups at a reload: out of the view at once.
    // (A group named in no auditor_groups needs subnets again.)
    gw.write_config(
        &auditor_config()
            .replace("auditor_groups = [\"auditors\"]", "auditor_groups = []")
            .replace(
                "name = \"auditors\"\n",
                "name = \"auditors\"\nsubnets = [\"10.0.9.0/24\"]\n",
            ),
    );
    let reloaded = gw.admin(Method::POST, "/v1/reload", None).await;
    assert_eq!(reloaded.status, StatusCode::OK, "{reloaded:?}");
    let gone = get(&gw, "/audit/hosts", Some(&carol)).await;
    assert_eq!(gone.status, StatusCode::FORBIDDEN);
}
