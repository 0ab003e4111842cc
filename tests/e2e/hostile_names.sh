#!/usr/bin/env bash
# Names from outside are data: a cgroup whose name holds a byte that is not
# UTF-8, a double quote, a backslash, a tab and a terminal escape, holding
# swapped pages, shows up escaped in all four outputs (the cgroups table,
# status --json, the Prometheus text and top), and the daemon goes on
# answering. (A newline cannot be part of a cgroup name: the kernel refuses
# it, checked below; the escaping of newlines is covered by the unit tests
# and the fuzzer.)
source "$(dirname "$0")/lib.sh"
require_machine
V2=$(v2_root) || skip "no cgroup v2 tree"
if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
  MEM=/sys/fs/cgroup/memory
elif grep -qw memory "$V2/cgroup.controllers" 2>/dev/null && [[ $V2 == /sys/fs/cgroup ]]; then
  MEM=
else
  skip "no memory controller to force the workload to swap"
fi

if mkdir "$V2/uzswap-$NAME-"$'new\nline' 2>/dev/null; then
  EXTRA_CGROUPS+=("$V2/uzswap-$NAME-"$'new\nline')
  fail "the kernel took a cgroup name with a newline"
fi
pass "the kernel refuses a newline in a cgroup name"

# The raw name, and what every output must show instead (escape_name():
# \xNN for the bad byte and the escape, \t for the tab, the quote and the
# backslash as they are).
raw="uzswap-$NAME-"$'\xff"q\\\t\x1b[1m'
shown="/uzswap-$NAME-"'\xff"q\\t\x1b[1m'
new_cgroup "$V2/$raw"
if [[ -n $MEM ]]; then
  new_cgroup "$MEM/uzswap-$NAME"
  echo $((96 << 20)) > "$MEM/uzswap-$NAME/memory.limit_in_bytes"
else
  echo $((96 << 20)) > "$V2/$raw/memory.max"
fi

start_daemon --size 1G --attribution-interval 1
(( $(status_field "['device']['swap_type']") >= 0 )) || fail "swap type unknown"

GATE=$(mktemp -u /tmp/uzswap-e2e-gate.XXXXXX)
WORKLOAD_OUT=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
TEMP_FILES+=("$GATE" "$WORKLOAD_OUT")
bash -c 'echo $$ > "$1/cgroup.procs" && { [[ -z "$2" ]] || echo $$ > "$2/cgroup.procs"; } && exec "$3" 192 --pause-file "$4"' \
  _ "$V2/$raw" "${MEM:+$MEM/uzswap-$NAME}" "$WORKLOAD" "$GATE" >"$WORKLOAD_OUT" &
WORKLOAD_PID=$!
wait_until 60 grep -q filled "$WORKLOAD_OUT" || fail "workload did not finish its fill"

# Until attribution finds the cgroup, and then as long as the test reads.
stored_of_shown() {
  "$UZSWAPCTL" --name "$NAME" status --json | python3 -c '
import json, sys
status = json.load(sys.stdin)
print(next((c["stored_pages"] for c in status["cgroups"] if c["path"] == sys.argv[1]), 0))' "$shown"
}
attributed() { (( $(stored_of_shown) > 1000 )); }
"$UZSWAPCTL" --name "$NAME" attribute >/dev/null || fail "attribute"
wait_until 60 attributed || fail "no pages attributed to the cgroup; status: $("$UZSWAPCTL" --name "$NAME" cgroups 2>&1)"
pass "$(stored_of_shown) swapped pages attributed to the cgroup, status --json names it $shown"

# Every output: valid UTF-8, no control byte but newlines, the name escaped.
check_output() {  # check_output WHAT EXPECTED_SUBSTRING CMD...
  local what=$1 expected=$2
  shift 2
  local out=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
  TEMP_FILES+=("$out")
  "$@" >"$out" 2>&1 || fail "$what: $(cat "$out")"
  python3 - "$out" "$expected" "$what" <<'PY' || fail "$what: $(cat -v "$out")"
import sys
data = open(sys.argv[1], "rb").read()
text = data.decode("utf-8")  # raises on invalid UTF-8
bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or ord(c) == 0x7f]
assert not bad, f"control characters {bad!r}"
assert sys.argv[2] in text, f"{sys.argv[2]!r} not in the output"
PY
  pass "$what shows $expected"
}
check_output "cgroups table" "$shown" "$UZSWAPCTL" --name "$NAME" cgroups
check_output "status --json" "$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$shown")" \
  "$UZSWAPCTL" --name "$NAME" status --json
label=$(python3 -c 'import sys; print(sys.argv[1].replace("\\", "\\\\").replace("\"", "\\\""))' "$shown")
check_output "Prometheus text" "cgroup=\"$label\"" "$UZSWAPCTL" --name "$NAME" stats --prometheus
"$UZSWAPCTL" --name "$NAME" stats --prometheus | grep -v '^#' | grep -v '^uzswap_[a-z_]*{' &&
  fail "a Prometheus line that is neither a comment nor a metric"
check_output "top" "$shown" "$UZSWAPCTL" --name "$NAME" top --iterations 1

touch "$GATE"
wait "$WORKLOAD_PID" || { cat "$WORKLOAD_OUT"; fail "workload failed"; }
grep -q '"wrong_pages": 0' "$WORKLOAD_OUT" || fail "workload saw wrong pages"
pass "the workload read every byte back"

stop_daemon
assert_clean
