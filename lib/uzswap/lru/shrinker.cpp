#include "uzswap/lru/shrinker.h"

#include <algorithm>

namespace uzswap {

struct ShrinkerRegistry::CgroupInfo {
  explicit CgroupInfo(unsigned nodes)
      : bits(std::make_unique<std::atomic<std::uint64_t>[]>(nodes)),
        deferred(std::make_unique<std::atomic<std::uint64_t>[]>(nodes * kMaxShrinkers)) {}
  std::unique_ptr<std::atomic<std::uint64_t>[]> bits;      // per node
  std::unique_ptr<std::atomic<std::uint64_t>[]> deferred;  // per node x shrinker
};

ShrinkerRegistry::ShrinkerRegistry(unsigned nodes)
    : nodes_(nodes), cgroups_(std::make_unique<std::atomic<CgroupInfo*>[]>(kMaxCgroups)) {
  cgroups_[kRootCgroup].store(new CgroupInfo(nodes_), std::memory_order_release);
}

ShrinkerRegistry::~ShrinkerRegistry() {
  for (unsigned i = 0; i < kMaxCgroups; ++i) delete cgroups_[i].load(std::memory_order_relaxed);
}

int ShrinkerRegistry::add(Shrinker& shrinker) {
  MutexLock guard(lock_);
  for (unsigned id = 0; id < kMaxShrinkers; ++id)
    if (shrinkers_[id] == nullptr) {
      shrinkers_[id] = &shrinker;
      return static_cast<int>(id);
    }
  return -1;
}

void ShrinkerRegistry::add_cgroup(CgroupId cgroup) {
  MutexLock guard(lock_);
  if (cgroups_[cgroup].load(std::memory_order_acquire) == nullptr)
    cgroups_[cgroup].store(new CgroupInfo(nodes_), std::memory_order_release);
}

ShrinkerRegistry::CgroupInfo* ShrinkerRegistry::info(CgroupId cgroup) const noexcept {
  CgroupInfo* i = cgroups_[cgroup].load(std::memory_order_acquire);
  return i != nullptr ? i : cgroups_[kRootCgroup].load(std::memory_order_acquire);
}

void ShrinkerRegistry::reparent(CgroupId cgroup, CgroupId parent) {
  MutexLock guard(lock_);
  CgroupInfo* from = cgroups_[cgroup].load(std::memory_order_acquire);
  CgroupInfo* to = info(parent);
  if (from == nullptr || from == to) return;
  for (unsigned node = 0; node < nodes_; ++node) {
    to->bits[node].fetch_or(from->bits[node].exchange(0, std::memory_order_acq_rel),
                            std::memory_order_acq_rel);
    for (unsigned id = 0; id < kMaxShrinkers; ++id)
      to->deferred[node * kMaxShrinkers + id].fetch_add(
          from->deferred[node * kMaxShrinkers + id].exchange(0, std::memory_order_relaxed),
          std::memory_order_relaxed);
  }
}

void ShrinkerRegistry::set_bit(CgroupId cgroup, unsigned node, int id) noexcept {
  std::atomic<std::uint64_t>& bits = info(cgroup)->bits[node];
  const std::uint64_t mask = std::uint64_t{1} << id;
  if ((bits.load(std::memory_order_relaxed) & mask) == 0) bits.fetch_or(mask, std::memory_order_release);
}

bool ShrinkerRegistry::bit(CgroupId cgroup, unsigned node, int id) const noexcept {
  return info(cgroup)->bits[node].load(std::memory_order_acquire) & (std::uint64_t{1} << id);
}

std::uint64_t ShrinkerRegistry::deferred(CgroupId cgroup, unsigned node, int id) const noexcept {
  return info(cgroup)->deferred[node * kMaxShrinkers + static_cast<unsigned>(id)].load(
      std::memory_order_relaxed);
}

std::uint64_t ShrinkerRegistry::do_shrink(Shrinker& shrinker, int id, CgroupInfo& info,
                                          CgroupId cgroup, unsigned node, int priority,
                                          std::uint64_t max_freed, std::uint64_t& scanned_total) {
  const std::uint64_t freeable = shrinker.count(cgroup, node);
  if (freeable == 0 || freeable == kShrinkEmpty) return 0;
  std::atomic<std::uint64_t>& deferred_slot = info.deferred[node * kMaxShrinkers + static_cast<unsigned>(id)];
  const std::uint64_t nr = deferred_slot.exchange(0, std::memory_order_relaxed);
  const std::uint64_t delta =
      shrinker.seeks != 0 ? ((freeable >> priority) * 4) / shrinker.seeks : freeable / 2;
  std::uint64_t total_scan = std::min((nr >> priority) + delta, 2 * freeable);
  const std::uint64_t batch = shrinker.batch != 0 ? shrinker.batch : 128;
  std::uint64_t freed = 0, scanned = 0;
  bool enough = false;
  while (total_scan >= batch || total_scan >= freeable) {
    if (freed >= max_freed) {
      enough = true;
      break;
    }
    ShrinkControl control{cgroup, node, std::min(batch, total_scan), 0};
    control.nr_scanned = control.nr_to_scan;
    const std::uint64_t got = shrinker.scan(control);
    if (got == kShrinkStop) break;
    freed += got;
    total_scan -= std::min(total_scan, control.nr_scanned);
    scanned += control.nr_scanned;
    if (control.nr_scanned == 0) break;
  }
  // What this pass was asked to do and did not is carried to the next one
  // (not what the caller no longer needed).
  const std::uint64_t asked = enough ? nr : nr + delta;
  const std::uint64_t owed = asked > scanned ? asked - scanned : 0;
  deferred_slot.fetch_add(std::min(owed, 2 * freeable), std::memory_order_relaxed);
  scanned_total += scanned;
  return freed;
}

std::uint64_t ShrinkerRegistry::shrink_slab(CgroupId cgroup, unsigned node, int priority,
                                           std::uint64_t* scanned, std::uint64_t max_freed) {
  CgroupInfo* ci = info(cgroup);
  std::uint64_t bits = ci->bits[node].load(std::memory_order_acquire);
  std::uint64_t freed = 0, scanned_here = 0;
  while (bits != 0 && freed < max_freed) {
    const int id = __builtin_ctzll(bits);
    bits &= bits - 1;
    Shrinker* shrinker;
    {
      MutexLock guard(lock_);
      shrinker = shrinkers_[id];
    }
    if (shrinker == nullptr) continue;
    if (shrinker->count(cgroup, node) == kShrinkEmpty) {
      // Empty: clear the bit, then look again, so an object added meanwhile
      // (which set the bit before we cleared it) is not forgotten.
      ci->bits[node].fetch_and(~(std::uint64_t{1} << id), std::memory_order_acq_rel);
      if (shrinker->count(cgroup, node) != kShrinkEmpty) set_bit(cgroup, node, id);
      continue;
    }
    freed += do_shrink(*shrinker, id, *ci, cgroup, node, priority, max_freed - freed, scanned_here);
  }
  if (scanned != nullptr) *scanned += scanned_here;
  return freed;
}

}  // namespace uzswap
