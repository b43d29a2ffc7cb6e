#!/usr/bin/env bash
# Installs a gatehouse .deb on a fresh Debian booted under a real systemd and
# runs the unit's whole life: dpkg -i, systemctl start (Type=notify: returns
# once accessd says READY=1), status, accessctl status over the admin socket,
# the watchdog being fed, systemctl reload (SIGHUP; an invalid config refused),
# systemd-analyze security on the running unit, systemctl stop, dpkg -r (state
# kept) and dpkg --purge (state removed).
#
#   sudo packaging/check-systemd.sh /var/tmp/gatehouse-target/debian/gatehouse_0.1.0-1_amd64.deb
#
# The Debian system is a debootstrap rootfs (minbase + systemd, same suite
# and mirror as this machine's apt sources), cached in
# /var/tmp/gatehouse-systemd-rootfs ($GATEHOUSE_ROOTFS) and built only when
# missing. Each run boots a throw-away overlay of it with
# `systemd-nspawn --boot --private-network`: the container has only a
# loopback interface, so every address accessd listens on stays inside it.
# The only downloads are Debian packages, by debootstrap/apt, from the mirror
# this machine's apt already uses (debootstrap and systemd-container are
# installed on the host when missing).
#
# Needs root, Linux with overlayfs, cgroup2 and BPF. On a host whose PID 1 is
# not systemd (a container/VM sandbox with a hybrid cgroup layout) it puts
# nspawn in a cgroup of its own and gives the container a pure cgroup2
# hierarchy, like a Debian 12 boot has. Every step is bounded by a timeout;
# the container, the overlay and the cgroups are removed on exit, also on
# failure or Ctrl-C. Exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:?usage: packaging/check-systemd.sh gatehouse_VERSION_ARCH.deb}
rootfs=${GATEHOUSE_ROOTFS:-/var/tmp/gatehouse-systemd-rootfs}
# What the rootfs holds beyond minbase: systemd as init, dbus (systemctl and
# systemd-analyze talk to it), what the package needs (adduser), and what a
# standard Debian install has that the unit or this check uses: procps
# (/bin/kill for ExecReload), iproute2 (ip, ss).
include=systemd,systemd-sysv,dbus,adduser,procps,iproute2
recipe_version=1

start=$SECONDS
step() { printf '\n==> [%4ss] %s\n' "$((SECONDS - start))" "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
fail() { printf '\ncheck-systemd: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root: it debootstraps a rootfs and boots it with systemd-nspawn"
[ -f "$deb" ] || fail "no such file: $deb"
deb=$(realpath "$deb")
for cmd in dpkg-deb realpath timeout nsenter flock mount; do
  command -v "$cmd" >/dev/null || fail "$cmd is missing"
done

work=""
nspawn_pid=""
leader=""
cgroups=()
merged=""

# Runs a command inside the booted container (all its namespaces), bounded by
# $ct_timeout seconds (default 60), with a clean environment.
ct_timeout=60
ct() {
  timeout --kill-after=5 "$ct_timeout" nsenter --target "$leader" --all -- \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat DEBIAN_FRONTEND=noninteractive "$@"
}

cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM ERR
  if [ "$status" -ne 0 ] && [ -n "$leader" ] && kill -0 "$leader" 2>/dev/null; then
    printf '\n--- accessd in the container, for the failure above ---\n' >&2
    ct_timeout=20 ct systemctl status accessd.service --no-pager -l -n 0 >&2
    ct_timeout=20 ct journalctl -u accessd.service -n 40 --no-pager -o short-monotonic >&2
  fi
  if [ "$status" -ne 0 ] && [ -n "$work" ] && [ -s "$work/console.log" ]; then
    printf '\n--- last lines of the container console (%s) ---\n' "$work/console.log" >&2
    tail -n 15 "$work/console.log" | sed 's/\x1b\[[0-9;]*m//g' >&2
  fi
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid"   # nspawn asks the container's systemd to shut down
    timeout 30 tail --pid="$nspawn_pid" -f /dev/null || { kill -KILL "$nspawn_pid"; sleep 1; }
    wait "$nspawn_pid" 2>/dev/null
  fi
  if [ -n "$merged" ] && mountpoint -q "$merged"; then
    umount "$merged" || umount -l "$merged"
  fi
  local cg
  for cg in "${cgroups[@]}"; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  if [ -n "$work" ]; then
    if [ "$status" -ne 0 ] && [ -s "$work/console.log" ]; then
      rm -rf "$work/upper" "$work/ovl-work" "$work/root"
      printf 'check-systemd: the container console log is kept in %s\n' "$work/console.log" >&2
    else
      rm -rf "$work"
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'printf "check-systemd: FAILED at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the host's tools -------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]} on the host"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } \
    || fail "cannot install ${need[*]}"
