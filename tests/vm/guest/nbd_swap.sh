#!/usr/bin/env bash
# In the VM rig's guest (a Debian kernel with the nbd module): uzswapd
# --frontend nbd as real swap through the kernel's NBD client. The daemon
# connects /dev/nbdN to itself over socketpairs through the nbd netlink
# interface and swaps on; a byte-verified workload twice its memory
# cgroup's limit swaps through it; discards reach the store as TRIM; a
# second client (nbdinfo) is served beside the kernel; SIGTERM swaps off and
# disconnects the device.
#
# The rig's interface: run as root in the guest with SRC_DIR, BUILD_DIR,
# UZSWAPD, UZSWAPCTL, WORKLOAD. Exit 0 pass, 77 skip, anything else fail.
set -uo pipefail

SKIP=77
NAME=vmnbd$$
LOG=$(mktemp /tmp/uzswap-vm-nbd.XXXXXX)
CG=
PID=
fail() {
  echo "FAIL: $*" >&2
  echo "--- daemon log ---" >&2
  cat "$LOG" >&2
  threads_report "${PID:-}" $([[ -n ${PID:-} ]] && pgrep -P "$PID") "${wl:-}" >&2
  exit 1
}
# threads_report PID...: where each thread of each process waits (state,
# wchan and kernel stack), then the kernel's last words: what a hang needs
# to be told apart from slowness after the guest is gone.
threads_report() {
  local p t
  for p in "$@"; do
    [[ -n $p && -d /proc/$p ]] || continue
    echo "--- threads of $p ($(cat /proc/$p/comm)) ---"
    for t in /proc/$p/task/*; do
      echo "$(basename "$t") $(cat "$t/comm") $(awk '/^State:/ {print $2}' "$t/status") wchan=$(cat "$t/wchan" 2>/dev/null)"
      sed 's/^/    /' "$t/stack" 2>/dev/null
    done
  done
  local f
  for f in /sys/kernel/debug/nbd/nbd*/tasks; do
    [[ -f $f ]] && { echo "--- $f (requests the kernel has sent and waits on) ---"; cat "$f"; }
  done
  for f in /sys/kernel/debug/block/nbd*/hctx*/{busy,dispatch,state} /sys/kernel/debug/block/nbd*/{state,requeue_list}; do
    [[ -s $f ]] && { echo "--- $f"; head -n 20 "$f"; }
  done
  # Bytes waiting in each of the daemon's sockets: Recv-Q requests it has
  # not read, Send-Q replies the kernel has not read.
  echo "--- unix sockets of uzswapd (ss -xp) ---"
  ss -xpn 2>/dev/null | grep -E "uzswapd|^Netid" | head -n 20
  [[ -n ${CG:-} && -f $CG/memory.events ]] && echo "--- $CG/memory.events: $(tr '\n' ' ' < "$CG/memory.events")"
  echo "--- dmesg (last 40 lines) ---"
  dmesg | tail -n 40
  echo "--- blocked tasks (sysrq w) ---"
  local mark
  mark=$(dmesg | wc -l)
  echo w > /proc/sysrq-trigger 2>/dev/null
  sleep 1
  dmesg | tail -n +$((mark + 1)) | grep -v "^\[ *[0-9.]*\]  ? " | head -n 400
}
skip() { echo "SKIP: $*"; exit $SKIP; }
pass() { echo "ok: $*"; }
status_field() { "$UZSWAPCTL" --name "$NAME" status --json | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
status_py() { "$UZSWAPCTL" --name "$NAME" status --json | python3 -c "import json,sys; s = json.load(sys.stdin); print($1)"; }
cleanup() {
  local status=$?
  [[ -n $CG && -d $CG ]] && { while read -r p; do kill -KILL "$p" 2>/dev/null; done < "$CG/cgroup.procs"; }
  if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null && { echo "uzswapd did not stop in 60 s: SIGKILL" >&2; kill -KILL "$PID"; }
  fi
  [[ -n $CG && -d $CG ]] && { sleep 0.5; rmdir "$CG" 2>/dev/null; }
  rm -f "$LOG" "${GATE:-}" "${OUT:-}"
  exit $status
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || skip "needs root"
modprobe nbd nbds_max=16 2>/dev/null || true
[[ -e /sys/module/nbd ]] || skip "no nbd module in this kernel ($(uname -r))"
if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
  CG=/sys/fs/cgroup/uzswap-$NAME
  mkdir "$CG" && echo $((128 << 20)) > "$CG/memory.max" || fail "cannot make $CG"
elif [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
  CG=/sys/fs/cgroup/memory/uzswap-$NAME
  mkdir "$CG" && echo $((128 << 20)) > "$CG/memory.limit_in_bytes" || fail "cannot make $CG"
else
  skip "no memory cgroup controller"
fi

"$UZSWAPD" --name "$NAME" --config /dev/null --size 1G --frontend nbd >>"$LOG" 2>&1 &
PID=$!
for _ in $(seq 1 100); do "$UZSWAPCTL" --name "$NAME" status >/dev/null 2>&1 && break; kill -0 "$PID" || fail "uzswapd exited at start"; sleep 0.1; done
dev=$(readlink "/run/uzswap/$NAME/device")
[[ $dev == /dev/nbd* ]] || fail "device link '$dev' is not /dev/nbdN"
grep -q "^$dev " /proc/swaps || fail "$dev not in /proc/swaps"
(( $(cat "/sys/block/$(basename "$dev")/size") * 512 == 1 << 30 )) || fail "$dev has the wrong size"
wbt=/sys/block/$(basename "$dev")/queue/wbt_lat_usec
[[ ! -f $wbt || $(cat "$wbt") == 0 ]] || fail "writeback throttling still on for $dev ($(cat "$wbt") us)"
pass "swap on $dev through the kernel's NBD client, type $(status_field "['device']['swap_type']"), writeback throttling off"

if command -v nbdinfo >/dev/null; then
  size=$(nbdinfo --size "nbd+unix:///?socket=/run/uzswap/$NAME/nbd") || fail "nbdinfo beside the kernel"
  (( size == 1 << 30 )) || fail "nbdinfo size $size"
  pass "a second client is served beside the kernel"
fi

GATE=$(mktemp -u /tmp/uzswap-vm-gate.XXXXXX)
OUT=$(mktemp /tmp/uzswap-vm-out.XXXXXX)
bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" "$WORKLOAD" 256 --pause-file "$GATE" >"$OUT" &
wl=$!
# (Deadlines in seconds: under TCG a loop of commands is slow itself.)
deadline=$((SECONDS + 120))
until grep -q filled "$OUT" || (( SECONDS > deadline )); do sleep 0.2; done
grep -q filled "$OUT" || fail "workload did not finish its fill"
stored=$(status_field "['stored_pages']")
(( stored > 20000 )) || fail "only $stored pages stored: the workload did not swap through $dev"
touch "$GATE"
wait "$wl" || { cat "$OUT"; fail "workload failed"; }
cat "$OUT"
grep -q '"wrong_pages": 0' "$OUT" || fail "workload saw wrong pages"
pass "256 MiB workload in a 128 MiB cgroup: every byte right through $dev ($stored pages stored at the pause)"
# What a slower machine may show before it fails: errors answered to the
# kernel, and what the daemon warned about.
echo "nbd: $(status_py "f'{s[\"frontend\"][\"requests\"]} requests, {s[\"frontend\"][\"error_replies\"]} error replies, {s[\"write_errors\"]} write errors, rejects {s[\"rejects\"]}'")"
grep -E "warn|error|critical" "$LOG" | head -n 20
for _ in $(seq 1 300); do (( $(status_field "['discarded_pages']") > 0 )) && break; sleep 0.1; done
pass "$(status_field "['discarded_pages']") pages discarded (TRIM from the kernel)"

kill -TERM "$PID"
wait "$PID" || fail "uzswapd exited with $? on SIGTERM"
PID=
grep -q "^$dev " /proc/swaps && fail "$dev still swap"
pass "clean stop: swapped off and disconnected"
