#!/usr/bin/env bash
# The NBD front end against libnbd's own tools: `uzswapd --frontend nbd
# --no-swapon` advertises its size and 4096-byte blocks, takes 256 MiB of
# real file data (the whole export) from nbdcopy over several connections and gives back the
# same bytes, forgets everything on TRIM, and stores or forgets zeros as
# WRITE_ZEROES asks; its socket goes with a clean stop.
source "$(dirname "$0")/lib.sh"
require_nbd_tools

start_daemon --size 256M --frontend nbd --no-swapon
URI=$(nbd_uri)
SOCKET=$RUN_DIR/$NAME/nbd
[[ -S $SOCKET ]] || fail "no NBD socket at $SOCKET"
[[ $(status_field "['frontend']['type']") == nbd ]] || fail "status does not say frontend nbd"

info=$(nbdinfo --json "$URI") || fail "nbdinfo: $info"
"$PY3" - "$info" <<'PY' || fail "nbdinfo: $info"
import json, sys
e = json.loads(sys.argv[1])["exports"][0]
want = {"export-size": 256 << 20, "block_size_minimum": 4096, "block_size_preferred": 4096,
        "block_size_maximum": 32 << 20, "can_multi_conn": True, "can_trim": True, "can_zero": True,
        "can_flush": True, "is_read_only": False}
bad = {k: (e.get(k), v) for k, v in want.items() if e.get(k) != v}
if bad:
    sys.exit(f"wrong: {bad}")
PY
pass "nbdinfo: 256 MiB, blocks 4096 minimum and preferred, 32 MiB maximum, multi-conn, trim, zero"

IN=$(mktemp /tmp/uzswap-e2e-nbd-in.XXXXXX)
OUT=$(mktemp /tmp/uzswap-e2e-nbd-out.XXXXXX)
TEMP_FILES+=("$IN" "$OUT")
find /usr/lib -type f -size +4k 2>/dev/null | sort | xargs cat 2>/dev/null | head -c $((256 << 20)) > "$IN"
[[ $(stat -c %s "$IN") -eq $((256 << 20)) ]] || skip "less than 256 MiB of files under /usr/lib"
before=$(status_field "['frontend']['connections']['total']")
start=$(date +%s.%N)
nbdcopy --connections=4 "$IN" "$URI" || fail "nbdcopy in"
mid=$(date +%s.%N)
nbdcopy --connections=4 "$URI" "$OUT" || fail "nbdcopy out"
end=$(date +%s.%N)
cmp "$IN" "$OUT" || fail "the bytes read back differ from those written"
conns=$(( $(status_field "['frontend']['connections']['total']") - before ))
# nbdcopy opens min(--connections, threads = CPUs) connections each way.
want=$(( $(nproc) < 4 ? $(nproc) : 4 ))
(( conns >= 2 * want )) || fail "nbdcopy used $conns connections, expected $want each way"
stored=$(status_field "['stored_pages']")
compressed=$(status_field "['compressed_bytes']")
pass "256 MiB of /usr/lib copied in ($(echo "$mid - $start" | bc) s) and out ($(echo "$end - $mid" | bc) s) identical over $conns connections; $stored pages, $((compressed >> 20)) MiB compressed"
rm -f "$IN" "$OUT"

# TRIM of everything (in 256 MiB requests: the length field is 32 bits).
"$PY3" - "$URI" <<'PY' || fail "trim"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
for off in range(0, size, 256 << 20):
    h.trim(min(256 << 20, size - off), off)
h.shutdown()
PY
stored=$(status_field "['stored_pages']")
(( stored == 0 )) || fail "after a TRIM of everything, $stored pages still stored"
pass "TRIM of everything: stored_pages 0"

"$PY3" - "$URI" <<'PY' || fail "write zeroes"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x5a" * (64 * 4096), 0)
h.zero(16 * 4096, 0, nbd.CMD_FLAG_NO_HOLE)   # zeros stored: 16 same-filled pages
h.zero(16 * 4096, 16 * 4096)                  # may punch: forgotten
assert h.pread(32 * 4096, 0) == bytes(32 * 4096)
assert h.pread(32 * 4096, 32 * 4096) == b"\x5a" * (32 * 4096)
h.flush()
h.shutdown()
PY
stored=$(status_field "['stored_pages']")
(( stored == 48 )) || fail "after WRITE_ZEROES: $stored pages stored, expected 48 (16 zero pages kept, 16 forgotten)"
pass "WRITE_ZEROES with NO_HOLE stores zeros, without it forgets; reads are zeros either way"

errors=$(status_field "['integrity_errors']")
(( errors == 0 )) || fail "$errors integrity errors"
stop_daemon
[[ -e $SOCKET ]] && fail "$SOCKET left behind"
[[ -e $RUN_DIR/$NAME ]] && fail "$RUN_DIR/$NAME left behind"
pass "clean stop, socket removed"
