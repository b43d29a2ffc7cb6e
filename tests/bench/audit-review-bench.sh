#!/usr/bin/env bash
# audit-review-bench.sh - how fast accessd answers audit review (issue 26) on a log of a million
# records: `accessctl audit` with each filter, `audit summary` by host, user, day, hour and kind,
# and `audit export`, each the median of three runs of the stock accessctl against a release
# accessd, on the embedded SQLite store and on Debian's PostgreSQL (tests/src/postgres.rs starts
# one when it is installed; tests/run.sh installs it).
#
# The log is written by accessd's own store (keyed chain, checkpoints every 1,000 records, the
# review index), 30 days of a busy team: per 100 records 60 vpn.flow, 16 jump host sessions,
# logins, failures, denials and changes over 50 users, 1,000 hosts and 5 ports
# (tests/src/audit_fill.rs).
#
# Target: every one-page answer within 1 s (the newest 100 records of a filter, a summary that
# fits one page of 1,000 rows). Lines marked "(all pages)" time a whole export or a summary of
# many pages (a whole month by host is hundreds of thousands of rows); they are printed, not held
# to the target.
#
# Env: BENCH_RECORDS (default 1000000), BUILD=1 (build the release binaries first)
# Run: tests/bench/audit-review-bench.sh   (root not needed; PostgreSQL is skipped if absent)
# Only loopback is used; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --workspace --bins --locked
  cargo test --release --workspace --test audit_review --locked --no-run
fi
out=$(mktemp)
BENCH_RECORDS=${BENCH_RECORDS:-1000000} cargo test --release --workspace --test audit_review --locked \
  -- --ignored --exact review_bench --nocapture 2>&1 | tee "$out" | grep -E '^review ' || {
  tail -40 "$out"; rm -f "$out"; echo "the audit review benchmark failed" >&2; exit 1
}
fail=0
while IFS= read -r line; do
  case "$line" in
    *"(all pages)"*|*filled*) continue ;;
  esac
  ms=$(sed -n 's/.*: \([0-9]*\) ms (.*/\1/p' <<<"$line")
  [ -n "$ms" ] || continue
  if [ "$ms" -gt 1000 ]; then echo "over 1 s: $line" >&2; fail=1; fi
done < <(grep -E '^review ' "$out")
rm -f "$out"
[ $fail = 0 ] && echo "every page answered within 1 s"
exit $fail
