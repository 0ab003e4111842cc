#include "uzswap/common/periodic_worker.h"

#include <utility>

#include "uzswap/common/liveness.h"

namespace uzswap {

void PeriodicWorker::start(std::string name, Options options, std::function<void()> pass) {
  options_ = std::move(options);
  pass_ = std::move(pass);
  thread_ = Thread(std::move(name), [this] { loop(); });
}

void PeriodicWorker::wake() noexcept {
  {
    MutexLock guard(lock_);
    woken_ = true;
  }
  wakeup_.notify_all();
}

void PeriodicWorker::stop() noexcept {
  if (!thread_.joinable()) return;
  {
    MutexLock guard(lock_);
    stopping_.store(true, std::memory_order_relaxed);
  }
  wakeup_.notify_all();
  if (options_.unblock) options_.unblock();
  thread_.join();
}

void PeriodicWorker::loop() {
  if (options_.on_start) options_.on_start();
  bool first = true;
  auto ended = std::chrono::steady_clock::now();
  for (;;) {
    if (!first || !options_.pass_at_start) {
      liveness::waiting();
      if (options_.wait) options_.wait();
      else wait_scheduled(ended);
    }
    first = false;
    if (stopping_.load(std::memory_order_relaxed)) break;
    liveness::working();
    pass_();
    liveness::progressed();
    ended = std::chrono::steady_clock::now();
  }
}

void PeriodicWorker::wait_scheduled(std::chrono::steady_clock::time_point ended) {
  const auto stopping = [this] { return stopping_.load(std::memory_order_relaxed); };
  MutexLock guard(lock_);
  if (options_.min_gap.count() > 0) {
    const auto gap_end = ended + options_.min_gap;
    while (!stopping() && wakeup_.wait_until(lock_, gap_end) == std::cv_status::no_timeout) {
    }
  }
  const auto deadline = ended + options_.period;
  while (!stopping() && !woken_ && wakeup_.wait_until(lock_, deadline) == std::cv_status::no_timeout) {
  }
  woken_ = false;
}

}  // namespace uzswap
