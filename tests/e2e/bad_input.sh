#!/usr/bin/env bash
# Bad input gets a clear error and changes nothing: invalid configuration, a
# backing file on tmpfs, a second instance, a control client that is not root,
# garbage on the control socket, a daemon that is not running.
source "$(dirname "$0")/lib.sh"
require_machine

expect_refusal() {  # expect_refusal WHAT PATTERN CMD...: non-zero exit, message matching
  local what=$1 pattern=$2
  shift 2
  local out status
  out=$("$@" 2>&1)
  status=$?
  (( status != 0 )) || fail "$what: exit status 0"
  [[ $out =~ $pattern ]] || fail "$what: message '$out' does not match '$pattern'"
  pass "$what: $out"
}

expect_refusal "bad compressor" "--compressor" "$UZSWAPD" --name "$NAME" --config /dev/null --compressor zip
expect_refusal "bad pool percent" "--max-pool-percent" "$UZSWAPD" --name "$NAME" --config /dev/null --max-pool-percent 300
expect_refusal "bad size" "--size" "$UZSWAPD" --name "$NAME" --config /dev/null --size 12Q
conf=$(mktemp /tmp/uzswap-e2e-conf.XXXXXX)
echo "accept-threshold-percent = 0" > "$conf"
expect_refusal "bad value in the config file" "accept-threshold-percent" "$UZSWAPD" --name "$NAME" --config "$conf"
rm -f "$conf"
expect_refusal "backing file on tmpfs" "tmpfs" "$UZSWAPD" --name "$NAME" --config /dev/null --backing-file /dev/shm/uzswap-$NAME
assert_clean

expect_refusal "uzswapctl without a daemon" "not running" "$UZSWAPCTL" --name "$NAME" status

start_daemon --size 64M --no-swapon
expect_refusal "second instance" "already running" "$UZSWAPD" --name "$NAME" --config /dev/null --size 64M --no-swapon
kill -0 "$DAEMON_PID" || fail "the first instance died"
[[ -L $RUN_DIR/$NAME/device && -S $RUN_DIR/$NAME/control ]] || fail "the refused start touched the first instance's files"

if command -v setpriv >/dev/null; then
  expect_refusal "non-root control client" "permission denied" \
    setpriv --reuid=65534 --regid=65534 --clear-groups "$UZSWAPCTL" --name "$NAME" status
fi

# Garbage on the socket: an error reply per line, the daemon keeps serving.
reply=$(python3 - "$RUN_DIR/$NAME/control" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rwb")
for line in [b"\x00\xff garbage", b"{\"cmd\": 42}", b"[1,2,3]", b"{\"cmd\":\"reboot\"}",
             b"{\"cmd\":\"set\",\"key\":\"max-pool-percent\",\"value\":\"900\"}",
             b"{\"cmd\":\"set\",\"key\":\"bogus\",\"value\":\"1\"}"]:
    f.write(line + b"\n"); f.flush()
    print(f.readline().decode().strip())
PY
)
echo "$reply"
[[ $(grep -c '"ok":false' <<<"$reply") -eq 6 ]] || fail "expected six error replies"
kill -0 "$DAEMON_PID" || fail "garbage killed the daemon"
"$UZSWAPCTL" --name "$NAME" status >/dev/null || fail "daemon stopped answering"
pct=$(status_field "['max_pool_percent']")
[[ $pct == 20 ]] || fail "a refused set changed max_pool_percent to $pct"
pass "garbage on the control socket: six clear errors, nothing changed, still serving"

expect_refusal "writeback without a backing file" "backing file" "$UZSWAPCTL" --name "$NAME" writeback --pages 10
expect_refusal "set writeback without a backing file" "backing file" "$UZSWAPCTL" --name "$NAME" set writeback on

"$UZSWAPCTL" --name "$NAME" set compressor zstd >/dev/null || fail "set compressor"
[[ $(status_field "['compressor']") == zstd ]] || fail "compressor not switched"
pass "live setting applied"

# The pool's address space was reserved for the configured limit (20 %).
expect_refusal "a pool limit above the reserved address space" "reserved address space" \
  "$UZSWAPCTL" --name "$NAME" set max-pool-percent 90
"$UZSWAPCTL" --name "$NAME" set max-pool-percent 15 >/dev/null || fail "set max-pool-percent 15"
[[ $(status_field "['max_pool_percent']") == 15 ]] || fail "max_pool_percent not lowered"
pass "max-pool-percent: lowered live, raised past the reservation refused"

stop_daemon
assert_clean
