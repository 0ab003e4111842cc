// Which swap type the kernel gave our device: its index in the kernel's swap
// table, the number in bits 0-4 of a swapped pagemap entry. Not the line in
// /proc/swaps, which skips the holes a swapoff leaves.
//
// The probe asks the kernel: a child process writes a random marker page,
// pages it out with MADV_PAGEOUT (the highest-priority swap device takes it),
// and reports the swap entry from its own pagemap; the caller then checks
// that its device really holds the marker at that offset. The child keeps
// the page (and so the swap slot) until the check is done.
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
std::expected<unsigned, std::string> probe_swap_type(
    const std::function<bool(std::uint64_t offset, PageView page)>& holds, int attempts = 3);

}  // namespace uzswap
