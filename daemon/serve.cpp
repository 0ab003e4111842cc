// The serving process's main loop: signals (SIGTERM/SIGINT stop it after a
// swapoff, SIGHUP hands over), `uzswapctl restart`, and the watchdog tick:
// the liveness check of every thread, integrity errors to the log, the
// remote tier's state, and systemd's status line.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "instance.h"
#include "uzswap/daemon/safety.h"
#include "uzswap/device/swap.h"

namespace uzswap {

namespace {

// One FUSE request served for this long means a stuck worker, not a slow one.
constexpr std::chrono::seconds kStuckRequest{60};

}  // namespace

void Instance::serve() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  // The signals are blocked in every thread (main.cpp): read them from a
  // signalfd, or, if none can be made, take them with sigtimedwait() at each
  // turn, so SIGTERM always stops this process.
  const int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (sfd < 0) spdlog::warn("signalfd: {}: polling for signals instead", std::strerror(errno));
  // Addressed to the supervisor (the unit's main process), kept here.
  const std::uint64_t watchdog_usec =
      watchdog_usec_for(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), getpid(), getppid());
  const bool watchdog = watchdog_usec > 0;
  const auto tick = std::chrono::microseconds(
      watchdog ? std::min<std::uint64_t>(watchdog_usec / 2, 1000000) : 1000000);
  // Stuck = this many checks in a row on one piece of work: kStuckRequest
  // of running time (checks do not run while the process is stopped).
  liveness_.set_stuck_checks(static_cast<unsigned>(
      std::max<std::int64_t>(1, std::chrono::duration_cast<std::chrono::microseconds>(kStuckRequest) / tick)));
  auto next_tick = std::chrono::steady_clock::now() + tick;

  for (;;) {
    pollfd fds[1] = {{sfd, POLLIN, 0}};
    const int ready = poll(fds, 1, 100);
    if (ready < 0 && errno != EINTR) spdlog::warn("poll: {}", std::strerror(errno));
    if (restart_requested_.load()) {
      // uzswapctl restart was answered on the control thread; let the reply
      // leave before this process does.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      leave_for_new_process();
    }
    if (const auto now = std::chrono::steady_clock::now(); now >= next_tick) {
      // One check per tick however long the process was stopped: a pause
      // (SIGSTOP, a cgroup freeze, a debugger) is not progress lost.
      next_tick = now + tick;
      const bool stuck = check_threads();
      log_integrity_errors();
      if (backing_nbd_ != nullptr && backing_nbd_->up() != remote_up_) {
        remote_up_ = !remote_up_;
        if (remote_up_) spdlog::info("remote tier {} is back: writeback resumes", config_.backing_nbd);
        else spdlog::warn("remote tier {} is down ({}): writeback stops, pages stay in RAM; reconnecting",
                          config_.backing_nbd, backing_nbd_->status().last_error);
      }
      if (kernel_nbd_ != nullptr && !nbd_loss_told_) {
        if (const auto lost = kernel_nbd_->lost()) {
          nbd_loss_told_ = true;
          spdlog::critical("{}: the kernel's connection {} is no longer served ({}): its requests wait "
                           "unanswered; restart uzswapd after saving what you can",
                           kernel_nbd_->path(), lost->queue, to_string(lost->end));
        }
      }
      sd_notifyf(0, "%sSTATUS=%s", watchdog && !stuck ? "WATCHDOG=1\n" : "", summary().c_str());
    }
    int signo = 0;
    if (sfd >= 0) {
      signalfd_siginfo info;
      if ((fds[0].revents & POLLIN) && read(sfd, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info)))
        signo = static_cast<int>(info.ssi_signo);
    } else {
      const timespec zero{};
      signo = std::max(0, sigtimedwait(&signals, nullptr, &zero));
    }
    if (signo == 0) continue;
    if (signo == SIGHUP) {
      // systemctl reload: the supervisor passes it on.
      if (const std::string refused = handover(); !refused.empty()) spdlog::error("SIGHUP: {}", refused);
      else leave_for_new_process();
      continue;
    }
    spdlog::info("signal {}: stopping", strsignal(signo));
    if (try_stop()) break;
  }
  if (sfd >= 0) close(sfd);
}