fi

# --- the suite and mirror this machine uses ---------------------------------
. /etc/os-release
suite=${GATEHOUSE_SUITE:-${VERSION_CODENAME:-}}
[ -n "$suite" ] || fail "no VERSION_CODENAME in /etc/os-release; set GATEHOUSE_SUITE"
detect_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && tolower(enabled) != "no" && uri != "") {
          print uri; done = 1; exit
        }
        types = ""; suites = ""; uri = ""; enabled = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^Types:/   { types = $0; sub(/^Types:[[:space:]]*/, "", types) }
      /^URIs:/    { uri = $2 }
      /^Suites:/  { suites = $0; sub(/^Suites:[[:space:]]*/, "", suites) }
      /^Enabled:/ { enabled = $2 }
      END { if (!done) flush() }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$suite" '
    $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                  if ($(i + 1) == suite) { print $i; exit } }' || true
}
mirror=${GATEHOUSE_MIRROR:-$(detect_mirror | sed -n 1p)}
[ -n "$mirror" ] || fail "no 'deb' source for suite $suite in /etc/apt/sources.list*; set GATEHOUSE_MIRROR"

# --- the cached rootfs ------------------------------------------------------
# Checks share the rootfs (each boots its own overlay of it) under a shared
# lock; building it or adding a dependency to it takes the lock alone.
recipe="v$recipe_version suite=$suite mirror=$mirror variant=minbase include=$include"
rootfs_ok() { [ -f "$rootfs/.gatehouse-rootfs" ] && [ "$(cat "$rootfs/.gatehouse-rootfs")" = "$recipe" ]; }
# The package's Depends (first alternatives) that the rootfs lacks.
missing_deps() {
  local dep
  for dep in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/[[:space:]]//g'); do
    chroot "$rootfs" dpkg-query -W -f='${db:Status-Status}' "$dep" 2>/dev/null | grep -qx installed || echo "$dep"
  done
}
mkdir -p "$(dirname "$rootfs")"
exec 9>"$rootfs.lock"
flock -s -w 900 9 || fail "another check holds $rootfs.lock for more than 15 minutes"
if rootfs_ok && [ -z "$(missing_deps)" ]; then
  step "Debian rootfs: reusing $rootfs ($suite from $mirror)"
else
  flock -u 9
  flock -x -w 900 9 || fail "another check holds $rootfs.lock for more than 15 minutes"
  if ! rootfs_ok; then
    step "Debian rootfs: debootstrap $suite (minbase + $include) from $mirror into $rootfs"
    t0=$SECONDS
    rm -rf "$rootfs.new"
    log=$(mktemp /var/tmp/gatehouse-debootstrap.XXXXXX.log)
    timeout 1200 debootstrap --variant=minbase --include="$include" "$suite" "$rootfs.new" "$mirror" >"$log" 2>&1 \
      || { tail -n 20 "$log" >&2; fail "debootstrap failed (log: $log)"; }
    rm -f "$log"
    # Timers that would run apt or dpkg at boot (and take the dpkg lock while
    # the package is installed) are masked; nothing else is changed.
    for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
      ln -sf /dev/null "$rootfs.new/etc/systemd/system/$unit"
    done
    rm -f "$rootfs.new/var/cache/apt/archives/"*.deb
    echo "$recipe" >"$rootfs.new/.gatehouse-rootfs"
    rm -rf "$rootfs"
    mv "$rootfs.new" "$rootfs"
    ok "rootfs built in $((SECONDS - t0))s ($(du -sh "$rootfs" | cut -f1))"
  fi
  # The package's dependencies are installed into the cached rootfs once,
  # from the mirror: the container itself never has a network.
  mapfile -t missing < <(missing_deps)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing the package's dependencies ${missing[*]} into the cached rootfs from $mirror"
    cp -a "$rootfs/etc/resolv.conf" "$rootfs/etc/resolv.conf.gatehouse" 2>/dev/null || true
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    mount --bind /proc "$rootfs/proc"
    mount --bind /dev "$rootfs/dev"
    rc=0
    log=$(mktemp /var/tmp/gatehouse-apt.XXXXXX.log)
    timeout 600 chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive sh -c \
      'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" && apt-get clean' sh "${missing[@]}" \
      >"$log" 2>&1 || rc=$?
    umount "$rootfs/dev" "$rootfs/proc"
    mv "$rootfs/etc/resolv.conf.gatehouse" "$rootfs/etc/resolv.conf" 2>/dev/null || true
    [ "$rc" -eq 0 ] || { tail -n 20 "$log" >&2; fail "cannot install ${missing[*]} into the rootfs (log: $log)"; }
    rm -f "$log"
    ok "installed ${missing[*]}"
  fi
  flock -s 9
