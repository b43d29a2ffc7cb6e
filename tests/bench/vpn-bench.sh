#!/usr/bin/env bash
# vpn-bench.sh - accessd's WireGuard data plane beside two userspace anchors as the gateway,
# wireguard-go (Debian's) and boringtun-cli with one thread, both directions, in one run.
#
# Topology (three network namespaces, as ../../../shared/bench/netns-bench.sh builds it):
#
#   <tag>-client  c0 192.0.2.2/24  <-- veth "internet" -->  g0 192.0.2.1/24  <tag>-gw
#   <tag>-gw      g1 10.0.3.1/24   <-- veth "research" -->  s0 10.0.3.2/24   <tag>-srv
#                                                      (iperf3 -s on ports 5201..5201+DEVICES)
#
#   Tunnel: pool 10.99.0.0/16, gateway 10.99.0.1; the main client is 10.99.0.2/32 (anchors) or
#   the address accessd assigns. Every client is wireguard-go, configured from a wg-quick file
#   exactly as a user would (wg-quick strip | wg setconf, Address, MTU, a route per AllowedIPs);
#   the files are written here for the anchors and by `accessctl device config` for accessd.
#   The DEVICES extra clients (own key, own tunnel address, own wireguard-go and interface
#   <tag>d<i>) live in the client namespace too: their routes go to table 100+i, and a rule
#   `from <their address> table 100+i` sends what is bound to their address through them.
#
# Phases (arguments, default all, in this order):
#   wireguard-go  wireguard-go as the gateway, configured with `wg set` over its UAPI socket
#   boringtun     boringtun-cli as the gateway (`-f --disable-drop-privileges -t BT_THREADS`),
#                 configured the same way
#   accessd       accessd as the gateway (user + DEVICES+1 devices made with accessctl)
#   peers         PEERS devices created through accessctl, then accessd restarted: time until
#                 `wg show` (accessd's UAPI socket) lists them all, and accessd's RSS
# Each gateway is brought up once; then, for each direction in DIRECTIONS (up: client -> srv,
# the gateway decrypts; down: iperf3 -R, srv -> client, the gateway encrypts):
#   - iperf3 -P n for each n in STREAMS (one device), DUR s;
#   - "<DEVICES>x1": DEVICES clients at once, one iperf3 stream each (own server port), the
#     throughput is the sum of the bytes received;
#   - probe: 64-byte pings (-i 0.01) idle, then during a 1-stream iperf3 run of DUR s; in the
#     middle of that run a PERF_WIN s window of `perf stat -e raw_syscalls:sys_enter -e
#     context-switches -p <gateway>` and the WireGuard packet count (UDP datagrams in and out of
#     the client namespace: wireguard-go without GSO/GRO) -> syscalls per packet, switches per s.
# Once before the gateways: the crypto floor, `openssl speed -mr -evp chacha20-poly1305 -bytes
# 1420 -seconds FLOOR_SECONDS` -> CPU-s/GiB = 2^30 / (bytes per CPU-second).
# Gateway CPU = utime+stime (user and sys apart too) of the gateway process from /proc/PID/stat,
# CPU-s/GiB = CPU s / (bytes iperf3 received / 2^30). The report prints, per direction, the
# table of the three gateways, accessd ÷ the faster / cheaper peer and the issue-27 targets
# (met or MISSED; a miss does not fail the run, a failed measurement does: exit 1).
#
# Env: DUR=10 (>= 3) STREAMS="1 4" (the first is the table's main column) DEVICES=4 (0: skip)
#      DIRECTIONS="up down" (DIRECTION=up|down: one direction) ROUNDS=1 (medians printed)
#      PING_COUNT=500 (idle pings; loaded: min(PING_COUNT, (DUR-2)*100)) PERF_WIN=3 (s)
#      FLOOR_SECONDS=3 BT_THREADS=1 TOOLS=/var/tmp/gatehouse-tools/boringtun
#      BORINGTUN=$TOOLS/bin/boringtun-cli (installed with cargo install --root TOOLS if missing)
#      PEERS=10000 PEERS_PER_USER=100 CREATE_JOBS=<nproc> LOAD_LIMIT=120 (s)
#      WAIT_QUIET=0 (s to wait for foreign load to vanish) MAX_FOREIGN=15 RETRIES=3
#      CLIENT_BUF=<bytes> (default: the client's own): the clients' UDP socket buffers, as current
#        wireguard-go asks for (7340032, 7 MiB, SO_RCVBUFFORCE); Debian's 2022 build asks for none
#        and gets net.core.rmem_default (208 KiB). Set through net.core.{r,w}mem_default (not
#        per namespace: the machine's) only while the clients' sockets are made, then restored
#      GW_BUF=<bytes> (default: the machine's): the same for the gateway's UDP socket, for a
#        gateway that asks for no size (Debian's wireguard-go, boringtun-cli; accessd asks for its own)
#      PROFILE=0 (1: a `perf record` profile of the gateway over each probe's window, top symbols
#        in OUT/probe-<gw>-<dir>-r<n>-profile.txt)
#      BUILD=1 (cargo build --release --bins first)  BASE=/tmp/gatehouse-vpn-bench  OUT=<results dir>
#      ACCESSD_BEFORE=<dir with accessd + accessctl of an earlier build>: adds the gateway
#      "accessd-before" (same config, same run), so before/after figures come from one run
#
# Run as root: tests/bench/vpn-bench.sh [wireguard-go] [boringtun] [accessd] [peers]
# Needs: wireguard-go wireguard-tools iperf3 iproute2 iputils-ping jq bc openssl linux-perf
# bsdextrautils (Debian), cargo. Only addresses inside the namespaces made here are used; every
# load is bounded in time (iperf3 -t, ping -c, timeout(1), loops with deadlines). Ctrl-C or any
# exit cleans up (trap): every process started here is stopped by pid, the namespaces deleted.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BASE=${BASE:-${TMPDIR:-/tmp}/gatehouse-vpn-bench}
DUR=${DUR:-10}
STREAMS=${STREAMS:-"1 4"}
DEVICES=${DEVICES:-4}
ROUNDS=${ROUNDS:-1}
DIRECTIONS=${DIRECTIONS:-${DIRECTION:-"up down"}}
PING_COUNT=${PING_COUNT:-500}
PERF_WIN=${PERF_WIN:-3}
FLOOR_SECONDS=${FLOOR_SECONDS:-3}
BT_THREADS=${BT_THREADS:-1}
TOOLS=${TOOLS:-/var/tmp/gatehouse-tools/boringtun}
BORINGTUN=${BORINGTUN:-$TOOLS/bin/boringtun-cli}
PEERS=${PEERS:-10000}
PEERS_PER_USER=${PEERS_PER_USER:-100}
CREATE_JOBS=${CREATE_JOBS:-$(nproc)}
LOAD_LIMIT=${LOAD_LIMIT:-120}
WAIT_QUIET=${WAIT_QUIET:-0}
MAX_FOREIGN=${MAX_FOREIGN:-15}
RETRIES=${RETRIES:-3}
CLIENT_BUF=${CLIENT_BUF:-}
GW_BUF=${GW_BUF:-}
PROFILE=${PROFILE:-0}
BUILD=${BUILD:-1}
for d in $DIRECTIONS; do
    case $d in up|down) ;; *) echo "DIRECTIONS holds up and/or down, not $d" >&2; exit 2 ;; esac
