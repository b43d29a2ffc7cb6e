#!/usr/bin/env bash
# vpn-bench.sh - accessd's WireGuard data plane beside wireguard-go as the gateway, in one run.
#
# Topology (three network namespaces, as ../../../shared/bench/netns-bench.sh builds it):
#
#   <tag>-client  c0 192.0.2.2/24  <-- veth "internet" -->  g0 192.0.2.1/24  <tag>-gw
#   <tag>-gw      g1 10.0.3.1/24   <-- veth "research" -->  s0 10.0.3.2/24   <tag>-srv (iperf3 -s)
#
#   Tunnel: pool 10.99.0.0/16, gateway 10.99.0.1, client 10.99.0.2/32 (wireguard-go) or the
#   address accessd assigns. The client is always wireguard-go, configured from a wg-quick file
#   exactly as a user would (wg-quick strip | wg setconf, Address, MTU, a route per AllowedIPs);
#   the file is written here for wireguard-go and by `accessctl device config` for accessd.
#
# Phases (arguments, default all, in this order):
#   wireguard-go  wireguard-go as the gateway        iperf3 client -> srv, DUR s, each of STREAMS
#   accessd       accessd as the gateway (user + device made with accessctl), same measurements
#   peers         PEERS devices created through accessctl, then accessd restarted: time until
#                 `wg show` (accessd's UAPI socket) lists them all, and accessd's RSS
# Then a side-by-side table: Gbit/s and gateway CPU-seconds per GiB forwarded (utime+stime of the
# gateway process from /proc/PID/stat, divided by bytes received / 2^30), ratios accessd/wireguard-go.
#
# Env: DUR=10 STREAMS="1 4" ROUNDS=1 (wireguard-go, accessd alternate per round; medians printed)
#      DIRECTION=up (client -> srv, the gateway decrypts) or down (iperf3 -R: srv -> client, the
#      direction users download in; the gateway encrypts)
#      PEERS=10000 PEERS_PER_USER=100 CREATE_JOBS=<nproc> LOAD_LIMIT=120 (s)
#      WAIT_QUIET=0 (s to wait for foreign load to vanish) MAX_FOREIGN=15 RETRIES=3
#      BUILD=1 (cargo build --release --bins first)  BASE=/tmp/gatehouse-vpn-bench  OUT=<results dir>
#
# Run as root: tests/bench/vpn-bench.sh [wireguard-go] [accessd] [peers]
# Needs: wireguard-go wireguard-tools iperf3 iproute2 jq bc (Debian), cargo.
# Only addresses inside the namespaces made here are used; every load is bounded in time
# (iperf3 -t, timeout(1), loops with deadlines). Ctrl-C or any exit cleans up (trap).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BASE=${BASE:-${TMPDIR:-/tmp}/gatehouse-vpn-bench}
DUR=${DUR:-10}
STREAMS=${STREAMS:-"1 4"}
ROUNDS=${ROUNDS:-1}
PEERS=${PEERS:-10000}
PEERS_PER_USER=${PEERS_PER_USER:-100}
CREATE_JOBS=${CREATE_JOBS:-$(nproc)}
LOAD_LIMIT=${LOAD_LIMIT:-120}
WAIT_QUIET=${WAIT_QUIET:-0}
MAX_FOREIGN=${MAX_FOREIGN:-15}
RETRIES=${RETRIES:-3}
BUILD=${BUILD:-1}
DIRECTION=${DIRECTION:-up}
case $DIRECTION in
    up) IPERF_DIR=(); DIR_LABEL="client -> srv" ;;
    down) IPERF_DIR=(-R); DIR_LABEL="srv -> client, iperf3 -R" ;;
    *) echo "DIRECTION is up or down, not $DIRECTION" >&2; exit 2 ;;
