// The pool-limit shrink worker (zswap's shrink_worker with zswap_next_shrink).
//
// Woken when the pool reaches its limit (and once a second anyway), it first
// shrinks cgroups that are over their own maximum, then writes back cgroup by
// cgroup, round robin from a cursor kept between runs, until the pool is under
// the accept threshold. Cgroups with writeback off are skipped. After 16
// consecutive cgroups that gave nothing back it backs off for a while, like
// zswap's MAX_RECLAIM_RETRIES.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>

#include "uzswap/common/mutex.h"
#include "uzswap/common/thread.h"
#include "uzswap/writeback/shrink_memcg.h"

namespace uzswap {

struct ShrinkWorkerOptions {
  std::uint64_t batch = 256;    // pages per shrink_memcg call
  unsigned max_failures = 16;   // consecutive empty passes before backing off
  std::chrono::milliseconds backoff{1000};
  std::chrono::milliseconds period{1000};
};

struct ShrinkWorkerStats {
  std::uint64_t wakeups = 0;
  std::uint64_t runs = 0;          // times the pool was above the threshold
  std::uint64_t written = 0;       // pages written back by the worker
  std::uint64_t backoffs = 0;
  std::uint64_t over_max_runs = 0; // cgroup maximum enforcements
};

class ShrinkWorker {
 public:
  ShrinkWorker(Writeback& writeback, ShrinkWorkerOptions options);  // starts the thread
  ~ShrinkWorker();                                              // stops and joins
  ShrinkWorker(const ShrinkWorker&) = delete;
  ShrinkWorker& operator=(const ShrinkWorker&) = delete;

  // Asks for a run. Callable from the store path: takes a mutex, never
  // allocates.
  void wake() noexcept;

  ShrinkWorkerStats stats() const noexcept;

 private:
  void run() noexcept;
  void shrink_over_max();
  void shrink_to_threshold();
  std::optional<CgroupId> next_cgroup();

  Writeback& writeback_;
  PageStore& store_;
  ShrinkWorkerOptions options_;
  Mutex lock_;
  CondVar wakeup_;
  bool woken_ GUARDED_BY(lock_) = false;
  bool stop_ GUARDED_BY(lock_) = false;
  std::size_t cursor_ = 0;  // the worker thread's own
  std::atomic<std::uint64_t> wakeups_{0}, runs_{0}, written_{0}, backoffs_{0}, over_max_runs_{0};
  Thread thread_;
};

}  // namespace uzswap
