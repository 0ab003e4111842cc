#include "uzswap/reclaim/pressure_watcher.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <system_error>

#include "uzswap/common/result.h"
#include "uzswap/common/text_file.h"
#include "uzswap/reclaim/kernel_files.h"

namespace uzswap {

namespace {

// epoll keys: the two fixed sources, then one per tracked cgroup's trigger.
constexpr std::uint64_t kWakeKey = UINT64_MAX;
constexpr std::uint64_t kInotifyKey = UINT64_MAX - 1;
constexpr std::uint64_t kSystemKey = UINT64_MAX - 2;
constexpr std::int64_t kRereadMs = 1000;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Result<> watch_fd(int epoll, int fd, std::uint64_t key, std::uint32_t events) noexcept {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) != 0) return failure(errno_error());
  return {};
}

}  // namespace

PressureWatcher::PressureWatcher(PressureOptions options) : options_(std::move(options)) {
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  inotify_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  Result<> watched;
  if (epoll_ < 0 || inotify_ < 0 || wake_ < 0) watched = failure(errno_error());
  if (watched) watched = watch_fd(epoll_, inotify_, kInotifyKey, EPOLLIN);
  if (watched) watched = watch_fd(epoll_, wake_, kWakeKey, EPOLLIN);
  if (!watched) {
    for (int fd : {epoll_, inotify_, wake_})
      if (fd >= 0) close(fd);
    throw std::system_error(watched.error(), "pressure watcher (epoll, inotify, eventfd)");
  }
  if (!options_.system_psi.empty()) {
    bool fell_back = false;
    auto trigger = PsiTrigger::open(options_.system_psi, options_.stall_us, options_.window_us, fell_back);
    if (trigger) {
      if (auto added = watch_fd(epoll_, trigger->fd(), kSystemKey, EPOLLPRI); !added) {
        for (int fd : {epoll_, inotify_, wake_}) close(fd);
        throw std::system_error(added.error(), "pressure watcher: epoll_ctl " + options_.system_psi);
      }
      status_.system_trigger = true;
      status_.fell_back = fell_back;
      status_.stall_us = trigger->stall_us();
      status_.window_us = trigger->window_us();
      system_ = std::move(*trigger);
    } else {
      status_.system_error = options_.system_psi + ": " + trigger.error().message();
    }
  }
}

PressureWatcher::~PressureWatcher() {
  {
    MutexLock guard(lock_);
    tracked_.clear();
  }
  system_.reset();
  for (int fd : {epoll_, inotify_, wake_})
    if (fd >= 0) close(fd);
  epoll_ = inotify_ = wake_ = -1;
}

void PressureWatcher::untrack_locked(Tracked& t) {
  if (t.watch >= 0) {
    inotify_rm_watch(inotify_, t.watch);
    --status_.events_files;
  }
  if (t.trigger) {
    epoll_ctl(epoll_, EPOLL_CTL_DEL, t.trigger->fd(), nullptr);
    --status_.cgroup_triggers;
  }
}

Result<> PressureWatcher::track(const std::vector<std::pair<CgroupId, std::string>>& cgroups) {
  MutexLock guard(lock_);
  std::map<CgroupId, std::string> wanted(cgroups.begin(), cgroups.end());
  for (auto it = tracked_.begin(); it != tracked_.end();) {
    const auto w = wanted.find(it->first);
    if (w == wanted.end() || w->second != it->second.dir) {
      untrack_locked(it->second);
      it = tracked_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<PressureEvent> ignored;
  // A cgroup whose trigger the kernel refuses to watch (epoll_ctl: ENOMEM,
  // ENOSPC) is left untracked and tried again at the next call; the others
  // are tracked all the same, then the first error is returned for the
  // caller to report.
  Result<> result;
  for (const auto& [id, dir] : wanted) {
    if (tracked_.contains(id)) continue;
    Tracked& t = tracked_[id];
    t.dir = dir;
    const std::string events = dir + "/memory.events";
    t.watch = inotify_add_watch(inotify_, events.c_str(), IN_MODIFY);
    if (t.watch >= 0) ++status_.events_files;
    read_events_locked(id, t, ignored);  // the baseline
    if (options_.cgroup_psi && status_.cgroup_triggers < options_.max_cgroup_triggers) {
      bool fell_back = false;
      auto trigger = PsiTrigger::open(dir + "/memory.pressure", options_.stall_us, options_.window_us, fell_back);
      if (trigger) {
        if (auto added = watch_fd(epoll_, trigger->fd(), id, EPOLLPRI); !added) {
          if (result) result = failure(added.error());
          untrack_locked(t);
          tracked_.erase(id);
          continue;
        }
        t.trigger = std::move(*trigger);
        ++status_.cgroup_triggers;
        status_.fell_back |= fell_back;
      }
    }
  }
  return result;
}

void PressureWatcher::read_events_locked(CgroupId id, Tracked& t, std::vector<PressureEvent>& out) {
  const auto text = read_text_file(t.dir + "/memory.events");
  if (!text || text->empty()) return;  // gone, or no memory controller
  const auto events = parse_memory_events(*text);
  const auto get = [&](const char* key) {
    const auto it = events.find(key);
    return it == events.end() ? std::uint64_t{0} : it->second;
  };
  const std::uint64_t high_max = get("high") + get("max");
  if (t.have_baseline && high_max > t.high_max) {
    out.push_back({PressureEvent::Kind::memory_events, id, high_max - t.high_max});
    ++status_.memory_events;
  }
  t.have_baseline = true;
  t.high_max = high_max;
}

std::vector<PressureEvent> PressureWatcher::poll(int timeout_ms) {
  std::vector<PressureEvent> out;
  epoll_event events[32];
  const int n = epoll_wait(epoll_, events, 32, timeout_ms);
  MutexLock guard(lock_);
  bool reread = false;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t key = events[i].data.u64;
    if (key == kWakeKey) {
      std::uint64_t value;
      (void)!read(wake_, &value, sizeof value);
    } else if (key == kInotifyKey) {
      // Which file changed matters less than not missing one: drain the
      // queue and re-read every tracked memory.events.
      alignas(inotify_event) char buffer[4096];
      while (read(inotify_, buffer, sizeof buffer) > 0) {
      }
      reread = true;
    } else if (key == kSystemKey) {
      if (events[i].events & EPOLLPRI) {
        out.push_back({PressureEvent::Kind::psi, std::nullopt, 0});
        ++status_.psi_events;
      }
    } else {
      const auto it = tracked_.find(static_cast<CgroupId>(key));
      if (it == tracked_.end()) continue;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) {
        // The cgroup is gone: stop watching; the attribution removes it.
        untrack_locked(it->second);
        it->second.trigger.reset();
        it->second.watch = -1;
      } else if (events[i].events & EPOLLPRI) {
        out.push_back({PressureEvent::Kind::psi, it->first, 0});
        ++status_.cgroup_psi_events;
      }
    }
  }
  const std::int64_t now = now_ms();
  if (reread || now - last_reread_ms_ >= kRereadMs) {
    last_reread_ms_ = now;
    for (auto& [id, t] : tracked_) read_events_locked(id, t, out);
  }
  return out;
}

void PressureWatcher::interrupt() noexcept {
  const std::uint64_t one = 1;
  (void)!write(wake_, &one, sizeof one);
}

PressureStatus PressureWatcher::status() const {
  MutexLock guard(lock_);
  return status_;
}

}  // namespace uzswap
