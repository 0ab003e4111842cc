#!/usr/bin/env bash
# Surviving the serving process's death: a byte-verified workload swaps in
# and out (pages re-dirtied and re-read, round after round) while the
# serving process is SIGKILLed 20 times at random moments and writeback runs
# between kills; then `uzswapctl restart` hands the area over 5 times. Every
# byte must come back right, no task may stay blocked for long, and there is
# one swap area throughout. A killed serving process exits at once: it holds
# no fd on its own FUSE file (otherwise its exit would wait on FUSE_FLUSH to
# itself, and no new one could start). Last, both processes are killed and a
# new start must take the dead area down rather than add a second one.
source "$(dirname "$0")/lib.sh"
require_machine

backing=$(mktemp /var/tmp/uzswap-e2e-backing.XXXXXX)
TEMP_FILES+=("$backing")
start_daemon --size 1G --backing-file "$backing"
dev=$(readlink "$RUN_DIR/$NAME/device")
grep -q "^$dev " /proc/swaps || fail "$dev is not in /proc/swaps"
areas_before=$(($(wc -l < /proc/swaps) - 1))

serving_pid() {  # the serving process, as status reports it; waits through a restart
  local pid
  for _ in $(seq 1 100); do
    pid=$("$UZSWAPCTL" --name "$NAME" status --json 2>/dev/null |
          python3 -c "import json,sys; print(json.load(sys.stdin)['pid'])" 2>/dev/null) && { echo "$pid"; return 0; }
    sleep 0.1
  done
  return 1
}

make_memcg $((128 << 20))
outfile=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
enough=$(mktemp -u /tmp/uzswap-e2e-enough.XXXXXX)  # made after the 20th kill
TEMP_FILES+=("$outfile" "$enough")
in_memcg "$WORKLOAD" 192 --until "$enough" >"$outfile" &
workload=$!

# A watcher: the longest run of D state the workload went through.
dstate_file=$(mktemp /tmp/uzswap-e2e-dstate.XXXXXX)
TEMP_FILES+=("$dstate_file")
(
  run=0 longest=0
  while kill -0 "$workload" 2>/dev/null; do
    state=$(awk '{print $3}' "/proc/$workload/stat" 2>/dev/null)
    if [[ $state == D ]]; then run=$((run + 1)); else run=0; fi
    ((run > longest)) && longest=$run && echo "$longest" > "$dstate_file"
    sleep 0.1
  done
) &
watcher=$!

kills=0 pids=()
while ((kills < 20)) && kill -0 "$workload" 2>/dev/null; do
  sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
  pid=$(serving_pid) || fail "no serving process answered within 10 s after kill $kills"
  kill -KILL "$pid" 2>/dev/null && kills=$((kills + 1)) && pids+=("$pid")
  # Writeback between kills, so kills also land in the middle of it.
  if ((kills % 3 == 0)); then "$UZSWAPCTL" --name "$NAME" writeback --pages 5000 >/dev/null 2>&1 || true; fi
  areas=$(($(wc -l < /proc/swaps) - 1))
  ((areas == areas_before)) || fail "$areas swap areas after kill $kills (was $areas_before)"
done
((kills == 20)) || fail "the workload ended after $kills kills"
touch "$enough"  # the workload ends with the round it is in
pass "20 SIGKILLs of the serving process (pids ${pids[*]:0:3}...) while the workload swapped"

wait "$workload" || { cat "$outfile"; fail "workload failed"; }
wait "$watcher" 2>/dev/null
cat "$outfile"
grep -q '"wrong_pages": 0' "$outfile" || fail "workload saw wrong pages"
longest=$(cat "$dstate_file" 2>/dev/null || echo 0)
[[ -n $longest ]] || longest=0
echo "longest D state of the workload: $((longest / 10)).$((longest % 10)) s"
((longest <= 50)) || fail "the workload was blocked for $((longest / 10)) s in a row"
pass "every byte right after 20 kills; longest block $((longest / 10)).$((longest % 10)) s"
"$UZSWAPCTL" --name "$NAME" status --json | python3 -c "
import json, sys
s = json.load(sys.stdin)
r = s['restart']
print('serving process #%d, last adoption %.3f s, %d rolled back, %d writebacks back in RAM, %d lost; %d written back, %d integrity errors'
      % (r['serving_process'], r['adopt_seconds'], r['rolled_back'], r['writebacks_reset'], r['lost_pages'],
         s['written_back_pages'], s['integrity_errors']))
sys.exit(0 if r['lost_pages'] == 0 and s['integrity_errors'] == 0 and r['serving_process'] >= 21 else 1)
" || fail "lost pages, integrity errors or missing restarts"

# Live upgrade: five handovers under the same workload.
in_memcg "$WORKLOAD" 160 --rounds 1 --seed 7 >"$outfile" &
workload=$!
for i in 1 2 3 4 5; do
  sleep 1
  before=$(serving_pid) || fail "no serving process before restart $i"
  "$UZSWAPCTL" --name "$NAME" restart || fail "uzswapctl restart $i failed"
  after=$(serving_pid) || fail "no serving process after restart $i"
  [[ $after != "$before" ]] || fail "restart $i kept pid $before"
done
wait "$workload" || { cat "$outfile"; fail "workload failed during restarts"; }
grep -q '"wrong_pages": 0' "$outfile" || fail "workload saw wrong pages during restarts"
areas=$(($(wc -l < /proc/swaps) - 1))
((areas == areas_before)) || fail "$areas swap areas after the restarts"
pass "5 live restarts under a workload, every byte right, one swap area"

# Both processes killed (outside systemd nothing keeps the connection): the
# next start of the same name takes the dead area down and adds no second.
supervisor=$DAEMON_PID
serving=$(serving_pid) || fail "no serving process"
kill -KILL "$supervisor" "$serving"
wait "$supervisor" 2>/dev/null
DAEMON_PID=
for _ in $(seq 1 50); do kill -0 "$serving" 2>/dev/null || break; sleep 0.1; done
kill -0 "$serving" 2>/dev/null && fail "the serving process did not exit after SIGKILL"
grep -q "^$dev " /proc/swaps || fail "the dead area is not in /proc/swaps (nothing to test)"
start_daemon --size 1G
areas=$(($(wc -l < /proc/swaps) - 1))
((areas == areas_before)) || fail "$areas swap areas after a start over a dead one (was $areas_before)"
grep -q "dead uzswapd named" "$DAEMON_LOG" || fail "the dead area was not reported"
pass "a start over a dead area took it down: still one swap area"

stop_daemon
assert_clean
pass "stopped cleanly"
