#!/usr/bin/env bash
# The docs against a real daemon (root, like the e2e suite; it never swaps
# on): every key of its status JSON and every metric it exports is in
# uzswapctl(8) (docs_match.py on the live status), status says meson's
# version, the bash completion lists its instance and cgroups by asking it,
# and the textfile collector writes its metrics atomically and removes them
# once it is gone.
#
# Environment (set by meson): UZSWAPD, UZSWAPCTL, SRC_DIR, FORMAT_METRICS,
# MESON_VERSION.
source "$SRC_DIR/tests/e2e/lib.sh"
require_machine

BACKING=/var/tmp/uzswap-e2e-$NAME.swap
PROM_DIR=$(mktemp -d /tmp/uzswap-e2e-prom.XXXXXX)
STATUS=$(mktemp /tmp/uzswap-e2e-status.XXXXXX)
TEMP_FILES+=("$BACKING" "$STATUS")
AFTER_CLEANUP+=("rm -rf '$PROM_DIR'")
# A backing file, so that writeback and reclaim show in the status.
start_daemon --size 64M --backing-file "$BACKING" --no-swapon

"$UZSWAPCTL" --name "$NAME" status --json > "$STATUS" || fail "status --json"
python3 "$SRC_DIR/tests/packaging/docs_match.py" "$SRC_DIR" "$UZSWAPD" "$UZSWAPCTL" "$FORMAT_METRICS" \
  --status "$STATUS" || fail "the man pages do not describe what the running daemon reports"
pass "uzswapctl(8) describes every key of the live status and every metric"

version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$STATUS")
[[ $version == "$MESON_VERSION" ]] || fail "status says version $version, meson $MESON_VERSION"
pass "status says version $version"

complete_line() {
  bash -c 'source "$1"; COMP_LINE=$2; COMP_POINT=${#2}; _uzswapctl; echo "${COMPREPLY[*]}"' \
    _ "$SRC_DIR/tools/completion/uzswapctl.bash" "$1"
}
names=$(complete_line "$UZSWAPCTL --name ")
[[ " $names " == *" $NAME "* ]] || fail "--name completion offers '$names', not $NAME"
cgroups=$(complete_line "$UZSWAPCTL --name $NAME writeback --cgroup ")
[[ " $cgroups " == *" / "* ]] || fail "--cgroup completion offers '$cgroups', not the root cgroup"
pairs=$(complete_line "$UZSWAPCTL --name $NAME set cgroup-writeback ")
[[ " $pairs " == *" /= "* ]] || fail "cgroup-writeback completion offers '$pairs', not /="
pass "completion asks the daemon: instances '$names', cgroups '$cgroups'"

UZSWAPCTL=$UZSWAPCTL "$SRC_DIR/tools/uzswap-textfile" --name "$NAME" "$PROM_DIR" || fail "uzswap-textfile failed"
prom=$PROM_DIR/uzswap-$NAME.prom
grep -q "^uzswap_stored_pages{name=\"$NAME\"} [0-9]" "$prom" || fail "$prom lacks uzswap_stored_pages: $(head -5 "$prom")"
[[ $(stat -c %a "$prom") == 644 ]] || fail "$prom is mode $(stat -c %a "$prom"), node_exporter must read it"
[[ $(ls "$PROM_DIR") == "uzswap-$NAME.prom" ]] || fail "temporary files left: $(ls "$PROM_DIR")"
pass "the textfile collector wrote $(grep -vc '^#' "$prom") samples to $prom"

stop_daemon
assert_clean
UZSWAPCTL=$UZSWAPCTL "$SRC_DIR/tools/uzswap-textfile" --name "$NAME" "$PROM_DIR" 2>/dev/null ||
  fail "uzswap-textfile fails once the daemon is gone"
[[ ! -e $prom ]] || fail "$prom is still there after the daemon stopped"
pass "with the daemon gone, the collector removed its file; clean stop"
