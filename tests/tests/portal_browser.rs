//! The portal in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (`gatehouse_tests::browser`). It opens the enrollment link,
//! sets a password, enrolls TOTP with a code computed here, logs out and in,
//! adds a device (key pair made by WebCrypto in the page), downloads the
//! .conf, and checks: `wg-quick strip` accepts it, its private key belongs
//! to the public key the gateway stored, and neither the state dir nor the
//! log holds that private key; both QR codes (TOTP enrollment, device
//! config), as Chromium rendered them, decode (zbarimg) to what the page
//! says. Then a browser without X25519 (simulated) gets the gateway-made
//! fallback, and both devices are revoked from the page.
//!
//! Screenshots of each page go to `<target dir>/test-artifacts/portal/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Command;
use std::time::Duration;

use gatehouse_tests::browser::{self, Browser};
use gatehouse_tests::portal::{add_user, conf_value, find_in_files, public_key_of};
use gatehouse_tests::{Daemon, have_tool, output_within, require};

#[test]
fn enroll_login_add_device_and_download_its_config_in_chromium() {
    if !browser::available() {
        return;
    }
    let daemon = Daemon::start();
    let status = daemon.ctl_json(&["status"]);
    let base = format!("https://{}", status["portal"]["listen"].as_str().unwrap());
    let token = add_user(&daemon, "alice");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (conf, fallback_conf, secret, totp_qr_png, conf_qr_png, shots) = runtime.block_on(async {
        let browser = Browser::start(&base, "portal").await;
        // 1. The enrollment link: password and TOTP.
        let (mut account, totp_qr_png) = browser.enroll(&token, "alice").await;
        // 2. Log out, then log in with name, password and a fresh code.
        browser.logout().await;
        browser.login(&mut account).await;
        // 3. Add a device: the key pair is made by the page's script.
        let laptop = browser.add_device("laptop").await;
        assert!(!laptop.gateway_keyed, "Chromium makes X25519 keys itself");
        let conf = browser.download(&laptop).await;

        // 4. A browser without WebCrypto X25519 (simulated by making
        //    generateKey refuse X25519): the page falls back to a key pair
        //    the gateway makes once, and says so.
        browser.goto("/devices").await;
        browser
            .client
            .execute(
                "const real = crypto.subtle.generateKey.bind(crypto.subtle);\
                 crypto.subtle.generateKey = (alg, ...rest) => \
                   (alg && alg.name === 'X25519') ? Promise.reject(new DOMException('unsupported', 'NotSupportedError')) : real(alg, ...rest);",
                vec![],
            )
            .await
            .unwrap();
        let old_phone = browser.add_device("old-phone").await;
        assert!(old_phone.gateway_keyed, "the page says the gateway made the key");
        let fallback_conf = browser.download(&old_phone).await;

        // 5. Revoke both from the page.
        browser.goto("/devices").await;
        browser.shot("devices-with-two").await;
        for _ in 0..2 {
            browser.submit("td form button.danger", "/devices").await;
        }
        let page = browser.client.source().await.unwrap();
        assert!(page.contains("No devices yet."), "both revoked");
        browser.shot("devices-after-revoke").await;
        let shots = browser.shots.clone();
        browser.close().await;
        (conf, fallback_conf, account.secret, totp_qr_png, laptop.qr_png, shots)
    });
    eprintln!("screenshots in {}", shots.display());

    // The config: a split tunnel whose private key matches what was stored.
    let private_key = conf_value(&conf, "PrivateKey");
    assert!(conf.contains("AllowedIPs = 10.0.3.0/24"), "{conf}");
    assert!(conf.contains("Address = 10.200.0.2/32"), "{conf}");
    let created = daemon.audit_of("device.create");
    assert_eq!(created.len(), 2);
    assert_eq!(
        created[0]["detail"]["public_key"],
        public_key_of(private_key).as_str(),
        "the private key belongs to the stored public key"
    );
    assert_eq!(created[0]["detail"]["key_made_by"], "client");
    assert!(
        find_in_files(&daemon.state_dir, private_key).is_none(),
        "no private key in the state dir"
    );
    assert!(!daemon.log_text().contains(private_key));
    // The fallback: a gateway-made pair, matching, and not kept either.
    let fallback_key = conf_value(&fallback_conf, "PrivateKey");
    assert_eq!(
        created[1]["detail"]["public_key"],
        public_key_of(fallback_key).as_str()
    );
    assert_eq!(created[1]["detail"]["key_made_by"], "gateway");
    assert!(
        find_in_files(&daemon.state_dir, fallback_key).is_none(),
        "the gateway kept no private key"
    );
    assert!(!daemon.log_text().contains(fallback_key));
    assert!(
        !daemon.ctl_ok(&["--json", "audit"]).contains(&secret),
        "no TOTP secret in the audit"
    );
    if require(
        have_tool("wg-quick"),
        "wg-quick (wireguard-tools) is not installed",
    ) {
        let path = daemon.dir.path().join("laptop.conf");
        std::fs::write(&path, &conf).unwrap();
        let mut cmd = Command::new("wg-quick");
        cmd.arg("strip").arg(&path);
        let out = output_within(cmd, Duration::from_secs(10));
        assert!(
            out.status.success(),
            "wg-quick strip: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stripped = String::from_utf8_lossy(&out.stdout);
        assert!(
            stripped.contains(&format!("PrivateKey = {private_key}")),
            "{stripped}"
        );
    }
    // The QR codes say what the page says: decoded from the browser's
    // rendering of them with zbarimg.
    if browser::can_decode_qr() {
        let uri = browser::decode_qr(&shots, &totp_qr_png, "qr-totp.png");
        assert!(
            uri.trim().starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}&")),
            "{uri}"
        );
        let decoded = browser::decode_qr(&shots, &conf_qr_png, "qr-device.png");
        assert_eq!(
            decoded.trim_end(),
            conf.trim_end(),
            "the device QR is the .conf"
        );
    }
    let kinds: Vec<String> = daemon
        .audit_json(&[])
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for kind in [
        "portal.enroll",
        "portal.logout",
        "portal.login.ok",
        "device.create",
        "device.revoke",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} audited: {kinds:?}");
    }
}
