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
#include <expected>
#include <functional>
#include <string>

#include "uzswap/common/page.h"

namespace uzswap {

// `holds(offset, page)`: true if our device stores exactly `page` at swap
// offset `offset`. Tries a few times (the page may land on another device,
// or not be paged out); the error says why it could not tell.
inline constexpr const char* kSwapTypeProbeArg = "--swap-type-probe";

std::expected<unsigned, std::string> probe_swap_type(
    const std::string& exe, const std::function<bool(std::uint64_t offset, PageView page)>& holds,
    int attempts = 3);

// The child's side: writes the pagemap word and the marker to `out`, waits
// for a byte on `release`, exits.
[[noreturn]] void run_swap_type_probe_child(int out, int release);

}  // namespace uzswap
