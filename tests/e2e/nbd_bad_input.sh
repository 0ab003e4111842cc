#!/usr/bin/env bash
# Hostile NBD clients from a raw socket: an old-style client, a bad option
# magic, an option claiming 4 GiB of data, a bad request magic, unaligned,
# out-of-range and oversized requests, a client that never reads, one that
# says nothing, and more clients than --nbd-connections. Each gets the
# protocol's error or a closed connection, nothing stored changes, and
# other clients are served throughout.
source "$(dirname "$0")/lib.sh"
require_nbd_tools

start_daemon --size 64M --frontend nbd --no-swapon --nbd-connections 3
SOCKET=$RUN_DIR/$NAME/nbd
URI=$(nbd_uri)
"$PY3" - "$URI" <<'PY' || fail "seed data"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(bytes(range(256)) * 16 * 8, 4096)
h.shutdown()
PY
stored_before=$(status_field "['stored_pages']")

out=$("$PY3" - "$SOCKET" <<'PY'
import socket, struct, sys, time
PATH = sys.argv[1]
IHAVEOPT, REQ = 0x49484156454F5054, 0x25609513
results = []

def conn():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(15)
    s.connect(PATH)
    g = recv(s, 18)
    assert g[:8] == b"NBDMAGIC", g
    return s

def recv(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return b
        b += c
    return b

def closed(s):
    try:
        while True:
            c = s.recv(65536)
            if not c:
                return True
    except socket.timeout:
        return False

def opt(s, o, data=b"", length=None):
    s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data) if length is None else length) + data)

def opt_reply(s):
    h = recv(s, 20)
    _, o, typ, ln = struct.unpack(">QIII", h)
    recv(s, ln)
    return typ

def go(s):
    s.sendall(struct.pack(">I", 3))
    opt(s, 7, struct.pack(">IH", 0, 1) + struct.pack(">H", 3))
    while True:
        t = opt_reply(s)
        if t != 3:
            assert t == 1, hex(t)
            return

def req(s, cmd, off, ln, flags=0, payload=b"", cookie=1):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, cmd, cookie, off, ln) + payload)

def simple(s):
    h = recv(s, 16)
    magic, err, cookie = struct.unpack(">IIQ", h)
    assert magic == 0x67446698, h
    return err

def check(name, ok):
    results.append(("ok " if ok else "BAD ") + name)

s = conn(); s.sendall(struct.pack(">I", 0)); check("old-style client flags: closed", closed(s))
s = conn(); s.sendall(struct.pack(">I", 3) + b"\xde\xad" * 8); check("bad option magic: closed", closed(s))
s = conn(); s.sendall(struct.pack(">I", 3)); opt(s, 7, length=0xFFFFFFFF)
check("4 GiB option: NBD_REP_ERR_TOO_BIG, closed", opt_reply(s) == 0x80000009 and closed(s))
s = conn(); s.sendall(struct.pack(">I", 3)); opt(s, 7, struct.pack(">I", 9) + b"no-export" + struct.pack(">H", 0))
check("unknown export: NBD_REP_ERR_UNKNOWN, still negotiating", opt_reply(s) == 0x80000006)
opt(s, 2); check("then NBD_OPT_ABORT: ack", opt_reply(s) == 1)

s = conn(); go(s)
req(s, 0, 100, 4096); check("unaligned read: EINVAL", simple(s) == 22)
req(s, 1, 4096, 100, payload=b"x" * 100); check("unaligned write: EINVAL", simple(s) == 22)
req(s, 1, 64 << 20, 4096, payload=b"y" * 4096); check("write past the end: ENOSPC", simple(s) == 28)
req(s, 0, (1 << 64) - 4096, 8192); check("read wrapping around: EINVAL", simple(s) == 22)
req(s, 4, 0, 4096, flags=0x8000); check("trim with an unknown flag: EINVAL", simple(s) == 22)
req(s, 77, 0, 4096); check("unknown command: EINVAL", simple(s) == 22)
req(s, 0, 0, 64 << 20); check("read beyond the maximum block: EOVERFLOW", simple(s) == 75)
req(s, 0, 4096, 4096); check("a good read after all that", simple(s) == 0 and len(recv(s, 4096)) == 4096)
req(s, 1, 0, 1 << 30); check("1 GiB write: EOVERFLOW, closed", simple(s) == 75 and closed(s))
s = conn(); go(s); s.sendall(b"\x00" * 28); check("bad request magic: closed", closed(s))

# A client that never reads: its replies pile up, others are served.
stuck = conn(); go(stuck)
stuck.setblocking(False)
sent = 0
try:
    for i in range(64):
        req(stuck, 0, 0, 32 << 20, cookie=i)
        sent += 1
except BlockingIOError:
    pass
time.sleep(1)
ok = conn(); go(ok)
req(ok, 0, 4096, 4096); check(f"served while a client sits on {sent} unread 32 MiB reads", simple(ok) == 0 and len(recv(ok, 4096)) == 4096)
ok.close()
# One that says nothing during the handshake is dropped after 10 s.
t0 = time.time(); quiet = conn(); quiet.settimeout(20)
check("silent client dropped", closed(quiet) and time.time() - t0 < 15)
stuck.close()
time.sleep(0.5)
for r in results:
    print(r)
PY
)
echo "$out"
[[ -n $out ]] || fail "the raw client crashed"
grep -q '^BAD' <<<"$out" && fail "hostile client handled wrongly"
pass "every hostile handshake and request refused or closed"

# More clients than --nbd-connections: the extra one is closed at once.
out=$("$PY3" - "$SOCKET" <<'PY'
import socket, sys, time
held = []
for i in range(3):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); assert len(s.recv(18)) == 18; held.append(s)
extra = socket.socket(socket.AF_UNIX); extra.settimeout(5); extra.connect(sys.argv[1])
print("refused" if extra.recv(18) == b"" else "served")
PY
)
[[ $out == refused ]] || fail "a fourth client with --nbd-connections 3 was $out"
refused=$(status_field "['frontend']['connections']['refused']")
(( refused >= 1 )) || fail "refused connections not counted"
pass "a client beyond --nbd-connections 3 is closed at once ($refused refused)"

idle() { (( $(status_field "['frontend']['connections']['active']") == 0 )); }
wait_until 10 idle || fail "connections still active"
stored=$(status_field "['stored_pages']")
(( stored == stored_before )) || fail "stored_pages went from $stored_before to $stored"
info=$(nbdinfo --size "$URI") || fail "nbdinfo after the hostile clients: $info"
(( info == 64 << 20 )) || fail "size $info"
kill -0 "$DAEMON_PID" || fail "daemon died"
errors=$(status_field "['frontend']['protocol_errors']")
failures=$(status_field "['frontend']['handshake_failures']")
timeouts=$(status_field "['frontend']['timeouts']")
pass "nothing changed ($stored pages), still serving; $errors protocol errors, $failures failed handshakes, $timeouts timeouts counted"
stop_daemon
[[ -e $SOCKET ]] && fail "$SOCKET left behind"
pass "clean stop"
