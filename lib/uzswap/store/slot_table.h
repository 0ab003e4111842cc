// The slot table: slot number -> entry (zswap's xarray of zswap_entry, zram's
// table). One 16-byte entry per slot of the device, in one mapping sized at
// start-up, so storing a page never allocates table memory. (The ListLru
// keeps its 8-byte links per slot in its own array: 24 bytes per slot in all.)
//
// Locking. Entries are guarded by striped mutexes: slot s is guarded by
// lock_for(s), shared by the kRun slots of its run. Every field of an entry is read and written only under that
// lock; functions named *Locked expect the caller to hold it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "uzswap/common/page.h"
#include "uzswap/pool/mapped_array.h"

namespace uzswap {

enum class SlotState : std::uint8_t {
  empty = 0,           // never written, or discarded
  same_filled = 1,     // value holds the repeated 8-byte word
  compressed = 2,      // value holds a pool handle to `length` compressed bytes
  incompressible = 3,  // value holds a pool handle to the raw page
  written_back = 4,    // the page lives in the backing file at the slot's offset
  writeback = 5,       // being written back; still served from the pool handle
};

// Slot numbers must fit the ListLru's 31-bit links.
inline constexpr std::uint64_t kMaxSlots = (std::uint64_t{1} << 31) - 2;

struct SlotEntry {
  std::uint64_t value;             // pool handle or fill word, by state
  std::uint64_t state : 3;         // SlotState
  std::uint64_t codec : 2;         // Codec of a compressed page
  std::uint64_t length : 13;       // compressed length (bytes in the pool object)
  std::uint64_t node : 6;          // NUMA node of the pool object, and of its LRU list
  std::uint64_t cgroup : 16;       // owning cgroup id (0 = root), and of its LRU list
  std::uint64_t file_write : 1;    // a write of this slot to the backing file is in flight
  std::uint64_t version : 23;      // bumped on every store and invalidate, for writeback's re-check

  SlotState slot_state() const noexcept { return static_cast<SlotState>(state); }
  // The entry holds a pool object (a writeback in flight still does).
  bool in_pool() const noexcept {
    const SlotState s = slot_state();
    return s == SlotState::compressed || s == SlotState::incompressible ||
           s == SlotState::writeback;
  }
};
static_assert(sizeof(SlotEntry) == 16, "slot entries must stay at 16 bytes");

class SlotTable {
 public:
  // Runs of kRun adjacent slots share a stripe: a request covering many
  // adjacent slots keeps one lock warm, and two threads working on different
  // ranges do not bounce each other's stripes.
  static constexpr std::size_t kStripes = 4096;
  static constexpr std::size_t kRun = 16;

  explicit SlotTable(std::uint64_t slots);

  std::uint64_t size() const noexcept { return entries_.capacity(); }
  std::mutex& lock_for(Slot slot) noexcept { return stripes_[(slot / kRun) % kStripes].lock; }
  SlotEntry& entryLocked(Slot slot) noexcept { return entries_[slot]; }

  // RAM the table can hold: entries plus lock stripes.
  std::uint64_t bytes() const noexcept {
    return entries_.bytes() + kStripes * sizeof(Stripe);
  }
  static constexpr std::size_t bytes_per_slot() noexcept { return sizeof(SlotEntry); }

 private:
  struct alignas(64) Stripe {
    std::mutex lock;
  };
  MappedArray<SlotEntry> entries_;
  std::unique_ptr<Stripe[]> stripes_;
};

}  // namespace uzswap
