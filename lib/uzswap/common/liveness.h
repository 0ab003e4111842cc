// Liveness: every thread started with uzswap::Thread has a slot in one
// process-wide registry, and says what it is doing, so that a thread that
// died, gave up or got stuck is seen instead of leaving every swap request
// hanging in D state.
//
// A thread reports with three calls, all lock-free and allocation-free (the
// request path makes them on every request):
//   liveness::waiting()    about to block for work (read() on /dev/fuse, an
//                          io_uring wait, a condition variable): healthy
//                          however long, an idle worker is not a stuck one;
//   liveness::working()    took a piece of work;
//   liveness::progressed() finished it (and is waiting again).
// A thread that never reports is "running" and is never called stuck; one
// that meets an error it survives says liveness::error(), one that cannot go
// on says liveness::failed() before it returns. The Thread trampoline marks
// a thread "dead" when an exception escapes its body (instead of
// std::terminate) and "ended" when the body returns.
//
// LivenessMonitor decides, one check() per watchdog tick: a thread is stuck
// once `stuck_checks` checks in a row found it working on the same piece of
// work. Counting checks, not wall time, keeps a paused process (SIGSTOP, a
// cgroup freeze, a debugger) from calling its threads stuck when it resumes:
// no check runs while the process is stopped. Slow is not stuck: a thread
// that finishes a request between two checks has progressed.
//
// The library never logs: the monitor returns what changed, the daemon logs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "uzswap/common/mutex.h"

namespace uzswap {

enum class ThreadState : std::uint8_t {
  running,  // started, has not reported yet (or never does)
  waiting,  // blocked for work: healthy
  working,  // on a piece of work
  ended,    // the body returned
  failed,   // said it cannot go on (liveness::failed), then returned
  dead,     // an exception escaped the body
};
const char* thread_state_name(ThreadState state) noexcept;

// One thread as a snapshot of its slot.
struct ThreadReport {
  unsigned slot = 0;
  std::uint64_t generation = 0;  // tells a reused slot from its earlier thread
  std::string name;
  ThreadState state = ThreadState::running;
  std::uint64_t progress = 0;  // pieces of work finished
  std::uint64_t errors = 0;    // errors met (and survived, unless failed/dead)
  std::string last_error;
  std::chrono::nanoseconds since_progress{0};  // since the last progress (or the start)
  std::chrono::nanoseconds working_for{0};     // on the current piece of work, 0 unless working
};

namespace liveness {

// For the calling thread; no-ops on a thread that has no slot.
void waiting() noexcept;
void working() noexcept;
void progressed() noexcept;
void error(std::string_view what) noexcept;
void failed(std::string_view why) noexcept;

// Every thread that has a slot (started and not yet joined). Allocates: for
// the control path and the watchdog, never the request path.
std::vector<ThreadReport> snapshot();

// Slot management, for Thread: a slot (-1 when the registry is full: the
// thread runs unwatched), taken by the new thread, its end, and its release
// at join.
int enroll(std::string_view name) noexcept;
void adopt(int slot) noexcept;
void finish(int slot, ThreadState how, std::string_view why = {}) noexcept;
void release(int slot) noexcept;

}  // namespace liveness

class LivenessMonitor {
 public:
  explicit LivenessMonitor(unsigned stuck_checks) : stuck_checks_(stuck_checks) {}

  struct Thread {
    ThreadReport report;
    unsigned stalled_checks = 0;  // checks in a row that found it working on the same piece
    bool stuck = false;
  };
  // What changed since the last check, for the log.
  struct Changes {
    std::vector<Thread> newly_stuck;
    std::vector<Thread> unstuck;
    std::vector<Thread> newly_down;  // failed or dead
    std::vector<Thread> new_errors;  // errors grew (the report has the last one)
    unsigned stuck = 0;              // threads stuck now
    unsigned down = 0;               // threads failed or dead now
    unsigned max_stalled_checks = 0;
  };
  Changes check();
  // The threads as of the last check (threads started since then included,
  // with their current report).
  std::vector<Thread> threads() const;
  unsigned stuck_checks() const noexcept { return stuck_checks_.load(std::memory_order_relaxed); }
  void set_stuck_checks(unsigned checks) noexcept { stuck_checks_.store(checks, std::memory_order_relaxed); }

 private:
  std::atomic<unsigned> stuck_checks_;
  mutable Mutex lock_;
  struct Seen {
    unsigned slot;
    std::uint64_t generation;
    std::uint64_t progress;
    std::uint64_t errors;
    ThreadState state;
    unsigned stalled;
    bool stuck;
  };
  std::vector<Seen> seen_ GUARDED_BY(lock_);
};

}  // namespace uzswap
