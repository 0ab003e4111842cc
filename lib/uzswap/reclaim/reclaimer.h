// The pressure-driven reclaim engine: the shrinker registry with the page
// store registered in it, one Kswapd per pool node, and the pressure
// watcher's thread that turns signals into work for them:
// - the store's node hook wakes that node's kswapd below its low mark;
// - a PSI event of the machine posts a proactive run of psi_reclaim_pages
//   to every node, while the machine is short of memory (MemAvailable under
//   psi_available_percent of MemTotal); a cgroup's PSI event the same,
//   aimed at that cgroup;
// - a memory.events increment of high + max posts a shrink of that cgroup
//   of increment * events_reclaim_pages pages;
// - writeback() (uzswapctl writeback) posts an exact count and waits.
// Aimed work is split between the nodes in proportion to the pages each
// holds on its lists for the target.
//
// Every pressure event also calls the pressure hook (the daemon runs an
// attribution pass, rate-limited there).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "uzswap/common/result.h"
#include "uzswap/common/thread.h"
#include "uzswap/lru/shrinker.h"
#include "uzswap/reclaim/kswapd.h"
#include "uzswap/reclaim/pressure_watcher.h"
#include "uzswap/store/page_store.h"
#include "uzswap/writeback/shrink_memcg.h"

namespace uzswap {

struct ReclaimOptions {
  KswapdOptions kswapd;
  PressureOptions pressure;
  bool watch_pressure = true;            // run the pressure watcher
  std::uint64_t psi_reclaim_pages = 2048;  // per machine PSI event, all nodes together
  // The machine's PSI writes back only while the machine is short of
  // memory: MemAvailable (read from `meminfo`) below this percent of
  // MemTotal. A stall with plenty available comes from a cgroup's own limit
  // (its tasks' stalls count in the machine's PSI too), which the pool's RAM
  // is not charged to: writing back would free nothing that cgroup can use
  // and send its later loads to the disk. 0, or a file that cannot be read:
  // every event writes back.
  unsigned psi_available_percent = 10;
  std::string meminfo = "/proc/meminfo";
  std::uint64_t events_reclaim_pages = 128;  // per high/max event
  bool start_threads = true;             // false: tests drive the kswapds with step()
};

class Reclaimer {
 public:
  // Registers the store's shrinker, hooks the store, starts the threads.
  // Throws std::system_error when a thread or the watcher cannot be made.
  Reclaimer(Writeback& writeback, ReclaimOptions options, std::function<void()> pressure_hook = {});
  ~Reclaimer();
  Reclaimer(const Reclaimer&) = delete;
  Reclaimer& operator=(const Reclaimer&) = delete;

  // Writes back up to `pages`, from one cgroup or all; waits for the nodes.
  WritebackResult writeback(std::uint64_t pages, std::optional<CgroupId> cgroup);
  // Turns one pressure signal into work (what the watcher thread does).
  void handle(const PressureEvent& event);
  // Machine PSI events passed over: the machine had memory to spare.
  std::uint64_t psi_events_ignored() const noexcept { return psi_ignored_.load(std::memory_order_relaxed); }
  // The cgroups whose memory.events and memory.pressure are watched (see
  // PressureWatcher::track for its error).
  Result<> track(const std::vector<std::pair<CgroupId, std::string>>& cgroups);

  // Holds the root cgroup's pages back from pressure reclaim (Kswapd::set_hold_root).
  void set_hold_root(bool hold) noexcept;
  bool hold_root() const noexcept { return kswapds_.front()->hold_root(); }
  void set_watermark_scale_factor(unsigned factor) noexcept;
  void set_idle_seconds(unsigned seconds) noexcept;
  unsigned watermark_scale_factor() const noexcept { return kswapds_.front()->watermark_scale_factor(); }
  unsigned idle_seconds() const noexcept { return kswapds_.front()->idle_seconds(); }

  ShrinkerRegistry& registry() noexcept { return registry_; }
  Kswapd& kswapd(unsigned node) noexcept { return *kswapds_[node]; }
  std::vector<KswapdStats> node_stats() const;
  std::optional<PressureStatus> pressure_status() const;

 private:
  // Posts `pages` of work for `cgroup` (or all), split between the nodes;
  // returns how many nodes got some.
  unsigned post_split(WakeCause cause, std::optional<CgroupId> cgroup, std::uint64_t pages,
                      ReclaimCompletion* completion);
  void watch() noexcept;
  // The machine is short of memory (ReclaimOptions::psi_available_percent).
  bool machine_short_of_memory() const;

  Writeback& writeback_;
  std::atomic<std::uint64_t> psi_ignored_{0};
  PageStore& store_;
  ReclaimOptions options_;
  std::function<void()> pressure_hook_;
  ShrinkerRegistry registry_;
  std::vector<std::unique_ptr<Kswapd>> kswapds_;
  std::unique_ptr<PressureWatcher> watcher_;
  std::atomic<bool> stop_{false};
  Thread watcher_thread_;
};

}  // namespace uzswap