done
[[ $DUR =~ ^[0-9]+$ ]] && [ "$DUR" -ge 3 ] || { echo "DUR must be a whole number of seconds >= 3" >&2; exit 2; }
[[ $DEVICES =~ ^[0-9]+$ ]] && [ "$DEVICES" -le 50 ] || { echo "DEVICES is 0..50" >&2; exit 2; }
for b in "$CLIENT_BUF" "$GW_BUF"; do
    [ -z "$b" ] || [[ $b =~ ^[0-9]+$ ]] || { echo "CLIENT_BUF and GW_BUF are sizes in bytes" >&2; exit 2; }
done
MAIN_STREAMS=${STREAMS%% *}
ACCESSD_BEFORE=${ACCESSD_BEFORE:-}   # a directory with accessd + accessctl of an earlier build
PHASES=${*:-"wireguard-go boringtun ${ACCESSD_BEFORE:+accessd-before }accessd peers"}
GATEWAYS=""
for phase in $PHASES; do
    case $phase in
        wireguard-go|boringtun|accessd) GATEWAYS="$GATEWAYS $phase" ;;
        accessd-before)
            [ -x "$ACCESSD_BEFORE/accessd" ] && [ -x "$ACCESSD_BEFORE/accessctl" ] ||
                { echo "accessd-before needs ACCESSD_BEFORE=<dir with accessd and accessctl>" >&2; exit 2; }
            GATEWAYS="$GATEWAYS $phase" ;;
        peers) ;;
        *) echo "unknown phase $phase (wireguard-go, boringtun, accessd-before, accessd, peers)" >&2; exit 2 ;;
    esac
done
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$BASE/results/$STAMP}
W=$BASE/work-$$
TAG=ghb$$                        # unique per run: namespaces and interfaces carry it
NS_C=$TAG-client; NS_G=$TAG-gw; NS_S=$TAG-srv
WG_C=${TAG}c                     # main client tunnel (UAPI: /var/run/wireguard/$WG_C.sock), <= 15 chars
WG_G=${TAG}g                     # gateway tunnel: an anchor's, or accessd's vpn.interface
SRV=10.0.3.2; GW_PUB=192.0.2.1; WG_PORT=51820; IPERF_PORT=5201
HZ=$(getconf CLK_TCK)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/release
ACCESSD=$TARGET/accessd; ACCESSCTL=$TARGET/accessctl

for tool in ip wg wg-quick wireguard-go iperf3 jq bc timeout ping openssl column; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (apt: wireguard-go wireguard-tools iperf3 iproute2 iputils-ping jq bc openssl bsdextrautils)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -e /dev/net/tun ] || { echo "/dev/net/tun is missing" >&2; exit 1; }

mkdir -p "$OUT" "$W"; chmod 700 "$W"
RES=$OUT/results.tsv; PROBE_RES=$OUT/probe.tsv; PEERS_RES=$OUT/peers.tsv; LOG=$OUT/bench.log
printf 'round\tgateway\tdirection\tstreams\tgbit_s\tcpu_s_per_gib\tgateway_pct_core\tgateway_user_pct_core\tgateway_sys_pct_core\tclient_pct_core\tretransmits\tforeign_pct_core\tgateway_wg_mib\n' > "$RES"
printf 'round\tgateway\tdirection\tidle_p50_ms\tidle_p99_ms\tidle_loss_pct\tloaded_p50_ms\tloaded_p99_ms\tloaded_loss_pct\tp99_loaded_over_idle\tprobe_gbit_s\twindow_s\tsyscalls\tctx_switches\twg_pkts\tgateway_tun_pkts\tsyscalls_per_pkt\tctx_switches_per_s\tclient_rcvbuf_drops\tgateway_rcvbuf_drops\tgateway_tun_tx_drops\n' > "$PROBE_RES"
printf 'metric\tvalue\tunit\tnote\n' > "$PEERS_RES"
: > "$LOG"
FLOOR_BPS=-; FLOOR_CPU=-
FAILS=0                          # failed measurements: the exit status is 1 when > 0
fail() { FAILS=$((FAILS + 1)); log "FAILED: $*"; }

STARTED_PIDS=()
CLIENT_PIDS=()                   # wireguard-go clients: [0] the main one, [i] device i
DEV_SRC=()                       # device i's tunnel address (its iperf3 -B)
# Shared helpers: log, nsx, kill_pid, start_bg, calc, foreign load, median, ratio, percentile,
# best, verdict.
# shellcheck source=tests/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# default_buffers BYTES|restore: net.core.{r,w}mem_default, what a socket that asks for no size
# gets (CLIENT_BUF); the machine's values are saved first and put back by `restore` and at exit.
SAVED_BUF=
default_buffers() {
    local r w
    if [ "$1" = restore ]; then
        [ -n "$SAVED_BUF" ] || return 0
        read -r r w <<< "$SAVED_BUF"
        echo "$r" > /proc/sys/net/core/rmem_default; echo "$w" > /proc/sys/net/core/wmem_default; SAVED_BUF=
        return 0
    fi
    [ -n "$SAVED_BUF" ] || SAVED_BUF="$(cat /proc/sys/net/core/rmem_default) $(cat /proc/sys/net/core/wmem_default)"
    echo "$1" > /proc/sys/net/core/rmem_default && echo "$1" > /proc/sys/net/core/wmem_default
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    default_buffers restore
    log "cleanup: stopping ${#STARTED_PIDS[@]} process(es) we started: ${STARTED_PIDS[*]:-none}"
    for pid in "${STARTED_PIDS[@]}"; do kill_pid "$pid"; done
    for ns in $NS_C $NS_G $NS_S; do ip netns del "$ns" 2>/dev/null || true; done
    rm -f /var/run/wireguard/"$TAG"?.sock /var/run/wireguard/"$TAG"d[0-9]*.sock
    rm -rf "$W"
    log "cleanup done (namespaces of this run left: $(ip netns list | grep -c "^$TAG-" || true))"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {  # forget_pid PID: drop an exited (reaped) pid from STARTED_PIDS
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}
stop_bg() { kill_pid "$1"; forget_pid "$1"; }
track_bg() { STARTED_PIDS+=("$1"); }   # a pid started with & here (bounded by timeout)

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }   # utime+stime
cpu_us() { awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat" 2>/dev/null || echo 0 0; }      # "utime stime"
cpu_sum() { local p s=0; for p in "$@"; do s=$((s + $(cpu_ticks "$p"))); done; echo $s; }
rss_kib() { awk -v k="${2:-VmRSS}:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
dir_args() { [ "$1" = down ] && echo -R; }
dir_label() { case $1 in up) echo "up: client -> srv, the gateway decrypts" ;; down) echo "down: srv -> client (iperf3 -R), the gateway encrypts" ;; esac; }
gw_label() { case $1 in boringtun) echo "boringtun-cli -t $BT_THREADS" ;; *) echo "$1" ;; esac; }

