// Page geometry shared by every layer: the kernel swaps in 4 KiB pages and the
// block device uses 4096-byte sectors, so a slot is exactly one page.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace uzswap {

inline constexpr std::size_t kPageSize = 4096;
inline constexpr unsigned kPageShift = 12;

using Slot = std::uint64_t;

using PageView = std::span<const std::byte, kPageSize>;
using PageBuffer = std::span<std::byte, kPageSize>;

}  // namespace uzswap