fi

# --- boot a throw-away overlay of it ---------------------------------------
work=$(mktemp -d /var/tmp/gatehouse-check-systemd.XXXXXX)
merged="$work/root"
mkdir -p "$work/upper" "$work/ovl-work" "$merged"
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$work/upper,workdir=$work/ovl-work" "$merged" \
  || fail "cannot mount an overlay of $rootfs"
cp "$deb" "$merged/root/gatehouse.deb"
echo gatehouse-check >"$merged/etc/hostname"   # debootstrap copied this machine's
machine="gatehouse-check-$$"

nspawn_args=(--directory="$merged" --machine="$machine" --boot --private-network
  --link-journal=no --console=read-only
  # systemd in the container enforces DevicePolicy/DeviceAllow (and IP
  # accounting) with cgroup BPF programs; nspawn's seccomp filter refuses
  # bpf(2) unless the container may have CAP_BPF. Without it the device ACL
  # would silently not apply and this check would prove less.
  --capability=CAP_BPF --system-call-filter=bpf)
nspawn_env=()
cgroup_mode="host systemd"
if [ ! -d /run/systemd/system ]; then
  # PID 1 is not systemd: there is no machined to register with and no unit
  # to put the container in. nspawn runs in a cgroup made for it (nspawn
  # splits it into payload/ and supervisor/), removed on exit.
  nspawn_args+=(--register=no --keep-unit)
  if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] \
      || fail "no cgroup2 hierarchy (/sys/fs/cgroup/unified): systemd in the container cannot track services"
    # A hybrid host layout (v1 controllers + cgroup2 at /sys/fs/cgroup/unified):
    # give the container a pure cgroup2 hierarchy, as Debian 12 boots with.
    nspawn_env+=(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)
    cgroups+=("/sys/fs/cgroup/unified/$machine")
    [ "$(stat -fc %T /sys/fs/cgroup/systemd 2>/dev/null)" = cgroup2fs ] || \
      { [ -f /sys/fs/cgroup/systemd/cgroup.procs ] && cgroups+=("/sys/fs/cgroup/systemd/$machine"); }
    cgroup_mode="hybrid host, cgroup2 for the container"
  else
    cgroups+=("/sys/fs/cgroup/$machine")
    cgroup_mode="cgroup2 host without systemd"
  fi
  for cg in "${cgroups[@]}"; do mkdir "$cg"; done
fi

step "booting $machine with systemd-nspawn ($cgroup_mode)"
# shellcheck disable=SC2016  # $$ and "$@" belong to the inner shell
CGROUPS="${cgroups[*]}" sh -c 'for cg in $CGROUPS; do echo $$ >"$cg/cgroup.procs" || exit 1; done; exec env "$@"' \
  sh "${nspawn_env[@]}" systemd-nspawn "${nspawn_args[@]}" \
  </dev/null >"$work/console.log" 2>&1 &
nspawn_pid=$!
deadline=$((SECONDS + 30))
until leader=$(pgrep -P "$nspawn_pid" -x systemd); do
  kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited: $(tail -n 5 "$work/console.log")"
  [ "$SECONDS" -lt "$deadline" ] || fail "no systemd in the container after 30s"
  sleep 0.2
done
state=""
deadline=$((SECONDS + 120))
while :; do
  state=$(ct_timeout=30 ct systemctl is-system-running --wait 2>/dev/null) && break
  case "$state" in running | degraded) break ;; esac
  [ "$SECONDS" -lt "$deadline" ] || fail "the container did not finish booting in 120s (state '$state')"
  sleep 0.5
done
ok "$(ct systemctl --version | head -1) is PID 1 in the container, system $state"
if [ "$state" != running ]; then
  note "failed units (not gatehouse's): $(ct systemctl --failed --plain --no-legend | awk '{ print $1 }' | tr '\n' ' ')"
