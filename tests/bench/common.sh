#!/usr/bin/env bash
# Helpers shared by vpn-bench.sh and ssh-bench.sh (sourced, not run). They use the
# caller's globals at call time: LOG, STARTED_PIDS, HZ, WAIT_QUIET, MAX_FOREIGN.

log() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
kill_pid() {   # kill one PID we started (TERM, 5 s grace, KILL), reap it
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
}
start_bg() {   # start_bg NAME NS cmd...  -> LAST_PID (ip netns exec and env exec: the PID is the program's)
    local name=$1 ns=$2; shift 2
    ip netns exec "$ns" "$@" > "$OUT/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}
calc() { printf "%.${1}f" "$(echo "scale=6; $2" | bc)"; }   # calc DECIMALS EXPR
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { if [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && [ "$(echo "$2 > 0" | bc)" = 1 ]; then calc 2 "$1 / $2"; else echo "-"; fi; }

# ---- foreign load (the reference script's method): userspace CPU of processes in the host's
# network namespace that are not this script's session. > MAX_FOREIGN % of a core: retry.
INIT_NS=$(readlink /proc/$$/ns/net)
MY_SID=$(awk '{ sub(/^.*\) /, ""); print $4 }' /proc/$$/stat)
foreign_snap() {
    find /proc/[0-9]*/ns/net -maxdepth 0 -printf '%l %p\n' 2>/dev/null | grep -F "$INIT_NS " |
        sed 's#^[^ ]* ##; s#/ns/net$#/stat#' | xargs cat 2>/dev/null |
        awk -v sid="$MY_SID" '{ pid = $1; sub(/^.*\) /, ""); if ($2 == 2 || $4 == sid) next; print pid, $12+$13+$14+$15 }'
}
foreign_pct() {  # foreign_pct SNAP0 SNAP1 WALL -> % of one core used by others in between
    awk -v hz="$HZ" -v wall="$3" 'NR == FNR { a[$1] = $2; next }
        { d = ($1 in a) ? $2 - a[$1] : $2; if (d > 0) t += d }
        END { printf "%d\n", 100 * t / hz / wall }' <(echo "$1") <(echo "$2")
}
wait_quiet() {
    [ "$WAIT_QUIET" -gt 0 ] || return 0
    local deadline=$(( $(date +%s) + WAIT_QUIET )) f0 f1 pct
    while :; do
        f0=$(foreign_snap); sleep 3; f1=$(foreign_snap); pct=$(foreign_pct "$f0" "$f1" 3)
        [ "$pct" -le "$MAX_FOREIGN" ] && return 0
        [ "$(date +%s)" -ge "$deadline" ] && { log "still busy (foreign ${pct}% of a core), measuring anyway"; return 0; }
        log "waiting for a quiet machine (foreign load ${pct}% of a core)"
    done
}

# ---- helpers added for vpn-bench.sh's issue-27 figures (percentiles, picking a peer, targets)
percentile() {  # percentile P < numbers -> the nearest-rank P-th percentile ("-" when empty)
    sort -g | awk -v p="$1" '{ a[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        i = int((p * NR + 99) / 100); if (i < 1) i = 1; if (i > NR) i = NR; print a[i] }'
}
best() {  # best max|min NAME VALUE [NAME VALUE...] -> "NAME VALUE" of the largest/smallest number, or "- -"
    local how=$1 name= val= n v; shift
    while [ $# -ge 2 ]; do
        n=$1 v=$2; shift 2
        [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || continue
        if [ -z "$val" ] || { [ "$how" = max ] && [ "$(echo "$v > $val" | bc)" = 1 ]; } ||
            { [ "$how" = min ] && [ "$(echo "$v < $val" | bc)" = 1 ]; }; then name=$n val=$v; fi
    done
    echo "${name:--} ${val:--}"
}
verdict() {  # verdict VALUE >=|<= LIMIT -> met / MISSED / n/a (VALUE not a number)
    [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "n/a"; return; }
    local ok
    case $2 in '>=') ok=$(echo "$1 >= $3" | bc) ;; '<=') ok=$(echo "$1 <= $3" | bc) ;; esac
    [ "$ok" = 1 ] && echo met || echo MISSED
}
