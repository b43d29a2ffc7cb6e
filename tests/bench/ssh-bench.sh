#!/usr/bin/env bash
# ssh-bench.sh - accessd's SSH jump host beside OpenSSH's sshd as the jump host, in one run.
#
# Topology (three network namespaces, as ../../../shared/bench/netns-bench.sh part d builds it):
#
#   <tag>-client  c0 192.0.2.2/24  <-- veth "internet" -->  g0 192.0.2.1/24  <tag>-gw
#   <tag>-gw      g1 10.0.3.1/24   <-- veth "research" -->  s0 10.0.3.2/24   <tag>-srv (sshd :22)
#
#   Jump hosts, all in the gateway namespace at the same time:
#     openssh  sshd on 192.0.2.1:22 (AllowTcpForwarding yes), user root   -J root@192.0.2.1:22
#     accessd  the broker on 192.0.2.1:2222 (vpn.enabled = false), user `bench` made with
#              accessctl user add --ssh-key + user enable                  -J bench@192.0.2.1:2222
#     accessd-before  the same from an earlier build, ACCESSD_BEFORE=<dir with accessd and
#              accessctl>, on 192.0.2.1:2223: the before/after of a change, in the same run
#   The client is the stock OpenSSH client; every option is in a -F file, which -J passes on to
#   the jump hop (it does not pass -o), so Ciphers / KexAlgorithms apply to both hops.
#
# Measurements (each jump host in turn, alternating, ROUNDS times; medians printed):
#   floor  once, first: `openssl speed -evp <cipher> -bytes 32768` per cipher, the CPU-seconds
#          one core needs to encrypt a GiB: the jump host's crypto floor (it decrypts the
#          client's hop one way and encrypts it the other).
#   bulk   per direction in DIRS and cipher in CIPHERS, BULK_MB MiB through ssh -J JUMP root@srv:
#            up    head -c BULK_MB MiB /dev/zero | ssh ... 'cat > /dev/null'   (the jump decrypts)
#            down  ssh ... 'head -c BULK_MB MiB /dev/zero' > /dev/null          (the jump encrypts)
#          MB/s, and the jump's CPU-seconds per GiB: utime+stime of accessd (all its
#          threads) or, for OpenSSH, of the listening sshd including its reaped per-connection
#          children (cutime+cstime, read after the children are gone), as the reference does.
#   conn   NCONN sequential `ssh -J JUMP root@srv true`, per key exchange in KEX ("default" = the
#          client's default list, sntrup761x25519 first; curve25519-sha256): ms per connection.
# Then a side-by-side table with ratios accessd/OpenSSH against issue 27's targets (throughput
# >= 1.3x OpenSSH's, CPU per GiB <= 0.7x), and accessd-before's figures when it ran.
#
# Env: BULK_MB=1024 NCONN=20 ROUNDS=1 DIRS="up down" FLOOR_SECONDS=3 ACCESSD_BEFORE=
#      CIPHERS="chacha20-poly1305@openssh.com aes128-gcm@openssh.com"  KEX="curve25519-sha256 default"
#      WAIT_QUIET=0 (s to wait for foreign load to vanish) MAX_FOREIGN=15 RETRIES=3
#      BUILD=1 (cargo build --release --bins first)  BASE=/tmp/gatehouse-ssh-bench  OUT=<results dir>
#
# Run as root: tests/bench/ssh-bench.sh [openssh] [accessd-before] [accessd]
#              (default: openssh accessd, and accessd-before when ACCESSD_BEFORE is set)
# Needs: openssh-client openssh-server iproute2 bc openssl (Debian), cargo.
# Only addresses inside the namespaces made here are used; every load is bounded in time
# (timeout(1), loops with deadlines). Ctrl-C or any exit cleans up (trap).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BASE=${BASE:-${TMPDIR:-/tmp}/gatehouse-ssh-bench}
BULK_MB=${BULK_MB:-1024}
NCONN=${NCONN:-20}
ROUNDS=${ROUNDS:-1}
CIPHERS=${CIPHERS:-"chacha20-poly1305@openssh.com aes128-gcm@openssh.com"}
KEX=${KEX:-"curve25519-sha256 default"}
WAIT_QUIET=${WAIT_QUIET:-0}
MAX_FOREIGN=${MAX_FOREIGN:-15}
RETRIES=${RETRIES:-3}
BUILD=${BUILD:-1}
DIRS=${DIRS:-"up down"}
FLOOR_SECONDS=${FLOOR_SECONDS:-3}
ACCESSD_BEFORE=${ACCESSD_BEFORE:-}
if [ -n "$ACCESSD_BEFORE" ]; then JUMPS=${*:-"openssh accessd-before accessd"}; else JUMPS=${*:-"openssh accessd"}; fi
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$BASE/results/$STAMP}
W=$BASE/work-$$
TAG=ghs$$                        # unique per run: the namespaces carry it
NS_C=$TAG-client; NS_G=$TAG-gw; NS_S=$TAG-srv
SRV=10.0.3.2; GW_PUB=192.0.2.1; BROKER_PORT=2222; BEFORE_PORT=2223
HZ=$(getconf CLK_TCK)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/release
SSHD=/usr/sbin/sshd

