#!/usr/bin/env bash
# The bash completion of uzswapctl, loaded as bash-completion loads it:
# commands, options, the settings of `set` and their values, instance names
# from the run directory, and cgroup paths from `cgroups --json` (here from
# a stand-in uzswapctl; tests/packaging/live.sh asks a real daemon).
#
# usage: completion.sh COMPLETION_FILE
set -uo pipefail
file=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
fail() { echo "FAIL: $*"; status=1; }

# Two instances' sockets, and a uzswapctl that knows two cgroups, printing
# them as the real one does (nlohmann::json dump(2)).
mkdir -p "$tmp/run/alpha" "$tmp/run/beta" "$tmp/run/gone"
python3 -c 'import socket, sys
for p in sys.argv[1:]: socket.socket(socket.AF_UNIX).bind(p)' "$tmp/run/alpha/control" "$tmp/run/beta/control"
cat > "$tmp/uzswapctl" <<'STUB'
#!/bin/sh
case "$*" in
  *"cgroups --json"*) printf '[\n  {\n    "compressed_bytes": 0,\n    "path": "/",\n    "stored_pages": 1\n  },\n  {\n    "path": "/system.slice/batch.service",\n    "stored_pages": 2\n  },\n  {\n    "path": "/user.slice/user@1000.service"\n  }\n]\n' ;;
  *) exit 1 ;;
esac
STUB
chmod +x "$tmp/uzswapctl"

# complete LINE: what TAB at the end of LINE offers, space separated, in a
# fresh bash (whose COMP_WORDBREAKS has the interactive default, '=' in it).
complete_line() {
  bash -c 'source "$1" || exit 9; COMP_LINE=$2; COMP_POINT=${#2}; _uzswapctl; echo "${COMPREPLY[*]}"' \
    _ "$file" "$1"
}
expect() {  # expect LINE WORDS
  local got
  got=$(complete_line "$1")
  [[ $got == "$2" ]] || fail "'$1<TAB>' offers '$got', expected '$2'"
}

spec=$(bash -c 'source "$1"; complete -p uzswapctl' _ "$file") || fail "sourcing the completion failed"
[[ $spec == "complete -F _uzswapctl uzswapctl" ]] || fail "complete -p uzswapctl: '$spec'"

ctl=$tmp/uzswapctl
expect "uzswapctl " "status cgroups set writeback attribute restart stats top"
expect "uzswapctl s" "status set stats"
expect "uzswapctl --" "--help --version --name --run-dir --timeout"
expect "uzswapctl --run-dir $tmp/run --name " "alpha beta"
expect "uzswapctl --run-dir $tmp/run --name a" "alpha"
expect "uzswapctl --name beta st" "status stats"
expect "uzswapctl status --" "--json --help"
expect "uzswapctl stats -" "--prometheus --help"
expect "uzswapctl top --i" "--interval --iterations"
expect "uzswapctl writeback --" "--pages --cgroup --help"
expect "uzswapctl set " "compressor level max-pool-percent accept-threshold-percent writeback cgroup-writeback cgroup-max watermark-scale-factor idle-writeback-seconds log-level"
expect "uzswapctl set w" "writeback watermark-scale-factor"
expect "uzswapctl set compressor " "lz4 zstd"
expect "uzswapctl set writeback o" "on off"
expect "uzswapctl set log-level e" "error"
expect "uzswapctl set level " ""
expect "uzswapctl set compressor zstd " ""
expect "$ctl writeback --cgroup " "/ /system.slice/batch.service /user.slice/user@1000.service"
# '@' is a word break too: bash replaces only what follows it.
expect "$ctl writeback --cgroup /user.slice/user@" "1000.service"
expect "$ctl writeback --pages 10 --cgroup /sys" "/system.slice/batch.service"
expect "$ctl set cgroup-writeback " "/= /system.slice/batch.service= /user.slice/user@1000.service="
# After the '=' (a word break for bash), only the part after it is offered.
expect "$ctl set cgroup-writeback /system.slice/batch.service=" "on off"
expect "$ctl set cgroup-max /=m" "max"
# A daemon that does not answer offers no cgroups, and does not hang.
expect "/bin/false writeback --cgroup " ""

[[ $status -eq 0 ]] && echo "ok: the completion offers commands, options, settings, values, instances and cgroups"
exit $status
