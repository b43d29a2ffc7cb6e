//! The files of `packaging/` as tests read them: their paths, a cloud-init
//! file parsed (with PyYAML, as cloud-init reads it), and sshd ready for
//! `sshd -t`. [`private_host`] runs the private host's certificate script
//! from `cloud-init-private-host.yaml` on a scratch `/etc/ssh`; the
//! packaging tests and the host join test (`tests/tests/aws_host_join.rs`)
//! both use it, so both run the script as shipped.

pub mod private_host;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{require, stderr, stdout};

/// `packaging/<file>` in the workspace.
pub fn packaging_file(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

/// A cloud-init file of `packaging/`, parsed; `None` (printed) without
/// PyYAML.
pub fn cloud_init_files(name: &str) -> Option<serde_json::Value> {
    let path = packaging_file(name);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("#cloud-config\n"),
        "cloud-init needs the #cloud-config header"
    );
    let have_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        have_yaml,
        "python3 with PyYAML (Debian package python3-yaml)",
    ) {
        return None;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    Some(serde_json::from_str(&stdout(&out)).unwrap())
}

/// OpenSSH's sshd, for `sshd -t`; `None` (printed) without it. sshd, even
/// testing a config, insists on its privilege separation directory, which
/// Debian's init script makes and nothing here runs: root makes it.
pub fn sshd() -> Option<PathBuf> {
    let Some(sshd) = crate::ssh::sshd_path() else {
        require(false, "OpenSSH's sshd (Debian package openssh-server)");
        return None;
    };
    let privsep = Path::new("/run/sshd");
    if !privsep.exists() && crate::is_root() {
        std::fs::create_dir_all(privsep).unwrap();
    }
    require(
        privsep.exists(),
        "/run/sshd, which sshd -t needs (root makes it)",
    )
    .then_some(sshd)
}
