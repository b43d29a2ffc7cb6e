#!/usr/bin/env bash
# Inspects a gatehouse .deb: every file where it belongs with its mode, the
# config as a conffile, maintainer scripts present and executable, the unit
# the one in the repo. Exits non-zero on the first thing wrong.
#
#   packaging/check-deb.sh target/debian/gatehouse_0.1.0-1_amd64.deb
set -euo pipefail
deb=${1:?usage: check-deb.sh FILE.deb}
cd "$(dirname "$0")/.."
fail() { echo "check-deb: $*" >&2; exit 1; }

listing=$(dpkg-deb -c "$deb")
expect() {  # expect MODE PATH
  echo "$listing" | awk -v m="$1" -v p="./$2" '$1 == m && $NF == p { found = 1 } END { exit !found }' \
    || fail "$2 missing or not $1"
}
expect -rwxr-xr-x usr/bin/accessd
expect -rwxr-xr-x usr/bin/accessctl
expect -rw-r--r-- etc/gatehouse/gatehouse.toml
expect -rw-r--r-- lib/systemd/system/accessd.service
expect -rw-r--r-- usr/lib/sysusers.d/gatehouse.conf
expect -rw-r--r-- usr/lib/sysctl.d/60-gatehouse.conf
expect -rw-r--r-- usr/share/man/man8/accessd.8.gz
expect -rw-r--r-- usr/share/man/man8/accessctl.8.gz
expect -rw-r--r-- usr/share/bash-completion/completions/accessctl
expect -rw-r--r-- usr/share/zsh/vendor-completions/_accessctl
expect -rw-r--r-- usr/share/fish/vendor_completions.d/accessctl.fish
expect -rw-r--r-- usr/share/doc/gatehouse/README.md
expect -rwxr-xr-x usr/share/gatehouse/fetch-anchored.py
echo "$listing" | awk '{ print $2 }' | grep -qvE '^(root/root|0/0)$' && fail "a file not owned by root"

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/gatehouse/gatehouse.toml "$work/control/conffiles" || fail "the config is not a conffile"
for script in postinst prerm postrm; do
  [ -x "$work/control/$script" ] || fail "maintainer script $script missing"
done
grep -q 'rm -rf /var/lib/gatehouse' "$work/control/postrm" || fail "purge does not remove the state"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/accessd.service | cmp -s - packaging/systemd/accessd.service \
  || fail "the packaged unit differs from packaging/systemd/accessd.service"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./etc/gatehouse/gatehouse.toml > "$work/gatehouse.toml"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" ./usr/bin/accessd
"$work/usr/bin/accessd" check-config "$work/gatehouse.toml" >/dev/null || fail "the packaged config does not pass check-config"
dpkg-deb -f "$deb" Package Version Architecture Depends
echo "check-deb: $deb is complete ($(echo "$listing" | wc -l) entries)"
