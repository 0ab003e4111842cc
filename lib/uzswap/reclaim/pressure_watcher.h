// The pressure signals of the machine and of tracked cgroups, on one epoll:
// - PSI triggers (PsiTrigger) on the machine's /proc/pressure/memory and on
//   each tracked cgroup's memory.pressure: POLLPRI = the stall was exceeded
//   within the window, POLLERR = the cgroup is gone.
// - Each tracked cgroup's memory.events, watched with inotify (the kernel
//   reports IN_MODIFY when a counter moves; so does a write to a plain file
//   in a test tree) and re-read at least once a second as a fallback. Keys
//   are parsed by name; an increment of high + max is reported with its
//   size. The first read of a file is the baseline; a counter that went
//   down (a new cgroup under an old path) starts a new baseline.
//
// Cgroups are known by id; track() takes the full set each time (the
// attribution's view of the tree). A file that cannot be opened or read
// means the cgroup is gone or lacks the controller: it is skipped, never an
// error.
//
// Threading: poll() runs on one thread (the watcher's); track(), interrupt()
// and status() may be called from others. lock_ guards the tracked set.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "uzswap/common/mutex.h"
#include "uzswap/common/result.h"
#include "uzswap/lru/list_lru.h"
#include "uzswap/reclaim/psi_trigger.h"

namespace uzswap {

struct PressureOptions {
  std::string system_psi = "/proc/pressure/memory";  // empty = no machine trigger
  std::uint64_t stall_us = 100'000;
  std::uint64_t window_us = 1'000'000;
  bool cgroup_psi = true;             // a trigger on each tracked cgroup's memory.pressure
  unsigned max_cgroup_triggers = 64;  // each costs the kernel a poll timer
};

struct PressureEvent {
  enum class Kind { psi, memory_events };
  Kind kind = Kind::psi;
  std::optional<CgroupId> cgroup;  // nullopt = the machine
  std::uint64_t increment = 0;     // memory_events: high + max increment
};

struct PressureStatus {
  bool system_trigger = false;  // the machine's PSI trigger is registered
  std::string system_error;     // why not, if not
  bool fell_back = false;       // a window was raised to a 2 s multiple
  std::uint64_t stall_us = 0, window_us = 0;  // as registered
  unsigned cgroup_triggers = 0;
  unsigned events_files = 0;    // memory.events files being watched
  std::uint64_t psi_events = 0, cgroup_psi_events = 0, memory_events = 0;
};

class PressureWatcher {
 public:
  explicit PressureWatcher(PressureOptions options);  // throws std::system_error (epoll, inotify)
  ~PressureWatcher();
  PressureWatcher(const PressureWatcher&) = delete;
  PressureWatcher& operator=(const PressureWatcher&) = delete;

  // Tracks exactly these cgroups: (id, absolute directory). A cgroup whose
  // trigger the kernel refused to watch (epoll_ctl) stays untracked, to be
  // tried again at the next call; the first such error is returned.
  Result<> track(const std::vector<std::pair<CgroupId, std::string>>& cgroups);
  // Waits up to timeout_ms for signals and returns what arrived (maybe nothing).
  std::vector<PressureEvent> poll(int timeout_ms);
  // Makes a poll() in progress return.
  void interrupt() noexcept;
  PressureStatus status() const;

 private:
  struct Tracked {
    std::string dir;
    std::optional<PsiTrigger> trigger;
    int watch = -1;                 // inotify watch descriptor of memory.events
    bool have_baseline = false;
    std::uint64_t high_max = 0;     // high + max at the last read
  };
  void read_events_locked(CgroupId id, Tracked& t, std::vector<PressureEvent>& out) REQUIRES(lock_);
  void untrack_locked(Tracked& t) REQUIRES(lock_);

  PressureOptions options_;
  int epoll_ = -1, inotify_ = -1, wake_ = -1;
  std::optional<PsiTrigger> system_;
  mutable Mutex lock_;
  std::map<CgroupId, Tracked> tracked_ GUARDED_BY(lock_);
  PressureStatus status_ GUARDED_BY(lock_);
  std::int64_t last_reread_ms_ = 0;  // poll()'s thread only
};

}  // namespace uzswap
