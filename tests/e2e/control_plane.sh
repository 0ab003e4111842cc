#!/usr/bin/env bash
# No client can wedge the control socket: with 50 hostile clients connected
# (half of them sent half a request, half pipeline requests and never read a
# reply), root's status still answers within 100 ms, every time. A stopped
# daemon (SIGSTOP) makes uzswapctl fail within its --timeout, with a one-line
# message and exit status 4, and the daemon serves again once continued.
source "$(dirname "$0")/lib.sh"
require_machine

start_daemon --size 64M --no-swapon
# Never leave the daemon stopped, whatever fails.
STOPPED_PID=
trap 'status=$?; [[ -n $STOPPED_PID ]] && kill -CONT "$STOPPED_PID" 2>/dev/null; (exit $status); cleanup' EXIT
socket=$RUN_DIR/$NAME/control

# The hostile clients hold their connections until told to go (stdin closes).
hostile_ready=$(mktemp /tmp/uzswap-e2e-hostile.XXXXXX)
TEMP_FILES+=("$hostile_ready")
exec {hostile_in}> >(python3 - "$socket" "$hostile_ready" <<'PY'
import socket, sys
path, ready = sys.argv[1], sys.argv[2]
clients = []
for i in range(50):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.setblocking(False)
    if i % 2 == 0:
        s.send(b'{"cmd": "sta')          # half a request, never finished
    else:
        try:                             # requests, replies never read
            for _ in range(2000):
                s.send(b'{"cmd":"status"}\n')
        except BlockingIOError:
            pass
    clients.append(s)
open(ready, "w").write("ready\n")
sys.stdin.read()
PY
)
wait_until 30 grep -q ready "$hostile_ready" || fail "the hostile clients did not connect"
pass "50 hostile clients connected"

# Root's status, timed in-process (no process start-up in the figure).
read -r worst median < <(python3 - "$socket" <<'PY'
import json, socket, sys, time
times = []
for _ in range(20):
    start = time.monotonic()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sys.argv[1])
    s.sendall(b'{"cmd":"status"}\n')
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    times.append((time.monotonic() - start) * 1000)
    s.close()
    assert json.loads(reply)["ok"], reply
    time.sleep(0.02)
times.sort()
print(f"{times[-1]:.1f} {times[len(times) // 2]:.1f}")
PY
) || fail "root's status failed with hostile clients connected"
python3 -c "import sys; sys.exit(0 if $worst < 100 else 1)" ||
  fail "root's status took up to $worst ms with 50 hostile clients (median $median ms)"
pass "root's status with 50 hostile clients: median $median ms, worst $worst ms of 20 (limit 100 ms)"
start=$(date +%s%N)
"$UZSWAPCTL" --name "$NAME" status >/dev/null || fail "uzswapctl status with hostile clients"
pass "uzswapctl status with hostile clients: $(( ($(date +%s%N) - start) / 1000000 )) ms, process start-up included"
exec {hostile_in}>&-

# A stopped daemon (its serving process, the one that answers): uzswapctl
# gives up at its deadline, clearly.
serving=$(status_field "['pid']")
STOPPED_PID=$serving
kill -STOP "$serving"
start=$(date +%s%N)
out=$("$UZSWAPCTL" --name "$NAME" --timeout 1 status 2>&1)
code=$?
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
kill -CONT "$serving"
(( code == 4 )) || fail "uzswapctl against a stopped daemon: exit $code, expected 4 ($out)"
[[ $out == *"not answering"* && $(wc -l <<<"$out") -eq 1 ]] || fail "unclear message: $out"
(( elapsed >= 900 && elapsed < 3000 )) || fail "gave up after $elapsed ms with --timeout 1"
pass "stopped daemon: '$out' after $elapsed ms, exit 4"
"$UZSWAPCTL" --name "$NAME" status >/dev/null || fail "the daemon did not answer after SIGCONT"
pass "serving again after SIGCONT"

stop_daemon
assert_clean
