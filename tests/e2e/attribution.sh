#!/usr/bin/env bash
# Cgroup attribution and per-cgroup writeback policy on real processes in real
# cgroups: two workloads in two v2 cgroups, each forced to swap by its own
# memory cgroup. Their pages are attributed to their cgroups; the one with
# writeback off never reaches the backing file, the one over its maximum is
# written back; both read every byte back right.
source "$(dirname "$0")/lib.sh"
require_machine
V2=$(v2_root) || skip "no cgroup v2 tree"
if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
  MEM=/sys/fs/cgroup/memory
  limit_file=memory.limit_in_bytes
elif grep -qw memory "$V2/cgroup.controllers" 2>/dev/null && [[ $V2 == /sys/fs/cgroup ]]; then
  MEM=
else
  skip "no memory controller to force the workloads to swap"
fi

BACKING=/var/tmp/uzswap-e2e-$NAME.swap
TEMP_FILES+=("$BACKING" /tmp/uzswap-$NAME-{A,B}.{go,out})
start_daemon --size 1G --backing-file "$BACKING" --attribution-interval 1
type=$(status_field "['device']['swap_type']")
(( type >= 0 )) || fail "swap type unknown"

# Cgroups A and B: in the v2 tree for attribution, with a memory limit each.
for w in A B; do
  new_cgroup "$V2/uzswap-$NAME-$w"
  if [[ -n $MEM ]]; then
    new_cgroup "$MEM/uzswap-$NAME-$w"
    echo $((96 << 20)) > "$MEM/uzswap-$NAME-$w/$limit_file"
  else
    echo $((96 << 20)) > "$V2/uzswap-$NAME-$w/memory.max"
  fi
done

# A's writeback goes off before its workload runs: no page of A may ever
# reach the file, even before attribution has found it (pressure reclaim
# holds back unattributed pages while some cgroup has writeback off).
"$UZSWAPCTL" --name "$NAME" attribute >/dev/null || fail "attribute"
"$UZSWAPCTL" --name "$NAME" set cgroup-writeback "/uzswap-$NAME-A=off" >/dev/null || fail "cgroup-writeback"
[[ $(status_field "['reclaim']['hold_unattributed']") == True ]] || fail "unattributed pages not held"

start_workload() {  # start_workload A|B SEED: in both cgroups, paused after its fill
  local w=$1
  bash -c 'echo $$ > "$1/cgroup.procs" && { [[ -z "$2" ]] || echo $$ > "$2/cgroup.procs"; } && exec "$3" 192 --seed "$4" --pause-file "$5"' \
    _ "$V2/uzswap-$NAME-$w" "${MEM:+$MEM/uzswap-$NAME-$w}" "$WORKLOAD" "$2" "/tmp/uzswap-$NAME-$w.go" \
    > "/tmp/uzswap-$NAME-$w.out" &
}
start_workload A 11
pid_a=$!
start_workload B 22
pid_b=$!
for w in A B; do
  for _ in $(seq 1 600); do grep -q filled "/tmp/uzswap-$NAME-$w.out" && break; sleep 0.1; done
  grep -q filled "/tmp/uzswap-$NAME-$w.out" || fail "workload $w did not fill"
done
cg_field() {  # cg_field PATH KEY
  "$UZSWAPCTL" --name "$NAME" cgroups --json |
    python3 -c "import json,sys; print(next((c['$2'] for c in json.load(sys.stdin) if c['path'] == '$1'), 0))"
}
# A pass on request, then the periodic ones (each has a budget): wait until
# both cgroups are seen.
"$UZSWAPCTL" --name "$NAME" attribute || fail "attribute"
for _ in $(seq 1 100); do
  a_pages=$(cg_field "/uzswap-$NAME-A" stored_pages)
  b_pages=$(cg_field "/uzswap-$NAME-B" stored_pages)
  (( a_pages > 5000 && b_pages > 5000 )) && break
  sleep 0.2
done
(( a_pages > 5000 && b_pages > 5000 )) || fail "attributed pages: A $a_pages, B $b_pages"
pass "attributed: A $a_pages pages, B $b_pages pages"
"$UZSWAPCTL" --name "$NAME" cgroups

"$UZSWAPCTL" --name "$NAME" set cgroup-max "/uzswap-$NAME-B=1M" >/dev/null || fail "cgroup-max"
for _ in $(seq 1 200); do
  (( $(cg_field "/uzswap-$NAME-B" compressed_bytes) <= (1 << 20) )) && break
  sleep 0.1
done
b_bytes=$(cg_field "/uzswap-$NAME-B" compressed_bytes)
b_wb=$(cg_field "/uzswap-$NAME-B" written_back_pages)
(( b_bytes <= (1 << 20) && b_wb > 0 )) || fail "B over its maximum: $b_bytes bytes in RAM, $b_wb written back"
pass "B brought under its 1M maximum: $b_wb pages written back"

# A request writes back pages no pass has attributed yet (they are held
# from pressure reclaim only): passes first, until two in a row find
# nothing new, so that every page of A is A's.
zero=0
for _ in $(seq 1 60); do
  if [[ $("$UZSWAPCTL" --name "$NAME" attribute) == "0 pages attributed"* ]]; then
    (( ++zero >= 2 )) && break
  else
    zero=0
  fi
done
"$UZSWAPCTL" --name "$NAME" writeback --pages 100000 >/dev/null || true
a_wb=$(cg_field "/uzswap-$NAME-A" written_back_pages)
(( a_wb == 0 )) || fail "A has writeback off but $a_wb pages reached the backing file"
pass "A, with writeback off, never reached the backing file"

touch "/tmp/uzswap-$NAME-A.go" "/tmp/uzswap-$NAME-B.go"
wait $pid_a || fail "workload A: $(cat /tmp/uzswap-$NAME-A.out)"
wait $pid_b || fail "workload B: $(cat /tmp/uzswap-$NAME-B.out)"
grep -h pages "/tmp/uzswap-$NAME-A.out" "/tmp/uzswap-$NAME-B.out"
rm -f /tmp/uzswap-$NAME-{A,B}.{go,out}
pass "both workloads verified every byte"

stop_daemon
assert_clean
rm -f "$BACKING"
