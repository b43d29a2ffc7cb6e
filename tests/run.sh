#!/usr/bin/env bash
# The test command: installs what the tests need (Debian packages), builds the
# binaries the end-to-end tests drive, then runs every test of the workspace.
#
#   tests/run.sh            # as root on a fresh Debian machine
#
# With GATEHOUSE_E2E=1 (set by .ci/run) a test that lacks a privilege or a
# tool fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v wg-quick >/dev/null 2>&1 || need_pkgs+=(wireguard-tools)
command -v ssh-keygen >/dev/null 2>&1 || need_pkgs+=(openssh-client)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v wireguard-go >/dev/null 2>&1 || need_pkgs+=(wireguard-go)
command -v ping >/dev/null 2>&1 || need_pkgs+=(iputils-ping)
command -v iperf3 >/dev/null 2>&1 || need_pkgs+=(iperf3)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# Test-only signers of EC2 identity documents (tests/aws_host_join.rs).
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
python3 -c 'import yaml' >/dev/null 2>&1 || need_pkgs+=(python3-yaml)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
# The portal's real-browser test (tests/tests/portal_browser.rs).
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
[ -x /usr/bin/chromedriver ] || need_pkgs+=(chromium-driver)
command -v zbarimg >/dev/null 2>&1 || need_pkgs+=(zbar-tools)
# The pair's cloud-init check verifies against a CA bundle (tests/packaging.rs).
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_pkgs+=(ca-certificates)
# The shared store's tests start their own PostgreSQL server (tests/src/postgres.rs).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v runuser >/dev/null 2>&1 || need_pkgs+=(util-linux)
# The syslog receiver of the audit export's test, with its TLS driver (tests/src/rsyslog.rs).
command -v rsyslogd >/dev/null 2>&1 || need_pkgs+=(rsyslog)
[ -f /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || need_pkgs+=(rsyslog-gnutls)
# The SSO tests' identity provider runs on Node.js (tests/oidc).
command -v npm >/dev/null 2>&1 || need_pkgs+=(nodejs npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "==> installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "==> not root: cannot install ${need_pkgs[*]}; the tests that need them will skip (or fail with GATEHOUSE_E2E=1)"
  fi
fi

# The AWS provisioner's tests run against the moto server (PyPI moto[server],
# with boto3 for independent describe calls), from a venv outside the clone;
# the private host's certificate script (tests/packaging.rs) runs the AWS CLI
# (PyPI awscli) against it.
export GATEHOUSE_MOTO_VENV="${GATEHOUSE_MOTO_VENV:-/var/tmp/gatehouse-moto-venv}"
if [ ! -x "$GATEHOUSE_MOTO_VENV/bin/moto_server" ] || [ ! -x "$GATEHOUSE_MOTO_VENV/bin/aws" ]; then
  echo "==> installing moto[server] and the AWS CLI into $GATEHOUSE_MOTO_VENV"
  python3 -m venv "$GATEHOUSE_MOTO_VENV" &&
    "$GATEHOUSE_MOTO_VENV/bin/pip" install -q 'moto[server]==5.2.5' boto3 'awscli==1.46.3' ||
    echo "==> cannot install moto: the AWS tests will skip (or fail with GATEHOUSE_E2E=1)"
fi

# The scripted SSH client of the TOTP test: paramiko (PyPI), as Fabric and
# Ansible's paramiko transport use it, from a venv outside the clone.
export GATEHOUSE_PARAMIKO_VENV="${GATEHOUSE_PARAMIKO_VENV:-/var/tmp/gatehouse-paramiko-venv}"
if ! "$GATEHOUSE_PARAMIKO_VENV/bin/python" -c 'import paramiko' >/dev/null 2>&1; then
  echo "==> installing paramiko into $GATEHOUSE_PARAMIKO_VENV"
  python3 -m venv "$GATEHOUSE_PARAMIKO_VENV" &&
    "$GATEHOUSE_PARAMIKO_VENV/bin/pip" install -q 'paramiko==5.1.0' ||
    echo "==> cannot install paramiko: its test will skip (or fail with GATEHOUSE_E2E=1)"
fi

# The audit export's query test (tests/audit_s3): DuckDB and its httpfs
# extension, pinned to one version (PyPI duckdb-extension-httpfs ships the
# extension file, which the test loads by path: nothing is downloaded at run
# time), with boto3 to write the objects, from a venv outside the clone.
export GATEHOUSE_DUCKDB_VENV="${GATEHOUSE_DUCKDB_VENV:-/var/tmp/gatehouse-duckdb-venv}"
duckdb_version=1.5.5
if ! "$GATEHOUSE_DUCKDB_VENV/bin/python" -c "import duckdb, duckdb_extension_httpfs, boto3
assert duckdb.__version__ == '$duckdb_version'" >/dev/null 2>&1; then
  echo "==> installing duckdb $duckdb_version and its httpfs extension into $GATEHOUSE_DUCKDB_VENV"
  python3 -m venv "$GATEHOUSE_DUCKDB_VENV" &&
    "$GATEHOUSE_DUCKDB_VENV/bin/pip" install -q "duckdb==$duckdb_version" \
      "duckdb-extension-httpfs==$duckdb_version" boto3 ||
    echo "==> cannot install duckdb: the audit export test will skip (or fail with GATEHOUSE_E2E=1)"
fi

# The SSO tests' identity provider: panva's oidc-provider (npm), pinned by
# tests/oidc/package-lock.json, installed into tests/oidc/node_modules.
command -v npm >/dev/null 2>&1 || echo "==> no npm (Node.js): the SSO tests will skip (or fail with GATEHOUSE_E2E=1)"
if command -v npm >/dev/null 2>&1 && [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  echo "==> installing oidc-provider into tests/oidc/node_modules"
  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error ||
    echo "==> cannot install oidc-provider: the SSO tests will skip (or fail with GATEHOUSE_E2E=1)"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo build (binaries for the end-to-end tests)"
cargo build --workspace --bins --locked

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The fuzz targets (daemon/fuzz, their own workspace) are run by hand with
# cargo-fuzz; here they only have to keep compiling against the daemon.
echo "==> cargo check the fuzz targets"
(cd daemon/fuzz && RUSTFLAGS="--cfg fuzzing" \
  cargo check --bins --locked --target-dir "${CARGO_TARGET_DIR:-$PWD/../../target}/fuzz-check")

# One PostgreSQL server on loopback for the store's unit tests, which run
# the whole store suite against it as well as against SQLite; the
# end-to-end HA tests start servers of their own.
echo "==> a PostgreSQL server for the store's tests (tests/src/bin/test-postgres.rs)"
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
pg_info=$(mktemp)
coproc TEST_PG { exec "$target_dir/debug/test-postgres" > "$pg_info"; }
for _ in $(seq 1 600); do
  [ -s "$pg_info" ] && break
  kill -0 "$TEST_PG_PID" 2>/dev/null || break
  sleep 0.1
done
if read -r pg_url pg_password < "$pg_info"; then
  export GATEHOUSE_TEST_POSTGRES="$pg_url" GATEHOUSE_TEST_POSTGRES_PASSWORD="$pg_password"
elif [ "${GATEHOUSE_E2E:-0}" = 1 ]; then
  echo "GATEHOUSE_E2E=1 but the PostgreSQL server for the store's tests did not start" >&2; exit 1
fi
rm -f "$pg_info"

echo "==> cargo test"
cargo test --workspace --locked

# The daemon's in-process gateway tests once more, each gateway on a
# database of its own on the PostgreSQL server: the suite on both backends.
if [ -n "${GATEHOUSE_TEST_POSTGRES:-}" ]; then
  echo "==> cargo test --lib, the in-process gateways on PostgreSQL"
  GATEHOUSE_TEST_GATEWAY_STORE=postgres cargo test --workspace --locked --lib
fi

# Closing its stdin stops the store tests' server.
if [ -n "${TEST_PG_PID:-}" ]; then
  pg_pid=$TEST_PG_PID pg_stdin=${TEST_PG[1]}
  exec {pg_stdin}>&-
  wait "$pg_pid" 2>/dev/null || true
fi
unset GATEHOUSE_TEST_POSTGRES GATEHOUSE_TEST_POSTGRES_PASSWORD

# The audit export in S3 (issue 25), asked by DuckDB, against a moto server
# the test starts itself. As root in a network namespace of its own with
# only loopback: what it reaches is that moto, and nothing is downloaded.
echo "==> the audit export in S3, asked by DuckDB (tests/audit_s3 against moto)"
if [ -x "$GATEHOUSE_DUCKDB_VENV/bin/python" ]; then
  audit_s3_test=("$GATEHOUSE_DUCKDB_VENV/bin/python" -m unittest discover -s tests/audit_s3 -v)
  if unshare --net -- ip link set lo up >/dev/null 2>&1; then
    unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh "${audit_s3_test[@]}"
  else
    echo "(no network namespace here: the test runs on the host's network)"
    "${audit_s3_test[@]}"
  fi
elif [ "${GATEHOUSE_E2E:-0}" = 1 ]; then
  echo "GATEHOUSE_E2E=1 but no $GATEHOUSE_DUCKDB_VENV/bin/python (the duckdb install failed)" >&2; exit 1
else
  echo "SKIPPED the audit export test: no $GATEHOUSE_DUCKDB_VENV/bin/python"
fi

echo "==> the demo (packaging/demo.sh): the README's story must still happen"
if [ "$(id -u)" -eq 0 ]; then
  demo_log=$(mktemp)
  if ! packaging/demo.sh > "$demo_log" 2>&1; then
    tail -40 "$demo_log"; rm -f "$demo_log"
    echo "the demo failed" >&2; exit 1
  fi
  tail -3 "$demo_log"; rm -f "$demo_log"
elif [ "${GATEHOUSE_E2E:-0}" = 1 ]; then
  echo "GATEHOUSE_E2E=1 but not root: the demo needs root" >&2; exit 1
else
  echo "SKIPPED the demo: it needs root (network namespaces)"
fi

echo "==> the Debian package (release build, man pages, completions; then inspected)"
deb=$(packaging/build-deb.sh)
packaging/check-deb.sh "$deb"

echo "==> the package under a real systemd (packaging/check-systemd.sh: dpkg -i, systemctl start/reload/stop, dpkg -r/--purge)"
if [ "$(id -u)" -eq 0 ]; then
  systemd_log=$(mktemp)
  if ! packaging/check-systemd.sh "$deb" > "$systemd_log" 2>&1; then
    tail -60 "$systemd_log"; rm -f "$systemd_log"
    echo "the package did not pass under systemd" >&2; exit 1
  fi
  grep -E '^==>|PASS' "$systemd_log"; rm -f "$systemd_log"
elif [ "${GATEHOUSE_E2E:-0}" = 1 ]; then
  echo "GATEHOUSE_E2E=1 but not root: the systemd check needs root" >&2; exit 1
else
  echo "SKIPPED the systemd check: it needs root (debootstrap, systemd-nspawn)"
fi