for tool in ip ssh ssh-keygen bc timeout column pgrep openssl "$SSHD"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (apt: openssh-client openssh-server iproute2 bc bsdextrautils procps openssl)" >&2; exit 1; }
done
if [[ " $JUMPS " == *" accessd-before "* ]]; then
    [ -x "$ACCESSD_BEFORE/accessd" ] && [ -x "$ACCESSD_BEFORE/accessctl" ] \
        || { echo "accessd-before needs ACCESSD_BEFORE=<dir with accessd and accessctl>" >&2; exit 1; }
fi
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }

mkdir -p "$OUT" "$W"; chmod 700 "$W"
RES=$OUT/results.tsv; LOG=$OUT/bench.log
printf 'round\tjump\tmetric\tvalue\tunit\tcpu_s_per_gib\tjump_pct_core\tforeign_pct_core\tnote\n' > "$RES"
: > "$LOG"

STARTED_PIDS=()
CREATED_RUN_SSHD=0
# Shared helpers: log, nsx, kill_pid, start_bg, calc, foreign load, median, ratio.
# shellcheck source=tests/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    log "cleanup: stopping ${#STARTED_PIDS[@]} process(es) we started: ${STARTED_PIDS[*]:-none}"
    for pid in "${STARTED_PIDS[@]}"; do kill_pid "$pid"; done
    # Anything left inside our namespaces (an ssh child of a timed-out client) was started by us.
    local ns pid
    for ns in $NS_C $NS_G $NS_S; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null || true
    done
    [ "$CREATED_RUN_SSHD" = 1 ] && rmdir /run/sshd 2>/dev/null
    rm -rf "$W"
    log "cleanup done (namespaces of this run left: $(ip netns list | grep -c "^$TAG-" || true))"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_ticks() {  # utime+stime+cutime+cstime of a PID, in clock ticks (cutime: its reaped children)
    awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
wait_children_gone() {  # wait_children_gone PID: until PID has no child (5 s at most)
    for _ in $(seq 100); do pgrep -P "$1" > /dev/null || return 0; sleep 0.05; done
    log "  children of $1 still running after 5 s: CPU figure may be low"
}
wait_tcp() {  # wait_tcp NS ADDR PORT: until it accepts (10 s at most)
    for _ in $(seq 100); do
        nsx "$1" timeout 1 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing accepts on $2:$3 in $1 after 10 s"; return 1
}

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
    ip -n $NS_S route add default via 10.0.3.1
}

