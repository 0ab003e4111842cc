#include "uzswap/store/slot_table.h"

#include <sys/mman.h>

#include <atomic>
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

// The order of the stores below is what makes a change crash-consistent: a
// process stops between two instructions, and on x86-64 (TSO) stores become
// visible in program order, so only the compiler must be kept from
// reordering them.
inline void keep_order() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

}  // namespace

SlotTable::SlotTable(SlotEntry* entries, std::uint32_t* checksums, JournalRecord* journal,
                     std::uint64_t slots)
    : entries_(entries),
      checksums_(checksums),
      journal_(journal),
      slots_(checked_slot_count(slots)),
      stripes_(std::make_unique<Stripe[]>(kStripes)) {
  // No page faults on the request path.
  madvise(entries_, slots_ * sizeof(SlotEntry), 23 /* MADV_POPULATE_WRITE */);
  madvise(checksums_, slots_ * sizeof(std::uint32_t), 23);
  madvise(journal_, kStripes * sizeof(JournalRecord), 23);
}

void SlotTable::publishLocked(Slot slot, const SlotEntry& fresh, std::uint32_t checksum) noexcept {
  JournalRecord& record = journal_[stripe_of(slot)];
  record.old = entries_[slot];
  record.old_checksum = checksums_[slot];
  keep_order();
  record.armed_slot = slot + 1;
  keep_order();
  checksums_[slot] = checksum;
  entries_[slot] = fresh;
  keep_order();
  record.armed_slot = 0;
}

std::uint64_t SlotTable::roll_back_torn() noexcept {
  std::uint64_t rolled = 0;
  for (std::size_t i = 0; i < kStripes; ++i) {
    JournalRecord& record = journal_[i];
    if (record.armed_slot == 0) continue;
    const Slot slot = record.armed_slot - 1;
    // A record can only name a slot of its own stripe; anything else is not
    // a record this code wrote, and is dropped.
    if (slot < slots_ && stripe_of(slot) == i) {
      entries_[slot] = record.old;
      checksums_[slot] = record.old_checksum;
      ++rolled;
    }
    keep_order();
    record.armed_slot = 0;
  }
  return rolled;
}

}  // namespace uzswap
