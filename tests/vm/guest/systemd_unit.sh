#!/usr/bin/env bash
# In the VM rig's guest: uzswapd.service for real under systemd as PID 1.
#   1. systemctl start returns once swap is on (Type=notify, READY=1 after
#      swapon), with the shipped config (a backing file on ext4).
#   2. systemctl status, the STATUS= line and journald's log look right.
#   3. A workload in `systemd-run --scope -p MemoryMax=` swaps through it.
#   4. systemctl kill -s KILL (supervisor and serving process at once):
#      Restart= brings the same swap area back from the file descriptor
#      store and the shared memory, every page kept, one swap area. On a
#      kernel without FUSE_NOTIFY_RESEND (Linux < 6.9) only while no request
#      is in flight: the part with requests in flight is skipped, saying so.
#   5. systemctl reload (live handover to a new serving process), pages out.
#   6. systemctl restart: the stop swaps off (pages back in RAM), a fresh
#      area starts; the pages go out to it again.
#   7. Every byte verified; then a second workload, and systemctl stop with
#      its pages out brings them back and exits cleanly: nothing left.
source "$(dirname "$0")/../guest-lib.sh"
require_guest

kernel=$(uname -r)
resend=false
[[ $(printf '%s\n' "6.9" "${kernel%%-*}" | sort -V | head -n 1) == 6.9 ]] && resend=true

install_unit
start=$SECONDS
systemctl start $UNIT || fail "systemctl start $UNIT"
echo "systemctl start took $((SECONDS - start)) s"
[[ $(systemctl is-active $UNIT) == active ]] || fail "$UNIT is $(systemctl is-active $UNIT)"
[[ $(status_field "['device']['swap_on']") == True ]] || fail "swap is not on when systemctl start returned"
loop=$(status_field "['device']['loop']")
grep -q "^$loop " /proc/swaps || fail "$loop is not in /proc/swaps"
# The loop device keeps the kernel's writeback throttling: reclaim's brake.
wbt=/sys/block/$(basename "$loop")/queue/wbt_lat_usec
[[ ! -f $wbt || $(cat "$wbt") != 0 ]] || fail "writeback throttling turned off for $loop"
[[ $(status_field "['backing_file']") == /var/lib/uzswap/backing.swap ]] || fail "no backing file"
[[ $(status_field "['writeback']['enabled']") == True ]] || fail "writeback is off"
main=$(systemctl show -p MainPID --value $UNIT)
[[ $(status_field "['supervisor_pid']") == "$main" ]] || fail "MainPID $main is not the supervisor"
pass "systemctl start: swap on $loop ($(status_field "['device']['size_bytes']") bytes), backing file, MainPID $main = supervisor"
swapon --show

# 2. What an operator reads.
systemctl status $UNIT --no-pager > /tmp/uzswap-vm-status 2>&1
cat /tmp/uzswap-vm-status
grep -q 'Active: active (running)' /tmp/uzswap-vm-status || fail "systemctl status: not active (running)"
grep -q 'Status: "' /tmp/uzswap-vm-status || fail "systemctl status shows no STATUS= line"
grep -q 'uzswapd-supervisor\|uzswapd' /tmp/uzswap-vm-status || fail "systemctl status lists no uzswapd process"
text=$(systemctl show -p StatusText --value $UNIT)
[[ $text == *"pages stored"* ]] || fail "STATUS= says '$text'"
journalctl -u $UNIT -b --no-pager -o cat > /tmp/uzswap-vm-journal
grep -q "serving /run/uzswap/uzswap/swap" /tmp/uzswap-vm-journal || fail "the journal has no 'serving' line"
grep -q "swap type" /tmp/uzswap-vm-journal || fail "the journal has no swap type line"
grep -E -i 'error|critical|throttling left on' /tmp/uzswap-vm-journal && fail "errors in the journal"
pass "status: active (running), STATUS=\"$text\"; journal: $(wc -l < /tmp/uzswap-vm-journal) lines, no error"

