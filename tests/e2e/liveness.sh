#!/usr/bin/env bash
# The liveness check hands over: a serving thread marked dead in the
# liveness registry (gdb writes its state, as if an exception had escaped
# it) is logged by name within a few seconds and a new serving process takes
# over; before that, status lists every thread with its state and no thread
# failed, dead or stuck. Skips without gdb or without the debug symbols it
# needs (a stripped binary).
source "$(dirname "$0")/lib.sh"
require_machine
command -v gdb >/dev/null || skip "no gdb"
start_daemon --size 256M --no-swapon
old=$(status_field "['pid']")
threads=$("$UZSWAPCTL" --name "$NAME" status --json | python3 -c '
import json, sys
t = json.load(sys.stdin)["threads"]
assert t["down"] == 0 and t["stuck"] == 0, t
print(" ".join("%s:%s" % (x["name"], x["state"]) for x in t["list"]))') || fail "status threads: $threads"
[[ $threads == *uzswap-fuse0:waiting* ]] || fail "an idle FUSE worker should be waiting: $threads"
pass "status lists the threads: $threads"

registry="(('uzswap::(anonymous namespace)::Registry' *)&'uzswap::(anonymous namespace)::registry()::r')->slots._M_elems[0]"
out=$(gdb -p "$old" -batch -ex "print $registry.name" -ex "set var $registry.state._M_i = 5" 2>&1)
name=$(sed -n 's/^\$1 = "\([^"\\]*\).*/\1/p' <<<"$out")
[[ -n $name ]] || skip "gdb could not find the liveness registry (no debug symbols?): $(tail -2 <<<"$out")"
changed() { [[ $(status_field "['pid']" 2>/dev/null) != "$old" ]]; }
wait_until 10 changed || fail "$name marked dead, but $old is still serving"
grep -q "thread $name dead" "$DAEMON_LOG" || fail "the dead thread $name was not logged"
grep -q "handing over to a new serving process" "$DAEMON_LOG" || fail "no handover logged"
pass "thread $name marked dead: logged, and $old handed over to $(status_field "['pid']")"
stop_daemon
assert_clean
pass "clean stop"