# ---------------------------------------------------------------------------- ssh side
setup_ssh() {  # keys, sshd on srv and on the gateway, client configs
    local d=$W/ssh role addr
    mkdir -p "$d"; chmod 700 "$d"
    ssh-keygen -q -t ed25519 -N '' -C ssh-bench -f "$d/id_ed25519" || return 1
    cp "$d/id_ed25519.pub" "$d/authorized_keys"; chmod 600 "$d/authorized_keys"
    for role in gw srv; do
        ssh-keygen -q -t ed25519 -N '' -C "ssh-bench-$role" -f "$d/host_$role" || return 1
        [ $role = gw ] && addr=$GW_PUB || addr=$SRV
        cat > "$d/sshd_$role.conf" <<EOF
Port 22
ListenAddress $addr
HostKey $d/host_$role
PidFile none
AuthorizedKeysFile $d/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
    done
    [ -d /run/sshd ] || { mkdir -p /run/sshd; chmod 755 /run/sshd; CREATED_RUN_SSHD=1; }
    start_bg sshd-srv $NS_S "$SSHD" -D -e -f "$d/sshd_srv.conf"
    start_bg sshd-gw $NS_G "$SSHD" -D -e -f "$d/sshd_gw.conf"
    SSHD_GW_PID=$LAST_PID
    wait_tcp $NS_G $SRV 22 && wait_tcp $NS_C $GW_PUB 22 || return 1
    local c k
    for c in $CIPHERS; do client_config "cipher-$c" "Ciphers $c"; done
    for k in $KEX; do
        if [ "$k" = default ]; then client_config "kex-$k" ""; else client_config "kex-$k" "KexAlgorithms $k"; fi
    done
}

client_config() {  # client_config NAME EXTRA_LINE -> $W/ssh/NAME.conf
    {
        echo "Host *"
        echo "  IdentityFile $W/ssh/id_ed25519"
        echo "  IdentitiesOnly yes"
        echo "  IdentityAgent none"
        echo "  StrictHostKeyChecking no"
        echo "  UserKnownHostsFile /dev/null"
        echo "  GlobalKnownHostsFile /dev/null"
        echo "  LogLevel ERROR"
        echo "  BatchMode yes"
        echo "  ConnectTimeout 10"
        echo "  ControlMaster no"
        echo "  ControlPath none"
        if [ -n "$2" ]; then echo "  $2"; fi
    } > "$W/ssh/$1.conf"
}

accessd_up() {  # accessd_up NAME BIN_DIR PORT -> PID_<NAME>; a broker on $GW_PUB:PORT with user bench
    local name=$1 bin=$2 port=$3 d=$W/$1 pid n
    n=$([ "$port" = "$BROKER_PORT" ] && echo 0 || echo 1)   # distinct local ports per instance
    mkdir -p "$d"
    cat > "$d/gatehouse.toml" <<EOF
[gateway]
name = "ssh-bench"
public_endpoint = "$GW_PUB"
state_dir = "$d/state"

[vpn]
enabled = false
interface = "${TAG}g$n"
pool = "10.99.0.0/16"

[ssh]
listen = "$GW_PUB:$port"

[portal]
listen = "127.0.0.1:844$((3 + n))"
require_totp = false

[admin]
socket = "$d/admin.sock"

[metrics]
listen = "127.0.0.1:958$((6 + n))"

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
EOF
    start_bg "$name" $NS_G "$bin/accessd" --config "$d/gatehouse.toml" --state-dir "$d/state" --admin-socket "$d/admin.sock"
    pid=$LAST_PID
    printf -v "PID_${name//-/_}" '%s' "$pid"
    local ctl=("$bin/accessctl" --socket "$d/admin.sock")
    for _ in $(seq 200); do
        [ -S "$d/admin.sock" ] && break
        kill -0 "$pid" 2>/dev/null || { log "$name exited: $(tail -5 "$OUT/$name.log")"; return 1; }
        sleep 0.1
    done
    [ -S "$d/admin.sock" ] || { log "$name did not open its admin socket within 20 s"; return 1; }
    "${ctl[@]}" user add bench --group research --ssh-key "$W/ssh/id_ed25519.pub" > /dev/null || return 1
    "${ctl[@]}" user enable bench > /dev/null || return 1
    wait_tcp $NS_C $GW_PUB "$port"
}

jump_of() {
    case $1 in
        openssh) echo "root@$GW_PUB:22" ;;
        accessd) echo "bench@$GW_PUB:$BROKER_PORT" ;;
        accessd-before) echo "bench@$GW_PUB:$BEFORE_PORT" ;;
    esac
}
pid_of() { case $1 in openssh) echo "$SSHD_GW_PID" ;; accessd) echo "$PID_accessd" ;; accessd-before) echo "$PID_accessd_before" ;; esac; }