fi
ok "network interfaces in the container: $(ct ip -br link | awk '{ print $1 }' | tr '\n' ' ')"

# --- dpkg -i ----------------------------------------------------------------
step "dpkg -i $(basename "$deb")  ($(dpkg-deb -f "$deb" Version), Depends: $(dpkg-deb -f "$deb" Depends))"
ct_timeout=180 ct dpkg -i /root/gatehouse.deb >"$work/dpkg-i.log" 2>&1 \
  || { cat "$work/dpkg-i.log" >&2; fail "dpkg -i failed"; }
sed 's/^/    | /' "$work/dpkg-i.log"
ct getent passwd gatehouse >/dev/null || fail "postinst did not create the user gatehouse"
ct getent group gatehouse-admin >/dev/null || fail "postinst did not create the group gatehouse-admin"
ok "user $(ct id gatehouse)"
[ "$(ct sysctl -n net.ipv4.ip_forward)" = 1 ] || fail "postinst did not turn on net.ipv4.ip_forward"
ok "net.ipv4.ip_forward = 1 (60-gatehouse.conf applied by postinst)"
[ "$(ct systemctl is-active accessd.service)" = inactive ] || fail "the package started accessd by itself"
ok "accessd.service is loaded, $(ct systemctl is-enabled accessd.service) and not started"
verify=$(ct systemd-analyze verify --man=no accessd.service 2>&1) || { echo "$verify" >&2; fail "systemd-analyze verify refuses the unit"; }
if [ -z "$verify" ]; then ok "systemd-analyze verify: no complaints"; else note "systemd-analyze verify says: $verify"; fi

# No udev runs in the container; on a Debian host udev's
# 50-udev-default.rules makes /dev/net/tun 0666, as accessd (not root, no
# CAP_DAC_OVERRIDE) needs. nspawn copies the host's node, whose mode here is
# whatever the host's /dev says.
mode=$(ct stat -c %a /dev/net/tun) || fail "no /dev/net/tun in the container"
if [ "$mode" != 666 ]; then
  ct chmod 0666 /dev/net/tun
  note "/dev/net/tun was $mode in the container (no udev); set to 0666 as udev does on Debian"
fi
# The unit's DeviceAllow= only means something if the container's systemd
# enforces device ACLs (cgroup2 + BPF): a root service without the ACL
# entry must be refused /dev/net/tun, with it allowed.
probe() { ct systemd-run --quiet --wait --pipe --collect -p DevicePolicy=closed "$@" sh -c 'exec 3<>/dev/net/tun' 2>&1; }
probe >/dev/null && fail "systemd in the container does not enforce DevicePolicy= (cgroup BPF device control unavailable)"
probe -p 'DeviceAllow=/dev/net/tun rw' >/dev/null || fail "/dev/net/tun cannot be opened even with DeviceAllow=/dev/net/tun rw"
ok "device ACLs are enforced: DevicePolicy=closed refuses /dev/net/tun, DeviceAllow=/dev/net/tun rw allows it"

