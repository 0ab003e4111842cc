#!/usr/bin/env bash
# In the VM rig's guest (systemd as PID 1, cgroup v2 with the memory
# controller): the Debian package end to end, as issue 14's "done when" says.
#   1. dpkg -i installs it: binaries, conffile, man page, units enabled but
#      not started, /run/uzswap from tmpfiles.
#   2. systemctl enable --now uzswapd brings up swap with the packaged
#      defaults: a backing file under /var/lib/uzswap sized by
#      uzswap-backing, writeback on, the per-node reclaim threads running;
#      the textfile collector timer runs with it.
#   3. A workload in a memory-limited scope swaps through it; pages are
#      written back to the file on request and every byte reads back right.
#   4. apt-get remove swaps off and leaves no swap, loop device, mount,
#      process or backing file; purge removes the conffile.
#
# The rig's interface: run as root in the guest with SRC_DIR, BUILD_DIR,
# UZSWAPD, UZSWAPCTL, WORKLOAD; UZSWAP_DEB names the .deb (tools/build-deb
# makes build-deb/uzswap_*.deb). Exit 0 pass, 77 skip, anything else fail.
set -uo pipefail

SKIP=77
CTL=/usr/bin/uzswapctl
PROM_DIR=/var/lib/prometheus/node-exporter
made_dir=  # the top directory this test made for PROM_DIR, if any
image=
mounted=false
scope_unit=uzswap-package-workload-$$
gate=
out=

fail() {
  echo "FAIL: $*" >&2
  echo "--- journal of uzswapd.service ---" >&2
  journalctl -u uzswapd.service -b --no-pager -n 40 >&2 2>/dev/null
  exit 1
}
skip() { echo "SKIP: $*"; exit $SKIP; }
pass() { echo "ok: $*"; }

status_field() {  # status_field PY_SUBSCRIPT: a value from status --json
  "$CTL" status --json | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"
}

cleanup() {
  local status=$?
  systemctl stop "$scope_unit.scope" 2>/dev/null
  if dpkg-query -W -f='${db:Status-Status}' uzswap 2>/dev/null | grep -q installed; then
    # The package's own removal stops the daemon (swapoff first); the
    # purge, which removes /var/lib/uzswap, only once that is no mount.
    dpkg -r uzswap >/dev/null 2>&1 || {
      systemctl stop uzswapd.service
      dpkg -r uzswap >/dev/null 2>&1
    }
  fi
  $mounted && umount /var/lib/uzswap
  dpkg-query -W uzswap >/dev/null 2>&1 && dpkg --purge uzswap >/dev/null 2>&1
  [[ -n $image ]] && rm -f "$image"
  rmdir /var/lib/uzswap 2>/dev/null
  [[ -n $made_dir ]] && rm -rf "$made_dir"
  rm -f "$gate" "$out"
  exit $status
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || skip "needs root"
[[ -n ${UZSWAP_DEB:-} ]] || skip "UZSWAP_DEB is not set (build the package with tools/build-deb)"
[[ -f $UZSWAP_DEB ]] || skip "UZSWAP_DEB=$UZSWAP_DEB does not exist (build it with tools/build-deb)"
[[ -d /run/systemd/system ]] || skip "systemd is not PID 1 here"
[[ -c /dev/fuse && -c /dev/loop-control ]] || skip "no /dev/fuse or loop devices"
if dpkg-query -W -f='${db:Status-Status}' uzswap 2>/dev/null | grep -q installed; then
  trap - EXIT
  skip "uzswap is already installed here; not touching it"
fi
if [[ -e /run/uzswap/uzswap.lock ]] && ! flock -n /run/uzswap/uzswap.lock true; then
  trap - EXIT
  skip "an uzswapd named uzswap is running here"
fi

# The backing file needs a disk filesystem; a guest whose /var is an
# overlay over tmpfs gets the rig's disk (VM_DISK) as ext4 on
# /var/lib/uzswap, or else a loop-mounted ext4 image (sparse: the file is
# preallocated, not written, until pages are written back).
mkdir -p /var/lib/uzswap
case $(stat -f -c %T /var/lib/uzswap) in
  ext2/ext3|xfs) ;;
  *)
    if [[ -b ${VM_DISK:-} ]]; then
      mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$VM_DISK" || fail "mkfs.ext4 $VM_DISK"
      mount "$VM_DISK" /var/lib/uzswap || fail "cannot mount $VM_DISK on /var/lib/uzswap"
      mounted=true
      echo "/var/lib/uzswap: the rig's disk $VM_DISK as ext4, the guest's /var is $(stat -f -c %T /var/tmp)"
    else
      image=$(mktemp /var/tmp/uzswap-package.XXXXXX.img 2>/dev/null || mktemp /tmp/uzswap-package.XXXXXX.img)
      truncate -s 2G "$image"
      mkfs.ext4 -q -F "$image" || fail "mkfs.ext4 $image"
      mount -o loop "$image" /var/lib/uzswap || fail "cannot mount $image on /var/lib/uzswap"
      mounted=true
      echo "/var/lib/uzswap: a 2G ext4 image, the guest's /var is $(stat -f -c %T /var/tmp)"
    fi
    ;;
