//! Harness for the portal's real-browser tests: Debian's Chromium, headless,
//! driven over WebDriver (chromedriver on a loopback port picked here)
//! through a member's pages: the enrollment link, logout and login, adding a
//! device with a key pair the page makes (WebCrypto X25519), downloading its
//! config. Each step leaves a numbered screenshot under
//! `<target dir>/test-artifacts/<name>/`.
//!
//! chromedriver, and the Chromium it starts, live in the network namespace
//! of the thread that calls [`Browser::start`]: against a gateway in a
//! namespace (the AWS lab), start and drive the browser inside
//! [`crate::aws::in_netns`].
//!
//! ```no_run
//! # async fn journey(base: &str, token: &str) {
//! use gatehouse_tests::browser::Browser;
//! let browser = Browser::start(base, "portal").await;
//! let (_account, _totp_qr) = browser.enroll(token, "alice").await;
//! let added = browser.add_device("laptop").await;
//! let conf = browser.download(&added).await;
//! browser.close().await;
//! # }
//! ```

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tempfile::TempDir;

use crate::portal::{Account, PASSWORD};
use crate::ports::free_port;
use crate::{have_tool, output_within, require};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page may take to answer a step (a WebDriver wait, a download).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// True when Chromium and chromedriver are installed; otherwise skips
/// (printing why) or, with `GATEHOUSE_E2E=1`, fails.
pub fn available() -> bool {
    require(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "Debian's chromium and chromium-driver are not installed (tests/run.sh installs them as root)",
    )
}

/// True when zbarimg is installed to decode the QR codes Chromium renders;
/// otherwise skips that check (printing why) or fails, as [`available`].
pub fn can_decode_qr() -> bool {
    require(
        have_tool("zbarimg"),
        "zbarimg (zbar-tools) is not installed",
    )
}

/// Decodes a QR code Chromium rendered (PNG) with zbarimg, keeping the
/// image in `dir` (the screenshots' folder) as `name`.
pub fn decode_qr(dir: &Path, png: &[u8], name: &str) -> String {
    let path = dir.join(name);
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
}

/// A headless Chromium session on the portal at `base`.
pub struct Browser {
    pub client: Client,
    /// `https://127.0.0.1:PORT`: the portal as the browser reaches it.
    pub base: String,
    /// Where Chromium saves downloads.
    pub downloads: TempDir,
    /// Where the screenshots go.
    pub shots: PathBuf,
    taken: AtomicUsize,
    // Last: killed after the client is dropped.
    _driver: Driver,
}

/// A device the page just added, as it shows it.
pub struct NewDevice {
    pub name: String,
    /// The wg-quick file in the page's text box.
    pub shown: String,
    /// The page says the gateway made the key pair (no X25519 here).
    pub gateway_keyed: bool,
    /// The config's QR code, as Chromium rendered it (PNG).
    pub qr_png: Vec<u8>,
    link: Element,
}

impl Browser {
    /// Starts chromedriver and a Chromium session that trusts the portal's
    /// self-signed certificate; screenshots go to `test-artifacts/<artifacts>/`.
    pub async fn start(base: &str, artifacts: &str) -> Browser {
        let port = free_port();
        let driver = Driver::start(port);
        let downloads = tempfile::tempdir().unwrap();
        let shots = artifacts_dir(artifacts);
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
        Browser {
            client,
            base: base.to_string(),
            downloads,
            shots,
            taken: AtomicUsize::new(0),
            _driver: driver,
        }
    }

    /// Saves a screenshot of the page as `NN-<name>.png`, numbered in the
    /// order taken.
    pub async fn shot(&self, name: &str) {
        let n = self.taken.fetch_add(1, Ordering::SeqCst) + 1;
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{n:02}-{name}.png")), png).unwrap();
    }

