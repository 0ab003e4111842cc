// uzswapd: parse the configuration, set up logging, then either supervise
// (the process a user or systemd starts) or serve (the process the
// supervisor starts, with the swap area's fds in its environment).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

#include "handover.h"
#include "instance.h"
#include "supervisor.h"
#include "uzswap/reclaim/swap_type.h"

namespace {

// True when stderr is the journal stream systemd connected (JOURNAL_STREAM
// names its device and inode). A child of a service whose stderr was sent
// elsewhere (a test's log file) inherits the variable, not the stream.
bool stderr_is_journal() noexcept {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st{};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

}  // namespace

int main(int argc, char** argv) {
  // The swap type probe a serving process starts (reclaim/swap_type.h).
  if (argc == 4 && std::strcmp(argv[1], uzswap::kSwapTypeProbeArg) == 0)
    uzswap::run_swap_type_probe_child(std::atoi(argv[2]), std::atoi(argv[3]));
  // Asked by a serving process before it hands over to this binary: the
  // state layouts this binary adopts, oldest and newest.
  if (argc == 2 && std::strcmp(argv[1], "--state-layouts") == 0) {
    std::printf("%u %u\n", uzswap::kOldestAdoptableLayout, uzswap::kStateLayoutVersion);
    return 0;
  }
  // The same question as serving processes before layout 3 ask it: they hand
  // over only to a binary that prints their own layout, 2, which this one
  // adopts.
  if (argc == 2 && std::strcmp(argv[1], "--state-layout-version") == 0) {
    std::printf("%u\n", uzswap::kOldestAdoptableLayout);
    return 0;
  }
  const auto parsed = uzswap::parse_daemon_args(std::vector<std::string>(argv, argv + argc));
  if (!parsed) {
    std::fprintf(stderr, "uzswapd: %s\n", parsed.error().c_str());
    return 2;
  }
  if (parsed->exit_now) {
    std::fputs(parsed->output.c_str(), stdout);
    return 0;
  }
  const auto serve_fds = uzswap::parse_serve_fds(std::getenv(uzswap::kServeEnv));
  const std::string role = serve_fds ? "uzswapd" : "uzswapd-supervisor";

  // Under systemd, log to the journal with proper priorities.
  if (stderr_is_journal())
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        role, std::make_shared<spdlog::sinks::systemd_sink_mt>("uzswapd")));
  else
    spdlog::set_default_logger(spdlog::stderr_color_mt(role));
  spdlog::set_level(spdlog::level::from_str(parsed->config.log_level));

  if (geteuid() != 0) {
    spdlog::error("uzswapd must run as root (it mounts, attaches a loop device and calls swapon)");
    return 1;
  }
  if (!serve_fds) {
    uzswap::Supervisor supervisor(parsed->config, std::vector<std::string>(argv, argv + argc));
    return supervisor.run();
  }
  // Signals are taken by the main loop's signalfd: block them before any
  // thread starts, so every thread inherits the mask. SIGPIPE, SIGUSR1 and
  // SIGQUIT never end a process in the reclaim path by accident.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  for (int s : {SIGPIPE, SIGUSR1, SIGUSR2, SIGQUIT}) signal(s, SIG_IGN);

  return uzswap::Instance::run(parsed->config, *serve_fds);
}
