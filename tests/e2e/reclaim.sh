#!/usr/bin/env bash
# Pressure-driven reclaim in the real daemon: the per-node reclaim threads
# and the PSI trigger are up (status), idle writeback moves the pages of a
# paused workload to the backing file, the workload then reads every byte
# back right, and the live settings refuse bad values without changing.
source "$(dirname "$0")/lib.sh"
require_machine

BACKING=/var/tmp/uzswap-e2e-$NAME.swap
TEMP_FILES+=("$BACKING")
start_daemon --size 1G --backing-file "$BACKING" --idle-writeback-seconds 3

[[ $(status_field "['reclaim']['enabled']") == True ]] || fail "reclaim threads not running"
nodes=$(status_field "['reclaim']['nodes'].__len__()")
pool_nodes=$(status_field "['nodes'].__len__()")
(( nodes == pool_nodes && nodes >= 1 )) || fail "$nodes reclaim threads for $pool_nodes pool nodes"
pass "$nodes reclaim thread(s), one per pool node"
if [[ -r /proc/pressure/memory ]]; then
  [[ $(status_field "['reclaim']['pressure']['system_trigger']") == True ]] ||
    fail "no PSI trigger: $(status_field "['reclaim']['pressure']['system_error']")"
  window=$(status_field "['reclaim']['pressure']['window_us']")
  ignored=$(status_field "['reclaim']['pressure']['psi_events_ignored']")
  [[ $ignored =~ ^[0-9]+$ ]] || fail "no count of ignored PSI events in the status: '$ignored'"
  pass "PSI trigger on /proc/pressure/memory (window $window us; $ignored events ignored so far)"
  grep -q "only 2 s windows" "$DAEMON_LOG" && pass "the 2 s fallback was announced"
fi

start_paused_workload 256
stored=$(status_field "['stored_pages']")

idle_written() { status_field "['reclaim']['nodes']" | python3 -c "import sys,ast; print(sum(n['idle_written'] for n in ast.literal_eval(sys.stdin.read())))"; }
for _ in $(seq 1 300); do (( $(idle_written) > stored / 2 )) && break; sleep 0.1; done
idle=$(idle_written)
(( idle > stored / 2 )) || fail "idle writeback wrote only $idle of $stored stored pages in 30 s"
pass "idle writeback: $idle of $stored pages written back while the workload slept"

finish_workload
pass "every byte verified after idle writeback"

err=$("$UZSWAPCTL" --name "$NAME" set watermark-scale-factor 0 2>&1) && fail "factor 0 accepted"
[[ $err == *"1..3000"* ]] || fail "unclear error: $err"
[[ $(status_field "['reclaim']['watermark_scale_factor']") == 500 ]] || fail "a refused value changed the setting"
"$UZSWAPCTL" --name "$NAME" set watermark-scale-factor 1000 >/dev/null || fail "set watermark-scale-factor"
"$UZSWAPCTL" --name "$NAME" set idle-writeback-seconds 0 >/dev/null || fail "set idle-writeback-seconds"
[[ $(status_field "['reclaim']['watermark_scale_factor']") == 1000 ]] || fail "factor not applied"
[[ $(status_field "['reclaim']['idle_writeback_seconds']") == 0 ]] || fail "idle period not applied"
pass "live settings: bad value refused ($err), good ones applied"

stop_daemon
assert_clean
rm -f "$BACKING"
pass "clean stop"