# 3. A workload in a scope with MemoryMax.
scope=uzswap-vm-w1
gate=/tmp/uzswap-vm-gate1
out=/tmp/uzswap-vm-out1
systemd-run --quiet --scope --unit $scope -p MemoryMax=48M -p MemorySwapMax=infinity \
  "$WORKLOAD" 128 --seed 7 --pause-file $gate > $out 2>&1 &
w1=$!
WORKLOAD_PIDS+=("$w1")
on_exit "systemctl stop $scope.scope"
wait_until 300 grep -q filled $out || fail "the workload did not fill: $(cat $out)"
cg=$(systemctl show -p ControlGroup --value $scope.scope)
# Pages out = in the pool + written back to the file (the scope's
# memory.events and PSI make the daemon write its pages back).
out_pages() { status_py "s['stored_pages'] + s['written_back_pages']"; }
out_over() { (( $(out_pages) > $1 )); }
wait_until 60 out_over 10000
swapped=$(cat /sys/fs/cgroup$cg/memory.swap.current)
stored=$(out_pages)
(( stored > 10000 )) || fail "only $stored pages out ($((swapped >> 20)) MiB of the scope swapped): the workload did not swap through uzswap"
pass "workload in $cg (MemoryMax=48M, 128 MiB): $((swapped >> 20)) MiB swapped, $stored pages out ($(status_field "['stored_pages']") in the pool, $(status_field "['written_back_pages']") written back)"
wait_until 5 bash -c "systemctl show -p StatusText --value $UNIT | grep -qv '^0 pages'" ||
  fail "STATUS= did not follow: $(systemctl show -p StatusText --value $UNIT)"
pass "STATUS=\"$(systemctl show -p StatusText --value $UNIT)\""

# 4. SIGKILL to both processes, pages out, the workload idle.
old_serving=$(serving_pid)
systemctl kill -s KILL $UNIT || fail "systemctl kill"
back() { [[ $(systemctl is-active $UNIT) == active ]] && p=$(serving_pid 2>/dev/null) && [[ -n $p && $p != "$old_serving" ]]; }
start=$SECONDS
wait_until 60 back || fail "not back 60 s after SIGKILL: $(systemctl is-active $UNIT)"
echo "back after $((SECONDS - start)) s: supervisor $(systemctl show -p MainPID --value $UNIT), serving $(serving_pid)"
(( $(swap_areas) == 1 )) || fail "$(swap_areas) swap areas after the restart: $(cat /proc/swaps)"
[[ $(status_field "['device']['loop']") == "$loop" ]] || fail "the area moved to $(status_field "['device']['loop']")"
grep -q "^$loop " /proc/swaps ||
  note "/proc/swaps now names the area '$(awk 'NR == 2 {print $1}' /proc/swaps)', not $loop: its path in the unit's mount namespace, which died with both processes (swapon --show and tools matching /dev/loopN miss it; swapoff $loop still finds it)"
after=$(out_pages)
(( after == stored )) || fail "$stored pages out before the SIGKILL, $after after"
[[ $(status_field "['lost_pages']") == 0 ]] || fail "lost pages: $(status_field "['lost_pages']")"
journalctl -u $UNIT -b --no-pager -o cat | grep -q "took over the swap area of an earlier uzswapd" ||
  fail "the new supervisor did not take the area over from the file descriptor store"
[[ $(systemctl show -p NRestarts --value $UNIT) -ge 1 ]] || fail "NRestarts did not count it"
pass "systemctl kill -s KILL: Restart= took the area back from the fd store: $after pages, one swap area"
if journalctl -u $UNIT -b --no-pager -o cat | grep -q "FUSE_NOTIFY_RESEND: "; then
  note "Linux $kernel: $(journalctl -u $UNIT -b --no-pager -o cat | grep -m1 'FUSE_NOTIFY_RESEND: ')"
fi
if ! $resend; then
  echo "SKIP part: SIGKILL with swap requests in flight: Linux $kernel has no FUSE_NOTIFY_RESEND (6.9+), so a request the dead process had read is never answered and its task hangs; covered on the host's kernel by tests/e2e/restart.sh"