esac
PHASES=${*:-"wireguard-go accessd peers"}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$BASE/results/$STAMP}
W=$BASE/work-$$
TAG=ghb$$                        # unique per run: namespaces and interfaces carry it
NS_C=$TAG-client; NS_G=$TAG-gw; NS_S=$TAG-srv
WG_C=${TAG}c                     # client tunnel (UAPI: /var/run/wireguard/$WG_C.sock), <= 15 chars
WG_G=${TAG}g                     # gateway tunnel: wireguard-go's, or accessd's vpn.interface
SRV=10.0.3.2; GW_PUB=192.0.2.1; WG_PORT=51820
HZ=$(getconf CLK_TCK)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/release
ACCESSD=$TARGET/accessd; ACCESSCTL=$TARGET/accessctl

for tool in ip wg wg-quick wireguard-go iperf3 jq bc timeout; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (apt: wireguard-go wireguard-tools iperf3 iproute2 jq bc)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -e /dev/net/tun ] || { echo "/dev/net/tun is missing" >&2; exit 1; }

mkdir -p "$OUT" "$W"; chmod 700 "$W"
RES=$OUT/results.tsv; PEERS_RES=$OUT/peers.tsv; LOG=$OUT/bench.log
printf 'round\tgateway\tstreams\tgbit_s\tcpu_s_per_gib\tgateway_pct_core\tclient_pct_core\tretransmits\tforeign_pct_core\tgateway_rx_mib\n' > "$RES"
printf 'metric\tvalue\tunit\tnote\n' > "$PEERS_RES"
: > "$LOG"

STARTED_PIDS=()
# Shared helpers: log, nsx, kill_pid, start_bg, calc, foreign load, median, ratio.
# shellcheck source=tests/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    log "cleanup: stopping ${#STARTED_PIDS[@]} process(es) we started: ${STARTED_PIDS[*]:-none}"
    for pid in "${STARTED_PIDS[@]}"; do kill_pid "$pid"; done
    for ns in $NS_C $NS_G $NS_S; do ip netns del "$ns" 2>/dev/null || true; done
    rm -f "/var/run/wireguard/$WG_C.sock" "/var/run/wireguard/$WG_G.sock"
    rm -rf "$W"
    log "cleanup done (namespaces of this run left: $(ip netns list | grep -c "^$TAG-" || true))"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_bg() {
    local pid=$1 keep=() p
    kill_pid "$pid"
    for p in "${STARTED_PIDS[@]}"; do [ "$p" != "$pid" ] && keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }   # utime+stime
