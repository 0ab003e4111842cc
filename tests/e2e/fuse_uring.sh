#!/usr/bin/env bash
# FUSE over io_uring end to end: with the kernel's switch on, uzswapd serves
# its file through ring entries instead of /dev/fuse reads and writes; a
# workload twice its cgroup's limit swaps through it and gets every byte
# back. With the switch off, `--fuse-io-uring on` is refused clearly. The
# kernel's switch is restored on exit.
source "$(dirname "$0")/lib.sh"
require_machine
param=/sys/module/fuse/parameters/enable_uring
[[ -w $param ]] || skip "this kernel has no FUSE over io_uring (Linux 6.14+)"
AFTER_CLEANUP+=("echo $(cat $param) > $param")

echo N > $param
err=$("$UZSWAPD" --name "$NAME" --config /dev/null --size 64M --fuse-io-uring on 2>&1) && fail "started without kernel support"
[[ $err == *"enable_uring"* ]] || fail "unclear error: $err"
pass "refused while the kernel's switch is off: ${err##*] }"

echo Y > $param
start_daemon --size 1G --fuse-io-uring on
[[ $(status_field "['device']['fuse_io_uring']") == True ]] || fail "not serving over io_uring"
pass "serving over io_uring with $(status_field "['device']['ring_threads']") ring thread(s)"

make_memcg $((128 << 20))
outfile=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
TEMP_FILES+=("$outfile")
in_memcg "$WORKLOAD" 256 >"$outfile" || { cat "$outfile"; fail "workload failed"; }
out=$(cat "$outfile")
echo "$out"
[[ $out == *'"wrong_pages": 0'* ]] || fail "workload saw wrong pages"
reads=$(status_field "['read_pages']")
writes=$(status_field "['written_pages']")
(( writes > 20000 && reads > 20000 )) || fail "only $writes pages written, $reads read through the ring"
pass "256 MiB workload in a 128 MiB cgroup verified every byte ($writes pages written, $reads read)"
discarded() { (( $(status_field "['discarded_pages']") > 0 )); }
wait_until 30 discarded || fail "no discards through the ring"
pass "discards arrive through the ring"

stop_daemon
assert_clean
pass "clean stop"
