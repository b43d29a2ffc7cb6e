#!/usr/bin/env bash
# audit-export-bench.sh - what the audit log's S3 export (issue 25) costs, in the world of
# tests/src/aws.rs: accessd in a namespace of its own, moto's S3 with Object Lock behind a
# recording proxy, checkpoints every second (audit.checkpoint_interval = "1s").
#
# Three figures: the export's rate while it catches up a backlog of 20,000 jump host records
# (records per second, from accessd's start), the size on S3 per 10,000 records (gzip JSON
# lines), and the lag (records not yet exported) while four admins add users as fast as they
# can for 20 s, with how long the export takes to catch up once they stop.
#
# Anchors: none of the peers ships a signed, locked export to compare with (Teleport's signed
# audit log request is open since 2019; Pritunl, NetBird and defguard sell plain streaming).
#
# Env: BUILD=1 (cargo build the binaries first; the debug build the tests use)
# Run as root: tests/bench/audit-export-bench.sh
# Only addresses inside the namespace the test makes are used; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GATEHOUSE_E2E=1
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --workspace --bins --locked
fi
out=$(mktemp)
cargo test --workspace --test audit_s3 --locked -- --ignored --exact export_bench --nocapture 2>&1 | tee "$out" | grep -E '^(backlog|size on S3|under load)' || {
  tail -40 "$out"; rm -f "$out"; echo "the audit export benchmark failed" >&2; exit 1
}
rate=$(sed -n 's/^backlog: .*: \([0-9]*\) records\/s/\1/p' "$out")
size=$(sed -n 's/^size on S3: \([0-9.]*\) KiB.*/\1/p' "$out")
rm -f "$out"
printf '\n%-40s %12s %12s\n' "" "gatehouse" "target"
printf '%-40s %12s %12s\n' "export rate (records/s)" "$rate" ">= 1000"
printf '%-40s %12s %12s\n' "size on S3 per 10,000 records (KiB)" "$size" "<= 1024"
fail=0
[ "${rate:-0}" -ge 1000 ] || { echo "export rate below target" >&2; fail=1; }
awk -v s="$size" 'BEGIN { exit !(s <= 1024) }' || { echo "size above target" >&2; fail=1; }
exit $fail