fi

# 5. Live handover.
old_serving=$(serving_pid)
systemctl reload $UNIT || fail "systemctl reload"
wait_until 60 back || fail "no new serving process 60 s after reload"
after=$(out_pages)
(( after == stored )) || fail "$stored pages out before reload, $after after"
pass "systemctl reload: serving process $old_serving -> $(serving_pid), $after pages kept"

# 6. restart = stop (swapoff: pages back in RAM, so the scope may hold them)
# and start afresh; then the pages go out to the new area again.
systemctl set-property --runtime $scope.scope MemoryMax=infinity || fail "set-property MemoryMax"
old_main=$(systemctl show -p MainPID --value $UNIT)
start=$SECONDS
systemctl restart $UNIT || fail "systemctl restart"
echo "systemctl restart took $((SECONDS - start)) s"
[[ $(systemctl show -p MainPID --value $UNIT) != "$old_main" ]] || fail "restart kept MainPID"
(( $(swap_areas) == 1 )) || fail "$(swap_areas) swap areas after restart"
fresh=$(out_pages)
(( fresh < stored / 2 )) || fail "$fresh pages out after the restart: not a fresh area"
systemctl set-property --runtime $scope.scope MemoryMax=48M || fail "set-property MemoryMax"
wait_until 60 out_over 10000 || fail "the pages did not go out to the new area ($(out_pages))"
pass "systemctl restart: swapped off and on again, $(out_pages) pages out again"

touch $gate
wait $w1 || fail "the workload failed: $(cat $out)"
grep -q '"wrong_pages": 0' $out || fail "wrong pages: $(cat $out)"
pass "every byte verified: $(tail -n 1 $out)"

# 7. systemctl stop with pages out.
scope=uzswap-vm-w2
gate=/tmp/uzswap-vm-gate2
out=/tmp/uzswap-vm-out2
systemd-run --quiet --scope --unit $scope -p MemoryMax=48M -p MemorySwapMax=infinity \
  "$WORKLOAD" 96 --seed 8 --pause-file $gate > $out 2>&1 &
w2=$!
WORKLOAD_PIDS+=("$w2")
on_exit "systemctl stop $scope.scope"
wait_until 300 grep -q filled $out || fail "the second workload did not fill: $(cat $out)"
wait_until 60 out_over 5000
stored=$(out_pages)
(( stored > 5000 )) || fail "only $stored pages out before stop"
systemctl set-property --runtime $scope.scope MemoryMax=infinity || fail "set-property MemoryMax"
start=$SECONDS
systemctl stop $UNIT || fail "systemctl stop"
echo "systemctl stop with $stored pages out took $((SECONDS - start)) s"
[[ $(systemctl show -p Result --value $UNIT) == success ]] || fail "stop result: $(systemctl show -p Result --value $UNIT)"
[[ $(systemctl show -p ExecMainStatus --value $UNIT) == 0 ]] || fail "exit status $(systemctl show -p ExecMainStatus --value $UNIT)"
(( $(swap_areas) == 0 )) || fail "still swap: $(cat /proc/swaps)"
losetup -a | grep -q /run/uzswap && fail "loop device left: $(losetup -a)"
pgrep -x uzswapd >/dev/null && fail "an uzswapd process is left"
[[ -z $(ipcs -m | awk '$1 ~ /^0x/ && $6 > 0') ]] || note "shared memory after stop: $(ipcs -m)"
journalctl -u $UNIT -b --no-pager -o cat | grep -q "serving process stopped cleanly" || fail "no clean stop in the journal"
pass "systemctl stop: $stored pages back in RAM, exit 0, no swap, loop device or process left"
touch $gate
wait $w2 || fail "the second workload failed: $(cat $out)"
grep -q '"wrong_pages": 0' $out || fail "wrong pages: $(cat $out)"
pass "every byte verified after the stop: $(tail -n 1 $out)"
