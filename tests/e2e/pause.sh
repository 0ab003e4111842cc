#!/usr/bin/env bash
# pause.sh fuse|uring: a paused daemon loses nothing. While byte-verified
# workloads swap through uzswap (pages re-dirtied and re-read, round after
# round), the serving process is stopped and continued (SIGSTOP/SIGCONT) 30
# times, the daemon's cgroup is frozen and thawed (cgroup.freeze) 30 times,
# and every thread of the serving process is ptrace-stopped and detached 30
# times; over /dev/fuse (`fuse`) or FUSE over io_uring (`uring`, skipped only
# where the kernel lacks it). Every byte must come back right, no workload
# may die (a failed swap read is SIGBUS), the same serving process must
# still be serving, and status must show no thread failed, dead or stuck.
# PAUSE_TIMES overrides the 30. The kernel's io_uring switch is restored.
source "$(dirname "$0")/lib.sh"
require_machine
transport=${1:-fuse}
times=${PAUSE_TIMES:-30}
v2=$(v2_root) || skip "no cgroup v2 tree for cgroup.freeze"

flags=(--size 1G)
if [[ $transport == uring ]]; then
  param=/sys/module/fuse/parameters/enable_uring
  [[ -w $param ]] || skip "this kernel has no FUSE over io_uring (Linux 6.14+)"
  AFTER_CLEANUP+=("echo $(cat $param) > $param")
  echo Y > $param
  flags+=(--fuse-io-uring on)
fi

# The daemon's own cgroup, to freeze; thawed (and every process continued)
# before the cleanup stops the daemon, whatever the exit path.
FREEZE_CG=$v2/uzswap-pause-$NAME
new_cgroup "$FREEZE_CG"
[[ -f $FREEZE_CG/cgroup.freeze ]] || skip "no cgroup.freeze (Linux 5.2+)"
SERVING=
# On a failure the daemon may hold requests it will never answer (the bug
# this test is for): abort its FUSE connection first, so that the cleanup's
# swapoff, and every process on the machine touching swap, is not left in D
# state. The pages are lost either way.
abort_connection() {
  local minor ctl=/sys/fs/fuse/connections
  minor=$(awk -v m="$RUN_DIR/$NAME/swap" '$5 == m {split($3, d, ":"); print d[2]}' /proc/self/mountinfo)
  [[ -n $minor ]] || return 0
  if ! mountpoint -q $ctl; then mount -t fusectl none $ctl && AFTER_CLEANUP+=("umount $ctl"); fi
  echo 1 > "$ctl/$minor/abort" 2>/dev/null
}
on_exit() {
  local st=$1
  echo 0 > "$FREEZE_CG/cgroup.freeze" 2>/dev/null
  [[ -n $SERVING ]] && kill -CONT "$SERVING" 2>/dev/null
  if ((st != 0 && st != SKIP)); then
    abort_connection
    [[ -n $SERVING ]] && AFTER_CLEANUP+=("kill -KILL $SERVING 2>/dev/null")
  fi
  return "$st"
}
trap 'on_exit $?; cleanup' EXIT

start_daemon "${flags[@]}"
[[ $(status_field "['device']['fuse_io_uring']") == $([[ $transport == uring ]] && echo True || echo False) ]] ||
  fail "not serving over the $transport transport"
SERVING=$(status_field "['pid']")
echo "$DAEMON_PID" > "$FREEZE_CG/cgroup.procs" || fail "cannot move the supervisor into $FREEZE_CG"
echo "$SERVING" > "$FREEZE_CG/cgroup.procs" || fail "cannot move the serving process into $FREEZE_CG"

# Workloads one after another until the pauses are over, each 192 MiB in a
# 128 MiB cgroup with two more rounds of re-dirtying and re-reading.
make_memcg $((128 << 20))
outdir=$(mktemp -d /tmp/uzswap-e2e-pause.XXXXXX)
AFTER_CLEANUP+=("rm -rf '$outdir'")
stop_file=$outdir/done
(
  run=0
  until [[ -e $stop_file ]]; do
    run=$((run + 1))
    in_memcg "$WORKLOAD" 192 --rounds 2 --seed "$run" >"$outdir/run.$run" 2>&1
    st=$?
    if ((st != 0)); then echo "workload run $run exited with $st" >"$outdir/failed"; exit 1; fi
  done
) &
loop=$!
swapping() { (( $(status_field "['written_pages']") > 5000 )); }
wait_until 60 swapping || fail "the workload does not swap"

# 30-120 ms stopped, 30-120 ms running.
nap() { sleep "0.$(printf %02d $((RANDOM % 10 + 3)))"; }
alive() { [[ ! -e $outdir/failed ]] || fail "$(cat "$outdir/failed") during the $1: $(tail -c 400 "$outdir"/run.* | tail -5)"; }

for ((i = 0; i < times; i++)); do
  kill -STOP "$SERVING"; nap; kill -CONT "$SERVING"; nap
  alive "SIGSTOP/SIGCONT pauses"
done
pass "$times SIGSTOP/SIGCONT pauses of the serving process"
for ((i = 0; i < times; i++)); do
  echo 1 > "$FREEZE_CG/cgroup.freeze"
  for _ in $(seq 1 50); do grep -q '^frozen 1' "$FREEZE_CG/cgroup.events" && break; sleep 0.01; done
  nap
  echo 0 > "$FREEZE_CG/cgroup.freeze"; nap
  alive "cgroup freezes"
done
pass "$times cgroup freeze/thaw cycles of the daemon's cgroup"
python3 "$(dirname "$0")/ptrace_pause.py" "$SERVING" "$times" 150 150 || fail "ptrace helper failed"
alive "ptrace stops"
pass "$times ptrace attach/stop/detach cycles of every serving thread"

touch "$stop_file"
wait "$loop" || fail "$(cat "$outdir/failed" 2>/dev/null): $(tail -n 3 "$outdir"/run.*)"
runs=0
for f in "$outdir"/run.*; do
  runs=$((runs + 1))
  grep -q '"wrong_pages": 0' "$f" || { cat "$f"; fail "wrong pages in $f"; }
done
[[ $(status_field "['pid']") == "$SERVING" ]] || fail "the serving process changed: $SERVING is gone"
bad=$("$UZSWAPCTL" --name "$NAME" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
bad = [t for t in s["threads"]["list"] if t["state"] in ("failed", "dead") or t["stuck"]]
print(" ".join("%s:%s:%s" % (t["name"], t["state"], t["last_error"]) for t in bad))')
[[ -z $bad ]] || fail "threads not healthy: $bad"
reads=$(status_field "['read_pages']")
pass "$runs workload run(s) verified every byte over $transport ($reads pages read back)"

stop_daemon
assert_clean
pass "clean stop"
