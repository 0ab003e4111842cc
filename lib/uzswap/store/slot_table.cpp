#include "uzswap/store/slot_table.h"

#include <cerrno>
#include <string>
#include <system_error>

namespace uzswap {

namespace {
std::uint64_t checked_slot_count(std::uint64_t slots) {
  // LRU links are 32-bit slot numbers, with kNoLink reserved.
  if (slots == 0 || slots >= kNoLink)
    throw std::system_error(EINVAL, std::generic_category(),
                            "slot count must be 1.." + std::to_string(kNoLink - 1));
  return slots;
}
}  // namespace

SlotTable::SlotTable(std::uint64_t slots)
    : entries_(checked_slot_count(slots)), stripes_(std::make_unique<Stripe[]>(kStripes)) {
  // mmap gives zeroed memory, and a zeroed entry is empty, but the links must
  // read "off-list".
  for (std::uint64_t s = 0; s < slots; ++s) {
    entries_[s].lru_prev = kNoLink;
    entries_[s].lru_next = kNoLink;
  }
}

}  // namespace uzswap
