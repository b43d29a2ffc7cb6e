//! The SSO journey in a real browser, and the tunnel it opens (issue 15):
//! headless Chromium in the client's namespace opens the portal's login
//! page, clicks "Sign in with Test IdP", signs in on the provider's own
//! login and consent pages (panva's oidc-provider over https in the
//! gateway's namespace), lands on the devices page, adds a device with a
//! key pair the page makes, and downloads its config; a stock wireguard-go
//! client with that config then reaches the research host: the SSO login
//! opened the VPN session (`vpn.require_login`), which ends, as a password
//! login's does, at `vpn.session_lifetime` (audited `vpn.session.expire`).
//! Screenshots go to
//! `<target dir>/test-artifacts/sso/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use gatehouse_tests::aws::in_netns;
use gatehouse_tests::browser::{self, Browser};
use gatehouse_tests::netns::{Host, POOL, Topology, WgClient};
use gatehouse_tests::sso::{CLIENT_SECRET, OidcProvider, oidc_dir};
use serde_json::json;

/// The VPN session an SSO login opens here: long enough for the browser
/// journey, short enough to watch it end.
const SESSION_SECS: u64 = 45;

#[test]
fn sign_in_with_the_provider_in_chromium_then_the_tunnel_reaches_the_research_host() {
    if !browser::available()
        || !gatehouse_tests::require(
            oidc_dir().join("node_modules/oidc-provider").exists(),
            "the SSO tests need tests/oidc/node_modules (tests/run.sh installs them)",
        )
    {
        return;
    }
    let Some(topo) = Topology::create() else {
        return;
    };
    let gw_addr = topo.addr(Host::Gateway).to_string();
    let portal = format!("https://{gw_addr}:8443");

    // The provider's certificate, for its https on the gateway's address.
    let pki = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec![gw_addr.clone()]).unwrap();
    let (cert, key) = (pki.path().join("idp.pem"), pki.path().join("idp-key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let provider = OidcProvider::start_at(
        Some((topo.ns(Host::Gateway), &gw_addr, (&cert, &key))),
        &json!({ "alice-sub-0001": {
            "preferred_username": "alice",
            "email": "alice@example.org",
            "groups": ["research-team"],
        }}),
        &format!("{portal}/oidc/callback"),
    )
    .expect("the provider");
    assert!(
        provider.issuer.starts_with("https://"),
        "{}",
        provider.issuer
    );

    let secret = pki.path().join("oidc-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = topo
        .gateway_config(
            POOL,
            &format!(
                "[oidc]\nissuer = \"{}\"\nclient_id = \"gatehouse\"\nclient_secret_file = \"{}\"\n\
                 ca_file = \"{}\"\ndisplay_name = \"Test IdP\"\nauto_provision = true\n",
                provider.issuer,
                secret.display(),
                cert.display()
            ),
        )
        .replacen(
            "require_login = false",
            &format!("require_login = true\nsession_lifetime = \"{SESSION_SECS}s\""),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:8443\"",
            &format!("listen = \"{gw_addr}:8443\"\nurl = \"{portal}\""),
            1,
        )
        .replacen(
            "subnets = [\"10.0.3.0/24\"]\n",
            "subnets = [\"10.0.3.0/24\"]\noidc_groups = [\"research-team\"]\n",
            1,
        );
    assert!(
        config.contains("oidc_groups"),
        "gateway_config changed shape"
    );
    let gw = topo.start_gateway(&config);

    let conf = in_netns(topo.ns(Host::Client), || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let browser = Browser::start(&portal, "sso").await;
            browser.sso_login("alice-sub-0001").await;
            let added = browser.add_device("laptop").await;
            let conf = browser.download(&added).await;
            browser.close().await;
            conf
        })
    });
    assert!(
        conf.contains("[Interface]") && conf.contains("PrivateKey"),
        "{conf}"
    );
    let user = gw.ctl_json(&["user", "show", "alice"]);
    assert_eq!(user["groups"], json!(["research"]), "{user}");
    assert_eq!(user["sso"]["subject"], "alice-sub-0001", "{user}");

    let path = topo.dir().join("alice-laptop.conf");
    std::fs::write(&path, &conf).unwrap();
    let client = WgClient::up_in(&topo, Host::Client, &path);
    let fetched = client
        .wait_fetch(&topo.whoami_url(Host::Research), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("no tunnel after the SSO login: {e}\n{}", gw.log_tail(30)));
    assert_eq!(fetched.trim(), "research");
    let logins = gw.audit_of("portal.login.ok");
    assert_eq!(logins.last().unwrap()["detail"]["method"], "oidc");
    let signed_in = std::time::Instant::now();

    // The session ends at vpn.session_lifetime: the peer goes, audited.
    let deadline = Duration::from_secs(SESSION_SECS + 30);
    let expired = loop {
        let expired = gw.audit_of("vpn.session.expire");
        if !expired.is_empty() || signed_in.elapsed() > deadline {
            break expired;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        expired
            .first()
            .and_then(|r| r["target"].as_str())
            .is_some_and(|t| t.starts_with("alice")),
        "no vpn.session.expire within {deadline:?}: {expired:?}\n{}",
        gw.log_tail(30)
    );
    let devices = gw.ctl_json(&["device", "list"]);
    assert_eq!(devices[0]["live"], false, "{devices}");
    drop(client);
}
