#!/usr/bin/env bash
# Integrity end to end: bytes flipped in the backing file under written-back
# pages come back as an I/O error for those pages (the workload gets SIGBUS
# on them), never as wrong bytes, and integrity_errors counts them. Every
# other page reads back right; a freed page does not stay on the disk.
#
#   integrity.sh [encrypted]
#
# encrypted: the same with --backing-encryption on, over a workload of
# readable text: the backing file holds none of it, a serving process killed
# after the writeback is replaced by one that reads the pages with the same
# key, and a flipped byte fails authentication the same way.
source "$(dirname "$0")/lib.sh"
require_machine
MODE=${1:-plain}

BACKING=/var/tmp/uzswap-e2e-$NAME.swap
TEMP_FILES+=("$BACKING")
daemon_flags=(--size 1G --backing-file "$BACKING")
workload_flags=()
if [[ $MODE == encrypted ]]; then
  daemon_flags+=(--backing-encryption on)
  # Pages of text with a marker no other file has (the workload takes its
  # pages from the files of a directory).
  MARKER="uzswap-e2e-secret-$NAME-$RANDOM$RANDOM"
  MARKER_DIR=$(mktemp -d /tmp/uzswap-e2e-marker.XXXXXX)
  AFTER_CLEANUP+=("rm -rf '$MARKER_DIR'")
  seq 1 120000 | sed "s/^/$MARKER line /" > "$MARKER_DIR/text"
  workload_flags=(--files "$MARKER_DIR")
fi
serving_pid() {
  "$UZSWAPCTL" --name "$NAME" status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null
}
new_serving_process() {
  local pid
  pid=$(serving_pid) && [[ -n $pid && $pid != "$old_pid" ]]
}
start_daemon "${daemon_flags[@]}"
swap_type=$(status_field "['device']['swap_type']")
if [[ $MODE == encrypted ]]; then
  [[ $(status_field "['backing_encryption']") == xchacha20-poly1305 ]] || fail "backing_encryption is not on"
fi

make_memcg $((128 << 20))
GATE=$(mktemp -u /tmp/uzswap-e2e-gate.XXXXXX)
WORKLOAD_OUT=$(mktemp /tmp/uzswap-e2e-out.XXXXXX)
TEMP_FILES+=("$GATE" "$WORKLOAD_OUT")
in_memcg "$WORKLOAD" 256 --pause-file "$GATE" --io-errors-ok "${workload_flags[@]}" >"$WORKLOAD_OUT" &
WORKLOAD_PID=$!
wait_until 60 grep -q filled "$WORKLOAD_OUT" || fail "workload did not finish its fill"
"$UZSWAPCTL" --name "$NAME" writeback --pages 100000 >/dev/null || fail "uzswapctl writeback"
written=$(status_field "['written_back_pages']")
(( written > 10000 )) || fail "only $written pages written back"
pass "$written pages written back while the workload waits"

if [[ $MODE == encrypted ]]; then
  echo 1 > /proc/sys/vm/drop_caches
  # Not grep -a: the file's unwritten zeros would be one line of a gigabyte.
  in_file=$(LC_ALL=C grep -c -F "$MARKER" "$BACKING")
  (( in_file == 0 )) || fail "the marker the workload wrote is in the backing file ($in_file times)"
  (( $(grep -c "$MARKER" "$MARKER_DIR/text") > 100000 )) || fail "the marker is not in the workload's source"
  pass "the marker the workload wrote is nowhere in the $((written * 4)) KiB written back"
  # A new serving process adopts the state, key and seals included.
  old_pid=$(status_field "['pid']")
  kill -KILL "$old_pid"
  wait_until 30 new_serving_process || fail "no new serving process after SIGKILL of $old_pid"
  (( $(status_field "['written_back_pages']") == written )) || fail "the new serving process lost written-back pages"
  pass "serving process $old_pid killed; $(status_field "['pid']") adopted $written written-back pages"
fi

