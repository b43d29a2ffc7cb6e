#!/usr/bin/env bash
# gatehouse demo: DESIGN.md's picture, built from network namespaces on this
# machine, and a short story told with the real binaries.
#
#   client  192.0.2.2 ──"internet"── 192.0.2.1  gateway (accessd)  10.0.3.1 ── research 10.0.3.140
#                                                                  10.0.4.1 ── private2 10.0.4.10
#
# The research host serves a web page and runs OpenSSH's sshd; private2
# serves a web page. An admin adds alice to the `research` group; from her
# laptop she enrolls through the portal's API (password, TOTP computed as an
# authenticator app does, see demo-laptop.py), registers a device whose key
# pair the laptop made, brings the split tunnel up (wg-quick + wireguard-go,
# as a user would run them) and reaches the research host over WireGuard and
# over `ssh -J` through the jump host, while private2 is refused both ways.
# Then `accessctl status` and the audit log, verified.
#
#   sudo packaging/demo.sh        (Debian; installs what it needs)
#
# Exits non-zero as soon as a step of the story does not happen. Everything
# it makes (namespaces, processes, the work dir) is removed at the end, also
# on Ctrl-C or failure. Traffic stays inside the namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
step() { bold "==> $*"; }
fail() { printf '\n\033[1;31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || { echo "run the demo as root: it creates network namespaces and a WireGuard interface" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs) first" >&2; exit 1; }

need=()
command -v wg-quick >/dev/null || need+=(wireguard-tools)
command -v wireguard-go >/dev/null || need+=(wireguard-go)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "building accessd and accessctl"
cargo build --quiet --bins
bin="${CARGO_TARGET_DIR:-target}/debug"
bin=$(cd "$bin" && pwd)

work=$(mktemp -d /tmp/gatehouse-demo.XXXXXX)
tag="ghd$$"
ns() { echo "$tag-$1"; }
pids=()
cleanup() {
  set +e
  ip netns exec "$(ns client)" wg-quick down "$work/alice.conf" >/dev/null 2>&1
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  for n in client gw research private2; do ip netns del "$(ns $n)" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
sock="$work/admin.sock"
ctl() { echo "\$ accessctl $*"; "$bin/accessctl" --socket "$sock" "$@"; }

step "building the network: client, gateway, research and private2 namespaces"
for n in client gw research private2; do ip netns add "$(ns $n)"; in_ns "$n" ip link set lo up; done
link() {  # link NS_A IF_A ADDR_A NS_B IF_B ADDR_B
  ip link add "$tag-a" type veth peer name "$tag-b"
  ip link set "$tag-a" netns "$(ns "$1")"; ip link set "$tag-b" netns "$(ns "$4")"
  in_ns "$1" ip link set "$tag-a" name "$2"; in_ns "$4" ip link set "$tag-b" name "$5"
  in_ns "$1" ip addr add "$3" dev "$2"; in_ns "$4" ip addr add "$6" dev "$5"
  in_ns "$1" ip link set "$2" up; in_ns "$4" ip link set "$5" up
}
link client internet 192.0.2.2/24 gw internet 192.0.2.1/24
link gw research 10.0.3.1/24 research eth0 10.0.3.140/24
link gw private2 10.0.4.1/24 private2 eth0 10.0.4.10/24
in_ns client ip route add default via 192.0.2.1
in_ns research ip route add default via 10.0.3.1
in_ns private2 ip route add default via 10.0.4.1
in_ns gw sysctl -qw net.ipv4.ip_forward=1
# Like the real internet, the client cannot route into the private subnets:
# only the tunnel leads inside.
in_ns gw ip rule add iif internet priority 100 prohibit
in_ns gw ip rule add iif internet to 192.0.2.1 priority 99 lookup main
for host in research private2; do
  mkdir -p "$work/www-$host"; echo "hello from $host" > "$work/www-$host/index.html"
  ip netns exec "$(ns "$host")" python3 -m http.server 80 --directory "$work/www-$host" >/dev/null 2>&1 &
  pids+=($!)
done
echo "client 192.0.2.2 | gateway 192.0.2.1, 10.0.3.1, 10.0.4.1 | research 10.0.3.140 (web, sshd) | private2 10.0.4.10 (web)"

step "alice's SSH key, and sshd on the research host (it trusts her key)"
mkdir -p "$work/ssh"
ssh-keygen -q -t ed25519 -N '' -C alice@laptop -f "$work/ssh/alice"
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/research_host"
cp "$work/ssh/alice.pub" "$work/ssh/authorized_keys"
cat > "$work/ssh/sshd_config" <<EOF
ListenAddress 10.0.3.140
HostKey $work/ssh/research_host
AuthorizedKeysFile $work/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
EOF
mkdir -p /run/sshd
ip netns exec "$(ns research)" /usr/sbin/sshd -D -e -f "$work/ssh/sshd_config" 2>"$work/sshd.log" &
pids+=($!)

cat > "$work/gatehouse.toml" <<EOF
[gateway]
name = "demo-gw"
public_endpoint = "192.0.2.1"
state_dir = "$work/state"

[vpn]
interface = "gatehouse0"
pool = "10.200.0.0/24"
# A device is a peer for this long after each portal login.
session_lifetime = "12h"
require_login = true

[ssh]
listen = "192.0.2.1:2222"

[portal]
listen = "192.0.2.1:8443"
require_totp = true

[admin]
socket = "$sock"

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]

[[group]]
name = "private2"
subnets = ["10.0.4.0/24"]
EOF

step "starting accessd in the gateway namespace"
"$bin/accessd" check-config "$work/gatehouse.toml"
# `ip netns exec` execs: $! is accessd itself, so cleanup stops it.
ip netns exec "$(ns gw)" "$bin/accessd" --config "$work/gatehouse.toml" 2>"$work/accessd.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && "$bin/accessctl" --socket "$sock" status >/dev/null 2>&1 && break; sleep 0.1; done
"$bin/accessctl" --socket "$sock" status >/dev/null 2>&1 || { cat "$work/accessd.log"; fail "accessd did not start"; }
echo "accessd is up: WireGuard on 192.0.2.1:51820, SSH jump host on 192.0.2.1:2222"

step "an admin adds alice to the research group, with her SSH key; accessctl prints her one-time enrollment link"
ctl user add alice --group research --ssh-key "$work/ssh/alice.pub" | tee "$work/user-add.txt"
link=$(sed -n 's/^enrollment link *//p' "$work/user-add.txt")
[ -n "$link" ] || fail "accessctl user add printed no enrollment link"
fingerprint=$("$bin/accessctl" --socket "$sock" --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["portal"]["tls_fingerprint"])')

step "alice opens the link from her laptop: password, TOTP, then a device whose key pair the laptop makes"
in_ns client python3 packaging/demo-laptop.py "$link" "$fingerprint" "Orange kettle, quiet zebra 7391" laptop "$work/alice.conf" \
  || fail "alice could not enroll through the portal"
echo; sed 's/^PrivateKey = .*/PrivateKey = (only on the laptop)/' "$work/alice.conf"
grep -q '^AllowedIPs = 10.0.3.0/24$' "$work/alice.conf" || fail "the config does not route exactly the research subnet"

step "alice brings the tunnel up with wg-quick (userspace wireguard-go): only 10.0.3.0/24 goes through it"
WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 in_ns client wg-quick up "$work/alice.conf" 2>&1 | sed 's/^/  /'
in_ns client ip route show | sed 's/^/  /'
in_ns client ip route get 1.1.1.1 | grep -q 'dev internet' || fail "the default route goes through the tunnel"

step "alice reaches the research web server over WireGuard"
ok=""
for _ in $(seq 50); do
  if page=$(in_ns client curl -s --max-time 2 http://10.0.3.140/); then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || fail "http://10.0.3.140/ is not reachable through the tunnel"
echo "\$ curl http://10.0.3.140/"; echo "$page"

step "private2 is not hers: even a hand-edited config cannot reach it (the gateway drops the packets)"
gw_key=$(sed -n 's/^PublicKey = //p' "$work/alice.conf")
echo "\$ wg set alice peer $gw_key allowed-ips 10.0.3.0/24,10.0.4.0/24"
in_ns client wg set alice peer "$gw_key" allowed-ips 10.0.3.0/24,10.0.4.0/24
echo "\$ ip route add 10.0.4.0/24 dev alice"
in_ns client ip route add 10.0.4.0/24 dev alice
if in_ns client curl -s --max-time 3 http://10.0.4.10/ >/dev/null; then fail "private2 answered through the tunnel"; fi
echo "\$ curl --max-time 3 http://10.0.4.10/   -> no answer (dropped and audited as vpn.acl.deny)"

step "the same policy on the SSH jump host: ssh -J into research works"
cat > "$work/ssh/config" <<EOF
Host *
  IdentityFile $work/ssh/alice
  IdentitiesOnly yes
  UserKnownHostsFile $work/ssh/known_hosts
  StrictHostKeyChecking accept-new
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
EOF
echo "\$ ssh -J alice@192.0.2.1:2222 root@10.0.3.140 'echo ...'"
in_ns client timeout 30 ssh -F "$work/ssh/config" -J alice@192.0.2.1:2222 root@10.0.3.140 'echo "logged in to 10.0.3.140 through the jump host"' \
  || fail "ssh -J into the research host failed"

step "... and ssh -J into private2 is refused, with the reason in the audit log"
if in_ns client timeout 30 ssh -F "$work/ssh/config" -J alice@192.0.2.1:2222 root@10.0.4.10 true 2>"$work/refused.txt"; then
  fail "ssh -J into private2 was allowed"
fi
echo "\$ ssh -J alice@192.0.2.1:2222 root@10.0.4.10 true   -> refused:"; sed 's/^/  /' "$work/refused.txt"

step "what the gateway sees"
ctl status
ctl user show alice

step "the audit log: every action, allowed or refused"
sleep 1.5   # the data plane writes its denial summary within a second
ctl audit
"$bin/accessctl" --socket "$sock" --json audit --kind vpn.acl.deny | grep -q 10.0.4.10 || fail "no vpn.acl.deny record for private2"
"$bin/accessctl" --socket "$sock" --json audit --kind ssh.forward.deny | grep -q 10.0.4.10 || fail "no ssh.forward.deny record for private2"
ctl audit verify

bold "demo complete: alice reached research over WireGuard and ssh -J; private2 was refused both ways and audited."
