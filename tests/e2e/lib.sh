# Shared by the end-to-end tests: run the real daemon as real swap, with
# unique names, and undo everything on every exit path.
#
# Environment (set by meson): UZSWAPD, UZSWAPCTL, WORKLOAD.
set -uo pipefail

# The daemon is in the reclaim path: its memory is locked, and no thread of
# it may fault in a new page while it serves (the page's charge can reclaim
# through the daemon itself). Under ASan, the fake stacks of clang 16's
# default detect_stack_use_after_return are mapped lazily and first touched
# from any function call: in a memory limit the daemon shares
# (self_pressure.sh), every daemon thread ended up in that reclaim, waiting
# on writes to its own device (seen once in a full run: FUSE workers,
# kswapd, shrink worker and wipe thread all in wbt_wait). The production
# build has no fake stacks; the unit suites keep them.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_stack_use_after_return=0"

SKIP=77
NAME="e2e$$"

# One test at a time on this machine touches swap, loop devices, mounts and
# memory cgroups, whichever checkout or build directory it runs from.
exec {SYSTEM_LOCK_FD}>/run/lock/uzswap-system.lock
flock "$SYSTEM_LOCK_FD"
RUN_DIR=/run/uzswap
DAEMON_PID=
DAEMON_LOG=$(mktemp /tmp/uzswap-e2e-log.XXXXXX)
MEMCG=
EXTRA_CGROUPS=()  # more cgroup directories to remove on exit, deepest last
TEMP_FILES=()     # files to remove on exit
AFTER_CLEANUP=()  # commands run last on exit (restoring kernel settings)

fail() {
  echo "FAIL: $*" >&2
  dump_daemon_stacks >&2
  echo "--- daemon log ---" >&2
  cat "$DAEMON_LOG" >&2
  # Again at the end: meson shows the last 100 lines of a failed test.
  echo "FAIL: $*" >&2
  exit 1
}

# dump_daemon_stacks: every thread's stack of this test's uzswapd processes
# (supervisor and serving process), for a failure such as a hang that the
# log alone does not explain: where each waits in the kernel (what gdb
# cannot show of a thread in D state), then gdb's backtraces (bounded to
# 60 s per process; none without gdb).
dump_daemon_stacks() {
  [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null || return 0
  local pid task
  for pid in "$DAEMON_PID" $(pgrep -P "$DAEMON_PID"); do
    for task in /proc/$pid/task/*; do
      echo "--- kernel stack of ${task##*/} ($(cat "$task/comm" 2>/dev/null), state $(awk '{print $3}' "$task/stat" 2>/dev/null)) ---"
      head -n 16 "$task/stack" 2>/dev/null
    done
    command -v gdb >/dev/null || continue
    echo "--- stacks of $pid ($(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)) ---"
    timeout 60 gdb -q -batch -p "$pid" -ex "set pagination off" -ex "thread apply all bt 12" 2>&1 |
      grep -E '^(Thread|#)' || true
  done
}
skip() {
  echo "SKIP: $*"
  exit $SKIP
}
pass() { echo "ok: $*"; }

# NBD tests: libnbd's tools (tools/install-deps), and Debian's python3 with
# its nbd module (a python3 earlier on PATH may lack it).
PY3=/usr/bin/python3
require_nbd_tools() {
  [[ $(id -u) -eq 0 ]] || skip "needs root"
  command -v nbdinfo >/dev/null && command -v nbdcopy >/dev/null || skip "no nbdinfo/nbdcopy (libnbd-bin)"
  "$PY3" -c 'import nbd' 2>/dev/null || skip "no python3-libnbd"
}
nbd_uri() { echo "nbd+unix:///?socket=$RUN_DIR/${1:-$NAME}/nbd"; }
EXTRA_DAEMONS=()  # pids of more uzswapd processes (not swap: NBD servers), ended on exit

require_machine() {
  [[ $(id -u) -eq 0 ]] || skip "needs root"
  [[ -c /dev/fuse ]] || skip "no /dev/fuse"
  [[ -c /dev/loop-control ]] || skip "no loop devices"
  [[ -r /proc/swaps ]] || skip "no swap support"
}

# kill_cgroup_procs DIR: ends every process in a cgroup (test workloads).
kill_cgroup_procs() {
  [[ -f $1/cgroup.procs ]] || return 0
  local p
  while read -r p; do kill -KILL "$p" 2>/dev/null; done < "$1/cgroup.procs"
}

