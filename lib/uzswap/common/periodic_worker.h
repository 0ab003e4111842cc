// A background thread that runs one pass of work at a time until stopped:
// the daemon's wipe, reserve-refill and attribution threads. By default the
// first pass runs at once and each next one `period` after the last ended,
// or sooner when wake() is called, but never sooner than `min_gap` after it.
// A worker whose work comes from an event it does not own (a futex of the
// pool) gives `wait` in place of that schedule, and `unblock`, which makes a
// wait under way return.
//
// The thread (a uzswap::Thread) reports to the liveness registry: working
// during a pass, waiting between passes. An exception that escapes a pass
// ends the thread, marked dead there (thread.h).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "uzswap/common/mutex.h"
#include "uzswap/common/thread.h"

namespace uzswap {

class PeriodicWorker {
 public:
  struct Options {
    std::chrono::nanoseconds period = std::chrono::seconds(1);
    std::chrono::nanoseconds min_gap{0};  // between passes, however early wake() comes
    std::function<void()> on_start;       // on the thread, before anything else
    // Both or neither: blocks until the next pass is due, in place of the
    // schedule above (period, min_gap and wake() then do nothing) ...
    std::function<void()> wait;
    // ... and makes a wait() under way, or the next one, return at once.
    std::function<void()> unblock;
    bool pass_at_start = true;  // false: wait before the first pass too
  };

  // Nothing runs until start(); wake() and stop() are harmless before it.
  PeriodicWorker() = default;
  ~PeriodicWorker() { stop(); }
  PeriodicWorker(const PeriodicWorker&) = delete;
  PeriodicWorker& operator=(const PeriodicWorker&) = delete;

  // Starts the thread. Once only. Throws std::system_error.
  void start(std::string name, Options options, std::function<void()> pass);

  // Asks for the next pass now (still min_gap after the last one). A wake-up
  // during a pass is kept for after it. Any thread, any time.
  void wake() noexcept;

  // Lets the pass under way finish, ends the thread and joins it. From any
  // thread but the worker's own; idempotent.
  void stop() noexcept;

  bool running() const noexcept { return thread_.joinable(); }

 private:
  void loop();
  // The default wait: until min_gap and then period after `ended`, or wake().
  void wait_scheduled(std::chrono::steady_clock::time_point ended);

  Options options_;
  std::function<void()> pass_;
  std::atomic<bool> stopping_{false};
  Mutex lock_;
  CondVar wakeup_;
  bool woken_ GUARDED_BY(lock_) = false;
  Thread thread_;
};

}  // namespace uzswap
