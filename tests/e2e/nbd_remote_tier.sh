#!/usr/bin/env bash
# The remote tier as real swap: a daemon swapping through FUSE whose
# --backing-nbd is a second uzswapd serving NBD (the memory server; then,
# separately, `nbdkit memory`). A byte-verified workload twice the pool
# limit swaps out; its pages are written back over NBD and land on the
# memory server (its stored_pages grow). The memory server's serving process
# is killed during a writeback and again while the workload reads its pages
# back, and once it is held down long enough for status to say so: writeback
# stops and keeps the pages in RAM, reads wait, and every byte comes back
# right.
source "$(dirname "$0")/lib.sh"
require_machine
require_nbd_tools

MEM=${NAME}m
MEM_LOG=$(mktemp /tmp/uzswap-e2e-mem.XXXXXX)
TEMP_FILES+=("$MEM_LOG")
AFTER_CLEANUP+=("rm -rf '$RUN_DIR/$MEM' '$RUN_DIR/$MEM.lock'")
# On a failure: both sides' view, then lib.sh's fail.
tier_fail() {
  "$UZSWAPCTL" --name "$NAME" status --json | "$PY3" -c "import json,sys; print(json.load(sys.stdin)['writeback'])" >&2
  echo "--- memory server log ---" >&2
  cat "$MEM_LOG" >&2
  fail "$@"
}
tier_is() { [[ $(status_field "['writeback']['backing_nbd']['state']") == "$1" ]]; }
mem_status() { "$UZSWAPCTL" --name "$MEM" status --json | "$PY3" -c "import json,sys; print(json.load(sys.stdin)$1)"; }

"$UZSWAPD" --name "$MEM" --config /dev/null --size 2G --frontend nbd --no-swapon >>"$MEM_LOG" 2>&1 {SYSTEM_LOCK_FD}>&- &
MEM_PID=$!
EXTRA_DAEMONS+=("$MEM_PID")
wait_until 10 "$UZSWAPCTL" --name "$MEM" status >/dev/null 2>&1 || { cat "$MEM_LOG"; fail "memory server did not start"; }
mem_before=$(mem_status "['stored_pages']")

start_daemon --size 2G --max-pool-percent 1 --backing-nbd "$(nbd_uri "$MEM")"
[[ $(status_field "['writeback']['backing_nbd']['state']") == up ]] || fail "remote tier not up"
limit=$(status_field "['max_pool_bytes']")
mib=$(( 2 * limit >> 20 ))
(( mib <= 1200 )) || mib=1200
pass "remote tier up: $(status_field "['writeback']['backing_nbd']['connections']") connections to $(nbd_uri "$MEM"); workload $mib MiB = twice the pool limit of $((limit >> 20)) MiB"

start_paused_workload "$mib"
stored=$(status_field "['stored_pages']")
pass "$stored pages swapped out to uzswap"

# Writeback over NBD, with the memory server's serving process killed in
# the middle: its supervisor starts another, which adopts every page.
WB_OUT=$(mktemp /tmp/uzswap-e2e-wb.XXXXXX)
TEMP_FILES+=("$WB_OUT")
"$UZSWAPCTL" --name "$NAME" writeback --pages 60000 >"$WB_OUT" 2>&1 &
wb=$!
sleep 0.3
kill -KILL "$(mem_status "['pid']")"
wait "$wb"
echo "writeback during the kill: $(cat "$WB_OUT")"
# The rest once the tier is back (while it reconnects, writes fail at once).
for attempt in 1 2 3; do
  wait_until 30 tier_is up || tier_fail "remote tier did not come back"
  "$UZSWAPCTL" --name "$NAME" writeback --pages $((stored * 2)) || fail "writeback"
  written=$(status_field "['written_back_pages']")
  (( written > stored / 2 )) && break
  sleep 1  # the tier may have looked up before it noticed the kill
