#include "uzswap/reclaim/kswapd.h"

#include "uzswap/daemon/safety.h"

#include <algorithm>

#include "uzswap/common/liveness.h"

namespace uzswap {

namespace {

constexpr std::uint64_t kSwapClusterMax = 32;  // SWAP_CLUSTER_MAX: the least a run asks for

std::uint64_t visited(const WritebackResult& r) noexcept {
  return r.written + r.rotated + r.failed + r.raced;
}

void add(WritebackResult& total, const WritebackResult& r) noexcept {
  total.written += r.written;
  total.raced += r.raced;
  total.failed += r.failed;
  total.rotated += r.rotated;
}

}  // namespace

const char* wake_cause_name(WakeCause cause) noexcept {
  switch (cause) {
    case WakeCause::watermark: return "watermark";
    case WakeCause::psi: return "psi";
    case WakeCause::memory_events: return "memory_events";
    case WakeCause::request: return "request";
    case WakeCause::idle: return "idle";
  }
  return "?";
}

void ReclaimCompletion::finish(const WritebackResult& r) {
  MutexLock guard(lock);
  add(result, r);
  if (--pending == 0) done.notify_all();
}

WritebackResult ReclaimCompletion::wait() {
  MutexLock guard(lock);
  while (pending != 0) done.wait(lock);
  return result;
}

Kswapd::Kswapd(Writeback& writeback, ShrinkerRegistry& registry, unsigned node, KswapdOptions options)
    : writeback_(writeback),
      store_(writeback.store()),
      registry_(registry),
      node_(node),
      options_(options),
      scale_factor_(options.watermark_scale_factor),
      idle_seconds_(options.idle_seconds) {}

Kswapd::~Kswapd() { stop(); }

void Kswapd::start() {
  {
    MutexLock guard(lock_);
    queue_.reserve(64);
  }
  thread_ = Thread("uzswap-kswapd" + std::to_string(node_), [this] {
    // It frees pool room: its own allocations must not wait on the I/O
    // reclaim it is there to help (refused without CAP_SYS_RESOURCE; the
    // daemon says so once).
    (void)set_io_flusher();
    run();
  });
}

void Kswapd::stop() noexcept {
  {
    MutexLock guard(lock_);
    stop_ = true;
  }
  wakeup_.notify_all();
  thread_.join();
  std::vector<ReclaimWork> left;
  {
    MutexLock guard(lock_);
    left.swap(queue_);
  }
  for (const ReclaimWork& w : left)
    if (w.completion != nullptr) w.completion->finish({});
}

void Kswapd::wake_watermark() noexcept {
  if (watermark_pending_.load(std::memory_order_relaxed) || given_up_.load(std::memory_order_relaxed))
    return;
  watermark_pending_.store(true);
  { MutexLock guard(lock_); }  // a waiter checks the flag under the lock
  wakeup_.notify_one();
}

void Kswapd::post(const ReclaimWork& work) {
  {
    MutexLock guard(lock_);
    if (!stop_) {
      // Pressure events come in bursts: work nobody waits for joins queued
      // work of the same cause and cgroup, so the queue stays as long as
      // the number of distinct requests, not of events.
      if (work.completion == nullptr) {
        for (ReclaimWork& queued : queue_)
          if (queued.completion == nullptr && queued.cause == work.cause && queued.cgroup == work.cgroup) {
            queued.pages += work.pages;
            wakeup_.notify_one();
            return;
          }
      }
      queue_.push_back(work);
      wakeup_.notify_one();
      return;
    }
  }
  if (work.completion != nullptr) work.completion->finish({});
}

Watermarks Kswapd::watermarks() const noexcept {
  Watermarks w;
  const std::uint64_t limit = store_.settings().max_pool_bytes();
  if (limit == 0) return w;
  w.share = limit / store_.nodes();
  const std::uint64_t gap = w.share / 10'000 * scale_factor_.load(std::memory_order_relaxed);
  w.min = gap / 2;
  w.low = std::min(w.share, w.min + gap);
  w.high = std::min(w.share, w.min + 2 * gap);
  return w;
}

std::uint64_t Kswapd::free_bytes(const Watermarks& w) const noexcept {
  const std::uint64_t used = store_.node(node_).pool_bytes();
  return w.share > used ? w.share - used : 0;
}

bool Kswapd::balanced() const noexcept {
  const Watermarks w = watermarks();
  return w.share == 0 || free_bytes(w) >= w.high;
}

void Kswapd::count(WritebackResult r, bool idle) noexcept {
  scanned_.fetch_add(visited(r), std::memory_order_relaxed);
  written_.fetch_add(r.written, std::memory_order_relaxed);
  if (idle) idle_written_.fetch_add(r.written, std::memory_order_relaxed);
}

void Kswapd::note_progress(std::uint64_t reclaimed, ReclaimClock::time_point now) {
  if (reclaimed == 0) {
    if (++failures_ >= options_.max_failures && !given_up_.load()) {
      given_up_.store(true);
      giveups_.fetch_add(1, std::memory_order_relaxed);
      retry_at_ = now + options_.failure_backoff;
    }
    return;
  }
  failures_ = 0;
  given_up_.store(false);
}

void Kswapd::shrink_node(ScanControl& sc) {
  const std::vector<CgroupId> cgroups =
      sc.target ? std::vector<CgroupId>{*sc.target} : store_.memcg().cgroups();
  for (const CgroupId cg : cgroups) {
    if (held(cg)) continue;
    sc.nr_reclaimed += registry_.shrink_slab(cg, node_, sc.priority, &sc.nr_scanned,
                                             sc.nr_to_reclaim - sc.nr_reclaimed);
    if (sc.nr_reclaimed >= sc.nr_to_reclaim) return;
  }
}

void Kswapd::balance(ScanControl& sc) {
  balance_runs_.fetch_add(1, std::memory_order_relaxed);
  for (sc.priority = ShrinkerRegistry::kDefaultPriority; sc.priority >= 1; --sc.priority) {
    if (!sc.proactive && !sc.target && balanced()) break;
    shrink_node(sc);
    if (sc.nr_reclaimed >= sc.nr_to_reclaim) break;
  }
  scanned_.fetch_add(sc.nr_scanned, std::memory_order_relaxed);
  written_.fetch_add(sc.nr_reclaimed, std::memory_order_relaxed);
}

WritebackResult Kswapd::shrink_cgroup(CgroupId cgroup, std::uint64_t pages) {
  WritebackResult total;
  unsigned empty = 0;
  while (total.written < pages && empty < 2) {
    const WritebackResult r = writeback_.shrink_list(cgroup, node_, pages - total.written);
    add(total, r);
    // Passes that only gave second chances still make progress.
    empty = r.written == 0 && r.rotated == 0 ? empty + 1 : 0;
  }
  count(total);
  return total;
}

WritebackResult Kswapd::do_work(const ReclaimWork& work) {
  // Held root pages go only when a request names the root cgroup itself.
  if (work.cgroup) {
    if (work.cause != WakeCause::request && held(*work.cgroup)) return {};
    return shrink_cgroup(*work.cgroup, work.pages);
  }
  if (work.cause != WakeCause::request) {
    // The machine is under pressure: reclaim even though the node is balanced.
    ScanControl sc;
    sc.nr_to_reclaim = std::max(work.pages, kSwapClusterMax);
    sc.proactive = true;
    balance(sc);
    return WritebackResult{.written = sc.nr_reclaimed};
  }
  // A request for all cgroups: round robin from where the last one stopped.
  WritebackResult total;
  const std::vector<CgroupId> cgroups = store_.memcg().cgroups();
  std::size_t idle_in_a_row = 0;
  while (total.written < work.pages && idle_in_a_row < cgroups.size()) {
    const CgroupId cg = cgroups[cursor_++ % cgroups.size()];
    const WritebackResult r = !held(cg) && writeback_.lru_count(cg, node_) > 0
                                  ? shrink_cgroup(cg, work.pages - total.written)
                                  : WritebackResult{};
    add(total, r);
    idle_in_a_row = r.written == 0 ? idle_in_a_row + 1 : 0;
  }
  return total;
}

void Kswapd::idle_writeback() {
  for (const CgroupId cg : store_.memcg().cgroups()) {
    if (held(cg)) continue;
    const std::uint64_t on_list = writeback_.lru_count(cg, node_);
    std::uint64_t walked = 0;
    while (walked < on_list) {
      // Each entry is looked at once: a referenced one loses its mark and
      // stays; one still unmarked since the last pass goes.
      const std::uint64_t chunk = std::min<std::uint64_t>(on_list - walked, 1024);
      const WritebackResult r = writeback_.shrink_list(cg, node_, chunk, chunk);
      count(r, true);
      if (visited(r) == 0) break;
      walked += visited(r);
    }
  }
}

ReclaimClock::time_point Kswapd::step(ReclaimClock::time_point now) {
  const Watermarks w = watermarks();
  if (given_up_.load() && (now >= retry_at_ || free_bytes(w) >= w.low)) {
    given_up_.store(false);
    failures_ = 0;
  }
  // The store wakes us once the node's pool grows past share - low.
  const bool watch = w.share != 0 && w.low < w.share && !given_up_.load();
  store_.node(node_).set_wake_bytes(watch ? w.share - w.low : 0);

  std::vector<ReclaimWork> work;
  bool watermark;
  {
    MutexLock guard(lock_);
    work.swap(queue_);
    watermark = watermark_pending_.exchange(false);
  }
  const bool woken = watermark || !work.empty();
  if (woken && sleep_ == Sleep::nap && now < nap_until_)
    low_quickly_.fetch_add(1, std::memory_order_relaxed);
  if (watermark) wakeups_[static_cast<unsigned>(WakeCause::watermark)].fetch_add(1);

  for (const ReclaimWork& item : work) {
    wakeups_[static_cast<unsigned>(item.cause)].fetch_add(1, std::memory_order_relaxed);
    WritebackResult r;
    try {
      r = do_work(item);
    } catch (const std::exception& e) {
      // Only allocation can throw (the cgroup list): the request gets what was done.
      liveness::error(std::string("reclaim work: ") + e.what());
    }
    if (item.completion != nullptr) item.completion->finish(r);
    if (r.written > 0) note_progress(r.written, now);
  }

  const unsigned idle = idle_seconds_.load(std::memory_order_relaxed);
  if (idle == 0) {
    next_idle_ = {};
  } else if (next_idle_ == ReclaimClock::time_point{}) {
    next_idle_ = now + std::chrono::seconds(idle);
  } else if (now >= next_idle_) {
    wakeups_[static_cast<unsigned>(WakeCause::idle)].fetch_add(1, std::memory_order_relaxed);
    idle_writeback();
    next_idle_ = now + std::chrono::seconds(idle);
  }

  bool run = watermark;
  if (sleep_ == Sleep::nap && now >= nap_until_ && !woken) {
    // The nap is over: sleep for good only if the node stayed balanced.
    if (balanced()) {
      sleep_ = Sleep::asleep;
    } else {
      high_quickly_.fetch_add(1, std::memory_order_relaxed);
      run = true;
    }
  }
  if (w.share != 0 && free_bytes(w) < w.low) run = true;  // the timer's check
  if (given_up_.load()) run = false;

  bool compacted = false;
  if (run && store_.housekeeping().compact_if_fragmented()) {
    compactions_.fetch_add(1, std::memory_order_relaxed);
    if (balanced()) {
      compacted = true;
      run = false;
      failures_ = 0;
    }
  }
  if (run) {
    ScanControl sc;
    const std::uint64_t free = free_bytes(w);
    if (free < w.min) min_wmark_hits_.fetch_add(1, std::memory_order_relaxed);
    // Pages to free to reach the high mark, at the node's average object size.
    const std::uint64_t lru = std::max<std::uint64_t>(writeback_.node_stats(node_).lru_pages, 1);
    const std::uint64_t per_page = std::max<std::uint64_t>(store_.node(node_).pool_bytes() / lru, 1);
    const std::uint64_t needed = w.high > free ? w.high - free : 0;
    sc.nr_to_reclaim = std::max(kSwapClusterMax, (needed + per_page - 1) / per_page);
    balance(sc);
    note_progress(sc.nr_reclaimed, now);
    if (!balanced() && !given_up_.load()) {
      sleep_ = Sleep::awake;
      return now;  // balance_pgdat again at once
    }
  }

  if (woken || run || compacted) {
    sleep_ = Sleep::nap;
    nap_until_ = now + options_.short_nap;
  }
  ReclaimClock::time_point next = sleep_ == Sleep::nap ? nap_until_ : now + options_.period;
  if (next_idle_ != ReclaimClock::time_point{}) next = std::min(next, next_idle_);
  return next;
}

void Kswapd::run() noexcept {
  PageStore::prepare_thread();
  UniqueLock guard(lock_);
  while (!stop_) {
    guard.unlock();
    ReclaimClock::time_point next;
    liveness::working();
    try {
      next = step(ReclaimClock::now());
    } catch (const std::exception& e) {
      liveness::error(std::string("reclaim step: ") + e.what());
      next = ReclaimClock::now() + options_.period;
    }
    liveness::progressed();
    guard.lock();
    if (stop_) break;
    while (!stop_ && !woken_locked())
      if (wakeup_.wait_until(lock_, next) == std::cv_status::timeout) break;
  }
}

KswapdStats Kswapd::stats() const noexcept {
  KswapdStats s;
  s.node = node_;
  for (unsigned i = 0; i < kWakeCauses; ++i) s.wakeups[i] = wakeups_[i].load(std::memory_order_relaxed);
  s.balance_runs = balance_runs_.load(std::memory_order_relaxed);
  s.scanned = scanned_.load(std::memory_order_relaxed);
  s.written = written_.load(std::memory_order_relaxed);
  s.idle_written = idle_written_.load(std::memory_order_relaxed);
  s.min_wmark_hits = min_wmark_hits_.load(std::memory_order_relaxed);
  s.low_wmark_hit_quickly = low_quickly_.load(std::memory_order_relaxed);
  s.high_wmark_hit_quickly = high_quickly_.load(std::memory_order_relaxed);
  s.giveups = giveups_.load(std::memory_order_relaxed);
  s.compactions = compactions_.load(std::memory_order_relaxed);
  s.given_up = given_up_.load(std::memory_order_relaxed);
  s.pool_bytes = store_.node(node_).pool_bytes();
  s.watermarks = watermarks();
  return s;
}

}  // namespace uzswap
