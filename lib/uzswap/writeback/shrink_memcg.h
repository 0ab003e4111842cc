// Writeback: moving cold pages from the pool to the backing store, zswap's
// shrink_memcg() over list_lru_walk_one(), zswap_writeback_entry(), and the
// zswap shrinker (zswap_shrinker_count / zswap_shrinker_scan).
//
// shrink_list() walks one (cgroup, node) LRU list with second chance: a
// referenced entry loses its bit and rotates, a cold one is isolated (taken
// off the list). writeback_isolated() then writes the isolated entries with
// check-lock-check, through the page store's two entry transitions
// (PageStore::writeback_side()): claim() records the entry's version and
// marks it writeback under the slot lock (and decompresses it for the
// file), the write runs without any lock, and finish() re-checks the
// version under the lock: a store or invalidate that happened meanwhile
// wins and the written copy is ignored. Writes are pipelined two batches deep: one batch is
// claimed while the previous one is in flight.
//
// Who calls it: the reclaim threads (reclaim/kswapd.h, one per node), the
// pool-limit worker (writeback/shrink_worker.h), the shrinker registry
// (lru/shrinker.h) through the shrinker this registers, and uzswapctl's
// writeback command. Never the request path: a store that finds the pool
// full writes its page to the backing store itself (PageStore::store).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "uzswap/lru/shrinker.h"
#include "uzswap/store/page_store.h"

namespace uzswap {

struct WritebackResult {
  std::uint64_t written = 0;  // pages now in the backing store
  std::uint64_t raced = 0;    // a store or invalidate won; nothing to do
  std::uint64_t failed = 0;   // the write failed; kept in RAM, back on the LRU
  std::uint64_t rotated = 0;  // referenced entries given their second chance
};

class Writeback {
 public:
  // Over `store`, which outlives this, and its backing store (attached
  // before; without one nothing is written back).
  explicit Writeback(PageStore& store);
  ~Writeback();
  Writeback(const Writeback&) = delete;
  Writeback& operator=(const Writeback&) = delete;

  PageStore& store() noexcept { return store_; }
  const PageStore& store() const noexcept { return store_; }

  // zswap's shrink_memcg: walks `cgroup`'s lists, node by node, and writes
  // back up to `nr_pages` cold entries.
  WritebackResult shrink_memcg(CgroupId cgroup, std::uint64_t nr_pages);
  // The same on one node's list only (what a shrinker's scan does), looking
  // at no more than `max_walk` entries (0 = twice the batch, so that
  // entries given a second chance can be passed over).
  WritebackResult shrink_list(CgroupId cgroup, unsigned node, std::uint64_t nr_pages,
                              std::uint64_t max_walk = 0);
  // Writes back entries already isolated from their LRU list.
  WritebackResult writeback_isolated(std::span<const Slot> slots);

  // Registers the store as a shrinker (count = pages on a list, scan =
  // write back) and keeps the registry's bits and cgroups in step with the
  // lists and the cgroup registry. Before serving, at most once; the
  // registry outlives this.
  int register_shrinker(ShrinkerRegistry& registry);

  // Pages on `cgroup`'s lists on one node, on all nodes (the candidates).
  std::uint64_t lru_count(CgroupId cgroup, unsigned node) const noexcept {
    return store_.writeback_side().lru().count(cgroup, node);
  }
  std::uint64_t lru_pages(CgroupId cgroup) const noexcept;
  // Per NUMA node: pages on the LRU lists (all cgroups) and pages written back.
  struct NodeStats {
    std::uint64_t lru_pages = 0;
    std::uint64_t writebacks = 0;
  };
  NodeStats node_stats(unsigned node) const;

 private:
  PageStore& store_;
  std::unique_ptr<Shrinker> shrinker_;
  ShrinkerRegistry* registry_ = nullptr;
  int shrinker_id_ = -1;
};

}  // namespace uzswap