done
mem_now=$(mem_status "['stored_pages']")
(( written > stored / 2 )) || fail "only $written of $stored pages written back"
(( mem_now - mem_before >= written * 9 / 10 )) || fail "memory server stores $mem_now pages (from $mem_before), $written written back"
disconnects=$(status_field "['writeback']['backing_nbd']['disconnects']")
pass "$written pages written back over NBD, the memory server's stored_pages grew from $mem_before to $mem_now; $disconnects connection(s) lost to the kill and made again"

# Held down: its supervisor stopped, its serving process killed. Writeback
# stops, says so, and loses nothing.
kill -STOP "$MEM_PID"
kill -KILL "$(pgrep -P "$MEM_PID")"
"$UZSWAPCTL" --name "$NAME" writeback --pages 1000 >/dev/null 2>&1
wait_until 15 tier_is down || { kill -CONT "$MEM_PID"; tier_fail "status never said the tier is down"; }
why=$(status_field "['writeback']['stopped']")
before=$(status_field "['written_back_pages']")
out=$("$UZSWAPCTL" --name "$NAME" writeback --pages 1000)
[[ $(status_field "['written_back_pages']") -eq $before ]] || { kill -CONT "$MEM_PID"; fail "pages written back while the tier is down"; }
pass "tier down: status says '$why'; writeback: $out"

# The workload reads its pages back; the memory server comes back meanwhile.
( sleep 3; kill -CONT "$MEM_PID" ) &
resume=$!
# And is killed once more while the reads go on.
( sleep 8; kill -KILL "$(pgrep -P "$MEM_PID")" 2>/dev/null ) &
again=$!
finish_workload
wait "$resume" "$again"
read_errors=$(status_field "['writeback']['backing_read_errors']")
reads=$(status_field "['writeback']['backing_reads']")
(( read_errors == 0 )) || fail "$read_errors reads from the remote tier failed"
(( reads > 0 )) || fail "no page was read back from the remote tier"
(( $(status_field "['integrity_errors']") == 0 )) || fail "integrity errors"
pass "every byte right after kills of the memory server; $reads pages read back over NBD"
stop_daemon
kill -TERM "$MEM_PID"
wait "$MEM_PID" || fail "the memory server did not stop cleanly"
EXTRA_DAEMONS=()

# The same against nbdkit's memory plugin (no kills: nbdkit keeps nothing).
if ! command -v nbdkit >/dev/null; then
  pass "(nbdkit not installed: its half skipped)"
  assert_clean
  exit 0
fi
KIT_SOCKET=$(mktemp -u /tmp/uzswap-e2e-nbdkit.XXXXXX)
TEMP_FILES+=("$KIT_SOCKET")
nbdkit -f -U "$KIT_SOCKET" memory 2G >>"$MEM_LOG" 2>&1 {SYSTEM_LOCK_FD}>&- &
KIT_PID=$!
EXTRA_DAEMONS+=("$KIT_PID")
wait_until 10 test -S "$KIT_SOCKET" || fail "nbdkit did not start"
NAME=${NAME}k
start_daemon --size 2G --max-pool-percent 1 --backing-nbd "nbd+unix:///?socket=$KIT_SOCKET"
rmdir "$MEMCG" 2>/dev/null
MEMCG=
start_paused_workload "$mib"
"$UZSWAPCTL" --name "$NAME" writeback --pages $((stored * 2)) || fail "writeback to nbdkit"
written=$(status_field "['written_back_pages']")
(( written > stored / 2 )) || fail "only $written pages written back to nbdkit"
used=$(nbdinfo --map "nbd+unix:///?socket=$KIT_SOCKET" 2>/dev/null | awk '$3 == 0 {s += $2} END {print s / 4096}')
finish_workload
(( $(status_field "['writeback']['backing_read_errors']") == 0 )) || fail "read errors from nbdkit"
pass "nbdkit memory: $written pages written back (${used:-?} pages allocated there), every byte right"
stop_daemon
assert_clean