esac
# So that the collector timer has somewhere to write.
if [[ ! -d $PROM_DIR ]]; then
  made_dir=$PROM_DIR
  while [[ ! -d $(dirname "$made_dir") ]]; do made_dir=$(dirname "$made_dir"); done
  mkdir -p "$PROM_DIR"
fi

# 1. Install.
dpkg -i "$UZSWAP_DEB" || fail "dpkg -i $UZSWAP_DEB"
for f in /usr/sbin/uzswapd /usr/bin/uzswapctl /usr/libexec/uzswap/uzswap-backing \
         /lib/systemd/system/uzswapd.service /usr/share/bash-completion/completions/uzswapctl; do
  [[ -e $f ]] || fail "$f not installed"
done
dpkg-query -W -f='${Conffiles}' uzswap | grep -q '/etc/uzswap/uzswapd.conf' || fail "uzswapd.conf is not a conffile"
man -w uzswapd >/dev/null 2>&1 || fail "man uzswapd finds no page"
man -w 5 uzswapd.conf >/dev/null 2>&1 || fail "man 5 uzswapd.conf finds no page"
[[ $(systemctl is-enabled uzswapd.service) == enabled ]] || fail "uzswapd.service is not enabled on install"
systemctl is-active --quiet uzswapd.service && fail "uzswapd.service was started on install"
[[ -d /run/uzswap ]] || fail "/run/uzswap was not made (tmpfiles)"
[[ $(/usr/sbin/uzswapd --version) == "uzswapd $(dpkg-query -W -f='${Version}' uzswap)" ]] ||
  fail "uzswapd --version says '$(/usr/sbin/uzswapd --version)'"
pass "installed: binaries, conffile, man pages, unit enabled and not started"

# 2. Start the Debian way.
systemctl enable --now uzswapd.service || fail "systemctl enable --now uzswapd"
# Type=notify: started means READY=1, after swapon.
[[ $(status_field "['device']['swap_on']") == True ]] || fail "swap is not on"
loop=$(status_field "['device']['loop']")
grep -q "^$loop " /proc/swaps || fail "$loop is not in /proc/swaps"
[[ $(status_field "['backing_file']") == /var/lib/uzswap/backing.swap ]] || fail "no backing file: $(status_field "['backing_file']")"
[[ $(status_field "['writeback']['enabled']") == True ]] || fail "writeback is off"
[[ $(status_field "['reclaim']['enabled']") == True ]] || fail "the reclaim threads are off"
size=$(status_field "['device']['size_bytes']")
[[ $(stat -c %s /var/lib/uzswap/backing.swap) -eq $size ]] || fail "the backing file is not preallocated to $size bytes"
grep -q "^UZSWAPD_BACKING_ARGS=--size $((size >> 20))M$" /run/uzswap/uzswapd.env ||
  fail "uzswap-backing's answer does not match the device: $(cat /run/uzswap/uzswapd.env)"
