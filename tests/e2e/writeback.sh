#!/usr/bin/env bash
# Writeback to a real backing file: while a workload's pages are swapped out,
# `uzswapctl writeback` moves them to the file; the workload then reads every
# byte back right (through io_uring from the file), and stop is clean.
source "$(dirname "$0")/lib.sh"
require_machine

BACKING=/var/tmp/uzswap-e2e-$NAME.swap
TEMP_FILES+=("$BACKING")
start_daemon --size 1G --backing-file "$BACKING"
[[ -f $BACKING && $(stat -c %s "$BACKING") -eq $((1 << 30)) ]] || fail "backing file not preallocated"
pass "backing file preallocated"

start_paused_workload 256
stored=$(status_field "['stored_pages']")
out=$("$UZSWAPCTL" --name "$NAME" writeback --pages 20000) || fail "uzswapctl writeback: $out"
echo "$out"
written=$(status_field "['written_back_pages']")
(( written > 5000 )) || fail "only $written pages written back out of $stored stored"
pass "$written of $stored stored pages written back on request"
requests=$(status_field "['reclaim']['nodes'][0]['wakeups']['request']")
(( requests >= 1 )) || fail "the request did not go through the node's reclaim thread"
pass "the request woke the reclaim thread ($requests wakeup(s))"

finish_workload
reads=$(status_field "['writeback']['backing_reads']")
errors=$(status_field "['writeback']['backing_read_errors']")
(( reads > 0 )) || fail "no page was read back from the backing file"
(( errors == 0 )) || fail "$errors backing read errors"
pass "every byte verified, $reads pages read back from the file"

"$UZSWAPCTL" --name "$NAME" set writeback off >/dev/null || fail "set writeback off"
expect_err=$("$UZSWAPCTL" --name "$NAME" writeback --pages 10 2>&1) && fail "writeback while off succeeded"
[[ $expect_err == *"turned off"* ]] || fail "unclear error: $expect_err"
pass "writeback off is refused clearly: $expect_err"

stop_daemon
assert_clean
rm -f "$BACKING"
pass "clean stop"
