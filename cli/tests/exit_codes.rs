//! The real `accessctl` binary's exit codes and messages, as scripts and the
//! end-to-end tests see them.

use std::process::{Command, Output};

fn accessctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accessctl"))
        .args(args)
        .env_remove("GATEHOUSE_SOCKET")
        .output()
        .expect("run accessctl")
}

#[test]
fn missing_socket_exits_3_with_one_sentence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let socket = socket.to_str().expect("utf-8 temp path");
    let out = accessctl(&["--socket", socket, "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(
        stderr,
        format!(
            "accessd is not reachable at {socket}: No such file or directory (os error 2). \
             Is accessd running? (systemctl status accessd)\n"
        )
    );
}

#[test]
fn socket_comes_from_the_environment_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("env.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_accessctl"))
        .args(["user", "list"])
        .env("GATEHOUSE_SOCKET", &socket)
        .output()
        .expect("run accessctl");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
}

#[test]
fn bad_names_are_usage_errors_before_any_request() {
    // No socket exists: a usage error must come first.
    let out = accessctl(&["--socket", "/nonexistent/admin.sock", "user", "show", "Bob"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(stderr.contains("invalid user name \"Bob\""), "{stderr}");
}

#[test]
fn help_teaches() {
    let out = accessctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        help.contains("accessctl user add alice --group research"),
        "{help}"
    );
    assert!(help.contains("Exit codes"), "{help}");
    for args in [
        &["user", "add", "--help"][..],
        &["device", "config", "--help"],
        &["audit", "--help"],
    ] {
        let out = accessctl(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = String::from_utf8(out.stdout).expect("utf-8");
        assert!(help.contains("Example"), "{args:?}: {help}");
    }
}
