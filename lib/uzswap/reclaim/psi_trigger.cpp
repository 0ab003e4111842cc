#include "uzswap/reclaim/psi_trigger.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <utility>

namespace uzswap {

namespace {

// One attempt: open, write the trigger with its NUL, keep the fd.
Result<int> register_trigger(const std::string& path, std::uint64_t stall, std::uint64_t window) {
  const int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return failure(errno_error());
  const std::string trigger = "some " + std::to_string(stall) + " " + std::to_string(window);
  if (write(fd, trigger.c_str(), trigger.size() + 1) < 0) {
    const std::error_code error = errno_error();
    close(fd);
    return failure(error);
  }
  return fd;
}

}  // namespace

Result<PsiTrigger> PsiTrigger::open(const std::string& path, std::uint64_t stall_us, std::uint64_t window_us,
                                    bool& fell_back) {
  fell_back = false;
  auto fd = register_trigger(path, stall_us, window_us);
  if (fd) return PsiTrigger(*fd, stall_us, window_us);
  const bool refused = fd.error() == std::errc::invalid_argument || fd.error() == std::errc::operation_not_permitted;
  if (!refused || window_us % kUnprivilegedWindowUs == 0) return failure(fd.error());
  // Without CAP_SYS_RESOURCE only 2 s multiples are accepted: keep the
  // stall's share of the window.
  const std::uint64_t window =
      std::max<std::uint64_t>(kUnprivilegedWindowUs,
                              (window_us + kUnprivilegedWindowUs / 2) / kUnprivilegedWindowUs *
                                  kUnprivilegedWindowUs);
  const std::uint64_t stall = std::max<std::uint64_t>(1, stall_us * window / window_us);
  fd = register_trigger(path, stall, window);
  if (!fd) return failure(fd.error());
  fell_back = true;
  return PsiTrigger(*fd, stall, window);
}

PsiTrigger::PsiTrigger(PsiTrigger&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), stall_us_(other.stall_us_), window_us_(other.window_us_) {}

PsiTrigger& PsiTrigger::operator=(PsiTrigger&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    stall_us_ = other.stall_us_;
    window_us_ = other.window_us_;
  }
  return *this;
}

PsiTrigger::~PsiTrigger() {
  if (fd_ >= 0) close(fd_);
}

PsiTrigger::Event PsiTrigger::wait(int timeout_ms) const noexcept {
  pollfd p{fd_, POLLPRI, 0};
  const int n = poll(&p, 1, timeout_ms);
  if (n <= 0) return Event::none;
  if (p.revents & (POLLERR | POLLNVAL | POLLHUP)) return Event::gone;
  if (p.revents & POLLPRI) return Event::pressure;
  return Event::none;
}

}  // namespace uzswap
