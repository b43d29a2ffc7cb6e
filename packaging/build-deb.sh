#!/usr/bin/env bash
# Builds the Debian package: release binaries, man pages and shell
# completions generated from the clap definitions, then cargo-deb with the
# metadata in daemon/Cargo.toml. Prints the path of the .deb.
#
#   packaging/build-deb.sh          (installs cargo-deb under /var/tmp when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${GATEHOUSE_TOOLS:-/var/tmp/gatehouse-tools}
export PATH="$tools/bin:$PATH"
if ! command -v cargo-deb >/dev/null; then
  echo "==> installing cargo-deb into $tools" >&2
  CARGO_TARGET_DIR="$tools/build" cargo install --quiet --locked cargo-deb --version '^3' --root "$tools" >&2
fi

echo "==> cargo build --release" >&2
cargo build --release --locked --bins --quiet
target=${CARGO_TARGET_DIR:-target}
out="$target/release/packaging"
mkdir -p "$out"
"$target/release/accessd" manpage | gzip -9n > "$out/accessd.8.gz"
"$target/release/accessctl" manpage | gzip -9n > "$out/accessctl.8.gz"
"$target/release/accessctl" completions bash > "$out/accessctl.bash"
"$target/release/accessctl" completions zsh > "$out/_accessctl"
"$target/release/accessctl" completions fish > "$out/accessctl.fish"

echo "==> cargo deb" >&2
cargo deb --package gatehouse-daemon --no-build --locked --output "$target/debian/" 2>&1 | tail -1 >&2
ls -t "$target"/debian/gatehouse_*.deb | head -1
