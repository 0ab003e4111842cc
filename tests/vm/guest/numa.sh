#!/usr/bin/env bash
# In the VM rig's guest (two NUMA nodes, one vCPU each): per-node pools,
# LRUs and reclaim threads. A workload bound to node 1 (numactl
# --cpunodebind=1 --membind=1) swaps through uzswapd; its pages fill node
# 1's pool and LRU, node 1's reclaim thread wakes at node 1's low watermark
# and writes back until its high one while node 0's stays idle; status
# --json `nodes` and `reclaim.nodes` show it. Then the same on node 0.
# The pool limit is small (max-pool-percent = 2: about 30 MiB per node) so
# that a 96 MiB workload crosses a node's watermarks; PSI reclaim is off so
# that only the watermarks wake the threads.
source "$(dirname "$0")/../guest-lib.sh"
require_guest
command -v numactl >/dev/null || skip "no numactl"
[[ $(numactl -H | awk '/^available:/ {print $2}') -ge 2 ]] || skip "fewer than two NUMA nodes"

install_unit "size = 1G" "max-pool-percent = 2" "psi-reclaim-pages = 0" "events-reclaim-pages = 0"
systemctl start $UNIT || fail "systemctl start $UNIT"
(( $(status_py "len(s['nodes'])") == 2 )) || fail "the pool has $(status_py "len(s['nodes'])") node(s)"
(( $(status_py "len(s['reclaim']['nodes'])") == 2 )) || fail "$(status_py "len(s['reclaim']['nodes'])") reclaim threads"
threads=$(ps -L -o comm= -p "$(serving_pid)" | grep -c 'kswapd')
pass "two pool nodes, two reclaim threads ($threads uzswap-kswapd threads)"
status_py "[(n['node'], n['share_bytes'], n['watermarks']) for n in s['reclaim']['nodes']]"

node_row() {  # node_row N: one line of what node N holds and did
  status_py "'node $1: lru_pages %d, pool %.1f MiB, share %.1f MiB, low %.1f/high %.1f MiB free, wakeups %s, runs %d, written %d' % (s['nodes'][$1]['lru_pages'], s['reclaim']['nodes'][$1]['pool_bytes'] / 2**20, s['reclaim']['nodes'][$1]['share_bytes'] / 2**20, s['reclaim']['nodes'][$1]['watermarks']['low'] / 2**20, s['reclaim']['nodes'][$1]['watermarks']['high'] / 2**20, s['reclaim']['nodes'][$1]['wakeups'], s['reclaim']['nodes'][$1]['balance_runs'], s['reclaim']['nodes'][$1]['written'])"
}
written() { status_py "s['reclaim']['nodes'][$1]['written']"; }
wmark_wakeups() { status_py "s['reclaim']['nodes'][$1]['wakeups']['watermark']"; }
lru() { status_py "s['nodes'][$1]['lru_pages']"; }

P=/sys/fs/cgroup/uzswap-vm-numa
new_memcg $P
for target in 1 0; do
  other=$((1 - target))
  new_memcg $P/node$target memory.max=$((32 << 20))
  w0=$(written $other) ww0=$(wmark_wakeups $other) l0=$(lru $other)
  t0=$(written $target) lt0=$(lru $target)
  start_workload n$target $P/node$target 96 numactl --cpunodebind=$target --membind=$target
  wait_filled n$target 400
  # The node's thread writes back until its high mark: give it a moment.
  reached() { (( $(written $target) > t0 )); }
  wait_until 30 reached
  node_row 0
  node_row 1
  got=$(( $(lru $target) - lt0 + $(written $target) - t0 ))
  stray=$(( $(lru $other) - l0 ))
  echo "workload on node $target: node $target got $got pages (LRU + written back), node $other $stray"
  (( got > 5000 )) || fail "node $target's LRU got only $got pages"
  (( stray * 10 <= got )) || fail "node $other got $stray pages of a workload bound to node $target ($got)"
  (( $(written $target) > t0 )) || fail "node $target's reclaim thread wrote nothing back"
  (( $(wmark_wakeups $target) > 0 )) || fail "node $target's thread never woke for its watermark"
  (( $(written $other) == w0 && $(wmark_wakeups $other) == ww0 )) ||
    fail "node $other's thread worked for node $target's workload: written $w0 -> $(written $other), watermark wakeups $ww0 -> $(wmark_wakeups $other)"
  pass "node $target: $got pages in its LRU, its thread wrote $(( $(written $target) - t0 )) back after $(wmark_wakeups $target) watermark wakeup(s); node $other idle"
  finish_workload n$target
  kill_procs $P/node$target
done
pass "every byte verified on both nodes"
