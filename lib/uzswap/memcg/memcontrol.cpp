#include "uzswap/memcg/memcontrol.h"

#include <algorithm>
#include <cstring>

#include "uzswap/lru/shrinker.h"

namespace uzswap {

MemCgroups::MemCgroups(ListLru& lru, SharedState& state)
    : lru_(lru), state_(state), counters_(std::make_unique<MemcgCounters[]>(kMaxCgroups)), cgroups_{kRootCgroup} {}

bool MemCgroups::add(CgroupId cgroup, CgroupId parent) {
  if (registry_ != nullptr) registry_->add_cgroup(cgroup);
  if (!lru_.add_cgroup(cgroup, parent)) return false;
  CgroupRecord& record = state_.cgroups()[cgroup];
  if (!record.used) {
    record.writeback = 1;
    record.max_bytes = 0;
  }
  record.parent = parent;
  record.live = 1;
  record.used = 1;
  MutexLock guard(lock_);
  if (std::find(cgroups_.begin(), cgroups_.end(), cgroup) == cgroups_.end()) cgroups_.push_back(cgroup);
  return true;
}

bool MemCgroups::remove(CgroupId cgroup) {
  if (!lru_.remove_cgroup(cgroup)) return false;
  state_.cgroups()[cgroup].live = 0;
  if (registry_ != nullptr) registry_->reparent(cgroup, lru_.resolve(cgroup));
  {
    MutexLock guard(lock_);
    cgroups_.erase(std::remove(cgroups_.begin(), cgroups_.end(), cgroup), cgroups_.end());
  }
  // Its pages are the parent's now, in the statistics as on the lists. Their
  // entries keep the old id, which resolves to the parent; their counters
  // move once, here.
  MemcgCounters& from = counters_[cgroup];
  MemcgCounters& to = counters_[lru_.resolve(cgroup)];
  for (auto member : {&MemcgCounters::stored_pages, &MemcgCounters::compressed_bytes,
                      &MemcgCounters::written_back_pages}) {
    const std::int64_t moved = (from.*member).exchange(0, std::memory_order_relaxed);
    (to.*member).fetch_add(moved, std::memory_order_relaxed);
  }
  return true;
}

std::vector<CgroupId> MemCgroups::cgroups() const {
  MutexLock guard(lock_);
  return cgroups_;
}

MemCgroups::Release MemCgroups::prepare_release(const std::vector<CgroupId>& removed) const {
  Release release{{}, std::vector<CgroupId>(kMaxCgroups, kRootCgroup), std::vector<bool>(kMaxCgroups, false)};
  for (const CgroupId id : removed) {
    if (id == kRootCgroup || lru_.has_cgroup(id) || !state_.cgroups()[id].used || release.dead[id]) continue;
    release.dead[id] = true;
    release.target[id] = lru_.resolve(id);
    release.ids.push_back(id);
  }
  return release;
}

void MemCgroups::forget(const std::vector<CgroupId>& ids) {
  for (const CgroupId id : ids) {
    lru_.release_cgroup(id);
    CgroupRecord& record = state_.cgroups()[id];
    record.live = 0;
    record.inode = 0;
    record.path[0] = '\0';
    record.writeback = 1;
    record.max_bytes = 0;
    record.parent = kRootCgroup;
    record.used = 0;  // last: the id is free from here on
    counters_[id].writeback.store(true, std::memory_order_relaxed);
    counters_[id].max_bytes.store(0, std::memory_order_relaxed);
  }
}

std::vector<CgroupId> MemCgroups::handed_out_ids(bool used) const {
  // Ids below next_id() whose record is (or is not) in use and that the
  // lists do not know as live.
  std::vector<CgroupId> out;
  const CgroupRecord* records = state_.cgroups();
  const std::uint64_t next = std::min<std::uint64_t>(state_.header().next_cgroup_id, kMaxCgroups);
  for (std::uint64_t id = 1; id < next; ++id)
    if ((records[id].used != 0) == used && !lru_.has_cgroup(static_cast<CgroupId>(id)))
      out.push_back(static_cast<CgroupId>(id));
  return out;
}

void MemCgroups::set_policy(CgroupId cgroup, const CgroupPolicy& policy) noexcept {
  counters_[cgroup].writeback.store(policy.writeback, std::memory_order_relaxed);
  counters_[cgroup].max_bytes.store(policy.max_bytes, std::memory_order_relaxed);
  CgroupRecord& record = state_.cgroups()[cgroup];
  record.writeback = policy.writeback ? 1 : 0;
  record.max_bytes = policy.max_bytes;
}

CgroupPolicy MemCgroups::policy(CgroupId cgroup) const noexcept {
  return {counters_[cgroup].writeback.load(std::memory_order_relaxed),
          counters_[cgroup].max_bytes.load(std::memory_order_relaxed)};
}

CgroupStats MemCgroups::stats(CgroupId cgroup) const noexcept {
  const auto get = [](const std::atomic<std::int64_t>& v) {
    const std::int64_t n = v.load(std::memory_order_relaxed);
    return n > 0 ? static_cast<std::uint64_t>(n) : 0;
  };
  const MemcgCounters& c = counters_[cgroup];
  return {get(c.stored_pages), get(c.compressed_bytes), get(c.written_back_pages)};
}

void MemCgroups::record_identity(CgroupId cgroup, std::uint64_t inode, const std::string& path) noexcept {
  CgroupRecord& record = state_.cgroups()[cgroup];
  record.inode = inode;
  const std::size_t n = std::min(path.size(), sizeof(record.path) - 1);
  std::memcpy(record.path, path.data(), n);
  record.path[n] = '\0';
}

std::vector<PersistedCgroup> MemCgroups::persisted() const {
  std::vector<PersistedCgroup> out;
  const CgroupRecord* records = state_.cgroups();
  for (unsigned id = 1; id < kMaxCgroups; ++id) {
    const CgroupRecord& r = records[id];
    if (r.used && r.live && lru_.has_cgroup(static_cast<CgroupId>(id)))
      out.push_back({static_cast<CgroupId>(id), r.inode, std::string(r.path, strnlen(r.path, sizeof(r.path)))});
  }
  return out;
}

std::uint64_t MemCgroups::restore() {
  CgroupRecord* records = state_.cgroups();
  set_policy(kRootCgroup, {records[0].writeback != 0, records[0].max_bytes});
  // Each after its parent: ids are reused, so a child's id may be lower than
  // its parent's.
  std::uint64_t restored = 0;
  std::vector<CgroupId> pending;
  for (unsigned id = 1; id < kMaxCgroups; ++id)
    if (records[id].used && records[id].live) pending.push_back(static_cast<CgroupId>(id));
  for (bool progress = true; progress && !pending.empty();) {
    progress = false;
    std::erase_if(pending, [&](CgroupId id) {
      const CgroupRecord& r = records[id];
      if (r.parent != kRootCgroup && !lru_.has_cgroup(r.parent)) return false;  // parent first
      progress = true;
      if (!add(id, r.parent)) {
        records[id].live = 0;
        return true;
      }
      set_policy(id, {r.writeback != 0, r.max_bytes});
      ++restored;
      return true;
    });
  }
  // Orphans: their pages go to the nearest live ancestor.
  for (const CgroupId id : pending) records[id].live = 0;
  return restored;
}

CgroupId MemCgroups::live_ancestor(CgroupId cgroup) const noexcept {
  const CgroupRecord* records = state_.cgroups();
  unsigned id = cgroup;
  for (unsigned hops = 0; id != kRootCgroup && !records[id].live && hops < kMaxCgroups; ++hops)
    id = records[id].parent;
  return static_cast<CgroupId>(records[id].live ? id : kRootCgroup);
}

}  // namespace uzswap
