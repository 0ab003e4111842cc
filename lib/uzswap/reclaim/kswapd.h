// Per-node reclaim threads: userspace kswapd (mm/vmscan.c).
//
// One Kswapd per pool node. Its watermarks are in free bytes of the node's
// share of the pool limit (share = max_pool_bytes / nodes; free = share -
// the node's pool bytes), like a zone's:
//   gap = share * watermark_scale_factor / 10000
//   min = gap / 2,  low = min + gap,  high = min + 2 * gap
// A store that takes the node below its low mark wakes the thread (the page
// store's node hook); so does work posted to it: a PSI event, a
// memory.events increment, `uzswapctl writeback`. A timer drives idle
// writeback and catches what no hook reported (a limit changed live).
//
// A watermark run first compacts the pool if its spans are fragmented (RAM
// back without I/O, like zsmalloc's shrinker); if that balances the node,
// nothing is written. Otherwise it mirrors balance_pgdat(): a ScanControl
// with nr_to_reclaim
// (what it takes to reach the high mark) and a priority from 12 down to 1;
// at each priority every cgroup, or the target, goes through the shrinker
// registry's shrink_slab(), which scans about lru_pages >> priority; it
// stops once the node is above its high mark. A run that reclaims nothing is
// a failure; after max_failures in a row the node stops waking for its
// watermark (kswapd_failures >= MAX_RECLAIM_RETRIES) until other work makes
// progress, the node drops below its low mark by itself, or failure_backoff
// passes.
//
// After a run it tries to sleep like kswapd_try_to_sleep(): if the node is
// balanced it naps for short_nap (HZ/10); a wake during the nap counts as
// low_wmark_hit_quickly, a node found unbalanced at the end of the nap as
// high_wmark_hit_quickly; then it sleeps until woken.
//
// Posted work is done on the node's own lists: a targeted shrink_memcg for
// a cgroup (memory.events, a cgroup's PSI), a proactive balance run for the
// machine's PSI, an exact page count for a request (whose caller waits for
// the result). Idle writeback (zram's idle writeback) walks every list once
// every idle_seconds with second chance: an entry still unreferenced since
// the previous walk has not been stored or loaded for at least that long,
// and is written back.
//
// Pages not yet attributed sit on the root cgroup's lists. While some cgroup
// has writeback off, they may be that cgroup's, so only a request naming the
// root cgroup writes them back (set_hold_root); attribution moves them out
// meanwhile.
//
// Time enters only through step(now): the thread calls it with the steady
// clock; tests drive a Kswapd without a thread, with a fake clock.
//
// Locking: lock_ guards the work queue and the sleep state shared with
// wakers; the counters are atomics. step() runs on one thread at a time.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "uzswap/common/mutex.h"
#include "uzswap/common/thread.h"
#include "uzswap/lru/shrinker.h"
#include "uzswap/store/page_store.h"
#include "uzswap/writeback/shrink_memcg.h"

namespace uzswap {

using ReclaimClock = std::chrono::steady_clock;

enum class WakeCause : unsigned { watermark, psi, memory_events, request, idle };
inline constexpr unsigned kWakeCauses = 5;
const char* wake_cause_name(WakeCause cause) noexcept;

struct KswapdOptions {
  unsigned watermark_scale_factor = 500;  // per 10,000 of the node's share
  unsigned idle_seconds = 0;              // idle writeback period; 0 = off
  unsigned max_failures = 16;             // MAX_RECLAIM_RETRIES
  std::chrono::milliseconds short_nap{100};
  std::chrono::milliseconds failure_backoff{10'000};
  std::chrono::milliseconds period{1000};  // timer check of the watermarks
};

// What a reclaim run is asked to do (struct scan_control).
struct ScanControl {
  std::uint64_t nr_to_reclaim = 0;
  std::uint64_t nr_reclaimed = 0;
  std::uint64_t nr_scanned = 0;
  int priority = ShrinkerRegistry::kDefaultPriority;
  std::optional<CgroupId> target;  // nullopt = every cgroup
  bool proactive = false;          // run even when the node is balanced
};

// Free bytes on the node's share of the pool limit. All zero without a limit.
struct Watermarks {
  std::uint64_t share = 0;
  std::uint64_t min = 0, low = 0, high = 0;
};

// A request's result, shared by the nodes that work on it.
struct ReclaimCompletion {
  Mutex lock;
  CondVar done;
  unsigned pending GUARDED_BY(lock) = 0;
  WritebackResult result GUARDED_BY(lock);
  void finish(const WritebackResult& r);
  WritebackResult wait();
};

struct ReclaimWork {
  WakeCause cause = WakeCause::request;
  std::optional<CgroupId> cgroup;  // nullopt = every cgroup
  std::uint64_t pages = 0;
  ReclaimCompletion* completion = nullptr;  // request: told when done
};

struct KswapdStats {
  unsigned node = 0;
  std::array<std::uint64_t, kWakeCauses> wakeups{};
  std::uint64_t balance_runs = 0;
  std::uint64_t scanned = 0;       // LRU entries looked at
  std::uint64_t written = 0;       // pages written back, all causes
  std::uint64_t idle_written = 0;  // of which by idle writeback
  std::uint64_t min_wmark_hits = 0;  // runs that found the node below min
  std::uint64_t low_wmark_hit_quickly = 0;
  std::uint64_t high_wmark_hit_quickly = 0;
  std::uint64_t compactions = 0;   // runs that compacted the pool first
  std::uint64_t giveups = 0;       // times failures reached max_failures
  bool given_up = false;
  std::uint64_t pool_bytes = 0;
  Watermarks watermarks;
};

class Kswapd {
 public:
  Kswapd(Writeback& writeback, ShrinkerRegistry& registry, unsigned node, KswapdOptions options);
  ~Kswapd();  // stops the thread if started
  Kswapd(const Kswapd&) = delete;
  Kswapd& operator=(const Kswapd&) = delete;