# ---------------------------------------------------------------------------- topology
setup_topology() {
    local i
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
    # The devices' replies come in on their own interfaces, routed by source: no strict rp_filter.
    nsx $NS_C sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    ip -n $NS_S route add default via 10.0.3.1     # replies to the pool go back via the gateway
    for i in $(seq 0 "$DEVICES"); do   # port 5201: the main client; 5201+i: device i
        start_bg "iperf3-srv-$((IPERF_PORT + i))" $NS_S iperf3 -s -B $SRV -p $((IPERF_PORT + i))
    done
    mkdir -p /var/run/wireguard
}

wait_sock() {  # wait_sock IFACE: its UAPI socket (10 s)
    for _ in $(seq 100); do [ -S "/var/run/wireguard/$1.sock" ] && return 0; sleep 0.1; done
    log "UAPI socket of $1 did not appear"; return 1
}

# tunnel_client WG_QUICK_FILE IFACE [TABLE]: a wireguard-go client in the client namespace with
# the file applied as wg-quick would (its pid appended to CLIENT_PIDS; TUN_SRC = its address).
# With TABLE, the AllowedIPs routes go to that table and `from <address> table TABLE` is added.
tunnel_client() {
    local conf=$1 ifc=$2 table=${3:-} a cidr mtu src=
    # With CLIENT_BUF, the defaults are raised from before the client starts until its interface
    # is configured (wireguard-go makes its UDP sockets at start and again when `wg setconf`
    # sets the listen port); its peer comes after, so no handshake is made meanwhile: a gateway
    # that makes a socket per peer on a handshake (boringtun-cli) keeps its own size.
    if [ -n "$CLIENT_BUF" ]; then default_buffers "$CLIENT_BUF" || { log "cannot set net.core.rmem_default"; return 1; }; fi
    start_bg "wg-client-$ifc" $NS_C env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifc"
    CLIENT_PIDS+=("$LAST_PID")
    wait_sock "$ifc" || { default_buffers restore; return 1; }
    wg-quick strip "$conf" > "$W/$ifc.wg" || { default_buffers restore; return 1; }
    awk '/^\[Peer\]/ { p = 1 } !p' "$W/$ifc.wg" > "$W/$ifc.iface.wg"
    awk '/^\[Peer\]/ { p = 1 } p' "$W/$ifc.wg" > "$W/$ifc.peers.wg"
    nsx $NS_C wg setconf "$ifc" "$W/$ifc.iface.wg" || { default_buffers restore; return 1; }
    default_buffers restore
    nsx $NS_C wg addconf "$ifc" "$W/$ifc.peers.wg" || return 1
    for a in $(sed -n 's/^Address *= *//p' "$conf" | tr ',' ' '); do
        ip -n $NS_C address add "$a" dev "$ifc" || return 1
        [[ $a == *.* ]] || continue
        [ -z "$src" ] && src=${a%/*}
        if [ -n "$table" ]; then ip -n $NS_C rule add from "${a%/*}" table "$table" priority "$table" || return 1; fi
    done
    [ -n "$src" ] || { log "$conf has no IPv4 Address"; return 1; }
    mtu=$(sed -n 's/^MTU *= *//p' "$conf"); ip -n $NS_C link set mtu "${mtu:-1420}" up dev "$ifc"
    for cidr in $(nsx $NS_C wg show "$ifc" allowed-ips | cut -f2-); do
        ip -n $NS_C route add "$cidr" dev "$ifc" ${table:+table "$table"} || return 1
    done
    TUN_SRC=$src
    local up=1
    for _ in $(seq 15); do   # first handshake: bounded
        nsx $NS_C ping -c 1 -W 1 -q -I "$src" $SRV > /dev/null 2>&1 && { up=0; break; }
    done
    [ "$up" = 0 ] || { log "no answer from $SRV through $ifc within 15 s"; return 1; }
    log "tunnel up ($ifc, $src): $(ip -n $NS_C route get $SRV from "$src" | head -1)"
}
clients_up() {  # the main client, then the DEVICES devices; returns 1 if the main client failed, DEVS_OK=0|1
    local i
    CLIENT_PIDS=(); DEV_SRC=(); DEVS_OK=0
    tunnel_client "$W/dev0.conf" "$WG_C" || return 1
    CL_PID=${CLIENT_PIDS[0]}
    for i in $(seq "$DEVICES"); do
        tunnel_client "$W/dev$i.conf" "${TAG}d$i" $((100 + i)) || { log "device $i: its tunnel did not come up"; return 0; }
        DEV_SRC[i]=$TUN_SRC
    done
    [ "$DEVICES" -gt 0 ] && DEVS_OK=1
    log "the clients' UDP socket buffers: $(nsx $NS_C ss -uamnH | grep -o 'rb[0-9]*,t[0-9]*,tb[0-9]*' | sort | uniq -c | tr -s ' \n' ' ')"
    return 0
}
clients_down() {
    local pid i
    for pid in "${CLIENT_PIDS[@]}"; do stop_bg "$pid"; done
    for i in $(seq "$DEVICES"); do
        while ip -n $NS_C rule del priority $((100 + i)) 2>/dev/null; do :; done
        rm -f "/var/run/wireguard/${TAG}d$i.sock"
    done
    CLIENT_PIDS=(); DEV_SRC=(); CL_PID=
    rm -f "/var/run/wireguard/$WG_C.sock"
}

# ---------------------------------------------------------------------------- gateways
# gw_uapi_up wireguard-go|boringtun -> GW_PID: the anchor in the gateway namespace, configured
# with `wg set` over its UAPI socket; writes $W/dev<i>.conf for the main client (0) and devices.
gw_uapi_up() {
    local impl=$1 i pub
    (umask 077; wg genkey > "$W/gw.key")
    wg pubkey < "$W/gw.key" > "$W/gw.pub"
    case $impl in
        wireguard-go) start_bg wg-gateway $NS_G env WG_PROCESS_FOREGROUND=1 wireguard-go -f $WG_G ;;
        boringtun) start_bg boringtun-gateway $NS_G "$BORINGTUN" -f --disable-drop-privileges \
                       -l "$OUT/boringtun-internal.log" -t "$BT_THREADS" $WG_G ;;
    esac
    GW_PID=$LAST_PID
    wait_sock $WG_G || return 1
    nsx $NS_G wg set $WG_G listen-port $WG_PORT private-key "$W/gw.key" || return 1
    for i in $(seq 0 "$DEVICES"); do
        (umask 077; wg genkey > "$W/cl$i.key")
        pub=$(wg pubkey < "$W/cl$i.key")
        nsx $NS_G wg set $WG_G peer "$pub" allowed-ips "10.99.0.$((i + 2))/32" || return 1
        (umask 077; cat > "$W/dev$i.conf") <<EOF
