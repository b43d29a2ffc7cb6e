//! The portal in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver on a loopback port this test picks). It opens the
//! enrollment link, sets a password, enrolls TOTP with a code computed here,
//! logs out and in, adds a device (key pair made by WebCrypto in the page),
//! downloads the .conf, and checks: `wg-quick strip` accepts it, its private
//! key belongs to the public key the gateway stored, and neither the state
//! dir nor the log holds that private key; both QR codes (TOTP enrollment,
//! device config), as Chromium rendered them, decode (zbarimg) to what the
//! page says. Then a browser without X25519 (simulated) gets the gateway-made
//! fallback, and both devices are revoked from the page.
//!
//! Screenshots of each page go to `<target dir>/test-artifacts/portal/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fantoccini::{ClientBuilder, Locator};
use gatehouse_tests::portal::{Account, PASSWORD, add_user, find_in_files};
use gatehouse_tests::{Daemon, have_tool, output_within, require};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `<target dir>/test-artifacts/portal/`, next to the binaries.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("test-artifacts/portal");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start_driver(port: u16) -> Driver {
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    driver
}

#[test]
fn enroll_login_add_device_and_download_its_config_in_chromium() {
    if !require(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "Debian's chromium and chromium-driver are not installed (tests/run.sh installs them as root)",
    ) {
        return;
    }
    let daemon = Daemon::start();
    let status = daemon.ctl_json(&["status"]);
    let base = format!("https://{}", status["portal"]["listen"].as_str().unwrap());
    let token = add_user(&daemon, "alice");
    let downloads = tempfile::tempdir().unwrap();
    let shots = artifacts_dir();
    let port = free_port();
    let _driver = start_driver(port);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (conf, fallback_conf, secret, totp_qr_png, conf_qr_png) = runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=420,900",
                ],
                "prefs": {
                    "download.default_directory": downloads.path().to_str().unwrap(),
                    "download.prompt_for_download": false,
                    "safebrowsing.enabled": false,
                },
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with chromium");
        let shot = |name: &'static str| {
            let client = client.clone();
            let path = shots.join(name);
            async move {
                let png = client.screenshot().await.unwrap();
                std::fs::write(&path, png).unwrap();
            }
        };
        let css = |sel: &'static str| Locator::Css(sel);

        // 1. The enrollment link: password and TOTP.
        client
            .goto(&format!("{base}/enroll/{token}"))
            .await
            .unwrap();
        shot("01-enroll.png").await;
        let secret = client
            .find(css("#totp-secret"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let qr = client.find(css("img.qr")).await.unwrap();
        client
            .execute("document.querySelector('img.qr').scrollIntoView()", vec![])
            .await
            .unwrap();
        let totp_qr_png = qr.screenshot().await.unwrap();
        client.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
        assert!(
            qr.attr("src")
                .await
                .unwrap()
                .unwrap()
                .starts_with("data:image/svg+xml;base64,")
        );
        let mut account = Account {
            user: "alice".into(),
            password: PASSWORD.into(),
            secret: secret.clone(),
            last_step: None,
        };
        client
            .find(css("#password"))
            .await
            .unwrap()
            .send_keys(PASSWORD)
            .await
            .unwrap();
        client
            .find(css("#password_confirm"))
            .await
            .unwrap()
            .send_keys(PASSWORD)
            .await
            .unwrap();
        let code = account.next_code();
        client
            .find(css("#totp_code"))
            .await
            .unwrap()
            .send_keys(&code)
            .await
            .unwrap();
        client
            .find(css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client
            .wait()
            .for_url(&format!("{base}/devices").parse().unwrap())
            .await
            .unwrap();
        shot("02-devices-after-enrollment.png").await;

        // 2. Log out, then log in with name, password and a fresh code.
        client
            .find(css("header form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client
            .wait()
            .for_url(&format!("{base}/login").parse().unwrap())
            .await
            .unwrap();
        shot("03-login.png").await;
        client
            .find(css("#user"))
            .await
            .unwrap()
            .send_keys("alice")
            .await
            .unwrap();
        client
            .find(css("#password"))
            .await
            .unwrap()
            .send_keys(PASSWORD)
            .await
            .unwrap();
        let code = account.next_code();
        client
            .find(css("#totp_code"))
            .await
            .unwrap()
            .send_keys(&code)
            .await
            .unwrap();
        client
            .find(css("main form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client
            .wait()
            .for_url(&format!("{base}/devices").parse().unwrap())
            .await
            .unwrap();
        shot("04-devices.png").await;

        // 3. Add a device: the key pair is made by the page's script.
        client
            .find(css("#device-name"))
            .await
            .unwrap()
            .send_keys("laptop")
            .await
            .unwrap();
        client
            .find(css("#add-device button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let link = client
            .wait()
            .for_element(css("#conf-download[download]"))
            .await
            .unwrap();
        let notice = client.find(css("#gateway-keyed")).await.unwrap();
        assert!(
            !notice.is_displayed().await.unwrap(),
            "Chromium makes X25519 keys itself"
        );
        let qr = client.find(css("#conf-qr")).await.unwrap();
        let conf_qr_png = qr.screenshot().await.unwrap();
        assert!(
            qr.attr("src")
                .await
                .unwrap()
                .unwrap()
                .starts_with("data:image/gif;base64,")
        );
        client
            .execute(
                "document.getElementById('new-device').scrollIntoView()",
                vec![],
            )
            .await
            .unwrap();
        shot("05-device-added.png").await;
        let shown = client
            .find(css("#conf-text"))
            .await
            .unwrap()
            .prop("textContent")
            .await
            .unwrap()
            .unwrap();
        link.click().await.unwrap();
        let file = downloads.path().join("laptop.conf");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !file.exists() {
            assert!(
                Instant::now() < deadline,
                "the .conf download did not arrive"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let conf = std::fs::read_to_string(&file).unwrap();
        assert_eq!(conf, shown, "the download is the config shown on the page");

        // 4. A browser without WebCrypto X25519 (simulated by making
        //    generateKey refuse X25519): the page falls back to a key pair
        //    the gateway makes once, and says so.
        client.goto(&format!("{base}/devices")).await.unwrap();
        client
            .execute(
                "const real = crypto.subtle.generateKey.bind(crypto.subtle);\
                 crypto.subtle.generateKey = (alg, ...rest) => \
                   (alg && alg.name === 'X25519') ? Promise.reject(new DOMException('unsupported', 'NotSupportedError')) : real(alg, ...rest);",
                vec![],
            )
            .await
            .unwrap();
        client.find(css("#device-name")).await.unwrap().send_keys("old-phone").await.unwrap();
        client.find(css("#add-device button")).await.unwrap().click().await.unwrap();
        let fallback_link = client.wait().for_element(css("#conf-download[download]")).await.unwrap();
        let notice = client.find(css("#gateway-keyed")).await.unwrap();
        assert!(notice.is_displayed().await.unwrap(), "the page says the gateway made the key");
        client
            .execute("document.getElementById('new-device').scrollIntoView()", vec![])
            .await
            .unwrap();
        shot("06-gateway-keyed-fallback.png").await;
        fallback_link.click().await.unwrap();
        let fallback_file = downloads.path().join("old-phone.conf");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !fallback_file.exists() {
            assert!(Instant::now() < deadline, "the fallback .conf download did not arrive");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fallback_conf = std::fs::read_to_string(&fallback_file).unwrap();

        // 5. Revoke both from the page.
        client.goto(&format!("{base}/devices")).await.unwrap();
        shot("07-devices-with-two.png").await;
        for _ in 0..2 {
            client.find(css("td form button.danger")).await.unwrap().click().await.unwrap();
            client.wait().for_url(&format!("{base}/devices").parse().unwrap()).await.unwrap();
        }
        let page = client.source().await.unwrap();
        assert!(page.contains("No devices yet."), "both revoked");
        shot("08-devices-after-revoke.png").await;
        client.close().await.unwrap();
        (conf, fallback_conf, secret, totp_qr_png, conf_qr_png)
    });
    eprintln!("screenshots in {}", shots.display());

    // The config: a split tunnel whose private key matches what was stored.
    let private_key = conf
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .expect("a PrivateKey line")
        .to_string();
    assert!(conf.contains("AllowedIPs = 10.0.3.0/24"), "{conf}");
    assert!(conf.contains("Address = 10.200.0.2/32"), "{conf}");
    let bytes: [u8; 32] = STANDARD.decode(&private_key).unwrap().try_into().unwrap();
    let public = STANDARD
        .encode(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(bytes)).as_bytes());
    let created = gatehouse_tests::portal::audit_of(&daemon, "device.create");
    assert_eq!(created.len(), 2);
    assert_eq!(
        created[0]["detail"]["public_key"],
        public.as_str(),
        "the private key belongs to the stored public key"
    );
    assert_eq!(created[0]["detail"]["key_made_by"], "client");
    assert!(
        find_in_files(&daemon.state_dir, &private_key).is_none(),
        "no private key in the state dir"
    );
    assert!(!daemon.log_text().contains(&private_key));
    // The fallback: a gateway-made pair, matching, and not kept either.
    let fallback_key = fallback_conf
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .expect("a PrivateKey line")
        .to_string();
    let bytes: [u8; 32] = STANDARD.decode(&fallback_key).unwrap().try_into().unwrap();
    let fallback_public = STANDARD
        .encode(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(bytes)).as_bytes());
    assert_eq!(created[1]["detail"]["public_key"], fallback_public.as_str());
    assert_eq!(created[1]["detail"]["key_made_by"], "gateway");
    assert!(
        find_in_files(&daemon.state_dir, &fallback_key).is_none(),
        "the gateway kept no private key"
    );
    assert!(!daemon.log_text().contains(&fallback_key));
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
    if require(
        have_tool("zbarimg"),
        "zbarimg (zbar-tools) is not installed",
    ) {
        let decode = |png: &[u8], name: &str| {
            let path = shots.join(name);
            std::fs::write(&path, png).unwrap();
            let mut cmd = Command::new("zbarimg");
            cmd.args(["--raw", "-q"]).arg(&path);
            let out = output_within(cmd, Duration::from_secs(20));
            assert!(
                out.status.success(),
                "zbarimg {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let uri = decode(&totp_qr_png, "qr-totp.png");
        assert!(
            uri.trim().starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}&")),
            "{uri}"
        );
        let decoded = decode(&conf_qr_png, "qr-device.png");
        assert_eq!(
            decoded.trim_end(),
            conf.trim_end(),
            "the device QR is the .conf"
        );
    }
    let kinds: Vec<String> = daemon
        .ctl_ok(&["--json", "audit"])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
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
