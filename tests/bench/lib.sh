# Shared by tests/bench/block and tests/bench/tiers: builds, sets up one
# swap tier at a time (uzswap, zram, zswap in front of a disk swap file,
# plain disk swap) and undoes everything on exit, failure included. The
# machine's zswap and zram settings are restored as they were.
#
# Root only. Refuses to run while any other swap is on: a second device
# would take part of the traffic.
set -euo pipefail
cd "$(dirname "$0")/../.."

[[ $(id -u) -eq 0 ]] || { echo "$0: run as root" >&2; exit 1; }
# Built before the lock is taken (only what the scripts run), so others'
# tests do not wait for a build.
tools/install-deps --bench
[[ -f build/build.ninja ]] || meson setup build --buildtype=debugoptimized >/dev/null
bench_targets=(uzswapd uzswapctl uzswap-workload)
meson compile -C build "${bench_targets[@]}" >/dev/null ||
  { meson compile -C build "${bench_targets[@]}" | tail -20 >&2; exit 1; }
# The same machine-wide lock as the end-to-end tests: one run at a time
# touches swap, loop devices, mounts and memory cgroups.
exec {SYSTEM_LOCK_FD}>/run/lock/uzswap-system.lock
flock "$SYSTEM_LOCK_FD"
if [[ -n $(swapon --show --noheadings) ]]; then
  echo "$0: swap is already on (swapon --show); turn it off first for a fair comparison" >&2
  exit 1
fi

NAME=bench$$
UZSWAPD=build/daemon/uzswapd
UZSWAPCTL=build/tools/uzswapctl
WORKLOAD=build/tests/uzswap-workload
DISK_FILE=/var/tmp/uzswap-bench-disk-$$.swap
LOOP_FILE=/var/tmp/uzswap-bench-loop-$$.img
BACKING=/var/tmp/uzswap-bench-backing-$$.swap
MEMCG=
DAEMON_PID=
LOOP_DEV=
ZSWAP=/sys/module/zswap/parameters
saved_zswap_enabled=$(cat $ZSWAP/enabled 2>/dev/null || echo N)
saved_zswap_compressor=$(cat $ZSWAP/compressor 2>/dev/null || echo lzo)
saved_zswap_pool_percent=$(cat $ZSWAP/max_pool_percent 2>/dev/null || echo 20)
saved_zswap_shrinker=$(cat $ZSWAP/shrinker_enabled 2>/dev/null || echo N)
FUSE_URING=/sys/module/fuse/parameters/enable_uring
saved_fuse_uring=$(cat $FUSE_URING 2>/dev/null || echo N)

bench_cleanup() {
  set +e
  [[ -n $MEMCG && -d $MEMCG ]] && { for p in $(cat "$MEMCG/cgroup.procs" 2>/dev/null); do kill -9 "$p"; done; sleep 0.5; rmdir "$MEMCG"; }
  swapoff /dev/zram0 2>/dev/null
  swapoff "$DISK_FILE" 2>/dev/null
  stop_uzswap
  [[ -e /sys/block/zram0/reset ]] && echo 1 > /sys/block/zram0/reset 2>/dev/null
  [[ -n $LOOP_DEV ]] && losetup -d "$LOOP_DEV"
  [[ -w $FUSE_URING ]] && echo "$saved_fuse_uring" > $FUSE_URING
  [[ -d $ZSWAP ]] && { echo "$saved_zswap_compressor" > $ZSWAP/compressor; echo "$saved_zswap_enabled" > $ZSWAP/enabled
                       echo "$saved_zswap_pool_percent" > $ZSWAP/max_pool_percent
                       echo "$saved_zswap_shrinker" > $ZSWAP/shrinker_enabled; } 2>/dev/null
  rm -f "$DISK_FILE" "$LOOP_FILE" "$BACKING" /tmp/uzswap-$NAME.*
}
trap bench_cleanup EXIT

# machine: one line describing where the figures come from.
machine() {
  echo "$(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(($(grep MemTotal /proc/meminfo | awk '{print $2}') / 1048576)) GiB RAM, kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME"), disk $(df -T /var/tmp | awk 'NR==2{print $2}') on $(df /var/tmp | awk 'NR==2{print $1}')"
}