bool Instance::check_threads() {
  // The liveness check (lib/uzswap/common/liveness.h): every thread of this
  // process says whether it waits for work, works, or is gone. The watchdog
  // is fed only while no thread is stuck: slow is fine (thrashing makes
  // every request slow), one piece of work for kStuckRequest is not.
  const LivenessMonitor::Changes c = liveness_.check();
  const auto seconds = [](std::chrono::nanoseconds d) {
    return std::chrono::duration_cast<std::chrono::duration<double>>(d).count();
  };
  for (const auto& t : c.new_errors)
    spdlog::warn("thread {}: {} ({} error(s) so far)", t.report.name, t.report.last_error, t.report.errors);
  for (const auto& t : c.unstuck) spdlog::info("thread {} makes progress again", t.report.name);
  for (const auto& t : c.newly_stuck)
    spdlog::critical("thread {} has been on one piece of work for {:.0f} s (no progress in {} checks): "
                     "not feeding the watchdog", t.report.name, seconds(t.report.working_for), t.stalled_checks);
  for (const auto& t : c.newly_down)
    spdlog::critical("thread {} {}: {}", t.report.name, thread_state_name(t.report.state),
                     t.report.last_error.empty() ? "no reason given" : t.report.last_error);
  // What cannot be recovered in place: a thread gone, a FUSE worker or ring
  // thread ended while the connection should be serving, a thread stuck for
  // twice the limit. A fresh serving process takes over (the supervisor
  // starts it; requests in flight are sent to it again).
  const FuseWorkers::Health health = workers_ ? workers_->health() : FuseWorkers::Health{};
  const unsigned rings_ended = uring_ ? uring_->exited() : 0;
  std::string why;
  if (c.down > 0) why = fmt::format("{} thread(s) failed or died", c.down);
  else if (health.exited > 0) why = fmt::format("{} FUSE worker(s) ended unexpectedly", health.exited);
  else if (rings_ended > 0) why = fmt::format("{} FUSE ring thread(s) ended unexpectedly", rings_ended);
  else if (c.max_stalled_checks >= 2 * liveness_.stuck_checks())
    why = fmt::format("a thread made no progress in {} checks", c.max_stalled_checks);
  if (!why.empty()) {
    spdlog::critical("{}: handing over to a new serving process", why);
    leave_for_new_process();
  }
  return c.stuck > 0;
}

void Instance::log_integrity_errors() {
  // The request path notes damaged pages; the log line is written here.
  const IntegrityLog& log = store_->integrity_log();
  const std::uint64_t count = log.count();
  if (count == integrity_logged_) return;
  const std::uint64_t from = std::max(integrity_logged_, count - std::min<std::uint64_t>(count, IntegrityLog::kKept));
  if (from > integrity_logged_)
    spdlog::error("integrity: {} more damaged page(s) not listed", from - integrity_logged_);
  for (std::uint64_t n = from; n < count; ++n) {
    const auto [slot, from_file] = log.at(n);
    spdlog::error("integrity: the page in slot {} came back damaged from the {} (checksum mismatch): "
                  "answered with an I/O error, never with wrong bytes",
                  slot, from_file ? "backing file (offset " + std::to_string(slot * kPageSize) + ")" : "pool");
  }
  integrity_logged_ = count;
}

bool Instance::try_stop() {
  sd_notify(0, "STOPPING=1\nSTATUS=swapoff: bringing pages back into RAM");
  if (swap_on_) {
    if (auto off = swap_off(swap_device()); !off) {
      // Every page stays served; the operator can free memory and try again.
      spdlog::error("swapoff {} failed: {}; still serving, send SIGTERM again to retry",
                    swap_device(), off.error().message());
      sd_notifyf(0, "READY=1\nSTATUS=swapoff failed (%s), still serving", off.error().message().c_str());
      return false;
    }
    swap_on_ = false;
  }
  return true;
}

std::string Instance::handover() {
  // The binary the supervisor will run next must take this state.
  const char* next = std::getenv(kBinaryEnv);
  if (next == nullptr) return "no supervisor to hand over to";
  std::string out;
  if (FILE* p = popen((std::string("'") + next + "' --state-layouts 2>&1").c_str(), "r")) {
    char buf[128];
    while (std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
    if (pclose(p) != 0) out.clear();
  }
  // "OLDEST NEWEST": the layouts it adopts (a binary older than that
  // question answers nothing useful, and is refused).
  unsigned oldest = 0, newest = 0;
  const unsigned mine = state_->header().layout_version;
  if (std::sscanf(out.c_str(), "%u %u", &oldest, &newest) != 2 || mine < oldest || mine > newest) {
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return std::string(next) + " adopts state layouts " + (out.empty() ? "(unknown)" : out) +
           ", this swap area's is " + std::to_string(mine) + ": it cannot take over; still serving";
  }
  return "";
}

void Instance::leave_for_new_process() {
  spdlog::info("handing over to a new serving process");
  sd_notify(0, "RELOADING=1\nSTATUS=handing over to a new serving process");
  // Everything is crash-consistent: leaving is dying on purpose. Requests in
  // flight are sent again to the next process.
  std::fflush(nullptr);
  _exit(kExitHandover);
}

}  // namespace uzswap
