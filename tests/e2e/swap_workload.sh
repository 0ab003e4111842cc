#!/usr/bin/env bash
# uzswapd as real swap: a workload twice its cgroup's memory limit swaps
# through it, every byte comes back right, discards free the pages after the
# workload exits, and SIGTERM leaves nothing behind.
source "$(dirname "$0")/lib.sh"
require_machine

start_daemon --size 1G
dev=$(readlink "$RUN_DIR/$NAME/device")
grep -q "^$dev " /proc/swaps || fail "$dev is not in /proc/swaps"
[[ $(cat "/sys/block/$(basename "$dev")/loop/dio") == 1 ]] || fail "loop device without direct I/O"
# The loop device keeps the kernel's writeback throttling: reclaim's brake.
wbt=/sys/block/$(basename "$dev")/queue/wbt_lat_usec
[[ ! -f $wbt || $(cat "$wbt") != 0 ]] || fail "writeback throttling turned off for $dev"
pass "swap on $dev with direct I/O, writeback throttling as the kernel set it ($(cat "$wbt" 2>/dev/null || echo none) us)"
# The daemon found its kernel swap type (swap_type.sh checks it is the right
# one: a line of /proc/swaps is not a type once a swapoff left a hole).
type=$(status_field "['device']['swap_type']")
(( type >= 0 )) || fail "swap type unknown"
pass "swap type $type"

make_memcg $((128 << 20))
outfile=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
TEMP_FILES+=("$outfile")
in_memcg "$WORKLOAD" 256 >"$outfile" &
workload=$!
# While the pages are out: they are stored, and compressed.
peak=0 ratio=0
while kill -0 $workload 2>/dev/null; do
  read -r stored ratio_now < <("$UZSWAPCTL" --name "$NAME" status --json | python3 -c \
    "import json,sys; s=json.load(sys.stdin); print(s['stored_pages'], s['orig_bytes'] / max(s['pool_bytes'], 1))")
  if (( stored > peak )); then peak=$stored; ratio=$ratio_now; fi
  sleep 0.2
done
wait $workload || { cat "$outfile"; rm -f "$outfile"; fail "workload failed"; }
out=$(cat "$outfile"); rm -f "$outfile"
echo "$out"
[[ $out == *'"wrong_pages": 0'* ]] || fail "workload saw wrong pages"
pass "256 MiB workload in a 128 MiB cgroup verified every byte"
(( peak > 20000 )) || fail "at most $peak pages stored: the workload did not swap through uzswap"
python3 -c "import sys; sys.exit(0 if $ratio > 1.5 else 1)" || fail "compression ratio $ratio at the peak"
pass "peak $peak pages stored, ratio $ratio (original / pool RAM)"

# The kernel discards freed clusters after the workload exits, in its own time.
freed() { (( $(status_field "['discarded_pages']") > 0 && $(status_field "['stored_pages']") < 1000 )); }
wait_until 30 freed || fail "after the workload exited: $(status_field "['discarded_pages']") pages discarded, $(status_field "['stored_pages']") still stored"
discarded=$(status_field "['discarded_pages']")
stored=$(status_field "['stored_pages']")
pass "$discarded pages discarded after exit, $stored left"

"$UZSWAPCTL" --name "$NAME" status
"$UZSWAPCTL" --name "$NAME" stats --prometheus | grep -q '^# EOF$' || fail "prometheus output"

stop_daemon
assert_clean
pass "SIGTERM: swapoff, loop detached, unmounted, files removed"
