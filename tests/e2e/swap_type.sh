#!/usr/bin/env bash
# The daemon finds its kernel swap type by probing, not from its line in
# /proc/swaps: with another swap area swapped on before it (type 0) and then
# swapped off, uzswap is on the first line but keeps type 1.
source "$(dirname "$0")/lib.sh"
require_machine
command -v mkswap >/dev/null || skip "no mkswap"
[[ $(grep -c . /proc/swaps) -eq 1 ]] || skip "other swap areas are on; the expected types would differ"

other=/var/tmp/uzswap-e2e-other-$NAME.swap
cleanup_other() { swapoff "$other" 2>/dev/null; rm -f "$other"; }
trap 'status=$?; cleanup_other; (exit $status); cleanup' EXIT  # keep the test's status
fallocate -l 16M "$other" && chmod 600 "$other" && mkswap -q "$other" >/dev/null || fail "cannot make $other"
swapon -p 1 "$other" || skip "swapon of a plain file failed"

start_daemon --size 256M
dev=$(readlink "$RUN_DIR/$NAME/device")
type=$(status_field "['device']['swap_type']")
[[ $type == 1 ]] || fail "swap type $type with another area before it, expected 1"
swapoff "$other" || fail "swapoff $other"
line=$(awk -v d="$dev" 'NR > 1 { if ($1 == d) print NR - 2 }' /proc/swaps)
[[ $line == 0 ]] || fail "expected $dev on the first line of /proc/swaps"
pass "swap type $type, while /proc/swaps lists the device first"

stop_daemon
assert_clean
