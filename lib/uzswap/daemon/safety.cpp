#include "uzswap/daemon/safety.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "uzswap/common/text_file.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif

namespace uzswap {

Result<> lock_all_memory() noexcept {
  // The system call itself, not libc's wrapper: AddressSanitizer and
  // ThreadSanitizer replace mlockall() with a no-op, and a daemon whose
  // pages can be swapped out swaps itself out through itself and hangs
  // (seen under a memory cgroup's limit in tests/e2e/self_pressure.sh).
  // MCL_ONFAULT locks only what is touched, so a sanitizer's shadow
  // reservation costs nothing until used. Release builds: the same call.
  if (syscall(SYS_mlockall, MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0) return failure(errno_error());
  return {};
}

Result<> set_io_flusher() noexcept {
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0) return failure(errno_error());
  return {};
}

Result<> set_oom_score_adj(int value) noexcept {
  return write_text_file("/proc/self/oom_score_adj", std::to_string(value));
}

unsigned parse_node_list_count(const std::string& text) noexcept {
  unsigned highest = 0;
  bool any = false;
  std::istringstream in(text);
  std::string range;
  while (std::getline(in, range, ',')) {
    while (!range.empty() && (range.back() == '\n' || range.back() == ' ')) range.pop_back();
    if (range.empty()) continue;
    const auto dash = range.find('-');
    const std::string last = dash == std::string::npos ? range : range.substr(dash + 1);
    // At most 4 digits: std::stoul throws past ULONG_MAX, in a noexcept
    // function (found by tests/fuzz/kernel_files_fuzz.cpp).
    if (last.empty() || last.size() > 4 || last.find_first_not_of("0123456789") != std::string::npos)
      return 0;
    if (dash != std::string::npos &&
        (dash == 0 || range.substr(0, dash).find_first_not_of("0123456789") != std::string::npos))
      return 0;
    const unsigned long v = std::stoul(last);
    if (v > 4096) return 0;
    highest = std::max(highest, static_cast<unsigned>(v));
    any = true;
  }
  return any ? highest + 1 : 0;
}

unsigned online_numa_nodes() noexcept {
  std::ifstream f("/sys/devices/system/node/online");
  std::string text;
  std::getline(f, text);
  const unsigned n = parse_node_list_count(text);
  return n == 0 ? 1 : n;
}

unsigned long long watchdog_usec_for(const char* watchdog_usec, const char* watchdog_pid, long self,
                                     long parent) noexcept {
  const auto number = [](const char* text) -> unsigned long long {
    if (text == nullptr || *text == '\0') return 0;
    unsigned long long v = 0;
    for (const char* c = text; *c != '\0'; ++c) {
      if (*c < '0' || *c > '9' || v > 1'000'000'000'000'000ULL) return 0;
      v = v * 10 + static_cast<unsigned>(*c - '0');
    }
    return v;
  };
  const unsigned long long usec = number(watchdog_usec);
  if (usec == 0) return 0;
  if (watchdog_pid == nullptr) return usec;
  const unsigned long long pid = number(watchdog_pid);
  return pid != 0 && (pid == static_cast<unsigned long long>(self) || pid == static_cast<unsigned long long>(parent))
             ? usec
             : 0;
}

InstanceLock::InstanceLock(const std::string& path) : path_(path) {
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    const std::error_code error = errno_error();
    throw std::system_error(error, "open " + path);
  }
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::error_code error = errno_error();
    close(fd_);
    fd_ = -1;
    throw std::system_error(error, "lock " + path);
  }
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd_, 0) == 0) (void)!write(fd_, pid.data(), pid.size());
}

InstanceLock::~InstanceLock() {
  if (fd_ < 0) return;
  unlink(path_.c_str());  // still ours: we hold the lock
  close(fd_);
}

}  // namespace uzswap