# The workload's pages that are out on our device: page index -> slot, from
# its pagemap; flip one byte in the file block of 40 of them.
workload_pid=$(head -n 1 "$MEMCG/cgroup.procs")
base=$(awk '/^filled/ {print $2}' "$WORKLOAD_OUT")
SLOTS=$(mktemp /tmp/uzswap-e2e-slots.XXXXXX)
TEMP_FILES+=("$SLOTS")
flipped=$(python3 - "$workload_pid" "$swap_type" "$BACKING" "$base" "$SLOTS" <<'PY'
import os, random, struct, sys
pid, swap_type, backing, start = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4], 16)
out = {}
with open(f"/proc/{pid}/pagemap", "rb") as pm:
    pm.seek(start // 4096 * 8)
    data = pm.read((256 << 20) // 4096 * 8)
for i in range(len(data) // 8):
    (word,) = struct.unpack_from("<Q", data, i * 8)
    if word >> 62 & 1 and word & 0x1f == swap_type:
        out[i] = (word >> 5) & ((1 << 50) - 1)
rng = random.Random(7)
chosen = rng.sample(sorted(out), 40)
fd = os.open(backing, os.O_RDWR)
for i in chosen:
    off = out[i] * 4096 + 1000
    b = os.pread(fd, 1, off)
    os.pwrite(fd, bytes([b[0] ^ 0x55]), off)
os.fsync(fd)
os.close(fd)
with open(sys.argv[5], "w") as f:  # every swapped-out page's slot, for the check below
    f.write("\n".join(f"{i} {s}" for i, s in out.items()))
print(" ".join(str(i) for i in chosen))
PY
) || fail "could not flip bytes in the backing file"
pass "flipped one byte in the file blocks of 40 swapped-out pages"
# The page cache must not serve the old bytes to the daemon's O_DIRECT reads.
echo 1 > /proc/sys/vm/drop_caches

touch "$GATE"
wait "$WORKLOAD_PID" || { cat "$WORKLOAD_OUT"; fail "workload failed"; }
grep -v '^io_error_page' "$WORKLOAD_OUT"
grep -q '"wrong_pages": 0' "$WORKLOAD_OUT" || fail "workload saw wrong bytes"
errored=$(grep '^io_error_page' "$WORKLOAD_OUT" | awk '{print $2}' | sort -n | tr '\n' ' ')
n_errored=$(grep -c '^io_error_page' "$WORKLOAD_OUT")
# A READ the block layer merged from several pages fails from its damaged
# page on: the daemon answers the good pages before it, and the loop device
# fails the rest of the request with the error. So an undamaged page may fail
# if its slot is at most 31 after a damaged page's (a request of up to 128
# KiB); any other undamaged page that fails is a bug.
flipped_slots=$(for page in $flipped; do awk -v p="$page" '$1 == p {print $2}' "$SLOTS"; done | tr '\n' ' ')
collateral=0
for page in $errored; do
  [[ " $flipped " == *" $page "* ]] && continue
  slot=$(awk -v p="$page" '$1 == p {print $2}' "$SLOTS")
  [[ -n $slot ]] || fail "page $page failed but was not damaged (nor out on the device)"
  near=0
  for s in $flipped_slots; do (( slot > s && slot <= s + 31 )) && near=1; done
  (( near )) || fail "page $page (slot $slot) failed but was not damaged, nor behind a damaged page in a request"
  collateral=$((collateral + 1))
done
n_errored=$((n_errored - collateral))
(( collateral == 0 )) || echo "note: $collateral undamaged page(s) failed behind a damaged one in the same merged request"
(( n_errored >= 1 )) || fail "no damaged page came back as an error (were they all in RAM?)"
integrity=$(status_field "['integrity_errors']")
(( integrity >= n_errored )) || fail "integrity_errors is $integrity, but $n_errored pages failed"
pass "$n_errored of 40 damaged pages failed with SIGBUS (the rest were in RAM), none wrong; integrity_errors $integrity"
grep -q "integrity: the page in slot" "$DAEMON_LOG" || fail "no integrity error in the log"
pass "logged: $(grep -m1 'integrity: the page in slot' "$DAEMON_LOG" | sed 's/.*\] //')"

stop_daemon
assert_clean
pass "clean stop"
