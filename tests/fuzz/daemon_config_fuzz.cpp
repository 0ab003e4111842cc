// uzswapd's command line and configuration file, as parse_daemon_args()
// reads them. The input is the file's text, then after a NUL byte the
// arguments, NUL-separated. Whatever it is: a configuration or a one-line
// error, never a crash, an exception or a hang.
//
// The file lives in a memfd, named through /proc/self/fd, so no run touches
// the disk. Arguments naming another config file are dropped: the harness
// must not read /dev/zero or a fifo.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "uzswap/daemon/config.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

int config_fd() {
  static const int fd = memfd_create("uzswapd.conf", MFD_CLOEXEC);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string_view file = input.substr(0, nul);

  const int fd = config_fd();
  check(fd >= 0 && ftruncate(fd, 0) == 0);
  check(pwrite(fd, file.data(), file.size(), 0) == static_cast<ssize_t>(file.size()));

  std::vector<std::string> args = {"uzswapd", "--config", "/proc/self/fd/" + std::to_string(fd)};
  if (nul != std::string_view::npos) {
    std::string_view rest = input.substr(nul + 1);
    while (args.size() < 24) {
      const std::size_t end = rest.find('\0');
      const std::string_view arg = rest.substr(0, end);
      if (arg.rfind("--config", 0) != 0 && arg.rfind("--c", 0) != 0) args.emplace_back(arg);
      if (end == std::string_view::npos) break;
      rest.remove_prefix(end + 1);
    }
  }
  const auto parsed = uzswap::parse_daemon_args(args);
  if (!parsed) {
    check(!parsed.error().empty());
  } else if (!parsed->exit_now) {
    const uzswap::DaemonConfig& c = parsed->config;
    check(uzswap::valid_instance_name(c.name));
    check(c.size_bytes % 4096 == 0 && c.size_bytes >= (1u << 20));
    check(c.max_pool_percent >= 1 && c.max_pool_percent <= 90);
    check(c.psi_stall_ms < c.psi_window_ms);
  }
  return 0;
}
