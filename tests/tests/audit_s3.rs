//! Issue 25, end to end with the real binaries: accessd exports its audit
//! log to moto's S3 with Object Lock, through a kill -9 in the middle of an
//! export and an S3 outage; `accessctl audit verify --anchored` catches a
//! rewrite made with the gateway's own keys; DuckDB answers a question
//! from the exported objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use accessd::audit::chain::{self, Head};
use accessd::audit::checkpoint::{CheckpointDetail, Signer};
use accessd::audit::mirror;
use accessd::keys::audit::AuditKeys;
use accessd::keys::secrets::SecretsKey;
use gatehouse_config::api::AuditRecord;
use gatehouse_tests::aws::AwsLab;
use gatehouse_tests::{Daemon, stderr, stdout};
use serde_json::Value;

const BUCKET: &str = "team-audit";
const PREFIX: &str = "evidence";
/// `gateway.name` of [`AwsLab::config`].
const GATEWAY: &str = "gh-aws";

/// The lab's config with checkpoints every second and `[audit.s3]`.
fn config(lab: &AwsLab) -> String {
    format!(
        "{}\n[audit]\ncheckpoint_interval = \"1s\"\n\n[audit.s3]\nbucket = \"{BUCKET}\"\nprefix = \"{PREFIX}\"\nretention = \"1d\"\n",
        lab.config("")
    )
}

fn create_bucket(lab: &AwsLab) {
    lab.python(&format!(
        "s3 = boto3.client('s3', **kw)\n\
         s3.create_bucket(Bucket='{BUCKET}', ObjectLockEnabledForBucket=True,\n\
             CreateBucketConfiguration={{'LocationConstraint': kw['region_name']}})\n\
         out = True\n"
    ));
}

/// Every object under the gateway's prefix: its versions, lock, and the
/// first version's records (what the export wrote).
fn objects(lab: &AwsLab) -> Vec<Value> {
    let listed = lab.python(&format!(
        "import gzip\n\
         s3 = boto3.client('s3', **kw)\n\
         versions = s3.list_object_versions(Bucket='{BUCKET}', Prefix='{PREFIX}/{GATEWAY}/').get('Versions', [])\n\
         keys = sorted(set(v['Key'] for v in versions))\n\
         out = []\n\
         for key in keys:\n\
         \x20   mine = [v for v in versions if v['Key'] == key]\n\
         \x20   first = mine[-1]['VersionId']\n\
         \x20   head = s3.head_object(Bucket='{BUCKET}', Key=key, VersionId=first)\n\
         \x20   body = s3.get_object(Bucket='{BUCKET}', Key=key, VersionId=first)['Body'].read()\n\
         \x20   lines = gzip.decompress(body).decode().splitlines()\n\
         \x20   out.append(dict(key=key, versions=len(mine), version=first, size=len(body),\n\
         \x20       mode=head.get('ObjectLockMode'), until=head['ObjectLockRetainUntilDate'].timestamp(),\n\
         \x20       records=[json.loads(l) for l in lines]))\n"
    ));
    listed.as_array().unwrap().clone()
}

fn status(gw: &Daemon) -> Value {
    gw.ctl_json(&["audit", "status"])
}

