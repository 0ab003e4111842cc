// The slot table: slot number -> entry (zswap's xarray of zswap_entry, zram's
// table). One 16-byte entry and a 4-byte page checksum per slot of the
// device, in the shared state's meta segment (state/layout.h), so storing a
// page never allocates table memory and a new serving process finds every
// entry where the last one left it. (The ListLru keeps its 8-byte links per
// slot in its own array: 28 bytes per slot in all.)
//
// Locking. Entries are guarded by striped mutexes: slot s is guarded by
// lock_for(s), shared by the kRun slots of its run. Every field of an entry
// is read and written only under that lock; functions named *Locked expect
// the caller to hold it. The mutexes are this process's own: a process that
// dies holding one leaves nothing behind but, at worst, an armed journal
// record (see publishLocked).
#pragma once

#include <cassert>
#include <cstdint>
#include <memory>
#include "uzswap/common/mutex.h"
#include "uzswap/common/page.h"
#include "uzswap/state/layout.h"

namespace uzswap {

// Slot numbers must fit the ListLru's 31-bit links.
inline constexpr std::uint64_t kMaxSlots = (std::uint64_t{1} << 31) - 2;

class SlotTable {
 public:
  // Runs of kRun adjacent slots share a stripe: a request covering many
  // adjacent slots keeps one lock warm, and two threads working on different
  // ranges do not bounce each other's stripes.
  static constexpr std::size_t kStripes = kJournalRecords;
  static constexpr std::size_t kRun = 16;

  // `entries`, `checksums` and `journal` live in the shared state and
  // outlive this object.
  SlotTable(SlotEntry* entries, std::uint32_t* checksums, JournalRecord* journal, std::uint64_t slots);

  std::uint64_t size() const noexcept { return slots_; }
  Mutex& lock_for(Slot slot) const noexcept RETURN_CAPABILITY(stripes_[stripe_of(slot)].lock) {
    return stripes_[stripe_of(slot)].lock;
  }
  // `slot` shares the stripe of `held`, whose lock the caller holds: a loop
  // over a run of slots under one lock says so with this (the analysis
  // cannot compare stripes, which are picked at run time).
  void assert_same_stripe(Slot held, Slot slot) const noexcept REQUIRES(lock_for(held))
      ASSERT_CAPABILITY(lock_for(slot)) {
    assert(stripe_of(held) == stripe_of(slot));
  }
  const SlotEntry& entryLocked(Slot slot) const noexcept REQUIRES(lock_for(slot)) { return entries_[slot]; }
  // The checksum of the page the entry holds (page_checksum); meaningful
  // for entries whose page has bytes (pool objects, written back).
  std::uint32_t checksumLocked(Slot slot) const noexcept REQUIRES(lock_for(slot)) { return checksums_[slot]; }

  // Replaces the slot's entry (and checksum, in the second form),
  // crash-consistently: the old entry and checksum are recorded in the
  // stripe's journal record, which stays armed only while they are being
  // written. Every change of an entry goes through here.
  void publishLocked(Slot slot, const SlotEntry& fresh) noexcept REQUIRES(lock_for(slot)) {
    publishLocked(slot, fresh, checksums_[slot]);
  }
  void publishLocked(Slot slot, const SlotEntry& fresh, std::uint32_t checksum) noexcept REQUIRES(lock_for(slot));

  // At adoption, before anything else reads the table: puts back the old
  // entry of every change a dead process left half done. Returns how many.
  std::uint64_t roll_back_torn() noexcept;

  // RAM the table can hold: entries plus lock stripes.
  std::uint64_t bytes() const noexcept {
    return slots_ * bytes_per_slot() + kStripes * (sizeof(Stripe) + sizeof(JournalRecord));
  }
  static constexpr std::size_t bytes_per_slot() noexcept { return sizeof(SlotEntry) + sizeof(std::uint32_t); }

 private:
  struct alignas(64) Stripe {
    mutable Mutex lock;
  };
  static std::size_t stripe_of(Slot slot) noexcept { return (slot / kRun) % kStripes; }

  SlotEntry* entries_;
  std::uint32_t* checksums_;
  JournalRecord* journal_;
  std::uint64_t slots_;
  std::unique_ptr<Stripe[]> stripes_;
};

}  // namespace uzswap