sanity() {  # sanity JUMP_NAME: one ssh -J through it
    local cfg
    cfg=$W/ssh/kex-$(echo "$KEX" | awk '{ print $NF }').conf
    if timeout 30 ip netns exec $NS_C ssh -F "$cfg" -J "$(jump_of "$1")" root@$SRV true < /dev/null >> "$LOG" 2>&1; then
        log "$1: ssh -J $(jump_of "$1") root@$SRV true works"
    else
        log "$1: ssh -J through $(jump_of "$1") FAILED (see $LOG and $OUT/*.log)"; return 1
    fi
}

# ---------------------------------------------------------------------------- measurements
bulk() {  # bulk ROUND JUMP DIR CIPHER
    local round=$1 jump=$2 dir=$3 cipher=$4 cfg=$W/ssh/cipher-$4.conf pid g0 g1 t0 t1 f0 f1 rc fpct attempt=0
    local ssh_cmd="ip netns exec $NS_C ssh -F '$cfg' -J '$(jump_of "$jump")' root@$SRV"
    pid=$(pid_of "$jump")
    while :; do
        wait_quiet
        f0=$(foreign_snap); g0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
        if [ "$dir" = up ]; then
            timeout 300 bash -c "head -c ${BULK_MB}M /dev/zero | $ssh_cmd 'cat > /dev/null'" 2>>"$LOG"
        else
            timeout 300 bash -c "$ssh_cmd 'head -c ${BULK_MB}M /dev/zero' < /dev/null > /dev/null" 2>>"$LOG"
        fi
        rc=$?
        t1=$(date +%s.%N); f1=$(foreign_snap)
        [ "$jump" = openssh ] && wait_children_gone "$pid"   # their CPU lands in the listener's cutime
        g1=$(cpu_ticks "$pid")
        fpct=$(foreign_pct "$f0" "$f1" "$(echo "$t1 - $t0" | bc)")
        [ "$fpct" -gt "$MAX_FOREIGN" ] && [ "$attempt" -lt "$RETRIES" ] || break
        attempt=$((attempt + 1))
        log "  foreign load ${fpct}% of a core during the measurement: repeating ($attempt/$RETRIES)"
    done
    local metric="bulk-$dir-${cipher%%@*}" wall mbs cpugib pct
    if [ "$rc" -ne 0 ]; then
        log "$jump $metric FAILED rc=$rc"
        printf '%s\t%s\t%s\tFAIL\tMB/s\t-\t-\t%s\trc=%s\n' "$round" "$jump" "$metric" "$fpct" "$rc" >> "$RES"
        return 1
    fi
    wall=$(echo "$t1 - $t0" | bc)
    mbs=$(calc 1 "$BULK_MB * 1048576 / 1000000 / $wall")
    cpugib=$(calc 2 "(($g1 - $g0) / $HZ) / ($BULK_MB / 1024)")
    pct=$(calc 0 "100 * ($g1 - $g0) / $HZ / $wall")
    log "$jump $metric: ${BULK_MB} MiB in $(calc 2 "$wall") s = $mbs MB/s, jump $cpugib CPU-s/GiB (${pct}% of a core), foreign ${fpct}%"
    printf '%s\t%s\t%s\t%s\tMB/s\t%s\t%s\t%s\t%s MiB in %ss\n' "$round" "$jump" "$metric" "$mbs" "$cpugib" "$pct" "$fpct" "$BULK_MB" "$(calc 2 "$wall")" >> "$RES"
}

