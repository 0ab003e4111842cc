// Cgroups: the attribution thread, which tells the store which cgroup each
// swapped page belongs to (reclaim/attribution.h), the cgroup paths it
// publishes for status and the control commands, and the root hold that
// follows from the cgroups' writeback policies.
#include <filesystem>

#include <spdlog/spdlog.h>

#include "instance.h"
#include "uzswap/control/format.h"

namespace uzswap {

void Instance::start_attribution() {
  if (config_.attribution_interval == 0) return;
  AttributionOptions options;
  options.cgroup_root = config_.cgroup_root.empty() ? Attribution::default_root() : config_.cgroup_root;
  options.swap_type = static_cast<unsigned>(swap_type_);
  options.max_pages_per_pass = config_.attribution_budget;
  if (!std::filesystem::exists(options.cgroup_root + "/cgroup.procs")) {
    spdlog::warn("no cgroup v2 tree at {}: every page stays the root cgroup's", options.cgroup_root);
    return;
  }
  attribution_ = std::make_unique<Attribution>(*store_, options);
  spdlog::info("attributing pages to the cgroups under {} every {} s", options.cgroup_root,
               config_.attribution_interval);
  // Passes come every interval, and after pressure events, but never
  // closer than 2 s apart (the CPU budget applies to each).
  PeriodicWorker::Options schedule;
  schedule.period = std::chrono::seconds(config_.attribution_interval);
  schedule.min_gap = std::chrono::seconds(2);
  attribution_worker_.start("uzswap-attrib", schedule, [this] {
    MutexLock guard(attribution_lock_);
    try {
      last_pass_ = attribution_->scan();
      publish_cgroup_paths();
      // A watch the kernel refused is tried again at the next pass.
      if (auto tracked = reclaimer_ ? reclaimer_->track(attribution_->directories()) : Result<>{}; !tracked)
        liveness::error("attribution pass: epoll_ctl: " + tracked.error().message());
      else
        update_root_hold();
    } catch (const std::exception& e) {
      // A pass that failed (allocation) is tried again at the next
      // interval; the liveness check logs it.
      liveness::error(std::string("attribution pass: ") + e.what());
    }
  });
}

void Instance::stop_attribution() noexcept { attribution_worker_.stop(); }

void Instance::update_root_hold() {
  if (!reclaimer_) return;
  bool hold = false;
  for (const CgroupId id : store_->memcg().cgroups())
    if (id != kRootCgroup && !store_->memcg().policy(id).writeback) hold = true;
  // A cgroup that got no id keeps its pages on the root's lists: if it said
  // no writeback, the root's pages are held as well.
  // (As the last pass published it: the attribution's own counts change
  // under attribution_lock_, which a control thread must not wait for.)
  {
    MutexLock guard(paths_lock_);
    if (cgroup_ids_.untracked.writeback_off > 0) hold = true;
  }
  if (hold != reclaimer_->hold_root())
    spdlog::info(hold ? "a cgroup has writeback off: pages not yet attributed are written back on request only"
                      : "no cgroup has writeback off: pressure reclaim takes unattributed pages too");
  reclaimer_->set_hold_root(hold);
}

std::optional<CgroupId> Instance::find_cgroup(const std::string& path) const {
  if (path == "/") return kRootCgroup;
  MutexLock guard(paths_lock_);
  // The raw path, or the escaped form the tables show, if only one matches.
  std::optional<CgroupId> escaped;
  unsigned escaped_matches = 0;
  for (const auto& [id, raw] : cgroup_paths_) {
    if (raw == path) return id;
    if (escape_name(raw) == path) {
      escaped = id;
      ++escaped_matches;
    }
  }
  return escaped_matches == 1 ? escaped : std::nullopt;
}

void Instance::publish_cgroup_paths() {
  std::map<CgroupId, std::string> paths;
  for (const PersistedCgroup& c : store_->memcg().persisted()) paths[c.id] = c.path;
  CgroupIds ids;
  if (attribution_) {
    ids.live = attribution_->live_cgroups();
    ids.free = attribution_->free_ids();
    ids.untracked = attribution_->untracked();
  }
  MutexLock guard(paths_lock_);
  if (ids.untracked.count != cgroup_ids_.untracked.count) {
    if (ids.untracked.count > 0)
      spdlog::warn("cgroup ids: all {} in use: {} cgroup(s) untracked, their pages stay the root "
                   "cgroup's ({} with writeback off: unattributed pages are held back from pressure "
                   "reclaim; {} with a zswap maximum that cannot be enforced)",
                   ids.live, ids.untracked.count, ids.untracked.writeback_off, ids.untracked.with_max);
    else
      spdlog::info("cgroup ids: every cgroup is tracked again");
  }
  cgroup_paths_ = std::move(paths);
  cgroup_ids_ = ids;
}

std::string Instance::cgroup_path(CgroupId id) const {
  if (id == kRootCgroup) return "/";
  MutexLock guard(paths_lock_);
  if (const auto it = cgroup_paths_.find(id); it != cgroup_paths_.end()) return it->second;
  return "#" + std::to_string(id);
}

}  // namespace uzswap
