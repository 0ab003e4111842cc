# Shared by the in-guest tests (tests/vm/guest/*.sh): the rig's environment
# (tests/vm/guest-run sets SRC_DIR, BUILD_DIR, UZSWAPD, UZSWAPCTL, WORKLOAD,
# VM_DISK), uzswapd as a systemd service running the binaries of BUILD_DIR,
# workloads in memory-limited cgroups, and cleanup on every exit path. The
# guest is thrown away after the run; the cleanup is for the next test in
# the same guest.
set -uo pipefail

SKIP=77
CTL=$UZSWAPCTL
UNIT=uzswapd.service
CLEANUPS=()      # commands run on exit, last added first
WORKLOAD_PIDS=()

fail() {
  echo "FAIL: $*"
  echo "--- journal of $UNIT (last 40 lines) ---"
  journalctl -u "$UNIT" -b --no-pager -n 40 -o short-monotonic 2>/dev/null
  # A workload that died: the OOM killer says which cgroup and why.
  if dmesg | grep -q -i 'out of memory\|oom-kill'; then
    echo "--- the kernel's OOM reports ---"
    dmesg | grep -i -A2 'invoked oom-killer\|oom-kill:\|memory: usage' | tail -n 30
  fi
  exit 1
}
skip() { echo "SKIP: $*"; exit $SKIP; }
pass() { echo "ok: $*"; }
note() { echo "note: $*"; }
on_exit() { CLEANUPS+=("$*"); }

cleanup() {
  local status=$? i
  # Workloads first: their pages must not outlive the daemon, and its
  # swapoff needs the RAM they hold.
  for i in "${WORKLOAD_PIDS[@]}"; do kill -KILL "$i" 2>/dev/null; done
  wait 2>/dev/null
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CLEANUPS[i]}" >/dev/null 2>&1 || true; done
  exit $status
}
trap cleanup EXIT

require_guest() {
  [[ $(id -u) -eq 0 ]] || skip "needs root"
  [[ $(ps -p 1 -o comm=) == systemd ]] || skip "systemd is not PID 1 here"
  grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null || skip "no cgroup v2 memory controller"
  [[ -b ${VM_DISK:-} ]] || skip "no disk for the backing file (VM_DISK)"
}

# status_field PY_SUBSCRIPT: a value from uzswapctl status --json.
status_field() {
  "$CTL" status --json | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"
}
# status_py EXPR: a Python expression over the status as `s`.
status_py() {
  "$CTL" status --json | python3 -c "import json,sys; s = json.load(sys.stdin); print($1)"
}

# wait_until SECONDS CMD...: polls CMD every 0.2 s; status 1 after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 0.2
  done
}

# disk_at DIR: a fresh ext4 on the rig's disk, mounted at DIR (for the
# backing file: uzswap refuses tmpfs and overlays).
disk_at() {
  mkdir -p "$1"
  mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$VM_DISK" || fail "mkfs.ext4 $VM_DISK"
  mount "$VM_DISK" "$1" || fail "mount $VM_DISK $1"
  on_exit "umount '$1'"
}

# install_unit [CONFIG_LINE...]: uzswapd.service as shipped, pointing at the
# binaries of BUILD_DIR (the build's uzswapd-test.service), with
# /etc/uzswap/uzswapd.conf = the shipped config plus CONFIG_LINEs. The
# backing file's disk is mounted at /var/lib/uzswap. Stopped on exit.
install_unit() {
  disk_at /var/lib/uzswap
  [[ -f $BUILD_DIR/systemd/uzswapd-test.service ]] || fail "no $BUILD_DIR/systemd/uzswapd-test.service"
  cp "$BUILD_DIR/systemd/uzswapd-test.service" /etc/systemd/system/$UNIT
  mkdir -p /etc/uzswap /run/uzswap
  { cat "$SRC_DIR/systemd/uzswapd.conf"; printf '%s\n' "$@"; } > /etc/uzswap/uzswapd.conf
  systemctl daemon-reload
  on_exit "rm -f /etc/systemd/system/$UNIT /etc/uzswap/uzswapd.conf; systemctl daemon-reload"
  on_exit "stop_unit"
}

# stop_unit: stops the service; a daemon that does not stop is reported
# (never SIGKILLed with swap on).
stop_unit() {
  case $(systemctl is-active $UNIT) in inactive|failed|unknown) return 0 ;; esac
  timeout 300 systemctl stop $UNIT || echo "cleanup: systemctl stop $UNIT failed"
  systemctl reset-failed $UNIT 2>/dev/null
}

# serving_pid / supervisor_pid: uzswapd's two processes.
serving_pid() { status_field "['pid']"; }

# new_memcg DIR [FILE=VALUE...]: a cgroup (memory controller on in its
# parent), removed on exit after its processes are killed.
new_memcg() {
  local dir=$1 kv
  shift
  echo +memory > "$(dirname "$dir")/cgroup.subtree_control" 2>/dev/null
  mkdir "$dir" || fail "mkdir $dir"
  on_exit "kill_procs '$dir'; rmdir '$dir'"
  for kv in "$@"; do echo "${kv#*=}" > "$dir/${kv%%=*}" || fail "cannot set ${kv%%=*} of $dir"; done
}
kill_procs() {
  local p
  [[ -f $1/cgroup.procs ]] || return 0
  while read -r p; do kill -KILL "$p" 2>/dev/null; done < "$1/cgroup.procs"
  for _ in $(seq 1 50); do [[ -s $1/cgroup.procs ]] || break; sleep 0.1; done
}

# start_workload TAG CGROUP MIB [PREFIX...]: the byte-verified workload in
# CGROUP (a directory), paused after its fill; PREFIX (for example numactl
# --membind=1) runs it. Sets W_PID[TAG], W_GATE[TAG], W_OUT[TAG].
declare -A W_PID W_GATE W_OUT
start_workload() {
  local tag=$1 cg=$2 mib=$3
  shift 3
  W_GATE[$tag]=/tmp/uzswap-vm-gate-$tag
  W_OUT[$tag]=/tmp/uzswap-vm-out-$tag
  rm -f "${W_GATE[$tag]}"
  bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' _ "$cg" "$@" \
    "$WORKLOAD" "$mib" --seed "$RANDOM" --pause-file "${W_GATE[$tag]}" > "${W_OUT[$tag]}" 2>&1 &
  W_PID[$tag]=$!
  WORKLOAD_PIDS+=("$!")
}
# wait_filled TAG [SECONDS]
wait_filled() {
  local tag=$1
  wait_until "${2:-300}" grep -q filled "${W_OUT[$tag]}" ||
    fail "workload $tag did not fill its pages: $(cat "${W_OUT[$tag]}")"
}
# finish_workload TAG: lets it re-read every page; fails on a wrong byte.
finish_workload() {
  local tag=$1
  touch "${W_GATE[$tag]}"
  wait "${W_PID[$tag]}" || fail "workload $tag failed: $(cat "${W_OUT[$tag]}")"
  grep -q '"wrong_pages": 0' "${W_OUT[$tag]}" || fail "workload $tag saw wrong pages: $(cat "${W_OUT[$tag]}")"
  echo "workload $tag: $(tail -n 1 "${W_OUT[$tag]}")"
}

# swap_areas: how many swap areas the guest has (it has no other swap).
# Counted, not matched by name: once both uzswapd processes died, the
# kernel names the area by its path in the service's mount namespace, which
# died with them: /proc/swaps then says /loop0, not /dev/loop0.
swap_areas() { awk 'NR > 1' /proc/swaps | wc -l; }