  void start();           // the thread "uzswap-kswapd<node>"
  void stop() noexcept;   // joins; pending requests finish empty

  // The store path's wake (node below low). Cheap when already woken or
  // given up; never allocates.
  void wake_watermark() noexcept;
  // Queues work and wakes the thread. Requests with a completion must be
  // picked up by a running thread (or by step()).
  void post(const ReclaimWork& work);

  // Does what is due at `now` and returns when to be called again (sooner
  // if woken).
  ReclaimClock::time_point step(ReclaimClock::time_point now);

  // While set, only a request naming the root cgroup writes back pages
  // still on its lists: pages not yet attributed may belong to a cgroup
  // whose writeback is off.
  void set_hold_root(bool hold) noexcept { hold_root_.store(hold); }
  bool hold_root() const noexcept { return hold_root_.load(); }
  void set_watermark_scale_factor(unsigned factor) noexcept { scale_factor_.store(factor); }
  unsigned watermark_scale_factor() const noexcept { return scale_factor_.load(); }
  void set_idle_seconds(unsigned seconds) noexcept { idle_seconds_.store(seconds); }
  unsigned idle_seconds() const noexcept { return idle_seconds_.load(); }
  unsigned node() const noexcept { return node_; }
  Watermarks watermarks() const noexcept;
  bool balanced() const noexcept;  // free >= high (always, without a limit)
  KswapdStats stats() const noexcept;

 private:
  enum class Sleep { awake, nap, asleep };
  std::uint64_t free_bytes(const Watermarks& w) const noexcept;
  bool woken_locked() const noexcept REQUIRES(lock_) { return watermark_pending_.load() || !queue_.empty(); }
  void run() noexcept;
  void balance(ScanControl& sc);
  void shrink_node(ScanControl& sc);
  WritebackResult shrink_cgroup(CgroupId cgroup, std::uint64_t pages);
  WritebackResult do_work(const ReclaimWork& work);
  void idle_writeback();
  void note_progress(std::uint64_t reclaimed, ReclaimClock::time_point now);
  // The root cgroup's pages while they are held (set_hold_root): left to
  // requests that name the root.
  bool held(CgroupId cgroup) const noexcept {
    return cgroup == kRootCgroup && hold_root_.load(std::memory_order_relaxed);
  }
  void count(WritebackResult r, bool idle = false) noexcept;

  Writeback& writeback_;
  PageStore& store_;
  ShrinkerRegistry& registry_;
  const unsigned node_;
  const KswapdOptions options_;
  std::atomic<unsigned> scale_factor_;
  std::atomic<unsigned> idle_seconds_;
  std::atomic<bool> hold_root_{false};

  mutable Mutex lock_;
  CondVar wakeup_;
  std::vector<ReclaimWork> queue_ GUARDED_BY(lock_);
  bool stop_ GUARDED_BY(lock_) = false;
  std::atomic<bool> watermark_pending_{false};
  std::atomic<bool> given_up_{false};

  // The thread's own state (step() is single-threaded).
  Sleep sleep_ = Sleep::awake;
  ReclaimClock::time_point nap_until_{};
  ReclaimClock::time_point retry_at_{};
  ReclaimClock::time_point next_idle_{};
  unsigned failures_ = 0;
  std::size_t cursor_ = 0;  // round robin over cgroups for requests

  std::array<std::atomic<std::uint64_t>, kWakeCauses> wakeups_{};
  std::atomic<std::uint64_t> balance_runs_{0}, scanned_{0}, written_{0}, idle_written_{0},
      min_wmark_hits_{0}, low_quickly_{0}, high_quickly_{0}, giveups_{0}, compactions_{0};
  Thread thread_;
};

}  // namespace uzswap
