//! Without an `[aws]` section accessd makes no AWS call at all, whatever the
//! admin does; and with one, "not running on EC2" is said plainly. Runs on
//! the host's loopback (no root, no moto): a recording IMDS and a recording
//! AWS endpoint stand where the real ones would be, named by the environment
//! variables the AWS SDK honours.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Command;
use std::time::Duration;

use gatehouse_tests::aws::aws_env;
use gatehouse_tests::aws::fakes::{AwsProxy, FakeImds};
use gatehouse_tests::{Daemon, bin, host_sample_config, output_within, stderr, stdout};

fn recording_env<'a>(imds: &'a str, endpoint: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env = aws_env().to_vec();
    env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds));
    env.push(("AWS_ENDPOINT_URL", endpoint));
    env.push(("AWS_REGION", "eu-west-3"));
    env
}

/// Runs accessd on `config` until it exits (it is expected to refuse to start).
fn accessd_refuses(config: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(bin("accessd"));
    cmd.arg("--config")
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"))
        .envs(env.iter().copied());
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(!out.status.success(), "accessd started:\n{}", stdout(&out));
    format!("{}{}", stdout(&out), stderr(&out))
}

#[test]
fn no_aws_section_means_no_aws_call() {
    let imds = FakeImds::start(None);
    let endpoint = AwsProxy::start(None, None);
    let (imds_url, endpoint_url) = (imds.url(), endpoint.url());
    let env = recording_env(&imds_url, &endpoint_url);
    let config = host_sample_config();
    assert!(
        !config.lines().any(|l| l.trim() == "[aws]"),
        "the sample has no [aws] section"
    );

    let mut gw = Daemon::start_in_with_env(None, &config, &env);
    gw.ctl_ok(&["status"]);
    gw.ctl_ok(&["user", "add", "alice", "--group", "research"]);
    gw.ctl_ok(&["device", "config", "alice", "laptop"]);
    gw.ctl_ok(&["reload"]);
    for command in ["plan", "apply", "status"] {
        let out = gw.ctl(&["aws", command]);
        assert_eq!(out.status.code(), Some(1), "aws {command}");
        assert!(
            stderr(&out).contains("no [aws] section"),
            "{}",
            stderr(&out)
        );
    }
    let out = gw.ctl(&["--json", "aws", "plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(gw.stop().success());

    assert_eq!(imds.requests(), 0, "no instance metadata request");
    assert_eq!(endpoint.seen(), Vec::<String>::new(), "no AWS API request");

    // The control: the same recorders do see calls once [aws] exists
    // (discovery asks the metadata service named by the environment).
    let with_aws = format!("{config}\n[aws]\nregion = \"eu-west-3\"\n");
    let said = accessd_refuses(&with_aws, &env);
    assert!(
        imds.requests() > 0,
        "the recorder sees metadata calls: {said}"
    );
    assert!(said.contains("instance metadata"), "{said}");
}

#[test]
fn off_ec2_is_said_plainly() {
    // Nothing listens here: like a machine with no metadata service.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = format!(
        "{}\n[aws]\nregion = \"eu-west-3\"\nimds_endpoint = \"http://127.0.0.1:{port}\"\n",
        host_sample_config()
    );
    let said = accessd_refuses(&config, &aws_env());
    assert!(said.contains("not running on EC2"), "{said}");
    assert!(
        said.contains("aws.instance_id"),
        "says how to run off-instance: {said}"
    );
}
