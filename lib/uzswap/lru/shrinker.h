// The shrinker registry: userspace mm/shrinker.c.
//
// A shrinker reports how many objects it could free for a (cgroup, node) and
// frees some on request. The registry keeps, per (cgroup, node), a bitmap of
// the shrinkers that have objects there (set when a list becomes non-empty,
// cleared when a count comes back empty), so a reclaim pass skips empty
// cgroups without asking; and the work a pass could not do (nr_deferred) is
// carried to the next pass, and to the parent when the cgroup goes away.
//
// shrink_slab() follows do_shrink_slab(): delta = (freeable >> priority) * 4
// / seeks, plus the deferred work >> priority, capped at twice the freeable
// objects, scanned in batches; what was not scanned is deferred.
//
// A count of kShrinkEmpty clears the bit; the shrinker sets it again when
// objects appear.
//
// Locking: bitmaps and deferred counts are atomics; the cgroup table is
// guarded by lock_ for creation and reparenting only.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "uzswap/common/mutex.h"
#include "uzswap/lru/list_lru.h"

namespace uzswap {

struct ShrinkControl {
  CgroupId cgroup;
  unsigned node;
  std::uint64_t nr_to_scan;
  std::uint64_t nr_scanned;  // the shrinker may say it scanned more or less
};

inline constexpr std::uint64_t kShrinkStop = UINT64_MAX;
// count(): nothing there at all (SHRINK_EMPTY); the registry clears the
// bit. A count of 0 means "objects, but none freeable now" (writeback
// turned off, say) and keeps the bit, so they are found again later.
inline constexpr std::uint64_t kShrinkEmpty = UINT64_MAX - 1;

class Shrinker {
 public:
  virtual ~Shrinker() = default;
  // Objects that could be freed in (cgroup, node): 0 = none now,
  // kShrinkEmpty = none there.
  virtual std::uint64_t count(CgroupId cgroup, unsigned node) = 0;
  // Frees up to nr_to_scan objects; returns how many, or kShrinkStop.
  virtual std::uint64_t scan(ShrinkControl& control) = 0;
  unsigned seeks = 2;          // cost of recreating an object (DEFAULT_SEEKS)
  std::uint64_t batch = 128;   // objects per scan call
};

class ShrinkerRegistry {
 public:
  static constexpr unsigned kMaxShrinkers = 8;
  static constexpr int kDefaultPriority = 12;  // DEF_PRIORITY

  explicit ShrinkerRegistry(unsigned nodes);
  ~ShrinkerRegistry();

  // Returns the shrinker's id, or -1 when the registry is full.
  int add(Shrinker& shrinker);

  // Creates the cgroup's bitmaps and deferred counts (root always exists).
  void add_cgroup(CgroupId cgroup);
  // Moves the cgroup's bits and deferred work to `parent` (reparent_shrinker_deferred).
  void reparent(CgroupId cgroup, CgroupId parent);

  // Shrinker `id` has objects in (cgroup, node) (set_shrinker_bit). Cheap
  // when the bit is already set: callable from the store path.
  void set_bit(CgroupId cgroup, unsigned node, int id) noexcept;
  bool bit(CgroupId cgroup, unsigned node, int id) const noexcept;
  std::uint64_t deferred(CgroupId cgroup, unsigned node, int id) const noexcept;

  // One reclaim pass over the shrinkers with objects in (cgroup, node).
  // Returns the objects freed; adds the objects scanned to `*scanned`. It
  // stops once `max_freed` are freed (the caller's nr_to_reclaim, which the
  // kernel checks in shrink_lruvec); work left for that reason is not
  // deferred.
  std::uint64_t shrink_slab(CgroupId cgroup, unsigned node, int priority,
                            std::uint64_t* scanned = nullptr,
                            std::uint64_t max_freed = UINT64_MAX);

 private:
  struct CgroupInfo;
  CgroupInfo* info(CgroupId cgroup) const noexcept;
  std::uint64_t do_shrink(Shrinker& shrinker, int id, CgroupInfo& info, CgroupId cgroup,
                          unsigned node, int priority, std::uint64_t max_freed,
                          std::uint64_t& scanned);

  unsigned nodes_;
  Mutex lock_;
  Shrinker* shrinkers_[kMaxShrinkers] GUARDED_BY(lock_) = {};
  std::unique_ptr<std::atomic<CgroupInfo*>[]> cgroups_;
};

}  // namespace uzswap
