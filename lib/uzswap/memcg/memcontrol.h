// MemCgroups: the page store's view of memory cgroups (the kernel's
// mm/memcontrol.c as far as zswap uses it): which ids are live and how they
// nest, each one's policy (memory.zswap.writeback, memory.zswap.max) and its
// counters (memory.stat's zswap and zswapped figures).
//
// The hierarchy itself is the ListLru's (lru/list_lru.h): a cgroup is a set
// of per-node lists, and a removed cgroup's lists are spliced onto its
// parent's, as memcg_reparent_list_lrus() does. This registry keeps what
// must outlive the process in the shared state's CgroupRecord table
// (state/layout.h): ids, parents, policy and the directory each id names,
// so that a process adopting the state knows its cgroups again. Counters
// are rebuilt from the entries at adoption (PageStore::adopt).
//
// Ids are handed out by the attribution (reclaim/attribution.h), one
// caller; they are reused once released (AttributionSide::release_cgroups).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "uzswap/common/mutex.h"
#include "uzswap/lru/list_lru.h"
#include "uzswap/state/shared_state.h"

namespace uzswap {

class ShrinkerRegistry;

// Per-cgroup policy, the userspace memory.zswap.writeback / memory.zswap.max.
struct CgroupPolicy {
  bool writeback = true;
  std::uint64_t max_bytes = 0;  // compressed bytes; 0 = no maximum
};

struct CgroupStats {
  std::uint64_t stored_pages = 0;
  std::uint64_t compressed_bytes = 0;
  std::uint64_t written_back_pages = 0;
};

// A cgroup as the shared state remembers it (for the attribution).
struct PersistedCgroup {
  CgroupId id;
  std::uint64_t inode;
  std::string path;
};

// One cgroup's live counters and policy, updated from the request path.
struct MemcgCounters {
  std::atomic<std::int64_t> stored_pages{0};
  std::atomic<std::int64_t> compressed_bytes{0};
  std::atomic<std::int64_t> written_back_pages{0};
  std::atomic<bool> writeback{true};
  std::atomic<std::uint64_t> max_bytes{0};
};

class MemCgroups {
 public:
  // Over `lru`'s hierarchy and `state`'s registry; both outlive this.
  MemCgroups(ListLru& lru, SharedState& state);
  MemCgroups(const MemCgroups&) = delete;
  MemCgroups& operator=(const MemCgroups&) = delete;

  // The shrinker registry to keep in step (its per-cgroup bits): set by the
  // writeback engine when it registers the store's shrinker.
  void attach_shrinker_registry(ShrinkerRegistry* registry) noexcept { registry_ = registry; }

  // Ids 0 (the root, always live) and those the attribution added.
  bool add(CgroupId cgroup, CgroupId parent);
  // Its pages (and their counters) go to the parent.
  bool remove(CgroupId cgroup);
  std::vector<CgroupId> cgroups() const;
  bool live(CgroupId cgroup) const noexcept { return lru_.has_cgroup(cgroup); }
  // The live cgroup that `cgroup`'s pages belong to now.
  CgroupId resolve(CgroupId cgroup) const noexcept { return lru_.resolve(cgroup); }

  void set_policy(CgroupId cgroup, const CgroupPolicy& policy) noexcept;
  CgroupPolicy policy(CgroupId cgroup) const noexcept;
  bool writeback_allowed(CgroupId cgroup) const noexcept {
    return counters_of(cgroup).writeback.load(std::memory_order_relaxed);
  }
  CgroupStats stats(CgroupId cgroup) const noexcept;
  // The counters of the live cgroup that `cgroup`'s pages belong to.
  MemcgCounters& counters_of(CgroupId cgroup) noexcept { return counters_[lru_.resolve(cgroup)]; }
  const MemcgCounters& counters_of(CgroupId cgroup) const noexcept { return counters_[lru_.resolve(cgroup)]; }

  // Releasing removed ids (AttributionSide::release_cgroups, which
  // re-labels the entries in between): the removed, not yet released ids
  // of `removed`, each with the live cgroup its pages went to ...
  struct Release {
    std::vector<CgroupId> ids;
    std::vector<CgroupId> target;  // by id: where a released id's entries go
    std::vector<bool> dead;        // by id: released now
  };
  Release prepare_release(const std::vector<CgroupId>& removed) const;
  // ... and, once no entry carries them, forgetting them: free to hand out.
  void forget(const std::vector<CgroupId>& ids);

  // Ids below next_id() that were handed out, removed and never released (a
  // process died between the two), and ids free to hand out.
  std::vector<CgroupId> removed_ids() const { return handed_out_ids(true); }
  std::vector<CgroupId> free_ids() const { return handed_out_ids(false); }
  std::uint64_t next_id() const noexcept { return state_.header().next_cgroup_id; }
  void set_next_id(std::uint64_t id) noexcept { state_.header().next_cgroup_id = id; }

  // The directory behind an id, so a process that adopts the state knows its
  // cgroups again (the attribution records it).
  void record_identity(CgroupId cgroup, std::uint64_t inode, const std::string& path) noexcept;
  std::vector<PersistedCgroup> persisted() const;

  // At adoption: the live cgroups of the registry, each after its parent;
  // orphans (a parent that is not live) are marked removed. Returns how
  // many were restored.
  std::uint64_t restore();
  // The nearest live ancestor in the registry (for entries at adoption).
  CgroupId live_ancestor(CgroupId cgroup) const noexcept;

 private:
  std::vector<CgroupId> handed_out_ids(bool used) const;

  ListLru& lru_;
  SharedState& state_;
  ShrinkerRegistry* registry_ = nullptr;
  std::unique_ptr<MemcgCounters[]> counters_;
  mutable Mutex lock_;
  std::vector<CgroupId> cgroups_ GUARDED_BY(lock_);  // live ids
};

}  // namespace uzswap
