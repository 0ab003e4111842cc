// swapon/swapoff and /proc/swaps.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "uzswap/common/result.h"

namespace uzswap {

struct SwapArea {
  std::string filename;  // unescaped
  std::string type;      // partition or file
  std::uint64_t size_kib = 0;
  std::uint64_t used_kib = 0;
  int priority = 0;
};

// Parses the text of /proc/swaps; lines that do not parse are skipped. (A
// line's position is not the kernel's swap type: see reclaim/swap_type.h.)
std::vector<SwapArea> parse_proc_swaps(std::string_view text);

// swapon(2) with a priority and discard of freed pages (swapon --discard=pages).
Result<> swap_on(const std::string& path, int priority) noexcept;
Result<> swap_off(const std::string& path) noexcept;

// Turns the block layer's writeback throttling off for the block device
// `device` (/dev/NAME, through SYSFS/NAME/queue/wbt_lat_usec): for
// /dev/nbdN, where on Linux 6.1 a task reclaiming to it was seen waiting in
// wbt_wait for good with no request in flight (the VM rig). Not for the
// loop device, where it is reclaim's brake (docs/design.md). Returns the
// latency target it had, in microseconds (0: already off, or a kernel
// without it).
Result<std::uint64_t> disable_writeback_throttling(const std::string& device,
                                                   const std::string& sysfs = "/sys/block") noexcept;
// For the loop device: throttling found off (a loop device is reused, and
// what its last user set stays) goes back to the kernel's default target.
// Returns whether it was off.
Result<bool> default_writeback_throttling(const std::string& device,
                                          const std::string& sysfs = "/sys/block") noexcept;

}  // namespace uzswap
