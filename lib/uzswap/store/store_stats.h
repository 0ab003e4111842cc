// Page store statistics, zswap- and zram-like, in one place.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

#include "uzswap/pool/zpool.h"

namespace uzswap {

// The slots whose pages came back damaged (checksum mismatch, undecodable),
// newest last, for the daemon to log off the request path: note() is
// lock-free and allocates nothing.
class IntegrityLog {
 public:
  static constexpr unsigned kKept = 16;
  void note(std::uint64_t slot, bool from_backing) noexcept {
    const std::uint64_t n = count_.fetch_add(1, std::memory_order_relaxed);
    ring_[n % kKept].store(slot << 1 | (from_backing ? 1 : 0), std::memory_order_relaxed);
  }
  // How many were noted since start.
  std::uint64_t count() const noexcept { return count_.load(std::memory_order_acquire); }
  // The n-th noted (n < count(), and one of the last kKept): slot, from the file.
  std::pair<std::uint64_t, bool> at(std::uint64_t n) const noexcept {
    const std::uint64_t v = ring_[n % kKept].load(std::memory_order_relaxed);
    return {v >> 1, (v & 1) != 0};
  }

 private:
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> ring_[kKept]{};
};

struct PageStoreStats {
  // Gauges: what is stored now.
  std::uint64_t stored_pages = 0;        // all non-empty slots
  std::uint64_t same_filled_pages = 0;
  std::uint64_t incompressible_pages = 0;
  std::uint64_t written_back_pages = 0;  // in the backing store, not in RAM
  std::uint64_t orig_bytes = 0;          // stored_pages * page size
  std::uint64_t compressed_bytes = 0;    // sum of object lengths in the pool
  std::uint64_t pool_bytes = 0;          // RAM held by the pool, its metadata included
  std::uint64_t table_bytes = 0;         // slot table RAM
  // Counters: what happened since start.
  std::uint64_t stores = 0;
  std::uint64_t loads = 0;
  std::uint64_t empty_loads = 0;         // loads of slots never written or discarded
  std::uint64_t invalidations = 0;       // pages discarded
  std::uint64_t reject_pool_full = 0;
  std::uint64_t reject_alloc_failed = 0;
  std::uint64_t pool_limit_hits = 0;      // times the pool reached its limit
  std::uint64_t out_of_range = 0;        // requests for slots beyond the device
  std::uint64_t load_errors = 0;         // corrupt data found on load
  std::uint64_t lost_pages = 0;          // entries found damaged at adoption (reads fail)
  std::uint64_t integrity_errors = 0;    // loads refused because the data was damaged
  std::uint64_t compactions = 0;
  std::uint64_t compaction_moved = 0;    // objects migrated by compaction
  std::uint64_t writebacks = 0;          // pages written back by the shrinker
  std::uint64_t writeback_failures = 0;  // writes that failed (page kept in RAM)
  std::uint64_t writeback_raced = 0;     // writebacks a store or invalidate overtook
  std::uint64_t direct_writes = 0;       // stores sent to the backing store (pool full, or spilled)
  std::uint64_t spilled_pages = 0;       // of them, poorly compressing pages near the limit
  std::uint64_t backing_reads = 0;       // loads served from the backing store
  std::uint64_t backing_read_errors = 0;
  std::uint64_t wiped_pages = 0;         // freed blocks of the backing file overwritten with zeros
  ZPoolStats pool;
};

// The live counters behind PageStoreStats.
enum class Counter : unsigned {
  stored_pages,
  same_filled_pages,
  incompressible_pages,
  compressed_bytes,
  stores,
  loads,
  empty_loads,
  invalidations,
  reject_pool_full,
  reject_alloc_failed,
  pool_limit_hits,
  out_of_range,
  load_errors,
  lost_pages,
  integrity_errors,
  compactions,
  compaction_moved,
  written_back_pages,
  writebacks,
  writeback_failures,
  writeback_raced,
  direct_writes,
  spilled_pages,
  backing_reads,
  backing_read_errors,
  wiped_pages,
  count_,
};

// Counters sharded by CPU, so threads on different CPUs never bounce a cache
// line to count. Each value is exact; a snapshot of several may be
// mid-update relative to each other. Gauges are signed: one shard may see a
// page stored and another see it removed.
class StoreCounters {
 public:
  void add(Counter c, std::int64_t n = 1) noexcept {
    shard().values[static_cast<unsigned>(c)].fetch_add(n, std::memory_order_relaxed);
  }
  void sub(Counter c, std::int64_t n = 1) noexcept { add(c, -n); }
  std::uint64_t sum(Counter c) const noexcept;

 private:
  static constexpr unsigned kShards = 64;
  struct alignas(64) Shard {
    std::atomic<std::int64_t> values[static_cast<unsigned>(Counter::count_)]{};
  };
  Shard& shard() noexcept;
  Shard shards_[kShards];
};

}  // namespace uzswap
