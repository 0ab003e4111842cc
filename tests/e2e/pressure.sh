#!/usr/bin/env bash
# The swap-out path under a shortage of memory for the pool: the daemon runs
# with every third growth of its pool failing (UZSWAP_FAULT_POOL_GROWTH=3,
# as ENOMEM from the kernel would), a pool limit of 2% of RAM lowered to 1%
# under way, and a backing file. A byte-verified workload swaps through it.
# Only the reserve's refill thread grows the pool (the request path never
# asks for memory), so the failed growths are its own; stores past the limit,
# and any that found the reserve empty, go straight to the file (direct
# writes), never back to the kernel as an error. Every byte comes back
# right, nothing hangs, and the status shows both paths and the pool's
# reserve of populated spans at work.
source "$(dirname "$0")/lib.sh"
require_machine

BACKING=/var/tmp/uzswap-e2e-$NAME.swap
TEMP_FILES+=("$BACKING")
export UZSWAP_FAULT_POOL_GROWTH=3
# Reclaim wakes only close to the limit and not on pressure events, so that
# stores reach the limit.
start_daemon --size 2G --max-pool-percent 2 --watermark-scale-factor 1 --psi-reclaim-pages 0 \
  --events-reclaim-pages 0 --backing-file "$BACKING"
unset UZSWAP_FAULT_POOL_GROWTH
grep -q "UZSWAP_FAULT_POOL_GROWTH" "$DAEMON_LOG" || fail "the fault injection was not taken"
limit=$(status_field "['max_pool_bytes']")
pass "daemon up: pool limit $((limit >> 20)) MiB (2%), every third pool growth fails"

# Big enough that the compressed pages overflow the pool limit.
ram_mib=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
mib=$(( ram_mib / 100 * 3 ))
(( mib < 256 )) && mib=256
(( mib > 1024 )) && mib=1024
make_memcg $((96 << 20))
OUT=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
TEMP_FILES+=("$OUT")
# Reclaim keeps the pool just under its limit (within 50 KiB) and, with a
# slow store path (ASan), wins the race with the stores for a whole pass, so
# the pool never meets its limit. So the daemon starts at 2% and is set to
# 1% once its pool is past 1%: the next stores meet the limit while reclaim
# writes back to get under it (turning writeback off instead would not do:
# with writeback off, a store the pool cannot take is refused, as
# memory.zswap.writeback=0 refuses it). One pass takes 80-110 s on 2 cores
# (each page comes back through a 96 MiB memory cgroup's reclaim), under
# ASan too: a hang is what runs past 300 s.
start=$SECONDS
timeout 300 bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$MEMCG" "$WORKLOAD" "$mib" --rounds 1 >"$OUT" &
workload=$!
until (( $(status_field "['pool_bytes']") > limit / 2 * 11 / 10 )); do
  kill -0 "$workload" 2>/dev/null || break
  sleep 0.2
done
"$UZSWAPCTL" --name "$NAME" set max-pool-percent 1 >/dev/null || fail "set max-pool-percent 1"
lowered_after=$((SECONDS - start))
wait "$workload"
status=$?
cat "$OUT"
(( status == 124 )) && fail "the workload hung (no answer within 300 s)"
(( status == 0 )) || fail "workload failed with status $status"
grep -q '"wrong_pages": 0' "$OUT" || fail "workload saw wrong pages"
pass "$mib MiB workload, 2 passes, every byte right in $((SECONDS - start)) s (the limit lowered to 1% after ${lowered_after} s)"

read_pool_paths
echo "pool: $POOL_BYTES of $MAX_POOL_BYTES bytes, $LIMIT_HITS limit hits, $WRITTEN_BACK pages written back"
(( WRITTEN_BACK > 0 )) || fail "reclaim wrote nothing back"
echo "rejects: alloc_failed $ALLOC_FAILED, pool_full $POOL_FULL; direct writes $DIRECT;" \
     "reserve: hits $HITS, misses $MISSES, refills $REFILLS, refill failures $REFILL_FAILURES; write errors $WRITE_ERRORS"
(( REFILL_FAILURES > 0 )) || fail "no growth of the pool failed"
(( ALLOC_FAILED <= MISSES )) || fail "$ALLOC_FAILED stores failed to allocate, but only $MISSES found the reserve empty"
(( POOL_FULL > 0 )) || fail "the pool never reached its limit"
(( DIRECT >= ALLOC_FAILED + POOL_FULL )) || fail "only $DIRECT direct writes for $ALLOC_FAILED + $POOL_FULL rejected stores"
(( WRITE_ERRORS == 0 )) || fail "$WRITE_ERRORS write requests failed back to the kernel"
(( HITS > 0 && REFILLS > 0 )) || fail "the reserve of populated spans was not used"
pass "$REFILL_FAILURES failed growths met no store; pool-full and reserve-empty stores went to the backing file ($DIRECT direct writes), none failed"

stop_daemon
assert_clean
rm -f "$BACKING"
pass "clean stop"
