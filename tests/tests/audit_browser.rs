//! The auditor's view in a real browser (issue 26): alice reaches the
//! research host through the jump host (stock OpenSSH, a [`Topology`]),
//! then carol, a member of the auditor group `auditors` (which reaches no
//! subnet), signs in with headless Chromium in the client's namespace,
//! follows the link from her devices page, filters by host, sees alice,
//! follows her to the hosts she reached, and downloads the CSV, whose bytes
//! are `accessctl audit export --format csv` with the same filter. bob, a
//! member who is not an auditor, gets 403. Each view is in the audit log
//! as `audit.view`. Screenshots go to `<target dir>/test-artifacts/audit/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use gatehouse_tests::aws::in_netns;
use gatehouse_tests::browser::{self, Browser};
use gatehouse_tests::netns::{Host, Topology};
use gatehouse_tests::ssh::{SshLab, wait_audit};
use serde_json::{Value, json};

const RESEARCH: &str = "10.0.3.140";
const STEP: Duration = Duration::from_secs(20);

#[test]
fn an_auditor_filters_by_host_sees_the_user_and_downloads_what_the_cli_exports() {
    if !browser::available() {
        return;
    }
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    let gw_addr = topo.addr(Host::Gateway).to_string();
    let portal = format!("https://{gw_addr}:8443");
    let config = lab.broker_config("").replacen(
        "[portal]\nlisten = \"127.0.0.1:8443\"\n",
        &format!("[portal]\nlisten = \"{gw_addr}:8443\"\nauditor_groups = [\"auditors\"]\n"),
        1,
    ) + "\n[[group]]\nname = \"auditors\"\n";
    assert!(
        config.contains("auditor_groups"),
        "gateway_config changed shape"
    );
    let gw = lab.start_broker(&config);

    // alice reaches the research host through the jump host.
    let alice = lab.identity("alice");
    let key = alice.public_key_file.to_str().unwrap();
    gw.ctl_ok(&[
        "user",
        "add",
        "alice",
        "--group",
        "research",
        "--ssh-key",
        key,
    ]);
    gw.ctl_ok(&["user", "enable", "alice"]);
    let run = lab.ssh(
        Host::Client,
        &alice,
        &[
            "-J",
            &lab.jump("alice"),
            &format!("root@{RESEARCH}"),
            "head -c 200000 /dev/zero",
        ],
        Duration::from_secs(30),
    );
    assert!(run.success(), "{run}\n{}", gw.log_tail(30));
    wait_audit(&gw, "ssh.session.end", STEP, |r| r["actor"] == "alice")
        .unwrap_or_else(|seen| panic!("no ssh.session.end: {seen:?}"));
    // ... and is refused a host outside her groups: a refusal to mark.
    let refused = lab.ssh(
        Host::Client,
        &alice,
        &["-J", &lab.jump("alice"), "root@10.0.4.10", "true"],
        Duration::from_secs(15),
    );
    assert!(!refused.success(), "{refused}");
    wait_audit(&gw, "ssh.forward.deny", STEP, |r| r["actor"] == "alice")
        .unwrap_or_else(|seen| panic!("no ssh.forward.deny: {seen:?}"));

    let token = |user: &str, group: &str| {
        gw.ctl_json(&["user", "add", user, "--group", group])["enrollment"]["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (carol, bob) = (token("carol", "auditors"), token("bob", "research"));
    let shown = gw.ctl_json(&["user", "show", "carol"]);
    assert_eq!(shown["groups"], json!(["auditors"]), "{shown}");

    let (csv, forbidden, shots) = in_netns(topo.ns(Host::Client), || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let browser = Browser::start(&portal, "audit").await;
            // carol signs in; her devices page links to the auditor's view.
            browser.enroll(&carol, "carol").await;
            browser.client.set_window_size(1280, 1000).await.unwrap();
            browser.goto("/devices").await;
            browser.shot("carol-devices").await;
            browser.click("#auditor a").await;
            browser.wait_for_page("/audit").await;
            browser.find("#chain").await;
            browser.shot("timeline").await;
            // The hour of alice's refusal is marked.
            let marked = browser.find("#hours tr.alert strong.refused").await;
            assert_eq!(marked.text().await.unwrap(), "1");
            browser
                .client
                .execute("document.querySelector('#hours').scrollIntoView()", vec![])
                .await
                .unwrap();
            browser.shot("timeline-hours").await;

            // The per-host table, filtered to the research host: alice.
            browser.goto("/audit/hosts").await;
            browser.fill("#f-host", RESEARCH).await;
            submit_get(&browser, "#filter button[type=submit]", "/audit/hosts", "host=10.0.3.140").await;
            let user = browser.find("#uses a.user").await;
            assert_eq!(user.text().await.unwrap(), "alice");
            let table = browser.find("#uses").await.text().await.unwrap();
            assert!(table.contains(RESEARCH) && table.contains("ssh"), "{table}");
            browser.shot("hosts-filtered").await;

            // alice's own hosts, from her name.
            user.click().await.unwrap();
            wait_path(&browser, "/audit/users", "user=alice").await;
            let host = browser.find("#uses a.host").await.text().await.unwrap();
            assert_eq!(host, RESEARCH);
            browser.shot("alice-hosts").await;

            // The CSV of the host filter.
            browser.goto("/audit/hosts?host=10.0.3.140").await;
            browser.click("#csv-download").await;
            let file = browser.downloads.path().join("gatehouse-audit.csv");
            let deadline = Instant::now() + STEP;
            while !file.exists() {
                assert!(Instant::now() < deadline, "no CSV download");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let csv = std::fs::read_to_string(&file).unwrap();

            // bob, no auditor: 403, and the page says why.
            browser.logout().await;
            browser.enroll(&bob, "bob").await;
            browser.goto("/audit").await;
            let said = browser.find("#forbidden").await.text().await.unwrap();
            assert!(said.contains("auditor group"), "{said}");
            browser.shot("bob-forbidden").await;
            let forbidden = browser
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1];\
                     fetch('/audit/export.csv', {redirect: 'manual'}).then(r => done(r.status), e => done(String(e)));",
                    vec![],
                )
                .await
                .unwrap();
            let shots = browser.shots.clone();
            browser.close().await;
            (csv, forbidden, shots)
        })
    });
    eprintln!("screenshots in {}", shots.display());
    assert_eq!(forbidden, json!(403));

    // The download is what the CLI exports with the same filter.
    let exported = gw.ctl_ok(&["audit", "export", "--format", "csv", "--host", RESEARCH]);
    assert_eq!(csv, exported, "the portal's CSV and accessctl's differ");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("seq,time,kind,"), "{}", lines[0]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(",ssh.session.end,alice,") && l.contains(RESEARCH)),
        "{csv}"
    );

    // Every look is in the audit log: carol's, with page and filter; not bob's.
    let views = gw.audit_of("audit.view");
    let by = |page: &str, filter: Value| {
        views.iter().any(|v| {
            v["actor"] == "carol" && v["detail"]["page"] == page && v["detail"]["filter"] == filter
        })
    };
    assert!(by("hosts", json!({"host": RESEARCH})), "{views:#?}");
    assert!(by("users", json!({"user": "alice"})), "{views:#?}");
    assert!(by("csv", json!({"host": RESEARCH})), "{views:#?}");
    assert!(views.iter().any(|v| v["detail"]["page"] == "timeline"));
    assert!(views.iter().all(|v| v["actor"] == "carol"), "{views:#?}");
    let client = topo.addr(Host::Client).to_string();
    assert!(
        views.iter().all(|v| v["source"] == client.as_str()),
        "{views:#?}"
    );
}

/// Clicks `css`, a GET form's button, and waits (bounded) until the answer
/// replaced the page at `path` with `query_part` in its query.
async fn submit_get(browser: &Browser, css: &str, path: &str, query_part: &str) {
    let button = browser.find(css).await;
    button.click().await.unwrap();
    let deadline = Instant::now() + STEP;
    while button.is_displayed().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "clicking {css} did not leave the page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_path(browser, path, query_part).await;
}

/// Waits (bounded) until the browser is at `path` with `query_part` in
/// the query.
async fn wait_path(browser: &Browser, path: &str, query_part: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let url = browser.client.current_url().await.unwrap();
        if url.path() == path && url.query().unwrap_or_default().contains(query_part) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not at {path}?…{query_part}… but {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