rss_kib() { awk -v k="${2:-VmRSS}:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------- topology
setup_topology() {
    log "creating namespaces $NS_C $NS_G $NS_S"
    for ns in $NS_C $NS_G $NS_S; do ip netns add "$ns" && nsx "$ns" ip link set lo up || return 1; done
    ip -n $NS_G link add g0 type veth peer name c0 netns $NS_C || return 1
    ip -n $NS_G link add g1 type veth peer name s0 netns $NS_S || return 1
    ip -n $NS_C addr add 192.0.2.2/24 dev c0
    ip -n $NS_G addr add $GW_PUB/24 dev g0
    ip -n $NS_G addr add 10.0.3.1/24 dev g1
    ip -n $NS_S addr add $SRV/24 dev s0
    ip -n $NS_C link set c0 up; ip -n $NS_G link set g0 up; ip -n $NS_G link set g1 up; ip -n $NS_S link set s0 up
    nsx $NS_G sysctl -qw net.ipv4.ip_forward=1
    ip -n $NS_S route add default via 10.0.3.1     # replies to the pool go back via the gateway
    start_bg iperf3-srv $NS_S iperf3 -s -B $SRV
    mkdir -p /var/run/wireguard
}

wait_sock() {  # wait_sock IFACE: its UAPI socket (10 s)
    for _ in $(seq 100); do [ -S "/var/run/wireguard/$1.sock" ] && return 0; sleep 0.1; done
    log "UAPI socket of $1 did not appear"; return 1
}

client_up() {  # client_up WG_QUICK_FILE -> CL_PID: wireguard-go + the file applied as wg-quick would
    local conf=$1 a cidr mtu
    start_bg "wg-client-$(basename "$conf" .conf)" $NS_C env WG_PROCESS_FOREGROUND=1 wireguard-go -f $WG_C
    CL_PID=$LAST_PID
    wait_sock $WG_C || return 1
    wg-quick strip "$conf" > "$W/client.wg" || return 1
    nsx $NS_C wg setconf $WG_C "$W/client.wg" || return 1
    for a in $(sed -n 's/^Address *= *//p' "$conf" | tr ',' ' '); do ip -n $NS_C address add "$a" dev $WG_C; done
    mtu=$(sed -n 's/^MTU *= *//p' "$conf"); ip -n $NS_C link set mtu "${mtu:-1420}" up dev $WG_C
    for cidr in $(nsx $NS_C wg show $WG_C allowed-ips | cut -f2-); do ip -n $NS_C route add "$cidr" dev $WG_C; done
    for _ in $(seq 15); do   # first handshake: bounded
        nsx $NS_C ping -c 1 -W 1 -q $SRV > /dev/null 2>&1 && { log "tunnel up: $(ip -n $NS_C route get $SRV | head -1)"; return 0; }
    done
    log "no answer from $SRV through the tunnel within 15 s"; return 1
}
client_down() {
    [ -n "${CL_PID:-}" ] && stop_bg "$CL_PID"; CL_PID=
    rm -f "/var/run/wireguard/$WG_C.sock"
}

# ---------------------------------------------------------------------------- gateways
gw_wireguard_go_up() {  # -> GW_PID; writes $W/wggo.conf for the client
    (umask 077; wg genkey > "$W/gw.key"; wg genkey > "$W/cl.key")
    wg pubkey < "$W/gw.key" > "$W/gw.pub"; wg pubkey < "$W/cl.key" > "$W/cl.pub"
    start_bg wg-gateway $NS_G env WG_PROCESS_FOREGROUND=1 wireguard-go -f $WG_G
    GW_PID=$LAST_PID
    wait_sock $WG_G || return 1
    nsx $NS_G wg set $WG_G listen-port $WG_PORT private-key "$W/gw.key" peer "$(cat "$W/cl.pub")" allowed-ips 10.99.0.2/32
    ip -n $NS_G address add 10.99.0.1/16 dev $WG_G
    ip -n $NS_G link set $WG_G mtu 1420 up
    (umask 077; cat > "$W/wggo.conf") <<EOF
[Interface]
PrivateKey = $(cat "$W/cl.key")
Address = 10.99.0.2/32
MTU = 1420

[Peer]
PublicKey = $(cat "$W/gw.pub")
Endpoint = $GW_PUB:$WG_PORT
AllowedIPs = 10.0.3.0/24
PersistentKeepalive = 25
EOF
    CLIENT_CONF=$W/wggo.conf
}

accessd_config() {  # accessd_config STATE_NAME -> path of a gatehouse.toml
    local f=$W/$1.toml
    cat > "$f" <<EOF
[gateway]
name = "vpn-bench"
public_endpoint = "$GW_PUB"
state_dir = "$W/$1"

[vpn]
listen = "0.0.0.0:$WG_PORT"
interface = "$WG_G"
pool = "10.99.0.0/16"
mtu = 1420
persistent_keepalive = 25
require_login = false
nat = "route"
# The peers phase gives each user PEERS_PER_USER devices (the default cap is 10).
max_devices_per_user = $PEERS_PER_USER

[ssh]
listen = "127.0.0.1:2222"

[portal]
listen = "127.0.0.1:8443"
require_totp = false

[admin]
socket = "$W/$1.sock"

[metrics]
listen = "127.0.0.1:9586"

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
EOF
    echo "$f"
}

accessd_start() {  # accessd_start STATE_NAME -> GW_PID, CTL (accessctl command); waits for the admin socket
    local cfg
    cfg=$(accessd_config "$1")
    start_bg "accessd-$1" $NS_G "$ACCESSD" --config "$cfg" --state-dir "$W/$1" --admin-socket "$W/$1.sock"
    GW_PID=$LAST_PID
    CTL=("$ACCESSCTL" --socket "$W/$1.sock")
    for _ in $(seq 200); do
        [ -S "$W/$1.sock" ] && return 0
        kill -0 "$GW_PID" 2>/dev/null || { log "accessd exited: $(tail -5 "$OUT/accessd-$1.log")"; return 1; }
        sleep 0.1
    done
    log "accessd did not open its admin socket within 20 s"; return 1
}

gw_accessd_up() {  # -> GW_PID; the client's file comes from accessctl
    rm -rf "$W/bench" "$W/bench.conf"
    accessd_start bench || return 1
    "${CTL[@]}" user add bench --group research > /dev/null || return 1
    "${CTL[@]}" device config bench laptop --out "$W/bench.conf" > /dev/null || return 1
    CLIENT_CONF=$W/bench.conf
}

gw_down() {
    [ -n "${GW_PID:-}" ] && stop_bg "$GW_PID"; GW_PID=
    rm -f "/var/run/wireguard/$WG_G.sock"
}

gw_rx_bytes() { wg show $WG_G transfer 2>/dev/null | awk '{ s += $2 } END { printf "%.0f\n", s + 0 }'; }   # via UAPI (awk prints big sums in e-notation otherwise)

# ---------------------------------------------------------------------------- iperf
run_iperf() {  # run_iperf ROUND GATEWAY STREAMS
    local round=$1 gw=$2 n=$3 j="$OUT/iperf-$2-P$3-r$1.json"
    local g0 g1 c0 c1 t0 t1 f0 f1 rx0 rx1 rc fpct attempt=0
    while :; do
        wait_quiet
        rx0=$(gw_rx_bytes); g0=$(cpu_ticks "$GW_PID"); c0=$(cpu_ticks "$CL_PID"); f0=$(foreign_snap); t0=$(date +%s.%N)
        timeout $((DUR + 20)) ip netns exec $NS_C iperf3 -c $SRV -t "$DUR" -P "$n" "${IPERF_DIR[@]}" -J > "$j" 2>>"$LOG"
        rc=$?
        t1=$(date +%s.%N); f1=$(foreign_snap); g1=$(cpu_ticks "$GW_PID"); c1=$(cpu_ticks "$CL_PID"); rx1=$(gw_rx_bytes)
        fpct=$(foreign_pct "$f0" "$f1" "$(echo "$t1 - $t0" | bc)")
        [ "$fpct" -gt "$MAX_FOREIGN" ] && [ "$attempt" -lt "$RETRIES" ] || break
        attempt=$((attempt + 1))
        log "  foreign load ${fpct}% of a core during the measurement: repeating ($attempt/$RETRIES)"
    done
    local bps bytes retr
    bps=$(jq -r '.end.sum_received.bits_per_second // empty' "$j" 2>/dev/null)
    bytes=$(jq -r '.end.sum_received.bytes // empty' "$j" 2>/dev/null)
    retr=$(jq -r '.end.sum_sent.retransmits // empty' "$j" 2>/dev/null)
    if [ "$rc" -ne 0 ] || [ -z "$bps" ] || [ "${bytes:-0}" = 0 ]; then
        log "iperf $gw -P$n FAILED rc=$rc $(jq -r '.error // empty' "$j" 2>/dev/null)"
        printf '%s\t%s\t%s\tFAIL\t-\t-\t-\t-\t%s\t-\n' "$round" "$gw" "$n" "$fpct" >> "$RES"
        return 1
    fi
    local wall gbit cpugib gpct cpct rxmib
    wall=$(echo "$t1 - $t0" | bc)
    gbit=$(calc 3 "$bps / 1000000000")
    cpugib=$(calc 2 "(($g1 - $g0) / $HZ) / ($bytes / 1073741824)")
    gpct=$(calc 0 "100 * ($g1 - $g0) / $HZ / $wall")
    cpct=$(calc 0 "100 * ($c1 - $c0) / $HZ / $wall")
    rxmib=$(( (rx1 - rx0) / 1048576 ))
    log "$gw -P$n: $gbit Gbit/s, gateway $cpugib CPU-s/GiB (${gpct}% of a core), client ${cpct}%, retr $retr, foreign ${fpct}%, gateway decrypted ${rxmib} MiB"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$gw" "$n" "$gbit" "$cpugib" "$gpct" "$cpct" "$retr" "$fpct" "$rxmib" >> "$RES"
}

measure_gateway() {  # measure_gateway ROUND NAME(wireguard-go|accessd)
    local round=$1 gw=$2 up n
    log "=== round $round: $gw as the gateway"
    case $gw in wireguard-go) up=gw_wireguard_go_up ;; accessd) up=gw_accessd_up ;; esac
    if $up && client_up "$CLIENT_CONF"; then
        for n in $STREAMS; do run_iperf "$round" "$gw" "$n"; done
    else
        log "$gw: the tunnel did not come up (see $OUT/*.log)"
        for n in $STREAMS; do printf '%s\t%s\t%s\tFAIL\t-\t-\t-\t-\t-\t-\n' "$round" "$gw" "$n" >> "$RES"; done
    fi
    client_down
    gw_down
}

