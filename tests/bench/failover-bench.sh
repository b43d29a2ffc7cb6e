#!/usr/bin/env bash
# failover-bench.sh - how long an HA pair's clients go without traffic when the active
# gateway dies, in the world of tests/src/ha_lab.rs: two accessd (gw-a, gw-b) in namespaces
# of their own, one real PostgreSQL, moto as AWS, an edge that routes the elastic IP (and the
# VPN pool) to whichever gateway moto says, and a stock wireguard-go client pinging the
# research host every 100 ms through the elastic IP.
#
# Failover = kill -9 of the active until the client's pings are answered again (the standby's
# 5 s lease runs out, it takes the lease, associates the elastic IP and replaces the pool
# route in moto, the edge follows, and the standby's handshake resumes the client's tunnel;
# the client's config never changes). Five runs, alternating which node is killed; each
# figure and the median printed, against issue 14's targets (at most 10 s, aim 6 s). The
# planned handover (SIGTERM, target at most 2 s) is timed by tests/ha_failover.rs.
#
# Anchors: none runs here. Pritunl reports about 13 s with its own client, defguard about
# 15 s plus minutes of stale tunnels after failback; OpenVPN Access Server's VRRP failover
# does not work on AWS (VRRP is filtered). Those figures are the vendors', not measured here.
#
# Env: BUILD=1 (cargo build the binaries first; the debug build the tests use)
# Run as root: tests/bench/failover-bench.sh
# Only addresses inside the namespaces the test makes are used; each run is bounded (60 s of
# pings, 30 s to resume).
set -euo pipefail
cd "$(dirname "$0")/../.."
export GATEHOUSE_E2E=1
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --workspace --bins --locked
fi
out=$(mktemp)
cargo test -p gatehouse-tests --test ha_failover --locked -- --ignored --exact failover_bench --nocapture 2>&1 | tee "$out" | grep -E '^(run [0-9]|median)' || {
  tail -40 "$out"; rm -f "$out"; echo "the failover benchmark failed" >&2; exit 1
}
median=$(sed -n 's/^median failover: \([0-9.]*\) s.*/\1/p' "$out")
rm -f "$out"
printf '\n%-34s %10s %10s %10s\n' "" "gatehouse" "target" "aim"
printf '%-34s %9ss %9ss %9ss\n' "failover (kill -9), median of 5" "$median" "10" "6"
