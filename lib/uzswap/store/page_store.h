// PageStore: the compressed page store behind the swap device
// (zswap_store / zswap_load / zswap_invalidate).
//
// store(slot, page) keeps the newest version of a slot, load(slot) returns
// exactly the bytes last stored there, invalidate(first, count) forgets a range
// (the kernel's discard of free swap clusters). Any number of threads may call
// them at once, on the same or different slots; each call is atomic per slot.
//
// Request-path rules: every call here is noexcept and allocates nothing, once
// the calling thread has run prepare_thread() (the first call on a thread that
// did not does it then). Compression runs before the slot lock is taken; the
// lock covers only the entry swap and the copy of compressed bytes.
//
// Lock order: compaction_lock_ -> slot stripe -> pool class -> pool region.
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <mutex>

#include "uzswap/common/page.h"
#include "uzswap/compress/compressor.h"
#include "uzswap/pool/zpool.h"
#include "uzswap/store/slot_table.h"
#include "uzswap/store/store_stats.h"

namespace uzswap {

struct PageStoreOptions {
  std::uint64_t slots = 0;
  Codec codec = Codec::lz4;
  int level = kDefaultLz4Acceleration;
  // A page whose compressed size exceeds this is kept raw (incompressible).
  // 0 = the largest pool size class that still saves memory.
  std::size_t incompressible_threshold = 0;
  // Limit on pool RAM (zswap's max_pool_percent). Once reached, stores fail
  // with pool_full until the pool is back under accept_threshold_percent of
  // the limit (zswap's hysteresis). 0 = no limit.
  std::uint64_t max_pool_bytes = 0;
  unsigned accept_threshold_percent = 90;
  ZPoolOptions pool;
};

enum class StoredAs : std::uint8_t { same_filled, compressed, incompressible };
enum class LoadedFrom : std::uint8_t { empty, same_filled, pool };

class PageStore {
 public:
  explicit PageStore(const PageStoreOptions& options);  // throws on bad options
  PageStore(const PageStore&) = delete;
  PageStore& operator=(const PageStore&) = delete;

  // Stores on the calling CPU's NUMA node.
  std::expected<StoredAs, StoreError> store(Slot slot, PageView page) noexcept;
  // Stores on `node` (< pool nodes): for callers that know better, and tests.
  std::expected<StoredAs, StoreError> store(Slot slot, PageView page, unsigned node) noexcept;

  // Fills `out` with the slot's page; an empty slot reads as zeros.
  std::expected<LoadedFrom, LoadError> load(Slot slot, PageBuffer out) noexcept;

  // Forgets slots [first, first + count). Returns how many held a page.
  std::expected<std::uint64_t, LoadError> invalidate(Slot first, std::uint64_t count) noexcept;

  // Moves objects out of sparse pool spans and returns empty spans to the
  // system. Runs alongside the request path; not itself a request-path call.
  CompactionStats compact();

  // Live settings; they apply to pages stored from now on.
  void set_codec(Codec codec, int level) noexcept;
  Codec codec() const noexcept { return codec_.load(std::memory_order_relaxed); }
  int level() const noexcept { return level_.load(std::memory_order_relaxed); }
  void set_max_pool_bytes(std::uint64_t bytes) noexcept {
    max_pool_bytes_.store(bytes, std::memory_order_relaxed);
  }
  void set_accept_threshold_percent(unsigned percent) noexcept {
    accept_threshold_percent_.store(percent, std::memory_order_relaxed);
  }
  std::uint64_t max_pool_bytes() const noexcept {
    return max_pool_bytes_.load(std::memory_order_relaxed);
  }
  unsigned accept_threshold_percent() const noexcept {
    return accept_threshold_percent_.load(std::memory_order_relaxed);
  }
  // True from the moment the pool hit its limit until it is back under the
  // accept threshold.
  bool pool_full() const noexcept { return pool_full_.load(std::memory_order_relaxed); }
  std::size_t incompressible_threshold() const noexcept { return threshold_; }

  std::uint64_t slots() const noexcept { return table_.size(); }
  unsigned nodes() const noexcept { return pool_.nodes(); }
  PageStoreStats stats() const noexcept;

  // Creates the calling thread's compressors and buffers (allocates).
  static void prepare_thread();

 private:
  struct Removed {
    SlotState state;
    PoolHandle handle;
    std::uint32_t length;
  };
  void install(Slot slot, const SlotEntry& fresh, std::uint32_t footprint) noexcept;
  void account_removed(const Removed& removed) noexcept;
  unsigned current_node() const noexcept;
  bool admit_to_pool() noexcept;

  PageStoreOptions options_;
  ZPool pool_;
  SlotTable table_;
  std::size_t threshold_;
  std::atomic<Codec> codec_;
  std::atomic<int> level_;
  std::atomic<std::uint64_t> max_pool_bytes_;
  std::atomic<unsigned> accept_threshold_percent_;
  std::atomic<bool> pool_full_{false};
  std::mutex compaction_lock_;
  mutable StoreCounters counters_;
};

}  // namespace uzswap