conn() {  # conn ROUND JUMP KEX
    local round=$1 jump=$2 kex=$3 cfg=$W/ssh/kex-$3.conf i fails t0 t1 f0 f1 fpct attempt=0
    while :; do
        wait_quiet
        fails=0; f0=$(foreign_snap); t0=$(date +%s.%N)
        for i in $(seq "$NCONN"); do
            timeout 30 ip netns exec $NS_C ssh -F "$cfg" -J "$(jump_of "$jump")" root@$SRV true < /dev/null > /dev/null 2>>"$LOG" || fails=$((fails + 1))
        done
        t1=$(date +%s.%N); f1=$(foreign_snap)
        fpct=$(foreign_pct "$f0" "$f1" "$(echo "$t1 - $t0" | bc)")
        [ "$fpct" -gt "$MAX_FOREIGN" ] && [ "$attempt" -lt "$RETRIES" ] || break
        attempt=$((attempt + 1))
        log "  foreign load ${fpct}% of a core during the measurement: repeating ($attempt/$RETRIES)"
    done
    local metric="conn-$kex" per
    if [ "$fails" -gt 0 ]; then
        log "$jump $metric: $fails of $NCONN connections FAILED"
        printf '%s\t%s\t%s\tFAIL\tms/conn\t-\t-\t%s\t%s of %s failed\n' "$round" "$jump" "$metric" "$fpct" "$fails" "$NCONN" >> "$RES"
        return 1
    fi
    per=$(calc 0 "1000 * ($t1 - $t0) / $NCONN")
    log "$jump $metric: $NCONN sequential ssh -J ... true in $(calc 2 "$t1 - $t0") s = $per ms/conn, foreign ${fpct}%"
    printf '%s\t%s\t%s\t%s\tms/conn\t-\t-\t%s\t%s x ssh -J true\n' "$round" "$jump" "$metric" "$per" "$fpct" "$NCONN" >> "$RES"
}

# ---------------------------------------------------------------------------- crypto floor
floor() {  # floor CIPHER: CPU-seconds per GiB of `openssl speed -evp` on 32 KiB buffers -> $RES
    local cipher=$1 evp f bps cpu
    case $cipher in
        chacha20-poly1305*) evp=chacha20-poly1305 ;;
        aes128-gcm*) evp=aes-128-gcm ;;
        aes256-gcm*) evp=aes-256-gcm ;;
        *) log "no openssl name for $cipher: no floor"; return 0 ;;
    esac
    f=$OUT/openssl-speed-$evp.txt
    wait_quiet
    timeout $((FLOOR_SECONDS * 4 + 30)) openssl speed -mr -evp "$evp" -bytes 32768 -seconds "$FLOOR_SECONDS" > "$f" 2>&1
    # -mr: "+F:<n>:<alg>:<bytes per second>"; the divisor is user CPU time: one core's rate.
    bps=$(awk -F: '/^\+F:/ { v = $NF } END { if (v != "") printf "%.0f\n", v }' "$f")
    if ! [[ $bps =~ ^[0-9]+$ ]] || [ "$bps" = 0 ]; then log "openssl speed -evp $evp gave no figure"; return 1; fi
    cpu=$(calc 3 "1073741824 / $bps")
    log "crypto floor: $evp $(calc 1 "$bps / 1000000") MB/s on 32 KiB = $cpu CPU-s/GiB"
    printf '0\topenssl\tfloor-%s\t%s\tMB/s\t%s\t-\t-\topenssl speed -evp %s -bytes 32768\n' \
        "${cipher%%@*}" "$(calc 1 "$bps / 1000000")" "$cpu" "$evp" >> "$RES"
}

# ---------------------------------------------------------------------------- report
col() {  # col JUMP METRIC COLUMN -> median over rounds (numeric rows only)
    awk -F'\t' -v j="$1" -v m="$2" -v c="$3" 'NR > 1 && $2 == j && $3 == m && $c ~ /^[0-9.]+$/ { print $c }' "$RES" | median
}

