#include "uzswap/store/slot_table.h"

#include <cerrno>
#include <string>
#include <system_error>

namespace uzswap {

namespace {
std::uint64_t checked_slot_count(std::uint64_t slots) {
  if (slots == 0 || slots > kMaxSlots)
    throw std::system_error(EINVAL, std::generic_category(),
                            "slot count must be 1.." + std::to_string(kMaxSlots));
  return slots;
}
}  // namespace

SlotTable::SlotTable(std::uint64_t slots)
    : entries_(checked_slot_count(slots)), stripes_(std::make_unique<Stripe[]>(kStripes)) {
  entries_.populate();  // no page faults on the request path
}

}  // namespace uzswap