fn s3_lag(gw: &Daemon) -> u64 {
    status(gw)["exporters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "s3")
        .map(|e| e["lag"].as_u64().unwrap())
        .expect("the s3 exporter is listed")
}

/// Waits until every record is exported (the last one is a checkpoint,
/// and the cursor is on it).
fn wait_exported(gw: &Daemon, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let lag = s3_lag(gw);
        if lag == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the export is still {lag} records behind:\n{}\n{}",
            serde_json::to_string_pretty(&status(gw)).unwrap(),
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn add_users(gw: &Daemon, from: usize, n: usize) {
    for i in from..from + n {
        gw.ctl_ok(&["user", "add", &format!("u{i}"), "--group", "research"]);
    }
}

/// The seq range a name carries: `.../<first>-<last>.jsonl.gz`.
fn range_of(key: &str) -> (u64, u64) {
    let file = key.rsplit('/').next().unwrap();
    let (first, last) = file.trim_end_matches(".jsonl.gz").split_once('-').unwrap();
    (first.parse().unwrap(), last.parse().unwrap())
}

/// Anchored under Object Lock; a kill -9 while a PutObject is in flight
/// (it lands after accessd died) and an S3 outage lose nothing and write
/// nothing twice; moto refuses to delete a locked object.
#[test]
fn the_log_is_anchored_once_in_locked_objects_through_a_kill_and_an_outage() {
    let Some(lab) = AwsLab::create() else { return };
    create_bucket(&lab);
    let mut gw = lab.start_gateway(&config(&lab));
    add_users(&gw, 0, 5);
    wait_exported(&gw, Duration::from_secs(30));

    // kill -9 in the middle of an export: the PUT is held in the proxy,
    // accessd dies, then the PUT reaches S3. The cursor never moved.
    lab.proxy.hold("s3:PutObject");
    add_users(&gw, 5, 3);
    assert!(
        lab.proxy.wait_holding(Duration::from_secs(20)),
        "no export started"
    );
    gw.kill9();
    lab.proxy.release();
    gw.spawn();
    add_users(&gw, 8, 2);
    wait_exported(&gw, Duration::from_secs(30));
    assert!(
        gw.log_text().contains("already in S3"),
        "the retried object was refused as existing:\n{}",
        gw.log_tail(40)
    );

    // S3 out of reach: the records wait, the lag shows, then they flow.
    lab.proxy.deny("s3:PutObject");
    add_users(&gw, 10, 5);
    std::thread::sleep(Duration::from_secs(3));
    let lag = s3_lag(&gw);
    assert!(lag >= 5, "lag {lag} while S3 refuses");
    let text = gw.ctl_ok(&["audit", "status"]);
    assert!(
        text.contains("export s3: through record") && text.contains(&format!("{lag} behind")),
        "{text}"
    );
    lab.proxy.allow_all();
    wait_exported(&gw, Duration::from_secs(60));

    // What S3 holds: every record exactly once, in order, each object
    // written once, locked in compliance mode, ending at a checkpoint.
    let objects = objects(&lab);
    let log = gw.audit_json(&[]);
    let mut next = 1;
    let mut anchored: Vec<Value> = Vec::new();
    let tomorrow_less_an_hour = SystemTime::now() + Duration::from_secs(23 * 3600);
    for object in &objects {
        let key = object["key"].as_str().unwrap();
        assert!(key.starts_with(&format!("{PREFIX}/{GATEWAY}/dt=")), "{key}");
        assert_eq!(object["versions"], 1, "{key} was written twice");
        assert_eq!(object["mode"], "COMPLIANCE", "{key}");
        let until = UNIX_EPOCH + Duration::from_secs_f64(object["until"].as_f64().unwrap());
        assert!(
            until > tomorrow_less_an_hour,
            "{key} locked until {until:?}"
        );
        let (first, last) = range_of(key);
        assert_eq!(first, next, "objects are contiguous: {key}");
        let records = object["records"].as_array().unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "{key}");
        assert_eq!(
            records.last().unwrap()["kind"],
            "audit.checkpoint",
            "{key} ends at a checkpoint"
        );
        anchored.extend(records.iter().cloned());
        next = last + 1;
    }
    assert!(objects.len() >= 4, "{} objects", objects.len());
    assert_eq!(anchored, log[..anchored.len()], "the objects hold the log");
    assert_eq!(anchored.len(), log.len(), "everything is anchored");

    // Nobody deletes a locked object before its retention ends: moto
    // refuses, as S3 does.
    let refused = lab.python(&format!(
        "s3 = boto3.client('s3', **kw)\n\
         try:\n\
         \x20   s3.delete_object(Bucket='{BUCKET}', Key='{key}', VersionId='{version}')\n\
         \x20   out = 'deleted'\n\
         except Exception as e:\n\
         \x20   out = e.response['Error']['Code']\n",
        key = objects[0]["key"].as_str().unwrap(),
        version = objects[0]["version"].as_str().unwrap(),
    ));
    assert_eq!(refused, "AccessDenied");
    eprintln!(
        "exported {} records in {} objects ({} bytes)",
        anchored.len(),
        objects.len(),
        objects
            .iter()
            .map(|o| o["size"].as_u64().unwrap())
            .sum::<u64>()
    );
}

/// Someone with root and the gateway's keys rewrites an exported record,
/// re-chains and re-signs everything after it and moves the head: the log
/// verifies on its own, and `verify --anchored` names the record.
#[test]
fn a_rewrite_with_the_keys_after_anchoring_is_caught_by_the_anchored_copy() {
    let Some(lab) = AwsLab::create() else { return };
    create_bucket(&lab);
    let mut gw = lab.start_gateway(&config(&lab));
    add_users(&gw, 0, 6);
    wait_exported(&gw, Duration::from_secs(30));
    // Someone with plain PutObject on the bucket (not the gateway's role)
    // puts a later version over the first object: the fetch takes the
    // first version, and says so.
    lab.python(&format!(
        "s3 = boto3.client('s3', **kw)\n\
         key = sorted(o['Key'] for o in s3.list_objects_v2(Bucket='{BUCKET}', Prefix='{PREFIX}/')['Contents'])[0]\n\
         s3.put_object(Bucket='{BUCKET}', Key=key, Body=b'not the export')\n\
         out = key\n"
    ));
    let dir = gw.dir.path().join("anchored");
    let warned = download(&lab, &dir);
    assert!(
        warned.contains("has 2 versions; using the first"),
        "{warned}"
    );
    let ok = gw.ctl(&["audit", "verify", "--anchored", dir.to_str().unwrap()]);
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert!(
        stdout(&ok).contains("matches its anchored copy through record"),
        "{}",
        stdout(&ok)
    );

    gw.stop();
    let victim = rewrite_with_the_keys(&gw, "u3");
    gw.spawn();
    let local = gw.ctl(&["audit", "verify"]);
    assert!(
        local.status.success(),
        "the rewrite verifies locally: {}{}",
        stdout(&local),
        stderr(&local)
    );
    let caught = gw.ctl(&["audit", "verify", "--anchored", dir.to_str().unwrap()]);
    assert_eq!(
        caught.status.code(),
        Some(1),
        "{}{}",
        stdout(&caught),
        stderr(&caught)
    );
    let said = format!("{}{}", stdout(&caught), stderr(&caught));
    assert!(
        said.contains(&format!("record {victim}")) && said.contains("rewritten"),
        "{said}"
    );
}

/// Writes the first version of every exported object under `dir`, with
/// the script the docs give admins (packaging/fetch-anchored.py), run on
/// boto3 from the moto venv.
fn download(lab: &AwsLab, dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/fetch-anchored.py");
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns])
        .arg(gatehouse_tests::aws::moto_venv().join("bin/python"))
        .arg(script)
        .args(["--endpoint", "http://127.0.0.1:5000", "--region"])
        .arg(gatehouse_tests::aws::REGION)
        .args(["--bucket", BUCKET, "--prefix", PREFIX, "--gateway", GATEWAY])
        .arg(dir)
        .envs(gatehouse_tests::aws::aws_env());
    let out = gatehouse_tests::output_within(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    stderr(&out)
}

