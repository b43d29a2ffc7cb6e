#!/usr/bin/env bash
# gatehouse local demo: builds accessd and accessctl, starts the gateway with
# the sample config on a throw-away state dir inside a network namespace of
# its own (so its WireGuard interface and forwarding stay there), and walks
# through the admin story: add a user, issue a device config, see it in the
# data plane, read and verify the audit log. Everything is removed at the end
# (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs) first" >&2; exit 1; }
if ! command -v wg-quick >/dev/null && [ "$(id -u)" -eq 0 ]; then
  step "installing wireguard-tools (to check the device config with wg-quick strip)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq --no-install-recommends wireguard-tools >/dev/null
fi

step "building accessd and accessctl"
cargo build --quiet --bins
bin="${CARGO_TARGET_DIR:-target}/debug"

[ "$(id -u)" -eq 0 ] || { echo "run the demo as root: accessd creates a WireGuard interface (in a network namespace of its own)" >&2; exit 1; }

work=$(mktemp -d /tmp/gatehouse-demo.XXXXXX)
ns="gh-demo-$$"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

sock="$work/admin.sock"
ctl() { echo "\$ accessctl $*"; "$bin/accessctl" --socket "$sock" "$@"; }

step "checking the sample config (packaging/gatehouse.toml)"
"$bin/accessd" check-config packaging/gatehouse.toml

step "starting accessd in network namespace $ns (state in $work/state)"
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" "$bin/accessd" --config packaging/gatehouse.toml --state-dir "$work/state" --admin-socket "$sock" 2>"$work/accessd.log" &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$work/accessd.log"; echo "accessd did not start" >&2; exit 1; }
ctl status

step "an admin adds alice to the research group: she gets a one-time enrollment link"
ctl user add alice --group research

step "the admin issues a WireGuard config for alice's laptop (the key pair is made by accessctl; only the public key reaches the gateway)"
ctl device config alice laptop --out "$work/alice.conf"
echo; cat "$work/alice.conf"

if command -v wg-quick >/dev/null && [ "$(id -u)" -eq 0 ]; then
  step "wg-quick accepts it (split tunnel: only the research subnet is routed)"
  wg-quick strip "$work/alice.conf"
fi

step "what alice may reach; her laptop becomes a WireGuard peer once she logs in to the portal (vpn.require_login)"
ctl user show alice

step "a build machine cannot log in: created with --no-login, its device is a live peer at once"
ctl user add ci-runner --group research --no-login
ctl device config ci-runner runner --out "$work/runner.conf" > /dev/null
ctl device list

step "the audit log records every action, with the admin's uid"
ctl audit
ctl audit verify

step "stopping accessd (SIGTERM): a clean stop, audited"
kill -TERM "$pid"; wait "$pid"; pid=""
echo "done. The log of this run was:"; sed 's/^/  /' "$work/accessd.log"