nodes=$(status_field "['reclaim']['nodes'].__len__()")
pass "swap on $loop, $((size >> 20)) MiB, backing file preallocated, writeback on, $nodes reclaim thread(s)"
journalctl -u uzswapd.service -b --no-pager | grep 'uzswap-backing' | tail -n 1
systemctl is-active --quiet uzswap-prometheus.timer || fail "uzswap-prometheus.timer did not start with uzswapd"
for _ in $(seq 1 60); do [[ -s $PROM_DIR/uzswap.prom ]] && break; sleep 0.5; done
grep -q '^uzswap_stored_pages{name="uzswap"}' "$PROM_DIR/uzswap.prom" || fail "the collector wrote no $PROM_DIR/uzswap.prom"
pass "the textfile collector wrote $PROM_DIR/uzswap.prom"

# 3. A workload that must swap, in a 64 MiB scope; written back while paused.
gate=$(mktemp -u /tmp/uzswap-package-gate.XXXXXX)
out=$(mktemp /tmp/uzswap-package-out.XXXXXX)
systemd-run --quiet --scope --unit "$scope_unit" -p MemoryMax=64M -p MemorySwapMax=infinity \
  "$WORKLOAD" 160 --pause-file "$gate" >"$out" 2>&1 &
workload_pid=$!
for _ in $(seq 1 1200); do grep -q filled "$out" && break; kill -0 $workload_pid 2>/dev/null || break; sleep 0.1; done
grep -q filled "$out" || fail "the workload did not fill its pages: $(cat "$out")"
# Out = in the pool + already written back (the scope's memory.events and
# PSI make the daemon write back from the start).
out_pages() { "$CTL" status --json | python3 -c "import json,sys; s = json.load(sys.stdin); print(s['stored_pages'] + s['written_back_pages'])"; }
for _ in $(seq 1 300); do (( $(out_pages) > 10000 )) && break; sleep 0.2; done
stored=$(out_pages)
(( stored > 10000 )) || fail "only $stored pages out: the workload did not swap through uzswap"
written=$("$CTL" writeback --pages 5000) || fail "uzswapctl writeback: $written"
wb=$(status_field "['written_back_pages']")
(( wb > 1000 )) || fail "only $wb pages written back ($written)"
pass "$stored pages out, $wb written back to the file"
touch "$gate"
wait $workload_pid || fail "the workload failed: $(cat "$out")"
grep -q '"wrong_pages": 0' "$out" || fail "the workload saw wrong pages: $(cat "$out")"
reads=$(status_field "['writeback']['backing_reads']")
(( reads > 0 )) || fail "no page came back from the backing file"
pass "every byte verified, $reads pages read back from the backing file"

# 4. Remove: the prerm stops the daemon, which swaps off.
if command -v apt-get >/dev/null; then
  apt-get remove -y -q uzswap || fail "apt-get remove uzswap"
else
  dpkg -r uzswap || fail "dpkg -r uzswap"
fi
grep -q "^$loop " /proc/swaps && fail "$loop is still swap after removal"
losetup -a | grep -q /run/uzswap/ && fail "a loop device is still attached: $(losetup -a)"
grep -q ' /run/uzswap/' /proc/mounts && fail "still mounted: $(grep ' /run/uzswap/' /proc/mounts)"
pgrep -x uzswapd >/dev/null && fail "uzswapd still runs"
[[ -e /var/lib/uzswap/backing.swap ]] && fail "the backing file was left behind"
[[ -e /usr/sbin/uzswapd ]] && fail "/usr/sbin/uzswapd is still there"
[[ -f /etc/uzswap/uzswapd.conf ]] || fail "remove deleted the conffile (only purge may)"
[[ -e $PROM_DIR/uzswap.prom ]] && fail "the collector's file was left behind"
pass "removed: no swap, loop device, mount, process or backing file left"
# Purge removes /var/lib/uzswap itself, which must not be a mount point.
if $mounted; then
  umount /var/lib/uzswap || fail "umount /var/lib/uzswap"
  mounted=false
fi
dpkg --purge uzswap >/dev/null || fail "dpkg --purge uzswap"
[[ -e /etc/uzswap/uzswapd.conf ]] && fail "purge left the conffile"
pass "purged"
