// uzswapd: parse the configuration, set up logging, run one instance.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

#include "instance.h"

int main(int argc, char** argv) {
  const auto parsed = uzswap::parse_daemon_args(std::vector<std::string>(argv, argv + argc));
  if (!parsed) {
    std::fprintf(stderr, "uzswapd: %s\n", parsed.error().c_str());
    return 2;
  }
  if (parsed->exit_now) {
    std::fputs(parsed->output.c_str(), stdout);
    return 0;
  }

  // Under systemd, log to the journal with proper priorities.
  if (std::getenv("JOURNAL_STREAM") != nullptr)
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        "uzswapd", std::make_shared<spdlog::sinks::systemd_sink_mt>("uzswapd")));
  else
    spdlog::set_default_logger(spdlog::stderr_color_mt("uzswapd"));
  spdlog::set_level(spdlog::level::from_str(parsed->config.log_level));

  if (geteuid() != 0) {
    spdlog::error("uzswapd must run as root (it mounts, attaches a loop device and calls swapon)");
    return 1;
  }
  // Signals are taken by the main loop's signalfd: block them before any
  // thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  uzswap::Instance instance(parsed->config);
  return instance.run();
}