cleanup() {
  local status=$?
  # Workloads first: their swapped-out pages must not outlive the daemon, and
  # the daemon's swapoff needs the RAM they hold.
  local cg i
  for cg in "$MEMCG" "${EXTRA_CGROUPS[@]}"; do [[ -n $cg ]] && kill_cgroup_procs "$cg"; done
  local pid
  for pid in "${EXTRA_DAEMONS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  kill $(jobs -p) 2>/dev/null
  wait 2>/dev/null
  local dev
  dev=$(readlink "$RUN_DIR/$NAME/device" 2>/dev/null || true)
  if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 1 1200); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  # Never kill a daemon whose device is still swap: the kernel would be left
  # with pages nobody can read. Swap it off ourselves first, however long.
  if [[ -n "$dev" ]] && grep -q "^$dev " /proc/swaps; then
    timeout 300 swapoff "$dev" || echo "cleanup: swapoff $dev failed; leaving uzswapd $DAEMON_PID running" >&2
  fi
  if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null && ! { [[ -n "$dev" ]] && grep -q "^$dev " /proc/swaps; }; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  # Whatever a crashed daemon left: loop device, mount, files.
  if [[ -n "$dev" ]] && ! grep -q "^$dev " /proc/swaps; then
    losetup -d "$dev" 2>/dev/null || true
    umount -l "$RUN_DIR/$NAME/swap" 2>/dev/null || true
    rm -rf "${RUN_DIR:?}/$NAME" "$RUN_DIR/$NAME.lock"
  fi
  if [[ -n "$MEMCG" && -d "$MEMCG" ]]; then
    # Move anything left to the parent before removing.
    while read -r p; do echo "$p" > "$(dirname "$MEMCG")/cgroup.procs" 2>/dev/null; done < "$MEMCG/cgroup.procs"
    rmdir "$MEMCG" 2>/dev/null || true
  fi
  for ((i = ${#EXTRA_CGROUPS[@]} - 1; i >= 0; i--)); do
    cg=${EXTRA_CGROUPS[i]}
    [[ -d $cg ]] || continue
    for _ in $(seq 1 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
  done
  rm -f "$DAEMON_LOG" "${TEMP_FILES[@]}"
  for cmd in "${AFTER_CLEANUP[@]}"; do eval "$cmd" || true; done
  exit $status
}
trap cleanup EXIT

# start_daemon [flags...]: starts uzswapd and waits until its control socket
# answers.
start_daemon() {
  # Not holding the machine lock: a daemon that outlives the test must not
  # block every other test.
  # DAEMON_CGROUP: a cgroup directory to start it in (its pid is the
  # daemon's: the shell execs it).
  if [[ -n ${DAEMON_CGROUP:-} ]]; then
    bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$DAEMON_CGROUP" \
      "$UZSWAPD" --name "$NAME" --config /dev/null "$@" >>"$DAEMON_LOG" 2>&1 {SYSTEM_LOCK_FD}>&- &
  else
    "$UZSWAPD" --name "$NAME" --config /dev/null "$@" >>"$DAEMON_LOG" 2>&1 {SYSTEM_LOCK_FD}>&- &
  fi
  DAEMON_PID=$!
  for _ in $(seq 1 100); do
    if "$UZSWAPCTL" --name "$NAME" status --json >/dev/null 2>&1; then return 0; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || fail "uzswapd exited at start"
    sleep 0.1
  done
  fail "uzswapd did not answer within 10 s"
}

# stop_daemon: SIGTERM, and a clean exit within STOP_TIMEOUT (180 s; a stop
# swaps every page back in, which under ASan on 2 cores takes a while). A
# stop that hangs fails with the threads' stacks, not at meson's timeout.
stop_daemon() {
  kill -TERM "$DAEMON_PID"
  local status limit=${STOP_TIMEOUT:-180}
  local deadline=$((SECONDS + limit))
  # (a zombie still answers kill -0: look at its state)
  while [[ -d /proc/$DAEMON_PID && $(awk '{print $3}' "/proc/$DAEMON_PID/stat" 2>/dev/null) != Z ]]; do
    (( SECONDS < deadline )) || fail "uzswapd did not stop within $limit s of SIGTERM"
    sleep 0.2
  done
  wait "$DAEMON_PID"
  status=$?
  [[ $status -eq 0 ]] || fail "uzswapd exited with $status on SIGTERM"
  DAEMON_PID=
}

# wait_until SECONDS CMD...: polls CMD every 0.1 s until it succeeds; fails
# (status 1) once SECONDS have passed. For conditions the test cannot be told
# of, instead of sleeping a guessed time.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 0.1
  done
}

status_field() {  # status_field KEY: a top-level number from status --json
  "$UZSWAPCTL" --name "$NAME" status --json | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"
}

# make_memcg LIMIT_BYTES: a memory cgroup that forces its processes to swap.
# read_pool_paths: the status's counts of the store's fallback paths, read
# once: ALLOC_FAILED and POOL_FULL (stores rejected), DIRECT (direct writes
# to the backing file), WRITE_ERRORS, the reserve's HITS, MISSES, REFILLS
# and REFILL_FAILURES, POOL_BYTES, MAX_POOL_BYTES, LIMIT_HITS and
# WRITTEN_BACK.
read_pool_paths() {
  local json assignments
  json=$("$UZSWAPCTL" --name "$NAME" status --json) || fail "status"
  assignments=$(python3 - "$json" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
r = j["pool_reserve"]
counts = {
    "ALLOC_FAILED": j["rejects"]["alloc_failed"], "POOL_FULL": j["rejects"]["pool_full"],
    "DIRECT": j["writeback"]["direct_writes"], "WRITE_ERRORS": j["write_errors"],
    "HITS": r["hits"], "MISSES": r["misses"], "REFILLS": r["refills"], "REFILL_FAILURES": r["refill_failures"],
    "POOL_BYTES": j["pool_bytes"], "MAX_POOL_BYTES": j["max_pool_bytes"],
    "LIMIT_HITS": j["pool_limit_hits"], "WRITTEN_BACK": j["written_back_pages"],
}
for name, value in counts.items():
    print(f"{name}={int(value)}")
PY
) || fail "cannot read the status"
  eval "$assignments"
}

make_memcg() {
  if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
    MEMCG=/sys/fs/cgroup/memory/uzswap-$NAME
    mkdir "$MEMCG" || fail "cannot make $MEMCG"
    echo "$1" > "$MEMCG/memory.limit_in_bytes"
  elif grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    MEMCG=/sys/fs/cgroup/uzswap-$NAME
    mkdir "$MEMCG" || fail "cannot make $MEMCG"
    echo "$1" > "$MEMCG/memory.max"
  else
    skip "no memory cgroup controller to force a workload to swap"
  fi
}

# in_memcg CMD...: runs CMD inside MEMCG.
in_memcg() {
  bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$MEMCG" "$@"
}

# start_paused_workload MIB: in a 128 MiB memory cgroup, a workload of MIB
# that fills its pages and waits (they are swapped out meanwhile). Sets
# WORKLOAD_PID, GATE (touch it to let the workload re-touch and verify) and
# WORKLOAD_OUT (its output).
start_paused_workload() {
  make_memcg $((128 << 20))
  GATE=$(mktemp -u /tmp/uzswap-e2e-gate.XXXXXX)
  WORKLOAD_OUT=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
  TEMP_FILES+=("$GATE" "$WORKLOAD_OUT")
  in_memcg "$WORKLOAD" "$1" --pause-file "$GATE" >"$WORKLOAD_OUT" &
  WORKLOAD_PID=$!
  for _ in $(seq 1 600); do grep -q filled "$WORKLOAD_OUT" && break; sleep 0.1; done
  grep -q filled "$WORKLOAD_OUT" || fail "workload did not finish its fill"
}

# finish_workload: lets the paused workload verify every byte; fails on a wrong one.
finish_workload() {
  touch "$GATE"
  wait "$WORKLOAD_PID" || { cat "$WORKLOAD_OUT"; fail "workload failed"; }
  cat "$WORKLOAD_OUT"
  grep -q '"wrong_pages": 0' "$WORKLOAD_OUT" || fail "workload saw wrong pages"
}

# v2_root: the cgroup v2 tree (pure v2, or the unified half of a hybrid).
v2_root() {
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then echo /sys/fs/cgroup
  elif [[ -f /sys/fs/cgroup/unified/cgroup.procs ]]; then echo /sys/fs/cgroup/unified
  else return 1; fi
}

# new_cgroup DIR: makes a cgroup directory that is removed on exit.
new_cgroup() {
  mkdir "$1" || fail "cannot make $1"
  EXTRA_CGROUPS+=("$1")
}

assert_clean() {
  grep -q "$RUN_DIR/$NAME" /proc/swaps && fail "still in /proc/swaps"
  losetup -a | grep -q "$RUN_DIR/$NAME" && fail "loop device still attached"
  grep -q "$RUN_DIR/$NAME" /proc/mounts && fail "still mounted"
  [[ -e "$RUN_DIR/$NAME" ]] && fail "$RUN_DIR/$NAME left behind"
  return 0
}
