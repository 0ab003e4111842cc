#!/usr/bin/env bash
# run-fuzzer.sh BINARY NAME SEED_DIR BUILD_DIR SECONDS
# Runs one libFuzzer harness for SECONDS over its checked-in seeds plus the
# corpus grown by earlier runs in BUILD_DIR/corpus/NAME (the seeds stay as
# checked in). A crash leaves its input in BUILD_DIR/crashes/ and fails the
# test; copy it into the seed directory once fixed, and it is replayed by
# every run after. Prints one line of figures at the end.
set -uo pipefail
bin=$1 name=$2 seeds=$3 build=$4 seconds=$5
work=$build/corpus/$name
crashes=$build/crashes
mkdir -p "$work" "$crashes"
log=$(mktemp /tmp/uzswap-fuzz-$name.XXXXXX)
trap 'rm -f "$log"' EXIT

# libFuzzer's own exit status for a crash is 77, which meson counts as a
# skip: a crash must fail.
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=20000 \
  -error_exitcode=1 -print_final_stats=1 -artifact_prefix="$crashes/$name-" "$work" "$seeds" >"$log" 2>&1
status=$?
(( status == 0 )) || status=1
tail -n 40 "$log"
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
corpus=$(grep -Eo 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1)
echo "fuzz $name: ${seconds} s, ${runs:-?} runs, ${rate:-?} execs/s, ${corpus:-corp: ?}, exit $status"
exit $status