/// A record written behind the gateway's back (a correct plain SHA-256,
/// appended in the database) is never exported: the exporter verifies
/// what it anchors, stops there and says why.
#[test]
fn records_that_do_not_verify_are_not_exported() {
    let Some(lab) = AwsLab::create() else { return };
    create_bucket(&lab);
    let mut gw = lab.start_gateway(&config(&lab));
    add_users(&gw, 0, 2);
    wait_exported(&gw, Duration::from_secs(30));
    let exported = objects(&lab).len();
    gw.stop();
    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    let (seq, hash): (u64, String) = db
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let forged = chain::seal(AuditRecord {
        seq: seq + 1,
        time: "2026-12-05T00:00:00.000Z".into(),
        kind: "user.remove".into(),
        actor: "uid:0".into(),
        source: "local".into(),
        target: "u0".into(),
        detail: serde_json::json!({}),
        prev_hash: hash,
        hash: String::new(),
    })
    .unwrap();
    db.execute(
        "INSERT INTO audit_log (seq, time, time_unix, kind, actor, source, target, detail, prev_hash, hash) \
         VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, '{}', ?7, ?8)",
        rusqlite::params![
            forged.seq,
            forged.time,
            forged.kind,
            forged.actor,
            forged.source,
            forged.target,
            forged.prev_hash,
            forged.hash
        ],
    )
    .unwrap();
    drop(db);
    gw.spawn();
    add_users(&gw, 2, 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.log_text().contains("do not verify") {
        assert!(Instant::now() < deadline, "{}", gw.log_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(objects(&lab).len(), exported, "nothing more was anchored");
    assert!(s3_lag(&gw) >= 4, "the lag shows it");
}

/// As an attacker with root: changes the target of the `user.add` of
/// `user`, then re-seals, re-chains and re-signs every record from it on
/// with the keys derived from the gateway's secrets key, and moves the
/// head file. Returns the rewritten record's seq.
fn rewrite_with_the_keys(gw: &Daemon, user: &str) -> u64 {
    let secrets = SecretsKey::load_local(&gw.state_dir).unwrap().unwrap();
    let keys = AuditKeys::derive(&secrets);
    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    db.execute_batch(
        "DROP TRIGGER audit_log_immutable_update; DROP TRIGGER audit_log_immutable_delete;",
    )
    .unwrap();
    // Read as accessd reads them; then rewritten behind its back.
    let mut records: Vec<AuditRecord> = open_store(gw)
        .read_blocking(|r| r.audit_records(&accessd::store::AuditFilter::default()))
        .unwrap();
    let at = records
        .iter()
        .position(|r| r.kind == "user.add" && r.target == user)
        .unwrap();
    records[at].target = "mallory".into();
    for i in at..records.len() {
        if i > 0 {
            records[i].prev_hash = records[i - 1].hash.clone();
        }
        if records[i].kind == "audit.checkpoint" {
            let old: CheckpointDetail = serde_json::from_value(records[i].detail.clone()).unwrap();
            let signer = Signer {
                gateway: old.gateway,
                node: old.node,
            };
            let signed = signer
                .checkpoint(records[i].seq - 1, &records[i].prev_hash, &old.time)
                .sign(&keys)
                .unwrap();
            records[i].detail = serde_json::to_value(signed).unwrap();
        }
        records[i] = chain::seal_keyed(records[i].clone(), &keys).unwrap();
        let r = &records[i];
        db.execute(
            "UPDATE audit_log SET target = ?1, detail = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?5",
            rusqlite::params![
                r.target,
                serde_json::to_string(&r.detail).unwrap(),
                r.prev_hash,
                r.hash,
                r.seq
            ],
        )
        .unwrap();
    }
    drop(db);
    let head = Head::of(records.last().unwrap());
    mirror::write_head(&gw.state_dir.join(mirror::HEAD_FILE), &head).unwrap();
    records[at].seq
}

/// DuckDB (PyPI, httpfs loaded by file path) answers "which users reached
/// 10.0.3.140 today" from the objects accessd exported to moto's S3. The
/// sessions are written through accessd's store while it is stopped (as
/// its jump host writes them), then exported by accessd itself.
#[test]
fn duckdb_answers_who_reached_a_host_from_the_exported_objects() {
    let venv = std::env::var_os("GATEHOUSE_DUCKDB_VENV").map_or_else(
        || std::path::PathBuf::from("/var/tmp/gatehouse-duckdb-venv"),
        std::path::PathBuf::from,
    );
    if !gatehouse_tests::require(
        venv.join("bin/python").exists(),
        &format!(
            "the DuckDB query test needs duckdb in {} (tests/run.sh installs it)",
            venv.display()
        ),
    ) {
        return;
    }
    let Some(lab) = AwsLab::create() else { return };
    create_bucket(&lab);
    let mut gw = lab.start_gateway(&config(&lab));
    gw.stop();
    write_sessions(
        &gw,
        &[
            ("alice", "10.0.3.140:22"),
            ("bob", "10.0.3.14:22"),
            ("carol", "10.0.3.140:2222"),
            ("dave", "10.0.3.141:22"),
            ("alice", "10.0.3.140:22"),
        ],
    );
    gw.spawn();
    wait_exported(&gw, Duration::from_secs(30));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("audit_s3/query_audit.py");
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns])
        .arg(venv.join("bin/python"))
        .arg(script)
        .args(["--endpoint", "http://127.0.0.1:5000", "--region"])
        .arg(gatehouse_tests::aws::REGION)
        .args(["--bucket", BUCKET, "--prefix", PREFIX, "--gateway", GATEWAY])
        .args(["reached", "--host", "10.0.3.140"])
        .envs(gatehouse_tests::aws::aws_env());
    let out = gatehouse_tests::output_within(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let users: Vec<(&str, u64)> = answer["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), u["records"].as_u64().unwrap()))
        .collect();
    assert_eq!(users, [("alice", 2), ("carol", 1)], "{answer}");
}

/// Writes an `ssh.session.start` per `(user, resolved)` into the stopped
/// gateway's store, as the jump host writes them, and a checkpoint.
fn write_sessions(gw: &Daemon, sessions: &[(&str, &str)]) {
    use accessd::audit::event::{Actor, Kind, Source, event};
    let store = open_store(gw);
    store
        .write_blocking(|w| {
            for (n, (user, resolved)) in sessions.iter().enumerate() {
                let peer: std::net::SocketAddr =
                    format!("10.200.0.{}:40000", n + 2).parse().unwrap();
                w.audit(
                    event(
                        Kind::SshSessionStart,
                        Actor::User((*user).into()),
                        Source::Peer(peer),
                    )
                    .on(*resolved)
                    .detail(serde_json::json!({
                        "channel": n,
                        "key_fingerprint": "SHA256:uV5cI0c3zG8Ub6QGd9ux4KkPjyKGJ6b0wOQmmE3QnNk",
                        "requested": resolved,
                        "resolved": resolved,
                    })),
                )?;
            }
            w.audit_checkpoint(SystemTime::now())?;
            Ok(())
        })
        .unwrap();
}

/// The stopped gateway's store, opened as accessd opens it.
fn open_store(gw: &Daemon) -> accessd::store::Store {
    use accessd::store::{Store, StoreOptions};
    let secrets = SecretsKey::load_local(&gw.state_dir).unwrap().unwrap();
    Store::open(&StoreOptions {
        state_dir: gw.state_dir.clone(),
        audit_mirror: gw.state_dir.join(gatehouse_config::file::AUDIT_MIRROR_FILE),
        mirror_rotation: Default::default(),
        postgres: None,
        secrets: std::sync::Arc::new(secrets),
        signer: Signer {
            gateway: GATEWAY.into(),
            node: GATEWAY.into(),
        },
    })
    .unwrap()
}

/// Writes `n` records (as a busy jump host would: session starts and ends)
/// into the stopped gateway's store, with a signed checkpoint every 1,000,
/// as the checkpointer would.
fn preload(gw: &Daemon, n: usize) {
    use accessd::audit::event::{Actor, Kind, Source, event};
    let store = open_store(gw);
    for batch in 0..n.div_ceil(1000) {
        store
            .write_blocking(|w| {
                for i in 0..1000.min(n - batch * 1000) {
                    let n = batch * 1000 + i;
                    let peer: std::net::SocketAddr =
                        format!("10.200.0.{}:{}", 2 + n % 200, 40000 + n % 20000)
                            .parse()
                            .unwrap();
                    let kind = if n % 2 == 0 {
                        Kind::SshSessionStart
                    } else {
                        Kind::SshSessionEnd
                    };
                    w.audit(
                        event(
                            kind,
                            Actor::User(format!("user{}", n % 50)),
                            Source::Peer(peer),
                        )
                        .on(format!("10.0.3.{}:22", n % 250))
                        .detail(serde_json::json!({
                            "channel": n,
                            "key_fingerprint": "SHA256:uV5cI0c3zG8Ub6QGd9ux4KkPjyKGJ6b0wOQmmE3QnNk",
                            "resolved": format!("10.0.3.{}:22", n % 250),
                        })),
                    )?;
                }
                w.audit_checkpoint(SystemTime::now())?;
                Ok(())
            })
            .unwrap();
    }
}

/// The export's cost and lag, for tests/bench/audit-export-bench.sh:
/// catching up a backlog of 20,000 records (records per second), the size
/// on S3 per 10,000 records, and the lag while four admins add users as
/// fast as they can for 20 s.
#[test]
#[ignore = "a benchmark: tests/bench/audit-export-bench.sh runs it"]
fn export_bench() {
    const BACKLOG: usize = 20_000;
    let Some(lab) = AwsLab::create() else { return };
    create_bucket(&lab);
    let mut gw = lab.start_gateway(&config(&lab));
    wait_exported(&gw, Duration::from_secs(30));
    gw.stop();
    preload(&gw, BACKLOG);
    let started = Instant::now();
    gw.spawn();
    wait_exported(&gw, Duration::from_secs(300));
    let took = started.elapsed().as_secs_f64();
    let objects = objects(&lab);
    let records: usize = objects
        .iter()
        .map(|o| o["records"].as_array().unwrap().len())
        .sum();
    let bytes: u64 = objects.iter().map(|o| o["size"].as_u64().unwrap()).sum();
    println!(
        "backlog: {BACKLOG} records exported in {took:.2} s (from accessd's start): {:.0} records/s",
        BACKLOG as f64 / took
    );
    println!(
        "size on S3: {:.1} KiB per 10,000 records ({records} records, {} objects, {bytes} bytes)",
        bytes as f64 / records as f64 * 10_000.0 / 1024.0,
        objects.len()
    );

    // Under load: four admins adding users, the lag sampled every 250 ms.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let written = std::sync::atomic::AtomicUsize::new(0);
    let load = Duration::from_secs(20);
    let mut lags: Vec<u64> = Vec::new();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (gw, stop, written) = (&gw, &stop, &written);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5_000 {
                    gw.ctl_ok(&[
                        "user",
                        "add",
                        &format!("load{t}x{i}"),
                        "--group",
                        "research",
                    ]);
                    written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        let until = Instant::now() + load;
        while Instant::now() < until {
            lags.push(s3_lag(&gw));
            std::thread::sleep(Duration::from_millis(250));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let after = Instant::now();
    wait_exported(&gw, Duration::from_secs(60));
    let caught_up = after.elapsed().as_secs_f64();
    lags.sort_unstable();
    let written = written.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "under load: {written} records written in {:.0} s ({:.0}/s); lag median {} records, max {} records; caught up {caught_up:.1} s after the load stopped",
        load.as_secs_f64(),
        written as f64 / load.as_secs_f64(),
        lags[lags.len() / 2],
        lags[lags.len() - 1],
    );
}
