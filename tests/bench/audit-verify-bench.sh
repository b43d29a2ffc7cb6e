#!/usr/bin/env bash
# audit-verify-bench.sh - `accessctl audit verify` on a log of a million records (issue 26 item 5):
# how long the stock accessctl takes against a release accessd, and accessd's peak resident memory
# (VmHWM in /proc/PID/status) after start and after the check, on the embedded SQLite store and on
# Debian's PostgreSQL (tests/src/postgres.rs starts one when it is installed; tests/run.sh installs
# it). Side by side on the same log: this build, and the build before the paged check, whose
# accessd read every record into memory at once.
#
# The log is written by accessd's own store (tests/src/audit_fill.rs): the keyed chain, a signed
# checkpoint every 1,000 records, 30 days of a busy team.
#
# Target (this build): memory bounded by a page of 10,000 records, not by the log: accessd's peak
# after the check at most 64 MiB above its peak after start; and the check answered (accessctl
# reads a line per page: its request timeout bounds each line, not the whole check).
#
# Env: BENCH_RECORDS (default 1000000); BUILD=1 (build the release binaries first; default);
#      BEFORE=<git rev> to compare with (default: the parent of the commit "audit verify: the
#      chain checked a page at a time"; BEFORE= skips it), built in a temporary git worktree
#      into the same target directory, before this build.
# Run: tests/bench/audit-verify-bench.sh   (root not needed; PostgreSQL is skipped if absent)
# Only loopback is used; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-$PWD/target}
tmp=$(mktemp -d)
cleanup() {
  git worktree remove --force "$tmp/src" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

if [ -z "${BEFORE+set}" ]; then
  paged=$(git log -1 --format=%H --grep='^audit verify: the chain checked a page at a time' || true)
  BEFORE=${paged:+$paged^}
fi
before_bin=
if [ -n "$BEFORE" ]; then
  git worktree add --detach -q "$tmp/src" "$BEFORE"
  (cd "$tmp/src" && CARGO_TARGET_DIR="$target" cargo build --release --workspace --bins --locked)
  mkdir "$tmp/bin"
  cp "$target/release/accessd" "$target/release/accessctl" "$tmp/bin/"
  before_bin=$tmp/bin
fi
# After the build before (it shares the target directory): this build's binaries last.
if [ "${BUILD:-1}" = 1 ] || [ -n "$before_bin" ]; then
  cargo build --release --workspace --bins --locked
  cargo test --release --workspace --test audit_verify --locked --no-run
fi

out=$tmp/out
BENCH_RECORDS=${BENCH_RECORDS:-1000000} BENCH_BEFORE=$before_bin \
  cargo test --release --workspace --test audit_verify --locked \
  -- --ignored --exact verify_bench --nocapture 2>&1 | tee "$out" | grep -E '^verify ' || {
  tail -40 "$out"; echo "the audit verify benchmark failed" >&2; exit 1
}
echo "before: ${BEFORE:-(not run)}; after: $(git rev-parse --short HEAD)"
fail=0
while IFS= read -r line; do
  peak=$(sed -n 's/.*peak RSS \([0-9]*\) MiB (after start \([0-9]*\) MiB).*/\1 \2/p' <<<"$line")
  read -r after_check after_start <<<"$peak"
  if [ $((after_check - after_start)) -gt 64 ]; then echo "memory grew by more than 64 MiB: $line" >&2; fail=1; fi
  case "$line" in *": intact, "*) ;; *) echo "not answered intact: $line" >&2; fail=1 ;; esac
done < <(grep -E '^verify [a-z]+ after:' "$out")
[ $fail = 0 ] && echo "this build: bounded memory, every check answered"
exit $fail
