#!/usr/bin/env bash
# The shipped unit passes systemd-analyze verify (with ExecStart pointing at
# the freshly built daemon). Its man: links are not looked up here: the man
# pages are built, not installed (tests/packaging checks them).
set -uo pipefail
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }
out=$(systemd-analyze verify --man=no "$UNIT" 2>&1)
status=$?
echo "$out"
[[ $status -eq 0 && -z $out ]] || { echo "FAIL: systemd-analyze verify reported problems"; exit 1; }
grep -q '^Type=notify$' "$UNIT" || { echo "FAIL: not Type=notify"; exit 1; }
grep -q '^OOMScoreAdjust=-1000$' "$UNIT" || { echo "FAIL: OOMScoreAdjust"; exit 1; }
echo "ok: $UNIT verifies"
