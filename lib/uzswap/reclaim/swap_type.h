// Which swap type the kernel gave our device: its index in the kernel's swap
// table, the number in bits 0-4 of a swapped pagemap entry. Not the line in
// /proc/swaps, which skips the holes a swapoff leaves.
//
// The probe asks the kernel: a child process writes a random marker page,
// pages it out with MADV_PAGEOUT (the highest-priority swap device takes it),
// and reports the swap entry from its own pagemap; the caller then checks
// that its device really holds the marker at that offset. The child keeps
// the page (and so the swap slot) until the check is done.
//
// The child is a new program (`exe`, run with the arguments
// kSwapTypeProbeArg OUT_FD RELEASE_FD, which must call
// run_swap_type_probe_child), started by posix_spawn: the daemon never
// forks once it serves swap, since a forked child would make every private
// page of the locked daemon copy-on-write while it lives.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <system_error>
#include <type_traits>

#include "uzswap/common/page.h"
#include "uzswap/common/result.h"

namespace uzswap {

// Why the probe could not tell (besides a system error: pipe, posix_spawn).
enum class SwapTypeError {
  probe_failed = 1,  // the probe process sent no answer
  not_paged_out,     // the marker page never went to swap
  other_device,      // it went to another swap device, not ours
};
const std::error_category& swap_type_category() noexcept;
std::error_code make_error_code(SwapTypeError error) noexcept;

// `holds(offset, page)`: true if our device stores exactly `page` at swap
// offset `offset`. Tries a few times (the page may land on another device,
// or not be paged out); the error is the last attempt's.
inline constexpr const char* kSwapTypeProbeArg = "--swap-type-probe";

Result<unsigned> probe_swap_type(const std::string& exe,
                                 const std::function<bool(std::uint64_t offset, PageView page)>& holds,
                                 int attempts = 3);

// The child's side: writes the pagemap word and the marker to `out`, waits
// for a byte on `release`, exits.
[[noreturn]] void run_swap_type_probe_child(int out, int release);

}  // namespace uzswap

template <>
struct std::is_error_code_enum<uzswap::SwapTypeError> : std::true_type {};