[Interface]
PrivateKey = $(cat "$W/cl$i.key")
Address = 10.99.0.$((i + 2))/32
MTU = 1420

[Peer]
PublicKey = $(cat "$W/gw.pub")
Endpoint = $GW_PUB:$WG_PORT
AllowedIPs = 10.0.3.0/24
PersistentKeepalive = 25
EOF
    done
    ip -n $NS_G address add 10.99.0.1/16 dev $WG_G || return 1
    ip -n $NS_G link set $WG_G mtu 1420 up
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

accessd_start() {  # accessd_start STATE_NAME [BIN_DIR] -> GW_PID, CTL (accessctl command); waits for the admin socket
    local cfg ad=$ACCESSD ctl=$ACCESSCTL
    [ -n "${2:-}" ] && { ad=$2/accessd; ctl=$2/accessctl; }
    cfg=$(accessd_config "$1")
    start_bg "accessd-$1" $NS_G "$ad" --config "$cfg" --state-dir "$W/$1" --admin-socket "$W/$1.sock"
    GW_PID=$LAST_PID
    CTL=("$ctl" --socket "$W/$1.sock")
    for _ in $(seq 200); do
        [ -S "$W/$1.sock" ] && return 0
        kill -0 "$GW_PID" 2>/dev/null || { log "accessd exited: $(tail -5 "$OUT/accessd-$1.log")"; return 1; }
        sleep 0.1
    done
    log "accessd did not open its admin socket within 20 s"; return 1
}

gw_accessd_up() {  # [BIN_DIR] -> GW_PID; the clients' files come from accessctl (laptop, laptop1..DEVICES)
    local i
    rm -rf "$W/bench" "$W"/dev*.conf
    accessd_start bench "${1:-}" || return 1
    "${CTL[@]}" user add bench --group research > /dev/null || return 1
    "${CTL[@]}" device config bench laptop --out "$W/dev0.conf" > /dev/null || return 1
    for i in $(seq "$DEVICES"); do
        "${CTL[@]}" device config bench "laptop$i" --out "$W/dev$i.conf" > /dev/null || return 1
    done
}

gw_down() {
    [ -n "${GW_PID:-}" ] && stop_bg "$GW_PID"; GW_PID=
    rm -f "/var/run/wireguard/$WG_G.sock"
}

# Bytes through the gateway's peers, rx + tx, via UAPI (awk prints big sums in e-notation otherwise).
gw_wg_bytes() { wg show $WG_G transfer 2>/dev/null | awk '{ s += $2 + $3 } END { printf "%.0f\n", s + 0 }'; }
link_pkts() { ip -n "$1" -s -j link show "$2" 2>/dev/null | jq -r '.[0].stats64 | .rx.packets + .tx.packets' 2>/dev/null || echo 0; }   # NS IFACE
# UDP datagrams in and out of a namespace (/proc/net/snmp: InDatagrams + InErrors + OutDatagrams;
# InErrors holds those dropped on a full receive buffer). In the client namespace, where only the
# wireguard-go clients use UDP and Debian's wireguard-go has no UDP GSO/GRO, this is the number of
# WireGuard packets through the tunnel, whatever the gateway coalesces on its side.
udp_dgrams() {
    ip netns exec "$1" cat /proc/net/snmp 2>/dev/null | awk '$1 == "Udp:" && !h { for (i = 2; i <= NF; i++) c[$i] = i; h = 1; next }
        $1 == "Udp:" && h { printf "%.0f\n", $c["InDatagrams"] + $c["InErrors"] + $c["OutDatagrams"] }'
}

# Datagrams a namespace's UDP sockets dropped on a full receive buffer (/proc/net/snmp RcvbufErrors).
rcvbuf_drops() {
    ip netns exec "$1" cat /proc/net/snmp 2>/dev/null | awk '$1 == "Udp:" && !h { for (i = 2; i <= NF; i++) c[$i] = i; h = 1; next }
        $1 == "Udp:" && h { printf "%.0f\n", $c["RcvbufErrors"] }'
}
tx_drops() { ip -n "$1" -s -j link show "$2" 2>/dev/null | jq -r '.[0].stats64.tx.dropped // 0' 2>/dev/null || echo 0; }   # NS IFACE

# ---------------------------------------------------------------------------- crypto floor
measure_floor() {
    local f=$OUT/openssl-speed.txt
    log "=== crypto floor: openssl speed -mr -evp chacha20-poly1305 -bytes 1420 -seconds $FLOOR_SECONDS"
    wait_quiet
    timeout $((FLOOR_SECONDS * 4 + 30)) openssl speed -mr -evp chacha20-poly1305 -bytes 1420 -seconds "$FLOOR_SECONDS" > "$f" 2>&1
    # -mr: "+F:<n>:<alg>:<bytes per second>" (for -bytes, the only size); the divisor is user CPU
    # time unless -elapsed, so this is bytes per CPU-second of one core.
    FLOOR_BPS=$(awk -F: '/^\+F:/ { v = $NF } END { if (v != "") printf "%.0f\n", v }' "$f")
    if ! [[ $FLOOR_BPS =~ ^[0-9]+$ ]] || [ "$FLOOR_BPS" = 0 ]; then
        FLOOR_BPS=-; fail "openssl speed gave no figure: $(tail -3 "$f" | tr '\n' ' ')"; return 1
    fi
    FLOOR_CPU=$(calc 3 "1073741824 / $FLOOR_BPS")
    log "crypto floor: $(calc 1 "$FLOOR_BPS / 1000000") MB/s ChaCha20-Poly1305 on 1420-byte buffers = $FLOOR_CPU CPU-s/GiB"
    printf 'bytes_per_cpu_s\tcpu_s_per_gib\n%s\t%s\n' "$FLOOR_BPS" "$FLOOR_CPU" > "$OUT/floor.tsv"
}

# ---------------------------------------------------------------------------- iperf
fail_row() { printf '%s\t%s\t%s\t%s\tFAIL\t-\t-\t-\t-\t-\t-\t%s\t-\n' "$1" "$2" "$3" "$4" "${5:--}" >> "$RES"; }   # ROUND GW DIR STREAMS [FOREIGN]

