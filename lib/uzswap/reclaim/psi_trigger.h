// PSI triggers (Documentation/accounting/psi.rst): "some <stall> <window>"
// written to a pressure file, one trigger per open file; poll() reports
// POLLPRI when the stall is exceeded within a window, and POLLERR once the
// cgroup is gone.
#pragma once

#include <cstdint>
#include <string>

#include "uzswap/common/result.h"

namespace uzswap {

class PsiTrigger {
 public:
  // Unprivileged triggers (no CAP_SYS_RESOURCE) must use windows that are
  // multiples of 2 s.
  static constexpr std::uint64_t kUnprivilegedWindowUs = 2'000'000;

  // Registers a "some" trigger on `path`. If the kernel refuses the window
  // (EINVAL, or EPERM) and it is not a multiple of 2 s, retries once with the
  // nearest multiple of 2 s, scaling the stall with it, and sets
  // `fell_back`.
  static Result<PsiTrigger> open(const std::string& path, std::uint64_t stall_us, std::uint64_t window_us,
                                 bool& fell_back);
  PsiTrigger(PsiTrigger&& other) noexcept;
  PsiTrigger& operator=(PsiTrigger&& other) noexcept;
  ~PsiTrigger();

  int fd() const noexcept { return fd_; }
  std::uint64_t stall_us() const noexcept { return stall_us_; }
  std::uint64_t window_us() const noexcept { return window_us_; }

  enum class Event { none, pressure, gone };
  // Waits up to timeout_ms (-1 = forever) for the next event.
  Event wait(int timeout_ms) const noexcept;

 private:
  PsiTrigger(int fd, std::uint64_t stall, std::uint64_t window)
      : fd_(fd), stall_us_(stall), window_us_(window) {}
  int fd_ = -1;
  std::uint64_t stall_us_ = 0;
  std::uint64_t window_us_ = 0;
};

}  // namespace uzswap
