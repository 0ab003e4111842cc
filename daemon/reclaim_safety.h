// What both uzswapd processes do first: they are in the reclaim path of
// every process on the machine, the supervisor because it holds the swap
// area and the serving process because it serves it.
#pragma once

#include <stdexcept>
#include <string>

#include <spdlog/spdlog.h>

#include "uzswap/daemon/safety.h"

namespace uzswap {

// A start-up step that failed: the message is what the user reads.
struct StartError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Locks all memory (throws StartError) and asks never to be the OOM
// killer's pick (a warning where CAP_SYS_RESOURCE is missing; the unit's
// OOMScoreAdjust does it for us there).
inline void enter_reclaim_path() {
  if (auto locked = lock_all_memory(); !locked)
    throw StartError("mlockall failed: " + locked.error().message() + " (run as root, LimitMEMLOCK=infinity)");
  if (auto adjusted = set_oom_score_adj(-1000); !adjusted)
    spdlog::warn("cannot set oom_score_adj to -1000 ({}): the OOM killer may pick uzswapd; "
                 "run it with CAP_SYS_RESOURCE or OOMScoreAdjust=-1000",
                 adjusted.error().message());
}

}  // namespace uzswap