# result_row ROUND GW DIR STREAMS BYTES SECONDS GW_US0 GW_US1 CL0 CL1 WALL RETR FOREIGN WG_BYTES
result_row() {
    local round=$1 gw=$2 dir=$3 n=$4 bytes=$5 secs=$6 gu0 gs0 gu1 gs1 c0=$9 c1=${10} wall=${11} retr=${12} fpct=${13} wgb=${14}
    read -r gu0 gs0 <<< "$7"; read -r gu1 gs1 <<< "$8"
    local gt=$(( (gu1 - gu0) + (gs1 - gs0) )) gbit cpugib gpct upct spct cpct wgmib
    gbit=$(calc 3 "8 * $bytes / $secs / 1000000000")
    cpugib=$(calc 2 "($gt / $HZ) / ($bytes / 1073741824)")
    gpct=$(calc 0 "100 * $gt / $HZ / $wall")
    upct=$(calc 0 "100 * ($gu1 - $gu0) / $HZ / $wall")
    spct=$(calc 0 "100 * ($gs1 - $gs0) / $HZ / $wall")
    cpct=$(calc 0 "100 * ($c1 - $c0) / $HZ / $wall")
    wgmib=$(( wgb / 1048576 ))
    log "$gw $dir $n: $gbit Gbit/s, gateway $cpugib CPU-s/GiB (${gpct}% of a core: user ${upct}%, sys ${spct}%), clients ${cpct}%, retr $retr, foreign ${fpct}%, through the gateway's peers ${wgmib} MiB"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$gw" "$dir" "$n" "$gbit" "$cpugib" "$gpct" "$upct" "$spct" "$cpct" "$retr" "$fpct" "$wgmib" >> "$RES"
}

run_iperf() {  # run_iperf ROUND GATEWAY DIR STREAMS: one device, iperf3 -P STREAMS
    local round=$1 gw=$2 dir=$3 n=$4 j="$OUT/iperf-$2-$3-P$4-r$1.json"
    local g0 g1 c0 c1 t0 t1 f0 f1 w0 w1 rc fpct attempt=0
    while :; do
        wait_quiet
        w0=$(gw_wg_bytes); g0=$(cpu_us "$GW_PID"); c0=$(cpu_ticks "$CL_PID"); f0=$(foreign_snap); t0=$(date +%s.%N)
        # shellcheck disable=SC2046
        timeout $((DUR + 20)) ip netns exec $NS_C iperf3 -c $SRV -p $IPERF_PORT -t "$DUR" -P "$n" $(dir_args "$dir") -J > "$j" 2>>"$LOG"
        rc=$?
        t1=$(date +%s.%N); f1=$(foreign_snap); g1=$(cpu_us "$GW_PID"); c1=$(cpu_ticks "$CL_PID"); w1=$(gw_wg_bytes)
        fpct=$(foreign_pct "$f0" "$f1" "$(echo "$t1 - $t0" | bc)")
        [ "$fpct" -gt "$MAX_FOREIGN" ] && [ "$attempt" -lt "$RETRIES" ] || break
        attempt=$((attempt + 1))
        log "  foreign load ${fpct}% of a core during the measurement: repeating ($attempt/$RETRIES)"
    done
    local bytes secs retr
    bytes=$(jq -r '.end.sum_received.bytes // empty' "$j" 2>/dev/null)
    secs=$(jq -r '.end.sum_received.seconds // empty' "$j" 2>/dev/null)
    retr=$(jq -r '.end.sum_sent.retransmits // empty' "$j" 2>/dev/null)
    if [ "$rc" -ne 0 ] || [ -z "$secs" ] || [ "${bytes:-0}" = 0 ]; then
        fail "iperf $gw $dir -P$n rc=$rc $(jq -r '.error // empty' "$j" 2>/dev/null)"
        fail_row "$round" "$gw" "$dir" "$n" "$fpct"; return 1
    fi
    result_row "$round" "$gw" "$dir" "$n" "$bytes" "$secs" "$g0" "$g1" "$c0" "$c1" "$(echo "$t1 - $t0" | bc)" "$retr" "$fpct" $((w1 - w0))
}

run_devices() {  # run_devices ROUND GATEWAY DIR: DEVICES clients at once, one stream each
    local round=$1 gw=$2 dir=$3 n="${DEVICES}x1" i j
    local g0 g1 c0 c1 t0 t1 f0 f1 w0 w1 fpct attempt=0 pids rcs
    while :; do
        wait_quiet
        pids=(); rcs=0
        w0=$(gw_wg_bytes); g0=$(cpu_us "$GW_PID"); c0=$(cpu_sum "${CLIENT_PIDS[@]:1}"); f0=$(foreign_snap); t0=$(date +%s.%N)
        for i in $(seq "$DEVICES"); do
            # shellcheck disable=SC2046
            timeout $((DUR + 20)) ip netns exec $NS_C iperf3 -c $SRV -p $((IPERF_PORT + i)) -B "${DEV_SRC[i]}" \
                -t "$DUR" -P 1 $(dir_args "$dir") -J > "$OUT/iperf-$gw-$dir-${n}-d$i-r$round.json" 2>>"$LOG" &
            pids+=($!); track_bg $!
        done
        for i in "${!pids[@]}"; do
            wait "${pids[i]}" || { rcs=$?; log "  device $((i + 1)): iperf3 rc=$rcs"; }
            forget_pid "${pids[i]}"
        done
        t1=$(date +%s.%N); f1=$(foreign_snap); g1=$(cpu_us "$GW_PID"); c1=$(cpu_sum "${CLIENT_PIDS[@]:1}"); w1=$(gw_wg_bytes)
        fpct=$(foreign_pct "$f0" "$f1" "$(echo "$t1 - $t0" | bc)")
        [ "$fpct" -gt "$MAX_FOREIGN" ] && [ "$attempt" -lt "$RETRIES" ] || break
        attempt=$((attempt + 1))
        log "  foreign load ${fpct}% of a core during the measurement: repeating ($attempt/$RETRIES)"
    done
    local bytes=0 secs=0 retr=0 b s r ok=1
    for i in $(seq "$DEVICES"); do
        j="$OUT/iperf-$gw-$dir-${n}-d$i-r$round.json"
        b=$(jq -r '.end.sum_received.bytes // empty' "$j" 2>/dev/null)
        s=$(jq -r '.end.sum_received.seconds // empty' "$j" 2>/dev/null)
        r=$(jq -r '.end.sum_sent.retransmits // 0' "$j" 2>/dev/null)
        if [ -z "$b" ] || [ "$b" = 0 ] || [ -z "$s" ]; then
            ok=0; log "  device $i: no result $(jq -r '.error // empty' "$j" 2>/dev/null)"; continue
        fi
        bytes=$(echo "$bytes + $b" | bc); retr=$((retr + ${r:-0}))
        [ "$(echo "$s > $secs" | bc)" = 1 ] && secs=$s     # the sum over the longest run's seconds
    done
    if [ "$ok" = 0 ] || [ "$rcs" -ne 0 ]; then
        fail "iperf $gw $dir $n (DEVICES clients, one stream each)"
        fail_row "$round" "$gw" "$dir" "$n" "$fpct"; return 1
    fi
    result_row "$round" "$gw" "$dir" "$n" "$bytes" "$secs" "$g0" "$g1" "$c0" "$c1" "$(echo "$t1 - $t0" | bc)" "$retr" "$fpct" $((w1 - w0))
}