# ---------------------------------------------------------------------------- 10k peers
peer_result() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$PEERS_RES"; log "peers: $1 = $2 $3 ${4:+($4)}"; }

measure_peers() {
    log "=== $PEERS configured peers"
    rm -rf "$W/peers"
    accessd_start peers || { peer_result start FAIL - "accessd did not start"; return 1; }
    sleep 1
    peer_result rss_no_peers "$(calc 1 "$(rss_kib "$GW_PID") / 1024")" MiB "accessd RSS with no peer"
    local users=$(( (PEERS + PEERS_PER_USER - 1) / PEERS_PER_USER )) u t0 t1 made
    for u in $(seq -f 'p%05g' 1 "$users"); do "${CTL[@]}" user add "$u" --group research > /dev/null || return 1; done
    # One accessctl call per device (CREATE_JOBS at a time), bounded to 15 minutes.
    t0=$(date +%s.%N)
    seq 0 $((PEERS - 1)) | awk -v per="$PEERS_PER_USER" '{ printf "p%05d d%d\n", int($1 / per) + 1, $1 }' |
        timeout 900 xargs -P "$CREATE_JOBS" -L 1 sh -c '"$0" --socket "$1" device config "$2" "$3" > /dev/null || echo "device config $2 $3 failed" >&2' \
            "$ACCESSCTL" "$W/peers.sock" 2>>"$LOG"
    t1=$(date +%s.%N)
    made=$("${CTL[@]}" --json device list | jq length)
    peer_result create_s "$(calc 1 "$t1 - $t0")" s "$made devices via accessctl device config, $CREATE_JOBS in parallel"
    [ "$made" -ge "$PEERS" ] || { peer_result load_s FAIL - "only $made devices created"; gw_down; return 1; }
    # Restart on the same state and time the load: start -> admin socket -> all peers in `wg show`.
    stop_bg "$GW_PID"; rm -f "/var/run/wireguard/$WG_G.sock"
    t0=$(date +%s.%N)
    accessd_start peers || { peer_result load_s FAIL - "accessd did not restart"; return 1; }
    t1=$(date +%s.%N)
    peer_result admin_ready_s "$(calc 3 "$t1 - $t0")" s "start -> admin socket"
    local n=0 deadline=$(( $(date +%s) + LOAD_LIMIT ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        n=$(timeout 10 wg show $WG_G peers 2>/dev/null | wc -l)
        [ "$n" -ge "$PEERS" ] && break
        sleep 0.05
    done
    t1=$(date +%s.%N)
    if [ "$n" -ge "$PEERS" ]; then
        peer_result load_s "$(calc 3 "$t1 - $t0")" s "start -> all $PEERS peers listed by wg show (UAPI); includes process start"
    else
        peer_result load_s FAIL - "wg show listed $n of $PEERS peers after ${LOAD_LIMIT}s"
    fi
    peer_result rss "$(calc 1 "$(rss_kib "$GW_PID") / 1024")" MiB "VmRSS with $made peers"
    peer_result rss_peak "$(calc 1 "$(rss_kib "$GW_PID" VmHWM) / 1024")" MiB "VmHWM"
    grep -iE 'peer' "$OUT/accessd-peers.log" | tail -3 >> "$LOG"
    gw_down
}

# ---------------------------------------------------------------------------- report
col() {  # col GATEWAY STREAMS COLUMN -> median over rounds (numeric rows only)
    awk -F'\t' -v g="$1" -v n="$2" -v c="$3" 'NR > 1 && $2 == g && $3 == n && $c ~ /^[0-9.]+$/ { print $c }' "$RES" | median
}

report() {
    echo
    echo "throughput and gateway CPU, medians of $ROUNDS round(s) of ${DUR}s iperf3 ($DIR_LABEL through the tunnel)"
    {
        printf 'streams\twireguard-go Gbit/s\taccessd Gbit/s\tratio\twireguard-go CPU-s/GiB\taccessd CPU-s/GiB\tratio\n'
        local n wg ad wc ac
        for n in $STREAMS; do
            wg=$(col wireguard-go "$n" 4); ad=$(col accessd "$n" 4)
            wc=$(col wireguard-go "$n" 5); ac=$(col accessd "$n" 5)
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$wg" "$ad" "$(ratio "$ad" "$wg")" "$wc" "$ac" "$(ratio "$ac" "$wc")"
        done
    } | tee "$OUT/summary.tsv" | column -t -s $'\t'
    echo "targets (issue 3): throughput ratio >= 1.0 (aim 1.3), CPU-s/GiB ratio <= 0.5"
    if [ "$(wc -l < "$PEERS_RES")" -gt 1 ]; then
        echo
        column -t -s $'\t' "$PEERS_RES"
        echo "targets: load_s < 1, rss < 150 MiB"
    fi
    echo
    echo "all rows: $RES   peers: $PEERS_RES   log: $LOG"
}

# ---------------------------------------------------------------------------- main
if [ "$BUILD" = 1 ] && [[ " $PHASES " == *" accessd "* || " $PHASES " == *" peers "* ]]; then
    log "building release binaries (cargo build --release --bins)"
    (cd "$REPO" && cargo build --release --bins) >> "$LOG" 2>&1 || { log "cargo build failed, see $LOG"; exit 1; }
fi
{
    echo "date: $(date -Is)  kernel: $(uname -r)  cpus: $(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    echo "gatehouse: $(git -C "$REPO" describe --always --dirty 2>/dev/null)  accessd: $("$ACCESSD" --version 2>/dev/null)"
    echo "wireguard-go: $(dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null)  wireguard-tools: $(dpkg-query -W -f '${Version}' wireguard-tools 2>/dev/null)  iperf3: $(dpkg-query -W -f '${Version}' iperf3 2>/dev/null)"
    echo "DIRECTION=$DIRECTION DUR=$DUR STREAMS=\"$STREAMS\" ROUNDS=$ROUNDS PEERS=$PEERS PHASES=\"$PHASES\" loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/versions.txt" >> "$LOG"

setup_topology || { log "topology setup failed"; exit 1; }
for round in $(seq "$ROUNDS"); do
    for phase in $PHASES; do
        case $phase in
            wireguard-go|accessd) measure_gateway "$round" "$phase" ;;
            peers) ;;
            *) log "unknown phase $phase (wireguard-go, accessd, peers)" ;;
        esac
    done
done
[[ " $PHASES " == *" peers "* ]] && measure_peers
report