    pub async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!("{css} on {}: {e}", self.url_now().await),
        }
    }

    /// Types `text` into the field `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Opens `path` of the portal. Chromium abandons a load with
    /// ERR_NETWORK_CHANGED (its error page, `chrome-error://`) when an
    /// interface in its namespace changes meanwhile, as when the test
    /// topology's links come up; such a load is tried again, 3 times at most.
    pub async fn goto(&self, path: &str) {
        for _ in 0..3 {
            self.client.goto(&self.url(path)).await.unwrap();
            if !self.url_now().await.starts_with("chrome-error:") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("Chromium could not load {path} in 3 tries");
    }

    /// Waits (bounded) until the browser is at `path` of the portal.
    pub async fn wait_for_page(&self, path: &str) {
        let want = self.url(path).parse().unwrap();
        if let Err(e) = self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_url(&want)
            .await
        {
            panic!("not at {want} but {}: {e}", self.url_now().await);
        }
    }

    /// Clicks `css`, a button that submits a form, and waits (bounded)
    /// until the answer has replaced the page and the browser is at `path`
    /// (which may be where it was already).
    pub async fn submit(&self, css: &str, path: &str) {
        let button = self.find(css).await;
        button.click().await.unwrap();
        let deadline = Instant::now() + STEP_TIMEOUT;
        // The old page's button goes stale once the answer replaced the page.
        while button.is_displayed().await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "clicking {css} did not leave {}",
                self.url_now().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_for_page(path).await;
    }

    /// Clicks the login page's "Sign in with ..." button and signs in at the
    /// identity provider (`tests/oidc/provider.mjs`: its own login page,
    /// then its consent page) as `account`; lands on the devices page,
    /// logged in. A screenshot of each page.
    pub async fn sso_login(&self, account: &str) {
        self.goto("/login").await;
        self.shot("login-with-sso").await;
        self.click("#sso").await;
        let login = self.wait_css("input[name=login]").await;
        self.shot("provider-login").await;
        login.send_keys(account).await.unwrap();
        self.fill("input[name=password]", "any").await;
        self.click("button[type=submit]").await;
        self.wait_css("button[autofocus][type=submit]").await;
        self.shot("provider-consent").await;
        self.click("button[autofocus][type=submit]").await;
        self.wait_for_page("/devices").await;
        self.shot("devices-after-sso").await;
    }

    /// Waits (bounded) for an element matching `css` on whatever page is
    /// open.
    async fn wait_css(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(found) => found,
            Err(e) => panic!("no {css} at {}: {e}", self.url_now().await),
        }
    }

    /// Opens the enrollment link of `token`, sets [`PASSWORD`], enrolls the
    /// authenticator with a code computed here, and lands on the devices
    /// page, logged in. Returns the account and the TOTP QR code as Chromium
    /// rendered it (PNG).
    pub async fn enroll(&self, token: &str, user: &str) -> (Account, Vec<u8>) {
        self.goto(&format!("/enroll/{token}")).await;
        self.shot("enroll").await;
        let secret = self.find("#totp-secret").await.text().await.unwrap();
        let qr = self.find("img.qr").await;
        self.scroll_to("img.qr").await;
        let totp_qr_png = qr.screenshot().await.unwrap();
        self.client
            .execute("window.scrollTo(0, 0)", vec![])
            .await
            .unwrap();
        let src = qr.attr("src").await.unwrap().unwrap_or_default();
        assert!(src.starts_with("data:image/svg+xml;base64,"), "{src}");
        let mut account = Account::new(user, &secret);
        self.fill("#password", PASSWORD).await;
        self.fill("#password_confirm", PASSWORD).await;
        self.fill("#totp_code", &account.next_code()).await;
        self.submit("form button[type=submit]", "/devices").await;
        self.shot("devices-after-enrollment").await;
        (account, totp_qr_png)
    }

    /// Logs out from the header's button and lands on the login page.
    pub async fn logout(&self) {
        self.submit("header form button", "/login").await;
        self.shot("login").await;
    }

    /// Logs in on the login page with name, password and a fresh code.
    pub async fn login(&self, account: &mut Account) {
        self.fill("#user", &account.user).await;
        self.fill("#password", &account.password).await;
        self.fill("#totp_code", &account.next_code()).await;
        self.submit("main form button[type=submit]", "/devices")
            .await;
        self.shot("devices").await;
    }

    /// Adds device `name` on the devices page and returns what the page
    /// shows: its config (text and QR code) and download link.
    pub async fn add_device(&self, name: &str) -> NewDevice {
        self.submit_device(name).await;
        let link = match self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(Locator::Css("#conf-download[download]"))
            .await
        {
            Ok(link) => link,
            Err(e) => panic!(
                "no config for {name}; the page says {:?}: {e}",
                self.add_status().await
            ),
        };
        let gateway_keyed = self
            .find("#gateway-keyed")
            .await
            .is_displayed()
            .await
            .unwrap();
        let qr = self.find("#conf-qr").await;
        let qr_png = qr.screenshot().await.unwrap();
        let src = qr.attr("src").await.unwrap().unwrap_or_default();
        assert!(src.starts_with("data:image/gif;base64,"), "{src}");
        self.scroll_to("#new-device").await;
        self.shot(if gateway_keyed {
            "gateway-keyed-fallback"
        } else {
            "device-added"
        })
        .await;
        let shown = self
            .find("#conf-text")
            .await
            .prop("textContent")
            .await
            .unwrap()
            .unwrap_or_default();
        NewDevice {
            name: name.to_string(),
            shown,
            gateway_keyed,
            qr_png,
            link,
        }
    }

    /// Opens "Show the config text" of the device just added and returns
    /// the text as the page renders it.
    pub async fn open_config_text(&self) -> String {
        self.click("#new-device details summary").await;
        let text = self.find("#conf-text").await;
        self.scroll_to("#conf-text").await;
        self.shot("config-text").await;
        text.text().await.unwrap()
    }

    /// Tries to add device `name` and expects the gateway to refuse: returns
    /// the message the page shows instead of a config.
    pub async fn add_device_refused(&self, name: &str) -> String {
        self.submit_device(name).await;
        let deadline = Instant::now() + STEP_TIMEOUT;
        // The page says what it is doing ("…") until the gateway answers.
        let message = loop {
            let status = self.add_status().await;
            if !status.is_empty() && !status.ends_with('…') {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not answer adding {name}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            !self.find("#new-device").await.is_displayed().await.unwrap(),
            "a refused device shows no config: {message}"
        );
        self.scroll_to("#add-device").await;
        self.shot("device-refused").await;
        message
    }

    /// Clicks the new device's download link; returns the saved file's text,
    /// which must be the config the page shows.
    pub async fn download(&self, device: &NewDevice) -> String {
        device.link.click().await.unwrap();
        let file = self.downloads.path().join(format!("{}.conf", device.name));
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !file.exists() {
            assert!(
                Instant::now() < deadline,
                "the download of {} did not arrive",
                file.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let conf = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            conf, device.shown,
            "the download is the config shown on the page"
        );
        conf
    }

    /// Ends the WebDriver session (Chromium exits).
    pub async fn close(self) {
        let Browser { client, .. } = self;
        client.close().await.unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn url_now(&self) -> String {
        self.client
            .current_url()
            .await
            .map_or_else(|e| format!("<{e}>"), |u| u.to_string())
    }

    /// Scrolls the element `css` into view (for screenshots of it).
    async fn scroll_to(&self, css: &str) {
        self.client
            .execute(
                "document.querySelector(arguments[0]).scrollIntoView()",
                vec![json!(css)],
            )
            .await
            .unwrap();
    }

    async fn add_status(&self) -> String {
        self.find("#add-status").await.text().await.unwrap()
    }

    async fn submit_device(&self, name: &str) {
        self.fill("#device-name", name).await;
        self.click("#add-device button").await;
    }
}

/// chromedriver in a process group of its own, with the Chromium it
/// started: the whole group is killed on drop, so a failed test leaves no
/// browser behind.
struct Driver(Child);

impl Driver {
    fn start(port: u16) -> Driver {
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver(child);
        let deadline = Instant::now() + STEP_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.wait();
    }
}

/// `<target dir>/test-artifacts/<name>/`, next to the binaries.
fn artifacts_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
