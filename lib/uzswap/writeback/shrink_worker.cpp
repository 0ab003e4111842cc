#include "uzswap/writeback/shrink_worker.h"
#include "uzswap/daemon/safety.h"

#include "uzswap/common/liveness.h"

namespace uzswap {

ShrinkWorker::ShrinkWorker(Writeback& writeback, ShrinkWorkerOptions options)
    : writeback_(writeback), store_(writeback.store()), options_(options) {
  thread_ = Thread("uzswap-shrink", [this] {
    (void)set_io_flusher();  // it frees pool room (see Kswapd::start)
    run();
  });
}

ShrinkWorker::~ShrinkWorker() {
  {
    MutexLock guard(lock_);
    stop_ = true;
  }
  wakeup_.notify_all();
  thread_.join();
}

void ShrinkWorker::wake() noexcept {
  {
    MutexLock guard(lock_);
    woken_ = true;
  }
  wakeup_.notify_one();
}

std::optional<CgroupId> ShrinkWorker::next_cgroup() {
  const std::vector<CgroupId> cgroups = store_.memcg().cgroups();
  for (std::size_t tried = 0; tried < cgroups.size(); ++tried) {
    const CgroupId cg = cgroups[cursor_++ % cgroups.size()];
    if (store_.memcg().policy(cg).writeback && writeback_.lru_pages(cg) > 0) return cg;
  }
  return std::nullopt;
}

void ShrinkWorker::shrink_over_max() {
  for (const CgroupId cg : store_.memcg().cgroups()) {
    const CgroupPolicy policy = store_.memcg().policy(cg);
    if (policy.max_bytes == 0 || !policy.writeback) continue;
    unsigned empty = 0;
    while (store_.memcg().stats(cg).compressed_bytes > policy.max_bytes && empty < 2) {
      over_max_runs_.fetch_add(1, std::memory_order_relaxed);
      const auto r = writeback_.shrink_memcg(cg, options_.batch);
      written_.fetch_add(r.written, std::memory_order_relaxed);
      empty = r.written == 0 ? empty + 1 : 0;
    }
  }
}

void ShrinkWorker::shrink_to_threshold() {
  const WritebackSide side = store_.writeback_side();
  if (!side.above_accept_threshold()) return;
  // A fragmented pool gives RAM back without any writes.
  if (store_.housekeeping().compact_if_fragmented() && !side.above_accept_threshold()) return;
  runs_.fetch_add(1, std::memory_order_relaxed);
  unsigned failures = 0;
  while (side.above_accept_threshold()) {
    {
      MutexLock guard(lock_);
      if (stop_) return;
    }
    const auto cg = next_cgroup();
    const WritebackResult r = cg ? writeback_.shrink_memcg(*cg, options_.batch) : WritebackResult{};
    written_.fetch_add(r.written, std::memory_order_relaxed);
    // Taking second chances is progress too: the next pass can write.
    if (r.written > 0 || r.rotated > 0) {
      failures = 0;
      continue;
    }
    if (++failures >= options_.max_failures || !cg) {
      // Nothing gives: wait before trying again rather than spin.
      backoffs_.fetch_add(1, std::memory_order_relaxed);
      MutexLock guard(lock_);
      const auto until = std::chrono::steady_clock::now() + options_.backoff;
      while (!stop_)
        if (wakeup_.wait_until(lock_, until) == std::cv_status::timeout) break;
      return;
    }
  }
}

void ShrinkWorker::run() noexcept {
  PageStore::prepare_thread();
  UniqueLock guard(lock_);
  while (!stop_) {
    const auto until = std::chrono::steady_clock::now() + options_.period;
    while (!woken_ && !stop_)
      if (wakeup_.wait_until(lock_, until) == std::cv_status::timeout) break;
    if (stop_) break;
    if (woken_) wakeups_.fetch_add(1, std::memory_order_relaxed);
    woken_ = false;
    guard.unlock();
    liveness::working();
    try {
      shrink_over_max();
      shrink_to_threshold();
    } catch (const std::exception& e) {
      // Only allocation can throw here (the cgroup list); try again next period.
      liveness::error(std::string("shrink worker: ") + e.what());
    }
    liveness::progressed();
    guard.lock();
  }
}

ShrinkWorkerStats ShrinkWorker::stats() const noexcept {
  return {wakeups_.load(std::memory_order_relaxed), runs_.load(std::memory_order_relaxed),
          written_.load(std::memory_order_relaxed), backoffs_.load(std::memory_order_relaxed),
          over_max_runs_.load(std::memory_order_relaxed)};
}

}  // namespace uzswap