# ---------------------------------------------------------------------------- probe: ping + perf
ping_run() {  # ping_run FILE COUNT: 64-byte pings every 10 ms from the main client through the tunnel
    timeout $(($2 / 100 + 15)) ip netns exec $NS_C ping -n -s 64 -i 0.01 -W 1 -c "$2" $SRV > "$1" 2>&1
}
ping_stats() {  # ping_stats FILE COUNT -> "p50 p99 loss%" (ms)
    local rtts n
    rtts=$(sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' "$1")
    n=$(printf '%s\n' "$rtts" | grep -c .)
    echo "$(printf '%s\n' "$rtts" | grep . | percentile 50) $(printf '%s\n' "$rtts" | grep . | percentile 99) $(calc 1 "100 * ($2 - $n) / $2")"
}
instrument() {  # instrument BASE DELAY WINDOW: perf stat on the gateway and packet counts (run with &)
    sleep "$2"
    local p0 q0 p1 q1 t0 t1
    p0=$(udp_dgrams $NS_C); q0=$(link_pkts $NS_G $WG_G); t0=$(date +%s.%N)
    local rpid=
    if [ "$PROFILE" = 1 ]; then
        timeout $(($3 + 20)) perf record -q -F 999 -p "$GW_PID" -o "$1-perf.data" -- sleep "$3" > /dev/null 2>>"$LOG" &
        rpid=$!
    fi
    timeout $(($3 + 20)) perf stat -x, -o "$1-perf.csv" -e raw_syscalls:sys_enter -e context-switches -p "$GW_PID" -- sleep "$3" 2>>"$LOG"
    local rc=$?
    t1=$(date +%s.%N); p1=$(udp_dgrams $NS_C); q1=$(link_pkts $NS_G $WG_G)
    if [ -n "$rpid" ]; then   # the gateway's top symbols, user and kernel, over the same window
        wait "$rpid"
        perf report -i "$1-perf.data" --stdio --no-children --sort dso,sym --percent-limit 0.5 2>>"$LOG" |
            grep -v '^#' | grep . > "$1-profile.txt"
        rm -f "$1-perf.data"
    fi
    echo "$((p1 - p0)) $((q1 - q0)) $(echo "$t1 - $t0" | bc)" > "$1-pkts.txt"
    return $rc
}

probe() {  # probe ROUND GATEWAY DIR
    local round=$1 gw=$2 dir=$3 base="$OUT/probe-$2-$3-r$1"
    local w=$PERF_WIN off n_load ipid spid irc src
    [ "$w" -gt $((DUR - 2)) ] && w=$((DUR - 2))
    off=$(( (DUR - w) / 2 )); [ "$off" -lt 1 ] && off=1
    n_load=$(( (DUR - 2) * 100 )); [ "$n_load" -gt "$PING_COUNT" ] && n_load=$PING_COUNT
    wait_quiet
    ping_run "$base-ping-idle.txt" "$PING_COUNT"
    local dc0 dg0 dt0 dc1 dg1 dt1
    dc0=$(rcvbuf_drops $NS_C); dg0=$(rcvbuf_drops $NS_G); dt0=$(tx_drops $NS_G $WG_G)
    local ip50 ip99 iloss lp50 lp99 lloss
    read -r ip50 ip99 iloss <<< "$(ping_stats "$base-ping-idle.txt" "$PING_COUNT")"
    # Loaded: a 1-stream iperf3 (DUR s); the pings from 1 s to DUR-1 s; perf in the middle.
    # shellcheck disable=SC2046
    timeout $((DUR + 20)) ip netns exec $NS_C iperf3 -c $SRV -p $IPERF_PORT -t "$DUR" -P 1 $(dir_args "$dir") -J > "$base-iperf.json" 2>>"$LOG" &
    ipid=$!; track_bg $ipid
    if [ "$PERF_OK" = 1 ]; then instrument "$base" "$off" "$w" & spid=$!; track_bg $spid; fi
    sleep 1
    ping_run "$base-ping-loaded.txt" "$n_load"
    read -r lp50 lp99 lloss <<< "$(ping_stats "$base-ping-loaded.txt" "$n_load")"
    wait "$ipid"; irc=$?; forget_pid "$ipid"
    dc1=$(rcvbuf_drops $NS_C); dg1=$(rcvbuf_drops $NS_G); dt1=$(tx_drops $NS_G $WG_G)
    src=0; [ -n "${spid:-}" ] && { wait "$spid"; src=$?; forget_pid "$spid"; }
    local bps pgbit
    bps=$(jq -r '.end.sum_received.bits_per_second // empty' "$base-iperf.json" 2>/dev/null)
    [ "$irc" = 0 ] && [ -n "$bps" ] && pgbit=$(calc 3 "$bps / 1000000000") || { pgbit=FAIL; fail "probe iperf3 $gw $dir rc=$irc"; }
    [ "$ip99" = - ] && fail "no answer to the idle pings ($gw)"
    [ "$lp99" = - ] && fail "no answer to the pings under load ($gw $dir)"
    local sc=- cs=- pk=- gpk=- win= scpp=- csps=-
    if [ "$PERF_OK" = 1 ]; then
        sc=$(awk -F, '$3 ~ /raw_syscalls:sys_enter/ { print $1 }' "$base-perf.csv" 2>/dev/null)
        cs=$(awk -F, '$3 ~ /context-switches|^cs$/ { print $1 }' "$base-perf.csv" 2>/dev/null)
        read -r pk gpk win < "$base-pkts.txt" 2>/dev/null
        if [ "$src" = 0 ] && [[ ${sc:-} =~ ^[0-9]+$ && ${cs:-} =~ ^[0-9]+$ && ${pk:-} =~ ^[0-9]+$ && ${win:-} =~ ^[0-9.]+$ ]] && [ "$pk" -gt 0 ]; then
            scpp=$(calc 2 "$sc / $pk"); csps=$(calc 0 "$cs / $win")
        else
            fail "perf stat window on $gw $dir (rc=$src, syscalls=${sc:-} ctx=${cs:-} packets=${pk:-})"
        fi
    fi
    log "$gw $dir probe: ping p50/p99 idle $ip50/$ip99 ms (loss $iloss%), loaded $lp50/$lp99 ms (loss $lloss%) at $pgbit Gbit/s; ${win}s window: $sc syscalls, $cs context switches, $pk WireGuard packets (the gateway's TUN: $gpk) -> $scpp syscalls/packet, $csps switches/s; dropped in the loaded run: $((dc1 - dc0)) by the clients' full UDP buffers, $((dg1 - dg0)) by the gateway's, $((dt1 - dt0)) on the gateway's TUN"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$gw" "$dir" \
        "$ip50" "$ip99" "$iloss" "$lp50" "$lp99" "$lloss" "$(ratio "$lp99" "$ip99")" "$pgbit" "${win:--}" \
        "${sc:--}" "${cs:--}" "${pk:--}" "${gpk:--}" "$scpp" "$csps" $((dc1 - dc0)) $((dg1 - dg0)) $((dt1 - dt0)) >> "$PROBE_RES"
}

measure_gateway() {  # measure_gateway ROUND NAME(wireguard-go|boringtun|accessd)
    local round=$1 gw=$2 dir n ok=1
    log "=== round $round: $(gw_label "$gw") as the gateway"
    if [ -n "$GW_BUF" ]; then default_buffers "$GW_BUF" || { log "cannot set net.core.rmem_default"; ok=0; }; fi
    case $gw in
        wireguard-go) gw_uapi_up wireguard-go || ok=0 ;;
        boringtun) if [ "$BT_OK" = 1 ]; then gw_uapi_up boringtun || ok=0; else ok=0; fi ;;
        accessd) gw_accessd_up || ok=0 ;;
        accessd-before) gw_accessd_up "$ACCESSD_BEFORE" || ok=0 ;;
    esac
    if [ -n "$GW_BUF" ]; then   # until the gateway's WireGuard port is bound (10 s)
        for _ in $(seq 100); do [ -n "$(nsx $NS_G ss -ulnH "sport = :$WG_PORT")" ] && break; sleep 0.1; done
        default_buffers restore
    fi
    [ "$ok" = 1 ] && { clients_up || ok=0; }
    log "the gateway's UDP socket buffers (all its sockets, with those made per peer): $(nsx $NS_G ss -uamnH | grep -o 'rb[0-9]*,t[0-9]*,tb[0-9]*' | sort | uniq -c | tr -s ' \n' ' ')"
    if [ "$ok" = 1 ]; then
        [ "$DEVICES" -gt 0 ] && [ "$DEVS_OK" = 0 ] && fail "$gw: the $DEVICES devices' tunnels did not come up"
        for dir in $DIRECTIONS; do
            log "--- $gw, $(dir_label "$dir")"
            for n in $STREAMS; do run_iperf "$round" "$gw" "$dir" "$n"; done
            if [ "$DEVICES" -gt 0 ]; then
                if [ "$DEVS_OK" = 1 ]; then run_devices "$round" "$gw" "$dir"; else fail_row "$round" "$gw" "$dir" "${DEVICES}x1"; fi
            fi
            probe "$round" "$gw" "$dir"
        done
    else
        fail "$gw: the tunnel did not come up (see $OUT/*.log)"
        for dir in $DIRECTIONS; do
            for n in $STREAMS $([ "$DEVICES" -gt 0 ] && echo "${DEVICES}x1"); do fail_row "$round" "$gw" "$dir" "$n"; done
        done
    fi
    clients_down
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
    local users=$(( (PEERS + PEERS_PER_USER - 1) / PEERS_PER_USER )) u t0 t1 made rc=0
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
        peer_result load_s FAIL - "wg show listed $n of $PEERS peers after ${LOAD_LIMIT}s"; rc=1
    fi
    peer_result rss "$(calc 1 "$(rss_kib "$GW_PID") / 1024")" MiB "VmRSS with $made peers"
    peer_result rss_peak "$(calc 1 "$(rss_kib "$GW_PID" VmHWM) / 1024")" MiB "VmHWM"
    grep -iE 'peer' "$OUT/accessd-peers.log" | tail -3 >> "$LOG"
    gw_down
    return $rc
}

