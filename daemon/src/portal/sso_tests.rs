//! The SSO records in-process (issue 24, finding 11): a member provisioned
//! by the provider, its TOTP step with a first authenticator, a login
//! without the step, a groups change and refusals write records whose
//! details parse back into their typed structs. The provider itself is
//! left out (its checks are `sso::provider`'s tests; the end-to-end tests
//! in `tests/tests/sso*.rs` drive it whole).

#![allow(clippy::unwrap_used, reason = "a test")]

use std::net::IpAddr;

use super::flows;
use super::sso_login::{login_detail, open_session};
use super::sso_totp::{self, Ask, Outcome};
use crate::sso::Verified;
use crate::testing::{CONFIG, TestGateway, check_typed_details};
use crate::time_fmt::now_unix;

fn sso_config() -> String {
    CONFIG
        .replace(
            "name = \"research\"\n",
            "name = \"research\"\noidc_groups = [\"research-team\"]\n",
        )
        .replace(
            "name = \"app-admins\"\n",
            "name = \"app-admins\"\noidc_groups = [\"admins\"]\n",
        )
        + "\n[oidc]\nissuer = \"https://idp.example.org\"\nclient_id = \"g\"\n\
         auto_provision = true\nrequire_totp = true\ntotp_enrollment = \"first_login\"\n"
}

fn verified(groups: &[&str]) -> Verified {
    Verified {
        issuer: "https://idp.example.org".into(),
        subject: "sub-1".into(),
        email: Some("carol@example.org".into()),
        email_verified: Some(true),
        username: Some("carol".into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

#[tokio::test]
async fn sso_records_parse_back_into_their_typed_details() {
    let gw = TestGateway::new(&sso_config()).await;
    let state = &gw.portal_state;
    let source: IpAddr = [198, 51, 100, 7].into();

    // Provisioned (user.add by oidc), then the TOTP step sets up the app.
    let login = verified(&["research-team"]);
    let member = gw.access.sso_member(&login).await.unwrap().unwrap();
    assert!(member.created);
    let mut detail = login_detail(&login, &member);
    detail.refused_while_locked_out = Some(2);
    let waiting = sso_totp::begin(state, &member.user, &detail).await.unwrap();
    let Ask::Enroll { secret, .. } = &waiting.ask else {
        panic!("a new member is offered an app");
    };
    // A wrong code first: portal.login.fail, method oidc.
    let again = sso_totp::finish(state, source, &waiting.token, "000000x").await;
    assert!(matches!(again, Ok(Outcome::Again(..))));
    let code = crate::totp::code_at(secret, u64::try_from(now_unix()).unwrap()).unwrap();
    let done = sso_totp::finish(state, source, &waiting.token, &code).await;
    assert!(matches!(done, Ok(Outcome::LoggedIn(_))));

    // Their groups change at the provider (user.set_groups by oidc); a
    // login without the step (open_session) and a refusal with a count.
    let login = verified(&["research-team", "admins"]);
    let member = gw.access.sso_member(&login).await.unwrap().unwrap();
    open_session(state, source, &member, login_detail(&login, &member))
        .await
        .unwrap();
    flows::sso_refused(state, source, None, "state", "no login under way", 3)
        .await
        .unwrap();

    let records = gw.audit_records().await;
    let checked = check_typed_details(&records);
    assert_eq!(
        checked,
        [
            "SsoUserAdded",
            "SsoLoginFail",
            "SsoLoginOk",
            "SsoGroupsSet",
            "SsoLoginOk",
            "SsoLoginFail"
        ],
        "{records:#?}"
    );
    // The optional fields are there when they were set.
    let oks: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "portal.login.ok")
        .collect();
    assert_eq!(oks[0].detail["totp"], true);
    assert_eq!(oks[0].detail["totp_enrolled"], true);
    assert_eq!(oks[0].detail["activated"], true);
    assert_eq!(oks[0].detail["refused_while_locked_out"], 2);
    assert_eq!(oks[1].detail["totp"], false);
    assert!(oks[1].detail.get("activated").is_none(), "{:?}", oks[1]);
    let fail = records.last().unwrap();
    assert_eq!(fail.detail["refused_while_locked_out"], 3);
}
