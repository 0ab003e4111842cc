// What keeps the daemon safe in the reclaim path: locked memory, an OOM score
// that never picks it, I/O-flusher threads, and one instance per name.
#pragma once

#include <string>

#include "uzswap/common/result.h"

namespace uzswap {

// mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT): everything the daemon has
// and will map stays in RAM. ONFAULT locks pages as they are first touched,
// so the pool's large address-space reservation costs nothing until used;
// thread stacks and buffers are touched when made.
Result<> lock_all_memory() noexcept;

// PR_SET_IO_FLUSHER on the calling thread: its allocations do not recurse
// into I/O reclaim. Needs CAP_SYS_RESOURCE.
Result<> set_io_flusher() noexcept;

Result<> set_oom_score_adj(int value) noexcept;

// Online NUMA nodes: one more than the highest in /sys/devices/system/node/online.
unsigned online_numa_nodes() noexcept;
// Parses a kernel cpu/node list such as "0", "0-3" or "0,2-5"; returns the
// highest number plus one, or 0 for text that does not parse.
unsigned parse_node_list_count(const std::string& text) noexcept;

// The systemd watchdog interval (WATCHDOG_USEC, in microseconds) that the
// process `self` must keep, or 0 for none. systemd addresses the watchdog to
// the unit's main process (WATCHDOG_PID), which for uzswapd is the
// supervisor; sd_watchdog_enabled() answers "no" in any other process, so
// the serving process, its child, would never feed it and systemd would
// abort the daemon WatchdogSec after every start. The serving process feeds
// it on its parent's behalf (the unit's NotifyAccess=all lets it): the
// interval holds for `self` when WATCHDOG_PID names `self` or `parent`, or
// is absent. Pure: the caller passes getenv()'s answers.
unsigned long long watchdog_usec_for(const char* watchdog_usec, const char* watchdog_pid, long self,
                                     long parent) noexcept;

// An exclusive flock on a file, held for the life of the object.
class InstanceLock {
 public:
  // Throws std::system_error; EWOULDBLOCK when another process holds it.
  explicit InstanceLock(const std::string& path);
  ~InstanceLock();
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;

  int fd() const noexcept { return fd_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace uzswap