# ---------------------------------------------------------------------------- report
col() {  # col GATEWAY DIR STREAMS COLUMN -> median over rounds of results.tsv (numeric rows only)
    awk -F'\t' -v g="$1" -v d="$2" -v n="$3" -v c="$4" 'NR > 1 && $2 == g && $3 == d && $4 == n && $c ~ /^[0-9.]+$/ { print $c }' "$RES" | median
}
pcol() {  # pcol GATEWAY DIR COLUMN -> median over rounds of probe.tsv
    awk -F'\t' -v g="$1" -v d="$2" -v c="$3" 'NR > 1 && $2 == g && $3 == d && $c ~ /^[0-9.]+$/ { print $c }' "$PROBE_RES" | median
}

report_dir() {  # report_dir DIR: the table and the targets for one direction
    local dir=$1 gw n hdr row peers_tp=() peers_cpu=()
    echo
    echo "== $(dir_label "$dir"): medians of $ROUNDS round(s), ${DUR}s iperf3 runs, crypto floor $FLOOR_CPU CPU-s/GiB"
    hdr="gateway\tGbit/s P$MAIN_STREAMS\tCPU-s/GiB\t× floor"
    for n in ${STREAMS#"$MAIN_STREAMS"}; do hdr="$hdr\tGbit/s P$n"; done
    [ "$DEVICES" -gt 0 ] && hdr="$hdr\tGbit/s ${DEVICES} devices\tCPU-s/GiB ${DEVICES} dev"
    hdr="$hdr\tping p50/p99 idle ms\tloaded ms\tloss loaded %\tp99 loaded/idle\tsyscalls/pkt\tctx sw/s\tuser/sys % core\tdrops client/gw/tun"
    {
        echo -e "direction\t$hdr"
        for gw in $GATEWAYS; do
            local cpu
            cpu=$(col "$gw" "$dir" "$MAIN_STREAMS" 6)
            row="$(gw_label "$gw")\t$(col "$gw" "$dir" "$MAIN_STREAMS" 5)\t$cpu\t$(ratio "$cpu" "$FLOOR_CPU")"
            for n in ${STREAMS#"$MAIN_STREAMS"}; do row="$row\t$(col "$gw" "$dir" "$n" 5)"; done
            [ "$DEVICES" -gt 0 ] && row="$row\t$(col "$gw" "$dir" "${DEVICES}x1" 5)\t$(col "$gw" "$dir" "${DEVICES}x1" 6)"
            row="$row\t$(pcol "$gw" "$dir" 4)/$(pcol "$gw" "$dir" 5)\t$(pcol "$gw" "$dir" 7)/$(pcol "$gw" "$dir" 8)\t$(pcol "$gw" "$dir" 9)\t$(pcol "$gw" "$dir" 10)"
            row="$row\t$(pcol "$gw" "$dir" 17)\t$(pcol "$gw" "$dir" 18)\t$(col "$gw" "$dir" "$MAIN_STREAMS" 8)/$(col "$gw" "$dir" "$MAIN_STREAMS" 9)"
            row="$row\t$(pcol "$gw" "$dir" 19)/$(pcol "$gw" "$dir" 20)/$(pcol "$gw" "$dir" 21)"
            echo -e "$dir\t$row"
        done
    } | tee "$OUT/summary-$dir.tsv" | cut -f2- | column -t -s $'\t'
    [[ " $GATEWAYS " == *" accessd "* ]] || return 0
    # accessd against the better of the two anchors, and the issue-27 targets.
    local ad pk pn pv label cpu_a
    echo "accessd ÷ the faster peer (throughput; target >= 1.3):"
    for n in $STREAMS $([ "$DEVICES" -gt 0 ] && echo "${DEVICES}x1"); do
        ad=$(col accessd "$dir" "$n" 5)
        read -r pn pv <<< "$(best max wireguard-go "$(col wireguard-go "$dir" "$n" 5)" boringtun "$(col boringtun "$dir" "$n" 5)")"
        pk=$(ratio "$ad" "$pv")
        case $n in *x1) label="$DEVICES devices" ;; *) label="P$n" ;; esac
        printf '  %-10s %s Gbit/s ÷ %s (%s) = %s   %s\n' "$label" "$ad" "$pv" "$(gw_label "$pn")" "$pk" "$(verdict "$pk" '>=' 1.3)"
    done
    cpu_a=$(col accessd "$dir" "$MAIN_STREAMS" 6)
    read -r pn pv <<< "$(best min wireguard-go "$(col wireguard-go "$dir" "$MAIN_STREAMS" 6)" boringtun "$(col boringtun "$dir" "$MAIN_STREAMS" 6)")"
    pk=$(ratio "$cpu_a" "$pv")
    printf 'accessd ÷ the cheaper peer (CPU-s/GiB, P%s; target <= 0.6): %s ÷ %s (%s) = %s   %s\n' "$MAIN_STREAMS" "$cpu_a" "$pv" "$(gw_label "$pn")" "$pk" "$(verdict "$pk" '<=' 0.6)"
    pk=$(ratio "$cpu_a" "$FLOOR_CPU")
    printf 'accessd ÷ the crypto floor (CPU-s/GiB, P%s; target <= 6): %s ÷ %s = %s   %s\n' "$MAIN_STREAMS" "$cpu_a" "$FLOOR_CPU" "$pk" "$(verdict "$pk" '<=' 6)"
}

