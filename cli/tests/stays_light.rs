//! `accessctl` must stay small and quick to build: it never depends on the
//! daemon, the AWS SDK, boringtun or russh, directly or through
//! `gatehouse-config`.

const FORBIDDEN: [&str; 5] = ["gatehouse-daemon", "accessd", "aws-", "boringtun", "russh"];

fn dependency_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line.ends_with("dependencies]");
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once('=') {
            // `serde.workspace = true` and `serde = "1"` both name serde.
            let name = name.split('.').next().unwrap_or(name);
            names.push(name.trim().to_owned());
        }
    }
    names
}

#[test]
fn cli_and_config_have_no_heavy_dependencies() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for manifest in ["cli/Cargo.toml", "config/Cargo.toml"] {
        let text = std::fs::read_to_string(format!("{root}/{manifest}")).expect("manifest");
        let names = dependency_names(&text);
        assert!(
            names.iter().any(|n| n == "serde"),
            "{manifest}: parsed {names:?}"
        );
        for name in &names {
            assert!(
                !FORBIDDEN.iter().any(|f| name.starts_with(f)),
                "{manifest} depends on {name}"
            );
        }
    }
}
