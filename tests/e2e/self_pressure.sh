#!/usr/bin/env bash
# Real memory pressure on the daemon itself: uzswapd and a byte-verified
# workload in one memory-limited cgroup (uzswap-NAME, with the daemon in
# its child `daemon` and the workload in `workload`), so the pool's growth,
# the daemon's own memory and the workload's resident pages compete for one
# limit while the workload swaps through the daemon, and every fourth
# growth of the pool fails as ENOMEM would. The limit is what the daemon
# uses after start, plus its pool at the pool limit and a quarter more, plus
# 128 MiB for the workload. The pool's refill thread competes with the
# workload for the limit (the request path itself never asks for memory:
# before it did, both FUSE workers hung here in the kernel's reclaim,
# swapping out through the daemon they were): stores meet an empty reserve
# and failed growths, and each goes to the backing file. No hang, every byte
# right, no write failed back to the kernel. (The pool limit itself is
# pressure.sh's business: here the cgroup's limit usually comes first.)
source "$(dirname "$0")/lib.sh"
require_machine

if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
  CG_ROOT=/sys/fs/cgroup/memory LIMIT=memory.limit_in_bytes USAGE=memory.usage_in_bytes UNLIMITED=-1
elif grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
  CG_ROOT=/sys/fs/cgroup LIMIT=memory.max USAGE=memory.current UNLIMITED=max
else
  skip "no memory cgroup controller"
fi
PARENT=$CG_ROOT/uzswap-$NAME
mkdir "$PARENT" || fail "cannot make $PARENT"
[[ $LIMIT == memory.max ]] && { echo +memory > "$PARENT/cgroup.subtree_control" || fail "no memory controller below $PARENT"; }
mkdir "$PARENT/daemon" "$PARENT/workload" || fail "cannot make the child cgroups"
# The cleanup ends what runs in MEMCG (the workload) before the daemon, and
# never what runs in the daemon's cgroup: that goes once the daemon is done.
MEMCG=$PARENT/workload
release_parent() {
  local p
  while read -r p; do echo "$p" > "$CG_ROOT/cgroup.procs" 2>/dev/null; done < "$PARENT/daemon/cgroup.procs"
  rmdir "$PARENT/daemon" "$PARENT" 2>/dev/null
}
AFTER_CLEANUP+=(release_parent)

BACKING=/var/tmp/uzswap-e2e-$NAME.swap
TEMP_FILES+=("$BACKING")
export UZSWAP_FAULT_POOL_GROWTH=4
DAEMON_CGROUP=$PARENT/daemon start_daemon --size 2G --max-pool-percent 1 --watermark-scale-factor 1 \
  --psi-reclaim-pages 0 --events-reclaim-pages 0 --backing-file "$BACKING"
unset UZSWAP_FAULT_POOL_GROWTH
grep -q "UZSWAP_FAULT_POOL_GROWTH" "$DAEMON_LOG" || fail "the fault injection was not taken"
grep -qx "$DAEMON_PID" "$PARENT/daemon/cgroup.procs" || fail "uzswapd $DAEMON_PID is not in $PARENT/daemon"
# Its memory must be locked, or the cgroup's reclaim swaps the daemon out
# through itself.
serving=$(pgrep -P "$DAEMON_PID" | head -n 1)
locked_kib=$(awk '/^VmLck:/ {print $2}' "/proc/$serving/status" 2>/dev/null)
(( ${locked_kib:-0} > 0 )) || fail "the serving process ($serving) has no memory locked (VmLck ${locked_kib:-?} kB)"
sleep 2
daemon_bytes=$(cat "$PARENT/$USAGE")
pool_limit=$(status_field "['max_pool_bytes']")
limit=$((daemon_bytes + pool_limit + pool_limit / 4 + (128 << 20)))
echo "$limit" > "$PARENT/$LIMIT" || fail "cannot set $PARENT/$LIMIT"
pass "uzswapd in $PARENT/daemon uses $((daemon_bytes >> 20)) MiB; pool limit $((pool_limit >> 20)) MiB;" \
     "limit of daemon and workload together $((limit >> 20)) MiB; every fourth pool growth fails"

ram_mib=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
mib=$(( ram_mib / 100 * 3 ))
(( mib < 256 )) && mib=256
(( mib > 1024 )) && mib=1024
OUT=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
TEMP_FILES+=("$OUT")
start=$SECONDS
timeout 300 bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$MEMCG" "$WORKLOAD" "$mib" --rounds 1 >"$OUT"
status=$?
cat "$OUT"
if (( status == 124 )); then
  # Let whatever waits for memory go on, so that the daemon can be stopped.
  echo "$UNLIMITED" > "$PARENT/$LIMIT"
  fail "the workload hung (no answer within 300 s)"
fi
(( status == 0 )) || fail "workload failed with status $status"
grep -q '"wrong_pages": 0' "$OUT" || fail "workload saw wrong pages"
grep -q '"io_error_pages": 0' "$OUT" || fail "workload saw I/O errors"
pass "$mib MiB workload beside the daemon, 2 passes, every byte right in $((SECONDS - start)) s"

if [[ $LIMIT == memory.limit_in_bytes ]]; then
  hits=$(cat "$PARENT/memory.failcnt")
  peak=$(cat "$PARENT/memory.max_usage_in_bytes")
else
  hits=$(awk '$1 == "max" {print $2}' "$PARENT/memory.events")
  peak=$(cat "$PARENT/memory.peak" 2>/dev/null || echo 0)
fi
daemon_now=$(cat "$PARENT/daemon/$USAGE")
read_pool_paths
echo "cgroup: limit hit $hits times, peak $((peak >> 20)) MiB of $((limit >> 20)); the daemon's part now $((daemon_now >> 20)) MiB"
echo "pool: $((POOL_BYTES >> 20)) MiB, $WRITTEN_BACK pages written back; rejects: alloc_failed $ALLOC_FAILED," \
     "pool_full $POOL_FULL; reserve misses $MISSES, refill failures $REFILL_FAILURES; direct writes $DIRECT;" \
     "write errors $WRITE_ERRORS"
(( hits > 0 )) || fail "the cgroup never met its limit: no pressure"
(( REFILL_FAILURES > 0 )) || fail "no growth of the pool failed"
(( MISSES > 0 )) || fail "no store found the reserve empty"
(( DIRECT >= ALLOC_FAILED + POOL_FULL )) || fail "only $DIRECT direct writes for $ALLOC_FAILED + $POOL_FULL rejected stores"
(( WRITE_ERRORS == 0 )) || fail "$WRITE_ERRORS write requests failed back to the kernel"
pass "under the cgroup's limit: failed growths and an empty reserve went to the backing file ($DIRECT direct writes)"

stop_daemon
assert_clean
rm -f "$BACKING"
pass "clean stop"
