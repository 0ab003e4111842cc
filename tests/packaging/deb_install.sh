#!/usr/bin/env bash
# The built .deb installed, removed and purged for real, in a throwaway
# root: an overlay over this machine's / in private mount and PID
# namespaces, with its own /run (so no systemd is seen and nothing is
# started) and /tmp. The host's files, dpkg database and units are
# untouched. Checks what the maintainer scripts do: files in place, conffile registered, unit enabled,
# tmpfiles applied, the backing-file check refusing the overlay, then
# everything gone again on remove and purge.
#
# usage: deb_install.sh DEB     (root; skips with 77 otherwise)
set -uo pipefail
deb=$(realpath "$1")
[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root (a mount namespace and chroot)"; exit 77; }
command -v unshare >/dev/null || { echo "SKIP: no unshare"; exit 77; }
tmp=$(mktemp -d /var/tmp/uzswap-deb-root.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# The checks, run inside the throwaway root.
cat > "$tmp/checks.sh" <<'CHECKS'
set -u
status=0
fail() { echo "FAIL: $*"; status=1; }
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' uzswap 2>/dev/null)" = installed ]; }

dpkg -i /tmp/uzswap.deb >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; fail "dpkg -i"; exit 1; }
installed || fail "not installed after dpkg -i"
for f in /usr/sbin/uzswapd /usr/bin/uzswapctl /usr/libexec/uzswap/uzswap-backing \
         /usr/libexec/uzswap/uzswap-textfile /lib/systemd/system/uzswapd.service \
         /lib/systemd/system/uzswap-prometheus.timer /usr/lib/tmpfiles.d/uzswap.conf \
         /usr/share/man/man8/uzswapd.8.gz /usr/share/man/man5/uzswapd.conf.5.gz \
         /usr/share/bash-completion/completions/uzswapctl /etc/uzswap/uzswapd.conf; do
  [ -e "$f" ] || fail "$f not installed"
done
dpkg-query -W -f='${Conffiles}\n' uzswap | grep -q /etc/uzswap/uzswapd.conf || fail "uzswapd.conf is not a conffile"
[ -d /var/lib/uzswap ] || fail "/var/lib/uzswap not made"
[ -d /run/uzswap ] || fail "/run/uzswap not made by tmpfiles"
[ -L /etc/systemd/system/swap.target.wants/uzswapd.service ] || fail "uzswapd.service not enabled"
[ -L /etc/systemd/system/uzswapd.service.wants/uzswap-prometheus.timer ] || fail "the collector timer not enabled"
pgrep -x uzswapd >/dev/null && fail "uzswapd was started"
uzswapd --version | grep -q '^uzswapd ' || fail "uzswapd --version"
man -w uzswapd >/dev/null 2>&1 || fail "man uzswapd finds nothing"
bash -c '. /usr/share/bash-completion/completions/uzswapctl; complete -p uzswapctl' | grep -q _uzswapctl ||
  fail "the completion does not load"
# The overlay this runs in is refused as a place for the backing file.
out=$(/usr/libexec/uzswap/uzswap-backing 2>&1) && fail "uzswap-backing accepted an overlay: $out"
case $out in *overlayfs*) ;; *) fail "uzswap-backing's refusal is unclear: $out" ;; esac
[ $status -eq 0 ] && echo "ok: installed: files, conffile, unit and timer enabled, tmpfiles, nothing started"

dpkg -r uzswap >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; fail "dpkg -r"; }
[ -e /usr/sbin/uzswapd ] && fail "uzswapd left after remove"
[ -e /var/lib/uzswap ] && fail "/var/lib/uzswap left after remove"
[ -f /etc/uzswap/uzswapd.conf ] || fail "remove deleted the conffile"
[ $status -eq 0 ] && echo "ok: removed, conffile kept"
dpkg --purge uzswap >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; fail "dpkg --purge"; }
[ -e /etc/uzswap ] && fail "/etc/uzswap left after purge"
[ -e /etc/systemd/system/swap.target.wants/uzswapd.service ] && fail "enable symlink left after purge"
[ -n "$(dpkg-query -W -f='${db:Status-Status}' uzswap 2>/dev/null)" ] &&
  [ "$(dpkg-query -W -f='${db:Status-Status}' uzswap)" != not-installed ] && fail "dpkg still knows uzswap"
[ $status -eq 0 ] && echo "ok: purged, nothing left"
exit $status
CHECKS

unshare --mount --pid --fork --propagation private bash -euc '
  tmp=$1 deb=$2
  # Upper and work layers on a tmpfs: they may not sit inside the lower one.
  mkdir "$tmp/layers" "$tmp/root"
  mount -t tmpfs -o size=512M uzswap-deb-layers "$tmp/layers"
  mkdir "$tmp/layers/upper" "$tmp/layers/work"
  mount -t overlay uzswap-deb-root -o "lowerdir=/,upperdir=$tmp/layers/upper,workdir=$tmp/layers/work" "$tmp/root"
  mount -t proc proc "$tmp/root/proc"
  mount --rbind /dev "$tmp/root/dev"
  mount --rbind /sys "$tmp/root/sys"
  mount -t tmpfs tmpfs "$tmp/root/run"
  mount -t tmpfs tmpfs "$tmp/root/tmp"
  cp "$deb" "$tmp/root/tmp/uzswap.deb"
  cp "$tmp/checks.sh" "$tmp/root/tmp/checks.sh"
  exec chroot "$tmp/root" /bin/sh /tmp/checks.sh
' _ "$tmp" "$deb"