# --- systemctl start ---------------------------------------------------------
step "systemctl start accessd  (Type=notify: returns once accessd sends READY=1)"
t0=$SECONDS
ct_timeout=150 ct systemctl start accessd.service || fail "systemctl start accessd failed"
ok "started in $((SECONDS - t0))s, state $(ct systemctl is-active accessd.service)"
[ "$(ct systemctl is-active accessd.service)" = active ] || fail "accessd is not active after start"
ct systemctl status accessd.service --no-pager -n 0 | sed 's/^/    | /'
pid=$(ct systemctl show -p MainPID --value accessd.service)
[ "$pid" -gt 0 ] || fail "no main PID"
caps=$(ct awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")
[ "$caps" = 0000000000001400 ] || fail "accessd's effective capabilities are $caps, not CAP_NET_ADMIN + CAP_NET_BIND_SERVICE (0000000000001400)"
ok "main process $pid runs as $(ct ps -o user= -p "$pid") with CapEff $caps (CAP_NET_ADMIN + CAP_NET_BIND_SERVICE only)"
listening=$(ct ss -H -lntup)
for want in "tcp.*:2222 " "tcp.*:443 " "tcp.*127.0.0.1:9586 " "udp.*:51820 "; do
  echo "$listening" | grep -Eq "$want" || { echo "$listening" >&2; fail "nothing listens on ${want//.\*/ }"; }
done
ok "listening: ssh :2222, portal :443, metrics 127.0.0.1:9586, wireguard udp :51820"
ct ip -br link show gatehouse0 >/dev/null || fail "no WireGuard TUN interface gatehouse0"
ok "TUN interface: $(ct ip -br link show gatehouse0 | tr -s ' ')"
sock=$(ct stat -c '%a %U:%G' /run/gatehouse/admin.sock) || fail "no admin socket /run/gatehouse/admin.sock"
[ "$sock" = "660 gatehouse:gatehouse-admin" ] || fail "admin socket is $sock, not 660 gatehouse:gatehouse-admin"
ok "admin socket /run/gatehouse/admin.sock $sock"

# --- accessctl ---------------------------------------------------------------
step "accessctl status, as root and as a member of gatehouse-admin"
ct accessctl status >"$work/status" 2>&1 || { cat "$work/status" >&2; fail "accessctl status (root) failed"; }
sed 's/^/    | /' "$work/status"
ct useradd --no-create-home --groups gatehouse-admin gh-admin
ct runuser -u gh-admin -- accessctl status >/dev/null || fail "accessctl status as a gatehouse-admin member failed"
ok "accessctl status works for a gatehouse-admin member"
rc=0; ct runuser -u nobody -- accessctl status >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "accessctl status worked for nobody, who is not in gatehouse-admin"
ok "refused to nobody (exit $rc)"

# --- watchdog ----------------------------------------------------------------
step "watchdog: WatchdogSec=$(ct systemctl show -p WatchdogUSec --value accessd.service), pings reach systemd"
first=$(ct systemctl show -p WatchdogTimestampMonotonic --value accessd.service)
deadline=$((SECONDS + 25))
until [ "$(ct systemctl show -p WatchdogTimestampMonotonic --value accessd.service)" != "$first" ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "no watchdog ping from accessd in 25s"
  sleep 1
done
ok "a WATCHDOG=1 ping arrived ($(ct systemctl show -p WatchdogTimestamp --value accessd.service))"

# --- reload ------------------------------------------------------------------
journal_since() { ct journalctl -u accessd.service --no-pager -o cat --after-cursor="$1"; }
cursor() { ct journalctl -u accessd.service -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'; }
wait_journal() {  # wait_journal CURSOR PATTERN WHAT
  local deadline=$((SECONDS + 20))
  until journal_since "$1" | grep -q "$2"; do
    [ "$SECONDS" -lt "$deadline" ] || { journal_since "$1" >&2; fail "the journal does not show $3 within 20s"; }
    sleep 0.5
  done
}
step "systemctl reload accessd  (SIGHUP)"
c=$(cursor)
ct systemctl reload accessd.service || fail "systemctl reload failed"
wait_journal "$c" 'config reloaded' "the reload"
journal_since "$c" | grep -E 'Reloading|Reloaded|SIGHUP|config reloaded' | sed 's/^/    | /'
[ "$(ct systemctl show -p MainPID --value accessd.service)" = "$pid" ] || fail "the reload restarted accessd"
ok "reloaded in place (main PID still $pid)"
ct cp /etc/gatehouse/gatehouse.toml /root/gatehouse.toml.good
ct sh -c 'echo "this is not toml" >> /etc/gatehouse/gatehouse.toml'
c=$(cursor)
ct systemctl reload accessd.service || fail "systemctl reload (invalid config) failed"
wait_journal "$c" 'reload refused' "the invalid config being refused"
ct cp /root/gatehouse.toml.good /etc/gatehouse/gatehouse.toml
[ "$(ct systemctl is-active accessd.service)" = active ] || fail "accessd is not active after an invalid reload"
ok "an invalid config is refused, accessd stays active: $(journal_since "$c" | grep -o 'config reload refused[^"]*' | head -1)"

# The descriptor limit is above the sum of the caps (see the unit).
nofile=$(ct sh -c 'grep "Max open files" /proc/$(systemctl show -p MainPID --value accessd.service)/limits' | awk '{print $4}')
[ "$nofile" = 16384 ] || fail "accessd runs with an open-files limit of '$nofile', not the unit's 16384"
ok "accessd's open-files limit is $nofile (LimitNOFILE)"

# --- systemd-analyze security -------------------------------------------------
step "systemd-analyze security accessd  (the running unit)"
ct systemd-analyze security accessd.service --no-pager >"$work/security" 2>&1 || true
grep -E '^✗' "$work/security" | sed -E 's/[[:space:]]{2,}/  /g; s/^/    | /'
score_line=$(grep 'Overall exposure level' "$work/security") || { cat "$work/security" >&2; fail "no exposure score"; }
score=$(echo "$score_line" | sed -E 's/.*: ([0-9.]+).*/\1/')
ok "$score_line"
awk -v s="$score" 'BEGIN { exit !(s < 3.0) }' || fail "exposure $score is not below 3.0"

# --- stop --------------------------------------------------------------------
step "systemctl stop accessd"
t0=$SECONDS
c=$(cursor)
ct_timeout=45 ct systemctl stop accessd.service || fail "systemctl stop failed"
[ "$(ct systemctl is-active accessd.service)" = inactive ] || fail "accessd is $(ct systemctl is-active accessd.service) after stop, not inactive"
# A stopped unit may be unloaded at once (its ExecMain* properties reset), so
# the journal tells how it ended: systemd says "Deactivated successfully"
# only for a clean exit, not after a timeout, a SIGKILL or a failure.
wait_journal "$c" 'Deactivated successfully' "a clean stop"
if journal_since "$c" | grep -E 'Failed with result|timed out|Killing process|SIGKILL|core-dump'; then
  fail "accessd did not stop cleanly"
fi
journal_since "$c" | grep -E 'SIGTERM|accessd stopped|Deactivated|Stopped' | sed 's/^/    | /'
ok "stopped in $((SECONDS - t0))s on SIGTERM, exit status 0"
ct ip link show gatehouse0 >/dev/null 2>&1 && fail "gatehouse0 is still there after stop"
ct test -e /run/gatehouse/admin.sock && fail "the admin socket is still there after stop"
ok "gatehouse0 and /run/gatehouse are gone"

# --- dpkg -r / --purge --------------------------------------------------------
step "systemctl enable --now accessd, then dpkg -r gatehouse  (prerm stops and disables it; state stays)"
ct_timeout=150 ct systemctl enable --now accessd.service >/dev/null 2>&1 || fail "systemctl enable --now accessd failed"
[ "$(ct systemctl is-enabled accessd.service)" = enabled ] || fail "accessd is not enabled after enable --now"
[ "$(ct systemctl is-active accessd.service)" = active ] || fail "accessd is not active after enable --now"
ok "enabled (multi-user.target.wants) and active again, with the state of the first run"
ct_timeout=120 ct dpkg -r gatehouse >"$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log" >&2; fail "dpkg -r failed"; }
sed 's/^/    | /' "$work/dpkg-r.log"
[ "$(ct systemctl is-active accessd.service)" != active ] || fail "accessd still runs after dpkg -r"
ct test ! -e /usr/bin/accessd || fail "/usr/bin/accessd is still there"
ct test ! -e /etc/systemd/system/multi-user.target.wants/accessd.service || fail "dpkg -r left accessd enabled"
ct test -d /var/lib/gatehouse || fail "dpkg -r removed /var/lib/gatehouse"
ok "accessd stopped; /var/lib/gatehouse kept: $(ct ls /var/lib/gatehouse | tr '\n' ' ')"
ct test -f /etc/gatehouse/gatehouse.toml || fail "dpkg -r removed the conffile"
ok "the conffile /etc/gatehouse/gatehouse.toml kept"

step "dpkg --purge gatehouse  (state removed)"
ct_timeout=120 ct dpkg --purge gatehouse >"$work/dpkg-purge.log" 2>&1 || { cat "$work/dpkg-purge.log" >&2; fail "dpkg --purge failed"; }
sed 's/^/    | /' "$work/dpkg-purge.log"
ct test ! -e /var/lib/gatehouse || fail "/var/lib/gatehouse is still there after purge"
ct test ! -e /etc/gatehouse/gatehouse.toml || fail "/etc/gatehouse/gatehouse.toml is still there after purge"
ok "/var/lib/gatehouse and /etc/gatehouse/gatehouse.toml removed; user gatehouse stays: $(ct getent passwd gatehouse | cut -d: -f1,3)"

step "shutting the container down"
ct systemctl poweroff --no-block >/dev/null 2>&1 || true
timeout 60 tail --pid="$nspawn_pid" -f /dev/null || fail "the container did not shut down in 60s"
wait "$nspawn_pid" 2>/dev/null || true
nspawn_pid=""
leader=""
ok "container gone"
printf '\ncheck-systemd: PASS in %ss: dpkg -i, start (notify), status, accessctl, watchdog, reload, security %s, stop, dpkg -r, dpkg --purge\n' \
  "$((SECONDS - start))" "$score"