report() {
    local has_before=0
    [[ " $LIVE " == *" accessd-before "* ]] && has_before=1
    echo
    echo "ssh -J through each jump host, medians of $ROUNDS round(s); ratio = accessd / OpenSSH"
    # row LABEL METRIC COLUMN OP LIMIT: OpenSSH, accessd, their ratio with its verdict, and
    # accessd-before with after/before when it ran.
    row() {
        local o a b r
        o=$(col openssh "$2" "$3"); a=$(col accessd "$2" "$3"); r=$(ratio "$a" "$o")
        printf '%s\t%s\t%s\t%s\t%s %s\t%s' "$1" "$o" "$a" "$r" "$4" "$5" "$(verdict "$r" "$4" "$5")"
        if [ "$has_before" = 1 ]; then
            b=$(col accessd-before "$2" "$3")
            printf '\t%s\t%s' "$b" "$(ratio "$a" "$b")"
        fi
        printf '\n'
    }
    {
        printf 'measurement\tOpenSSH\taccessd\tratio\ttarget (issue 27)\tverdict'
        [ "$has_before" = 1 ] && printf '\taccessd-before\tafter/before'
        printf '\n'
        local c d m
        for c in $CIPHERS; do
            for d in $DIRS; do
                m="bulk-$d-${c%%@*}"
                row "$m MB/s" "$m" 4 '>=' 1.3
                row "$m jump CPU-s/GiB" "$m" 6 '<=' 0.7
            done
            m="floor-${c%%@*}"
            printf '%s CPU-s/GiB (openssl speed)\t-\t%s\t-\t-\t-' "$m" "$(col openssl "$m" 6)"
            [ "$has_before" = 1 ] && printf '\t-\t-'
            printf '\n'
        done
        for c in $KEX; do
            row "conn-$c ms/conn" "conn-$c" 4 '<=' 1.1
        done
    } | tee "$OUT/summary.tsv" | column -t -s $'\t'
    echo "anchors (../shared/bench, OpenSSH 9.2 as the jump): chacha20 235 MB/s ~1.3 CPU-s/GiB,"
    echo "aes128-gcm 361 MB/s ~0.76 CPU-s/GiB; setup 237 ms (curve25519), 359 ms (default kex)"
    echo
    echo "all rows: $RES   log: $LOG"
}

# ---------------------------------------------------------------------------- main
if [ "$BUILD" = 1 ] && [[ " $JUMPS " == *" accessd "* ]]; then
    log "building release binaries (cargo build --release --bins)"
    (cd "$REPO" && cargo build --release --bins) >> "$LOG" 2>&1 || { log "cargo build failed, see $LOG"; exit 1; }
fi
{
    echo "date: $(date -Is)  kernel: $(uname -r)  cpus: $(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    echo "gatehouse: $(git -C "$REPO" describe --always --dirty 2>/dev/null)  accessd: $("$TARGET/accessd" --version 2>/dev/null)${ACCESSD_BEFORE:+  accessd-before: $ACCESSD_BEFORE}"
    echo "openssh: $(dpkg-query -W -f '${Version}' openssh-server 2>/dev/null) ($(ssh -V 2>&1))"
    echo "BULK_MB=$BULK_MB NCONN=$NCONN ROUNDS=$ROUNDS CIPHERS=\"$CIPHERS\" KEX=\"$KEX\" JUMPS=\"$JUMPS\" loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/versions.txt" >> "$LOG"

setup_topology || { log "topology setup failed"; exit 1; }
setup_ssh || { log "sshd setup failed (see $OUT/sshd-*.log)"; exit 1; }
LIVE=""
for jump in $JUMPS; do
    case $jump in
        openssh) sanity openssh && LIVE="$LIVE openssh" ;;
        accessd) accessd_up accessd "$TARGET" "$BROKER_PORT" && sanity accessd && LIVE="$LIVE accessd" ;;
        accessd-before) accessd_up accessd-before "$ACCESSD_BEFORE" "$BEFORE_PORT" && sanity accessd-before && LIVE="$LIVE accessd-before" ;;
        *) log "unknown jump host $jump (openssh, accessd, accessd-before)" ;;
    esac
done
[ -n "$LIVE" ] || { log "no jump host works"; exit 1; }
log "=== crypto floor"
for c in $CIPHERS; do floor "$c"; done
for round in $(seq "$ROUNDS"); do
    log "=== round $round"
    for c in $CIPHERS; do for d in $DIRS; do for jump in $LIVE; do bulk "$round" "$jump" "$d" "$c"; done; done; done
    for k in $KEX; do for jump in $LIVE; do conn "$round" "$jump" "$k"; done; done
done
report
