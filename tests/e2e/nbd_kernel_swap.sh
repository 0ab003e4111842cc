#!/usr/bin/env bash
# uzswapd --frontend nbd as swap through the kernel's NBD client: the
# daemon connects /dev/nbdN to itself over a socketpair (the nbd netlink
# interface), swapon, and a byte-verified workload twice its cgroup's limit
# swaps through it. Needs the nbd module: this test skips (77) on kernels
# without it; tests/vm/guest/nbd_swap.sh runs the same in the VM rig.
source "$(dirname "$0")/lib.sh"
require_machine
require_nbd_tools
if [[ ! -e /sys/module/nbd ]] && ! modprobe -q nbd 2>/dev/null; then
  skip "this kernel ($(uname -r)) has no nbd module (no /sys/module/nbd, modprobe nbd failed): the kernel NBD client cannot be the swap device here"
fi
[[ -e /dev/nbd0 ]] || skip "nbd module loaded but no /dev/nbd* devices"

start_daemon --size 1G --frontend nbd
dev=$(readlink "$RUN_DIR/$NAME/device")
[[ $dev == /dev/nbd* ]] || fail "device link is '$dev', not /dev/nbdN"
grep -q "^$dev " /proc/swaps || fail "$dev is not in /proc/swaps"
pass "swap on $dev through the kernel's NBD client"
start_paused_workload 256
stored=$(status_field "['stored_pages']")
(( stored > 20000 )) || fail "only $stored pages stored: the workload did not swap through uzswap"
finish_workload
pass "256 MiB workload in a 128 MiB cgroup verified every byte through $dev ($stored pages stored at the pause)"
stop_daemon
grep -q "^$dev " /proc/swaps && fail "$dev still swap after stop"
pass "clean stop"
