#!/usr/bin/env bash
# tools/uzswap-backing, the unit's ExecStartPre and the quickstart's sizing of
# the backing file, on real filesystems: no backing file means no extra
# arguments; a backing file on disk gets a device of half of RAM at most a
# quarter of the free space, in whole MiB; tmpfs is refused with a clear
# message; a size the disk cannot hold is refused; the systemd environment
# file is written whole. Needs no root.
#
# usage: backing_helper.sh HELPER
set -uo pipefail
helper=$1
tmp=$(mktemp -d /var/tmp/uzswap-backing-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
status=0
fail() { echo "FAIL: $*"; status=1; }

conf=$tmp/uzswapd.conf
printf '# backing-file = /var/lib/uzswap/backing.swap\ncompressor = zstd\n' > "$conf"
out=$("$helper" --config "$conf" 2>&1 >/dev/null); args=$("$helper" --config "$conf" 2>/dev/null)
[[ $? -eq 0 && -z $args ]] || fail "no backing file: expected no arguments, got '$args'"
[[ $out == *"no backing-file"* ]] || fail "no backing file: unclear message '$out'"

# On disk: half of RAM, capped by a quarter of the free space, whole MiB.
printf 'backing-file = "%s/dir/backing.swap"  # comment\n' "$tmp" > "$conf"
args=$("$helper" --config "$conf" 2>"$tmp/err") || fail "disk: refused: $(cat "$tmp/err")"
[[ -d $tmp/dir ]] || fail "disk: the backing file's directory was not created"
if [[ $args =~ ^--size\ ([0-9]+)M$ ]]; then
  size=$((BASH_REMATCH[1] << 20))
  ram=$(( $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) * 1024 ))
  read -r avail bsize < <(stat -f -c '%a %S' "$tmp")
  (( size <= ram / 2 )) || fail "disk: $size bytes is more than half of RAM ($ram)"
  (( size <= avail * bsize / 4 )) || fail "disk: $size bytes is more than a quarter of the free space"
  (( size >= 256 << 20 )) || fail "disk: $size bytes is under the 256 MiB minimum"
  (( size > ram / 2 - (1 << 20) || size > avail * bsize / 4 - (1 << 20) )) ||
    fail "disk: $size bytes is neither half of RAM nor a quarter of the free space"
  echo "ok: disk: $args ($(cat "$tmp/err"))"
else
  fail "disk: expected '--size NM', got '$args'"
fi

# The unit's environment file.
"$helper" --config "$conf" --env-file "$tmp/run/uzswapd.env" 2>/dev/null || fail "env file: refused"
[[ $(cat "$tmp/run/uzswapd.env") == "UZSWAPD_BACKING_ARGS=$args" ]] ||
  fail "env file: '$(cat "$tmp/run/uzswapd.env")' instead of UZSWAPD_BACKING_ARGS=$args"
[[ $(ls "$tmp/run") == uzswapd.env ]] || fail "env file: temporary files left: $(ls "$tmp/run")"

# A size in the config is kept; one the disk cannot hold is refused.
printf 'backing-file = %s/dir/backing.swap\nsize = 64M\n' "$tmp" > "$conf"
args=$("$helper" --config "$conf" 2>/dev/null) || fail "size 64M: refused"
[[ -z $args ]] || fail "size 64M: the config's size must win, got '$args'"
printf 'backing-file = %s/dir/backing.swap\nsize = 900T\n' "$tmp" > "$conf"
if out=$("$helper" --config "$conf" 2>&1); then fail "size 900T: accepted"; fi
[[ $out == *"needs 900T"* ]] || fail "size 900T: unclear message '$out'"

# RAM-backed filesystems are refused, with what to do.
tmpfs=$(awk '$3 == "tmpfs" { print $2 }' /proc/mounts | while read -r m; do
  [[ -w $m ]] && { echo "$m"; break; }; done)
if [[ -n $tmpfs ]]; then
  printf 'backing-file = %s/uzswap-test-%s/backing.swap\n' "$tmpfs" $$ > "$conf"
  if out=$("$helper" --config "$conf" 2>&1); then fail "tmpfs: accepted ($out)"; fi
  [[ -e $tmpfs/uzswap-test-$$ ]] && { fail "tmpfs: refused, but made the directory"; rmdir "$tmpfs/uzswap-test-$$"; }
  [[ $out == *"tmpfs, which lives in RAM"*"comment it out"* ]] || fail "tmpfs: unclear message '$out'"
  echo "ok: tmpfs ($tmpfs) refused: $out"
else
  echo "no writable tmpfs here: the tmpfs refusal is not checked"
fi

printf 'backing-file = relative/backing.swap\n' > "$conf"
if out=$("$helper" --config "$conf" 2>&1); then fail "relative path: accepted"; fi
[[ $out == *"not an absolute path"* ]] || fail "relative path: unclear message '$out'"
"$helper" --bogus >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "a bad argument does not exit 2"

[[ $status -eq 0 ]] && echo "ok: uzswap-backing decides and refuses as documented"
exit $status