report() {
    local dir
    echo
    echo "crypto floor: openssl speed ChaCha20-Poly1305, 1420-byte buffers, one core: ${FLOOR_BPS} bytes per CPU-second = $FLOOR_CPU CPU-s/GiB"
    if [ -n "$GATEWAYS" ]; then
        for dir in $DIRECTIONS; do report_dir "$dir"; done
        echo
        local w=$PERF_WIN nf
        [ "$w" -gt $((DUR - 2)) ] && w=$((DUR - 2))
        echo "CPU-s/GiB: gateway utime+stime per GiB iperf3 received; × floor: ÷ the crypto floor; ping: 64-byte, every 10 ms,"
        echo "idle and under a 1-stream iperf3 in the same direction; syscalls/pkt, ctx sw/s: perf stat on the gateway over a"
        echo "${w}s window of that run, per WireGuard packet (UDP datagrams of the clients); user/sys: % of a core, P$MAIN_STREAMS run;"
        echo "drops: datagrams dropped during that loaded run by the clients' full UDP receive buffers, the gateway's, and on"
        echo "the gateway's TUN (tx dropped). Clients' socket buffers: ${CLIENT_BUF:-their own default} (CLIENT_BUF)."
        nf=$(awk -F'\t' -v m="$MAX_FOREIGN" 'NR > 1 && $12 ~ /^[0-9]+$/ && $12 > m' "$RES" | wc -l)
        [ "$nf" -eq 0 ] || echo "WARNING: $nf measured run(s) had more than ${MAX_FOREIGN}% of a core of foreign load after $RETRIES retries (results.tsv, foreign_pct_core): their figures are not clean."
    fi
    if [ "$(wc -l < "$PEERS_RES")" -gt 1 ]; then
        echo
        column -t -s $'\t' "$PEERS_RES"
        echo "targets: load_s < 1, rss < 150 MiB"
    fi
    echo
    echo "all rows: $RES   probes: $PROBE_RES   peers: $PEERS_RES   log: $LOG"
    [ "$FAILS" -eq 0 ] || echo "$FAILS measurement(s) FAILED, see $LOG"
}

# ---------------------------------------------------------------------------- main
if [ "$BUILD" = 1 ] && [[ " $PHASES " == *" accessd "* || " $PHASES " == *" peers "* ]]; then
    log "building release binaries (cargo build --release --bins)"
    (cd "$REPO" && cargo build --release --bins) >> "$LOG" 2>&1 || { log "cargo build failed, see $LOG"; exit 1; }
fi
BT_OK=0
if [[ " $GATEWAYS " == *" boringtun "* ]]; then
    if ! command -v "$BORINGTUN" > /dev/null && [ "$BORINGTUN" = "$TOOLS/bin/boringtun-cli" ]; then
        # Outside the clone, once: later runs reuse it. Its own target dir (not CARGO_TARGET_DIR).
        log "installing boringtun-cli: cargo install boringtun-cli --locked --root $TOOLS"
        env -u CARGO_TARGET_DIR cargo install boringtun-cli --locked --root "$TOOLS" >> "$LOG" 2>&1 ||
            log "cargo install boringtun-cli failed, see $LOG"
    fi
    if command -v "$BORINGTUN" > /dev/null; then BT_OK=1; else log "no boringtun-cli at $BORINGTUN: its phase fails"; fi
fi
PERF_OK=0
perf_check=$(timeout 20 perf stat -x, -e raw_syscalls:sys_enter -e context-switches -- true 2>&1)
if [[ $perf_check =~ (^|$'\n')[0-9]+,[^$'\n']*raw_syscalls:sys_enter ]]; then
    PERF_OK=1
else
    log "perf stat cannot count raw_syscalls:sys_enter here: no syscall/context-switch figures"
fi
{
    echo "date: $(date -Is)  kernel: $(uname -r)  cpus: $(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    echo "gatehouse: $(git -C "$REPO" describe --always --dirty 2>/dev/null)  accessd: $("$ACCESSD" --version 2>/dev/null)"
    echo "wireguard-go: $(dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null)  wireguard-tools: $(dpkg-query -W -f '${Version}' wireguard-tools 2>/dev/null)  iperf3: $(dpkg-query -W -f '${Version}' iperf3 2>/dev/null)"
    echo "boringtun-cli: $([ "$BT_OK" = 1 ] && "$BORINGTUN" --version 2>/dev/null || echo -) ($BORINGTUN, --threads $BT_THREADS)"
    echo "openssl: $(openssl version 2>/dev/null)  perf: $(perf --version 2>/dev/null || echo -) (usable: $PERF_OK)"
    echo "CLIENT_BUF=${CLIENT_BUF:-} GW_BUF=${GW_BUF:-} PROFILE=$PROFILE DIRECTIONS=\"$DIRECTIONS\" DUR=$DUR STREAMS=\"$STREAMS\" DEVICES=$DEVICES ROUNDS=$ROUNDS PING_COUNT=$PING_COUNT PERF_WIN=$PERF_WIN PEERS=$PEERS PHASES=\"$PHASES\" loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/versions.txt" >> "$LOG"

setup_topology || { log "topology setup failed"; exit 1; }
[ -n "$GATEWAYS" ] && measure_floor
for round in $(seq "$ROUNDS"); do
    for gw in $GATEWAYS; do measure_gateway "$round" "$gw"; done
done
if [[ " $PHASES " == *" peers "* ]]; then measure_peers || fail "peers phase"; fi
report
[ "$FAILS" -eq 0 ]