# uzswap_transport TARGET: sets TRANSPORT, the flags for "uzswap" (/dev/fuse reads and
# writes) or "uzswap-ring" (FUSE over io_uring, the kernel's switch turned on
# for the run and restored after).
uzswap_transport() {  # sets TRANSPORT
  if [[ $1 == uzswap-ring ]]; then
    [[ -w $FUSE_URING ]] || { echo "$0: this kernel has no FUSE over io_uring" >&2; exit 1; }
    echo Y > $FUSE_URING
    TRANSPORT=(--fuse-io-uring on)
  else
    TRANSPORT=(--fuse-io-uring off)
  fi
}

# start_uzswap [flags]: uzswapd with swap on (or --no-swapon), waits for it.
start_uzswap() {
  "$UZSWAPD" --name "$NAME" --config /dev/null --log-level warn "$@" >>/tmp/uzswap-$NAME.log 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 1 100); do
    "$UZSWAPCTL" --name "$NAME" status --json >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat /tmp/uzswap-$NAME.log >&2
  echo "uzswapd did not start" >&2
  exit 1
}
stop_uzswap() {
  [[ -n $DAEMON_PID ]] || return 0
  kill -TERM "$DAEMON_PID" 2>/dev/null
  wait "$DAEMON_PID" 2>/dev/null
  DAEMON_PID=
}
uzswap_device() { readlink -f "/run/uzswap/$NAME/device"; }
uzswap_field() { "$UZSWAPCTL" --name "$NAME" status --json | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# start_zram SIZE [swap]: /dev/zram0 with lz4, as swap if asked.
start_zram() {
  modprobe zram 2>/dev/null || true  # built in, or no modprobe: fine if /dev/zram0 exists
  echo 1 > /sys/block/zram0/reset
  echo lz4 > /sys/block/zram0/comp_algorithm
  echo "$1" > /sys/block/zram0/disksize
  if [[ ${2:-} == swap ]]; then mkswap /dev/zram0 >/dev/null && swapon -p 100 /dev/zram0; fi
}
stop_zram() { swapoff /dev/zram0 2>/dev/null || true; echo 1 > /sys/block/zram0/reset; }

# start_disk_swap SIZE zswap|plain [PRIORITY]: with zswap, POOL_PERCENT (if
# set) is its max_pool_percent, and its shrinker is on.
start_disk_swap() {
  if [[ ! -f $DISK_FILE ]]; then
    fallocate -l "$1" "$DISK_FILE" && chmod 600 "$DISK_FILE" && mkswap "$DISK_FILE" >/dev/null
  fi
  if [[ $2 == zswap ]]; then
    # lz4 when the kernel's crypto API has it (zram has its own backends;
    # zswap does not), else lzo-rle, zram's default.
    echo lz4 > $ZSWAP/compressor 2>/dev/null || echo lzo-rle > $ZSWAP/compressor
    echo "zswap compressor: $(cat $ZSWAP/compressor)" >&2
    if [[ -n ${POOL_PERCENT:-} ]]; then
      echo "$POOL_PERCENT" > $ZSWAP/max_pool_percent
      echo Y > $ZSWAP/shrinker_enabled
    fi
    echo Y > $ZSWAP/enabled
  else
    echo N > $ZSWAP/enabled
  fi
  swapon -p "${3:-100}" "$DISK_FILE"
}
stop_disk_swap() { swapoff "$DISK_FILE"; echo N > $ZSWAP/enabled; }

# make_memcg LIMIT_BYTES: a v1 or v2 memory cgroup.
make_memcg() {
  if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
    MEMCG=/sys/fs/cgroup/memory/uzswap-$NAME
    mkdir "$MEMCG" && echo "$1" > "$MEMCG/memory.limit_in_bytes"
  else
    MEMCG=/sys/fs/cgroup/uzswap-$NAME
    mkdir "$MEMCG" && echo "$1" > "$MEMCG/memory.max"
  fi
}
drop_memcg() { rmdir "$MEMCG"; MEMCG=; }

median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
