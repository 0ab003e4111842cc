#include "uzswap/common/liveness.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#include "uzswap/common/mutex.h"

namespace uzswap {

namespace {

constexpr unsigned kSlots = 512;

std::int64_t now_ns() noexcept {
  return std::chrono::steady_clock::now().time_since_epoch().count();
}

// One thread's slot. The counters are relaxed atomics written by their
// thread only; the texts (name, last error) are written under text_lock.
struct Slot {
  std::atomic<bool> in_use{false};
  std::atomic<std::uint64_t> generation{0};
  std::atomic<std::uint8_t> state{0};
  std::atomic<std::uint64_t> progress{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::int64_t> last_progress_ns{0};
  std::atomic<std::int64_t> working_since_ns{0};
  Mutex text_lock;
  char name[16] GUARDED_BY(text_lock) = {};
  char last_error[128] GUARDED_BY(text_lock) = {};

  void set_error(std::string_view what) noexcept {
    MutexLock guard(text_lock);
    const std::size_t n = std::min(what.size(), sizeof(last_error) - 1);
    std::memcpy(last_error, what.data(), n);
    last_error[n] = '\0';
  }
};

struct Registry {
  Mutex lock;  // enroll and release; snapshot reads in_use without it
  std::array<Slot, kSlots> slots;
};

Registry& registry() noexcept {
  static Registry r;
  return r;
}

thread_local int t_slot = -1;

Slot* mine() noexcept { return t_slot < 0 ? nullptr : &registry().slots[static_cast<unsigned>(t_slot)]; }

void set_state(Slot& s, ThreadState state) noexcept {
  s.state.store(static_cast<std::uint8_t>(state), std::memory_order_relaxed);
}

}  // namespace

const char* thread_state_name(ThreadState state) noexcept {
  switch (state) {
    case ThreadState::running: return "running";
    case ThreadState::waiting: return "waiting";
    case ThreadState::working: return "working";
    case ThreadState::ended: return "ended";
    case ThreadState::failed: return "failed";
    case ThreadState::dead: return "dead";
  }
  return "unknown";
}

namespace liveness {

void waiting() noexcept {
  if (Slot* s = mine()) {
    s->working_since_ns.store(0, std::memory_order_relaxed);
    set_state(*s, ThreadState::waiting);
  }
}

void working() noexcept {
  if (Slot* s = mine()) {
    s->working_since_ns.store(now_ns(), std::memory_order_relaxed);
    set_state(*s, ThreadState::working);
  }
}

void progressed() noexcept {
  if (Slot* s = mine()) {
    s->progress.fetch_add(1, std::memory_order_relaxed);
    s->last_progress_ns.store(now_ns(), std::memory_order_relaxed);
    s->working_since_ns.store(0, std::memory_order_relaxed);
    set_state(*s, ThreadState::waiting);
  }
}

void error(std::string_view what) noexcept {
  if (Slot* s = mine()) {
    s->set_error(what);
    s->errors.fetch_add(1, std::memory_order_relaxed);
  }
}

void failed(std::string_view why) noexcept {
  if (Slot* s = mine()) {
    s->set_error(why);
    s->errors.fetch_add(1, std::memory_order_relaxed);
    set_state(*s, ThreadState::failed);
  }
}

int enroll(std::string_view name) noexcept {
  Registry& r = registry();
  MutexLock guard(r.lock);
  for (unsigned i = 0; i < kSlots; ++i) {
    Slot& s = r.slots[i];
    if (s.in_use.load(std::memory_order_relaxed)) continue;
    {
      MutexLock text(s.text_lock);
      const std::size_t n = std::min(name.size(), sizeof(s.name) - 1);
      std::memcpy(s.name, name.data(), n);
      s.name[n] = '\0';
      s.last_error[0] = '\0';
    }
    s.progress.store(0, std::memory_order_relaxed);
    s.errors.store(0, std::memory_order_relaxed);
    s.last_progress_ns.store(now_ns(), std::memory_order_relaxed);
    s.working_since_ns.store(0, std::memory_order_relaxed);
    set_state(s, ThreadState::running);
    s.generation.fetch_add(1, std::memory_order_relaxed);
    s.in_use.store(true, std::memory_order_release);
    return static_cast<int>(i);
  }
  return -1;
}

void adopt(int slot) noexcept { t_slot = slot; }

void finish(int slot, ThreadState how, std::string_view why) noexcept {
  if (slot < 0) return;
  Slot& s = registry().slots[static_cast<unsigned>(slot)];
  // A thread that said it failed stays failed when its body then returns.
  if (how == ThreadState::ended &&
      s.state.load(std::memory_order_relaxed) == static_cast<std::uint8_t>(ThreadState::failed))
    how = ThreadState::failed;
  if (!why.empty()) {
    s.set_error(why);
    s.errors.fetch_add(1, std::memory_order_relaxed);
  }
  s.working_since_ns.store(0, std::memory_order_relaxed);
  set_state(s, how);
  if (t_slot == slot) t_slot = -1;
}

void release(int slot) noexcept {
  if (slot < 0) return;
  Registry& r = registry();
  MutexLock guard(r.lock);
  r.slots[static_cast<unsigned>(slot)].in_use.store(false, std::memory_order_release);
}

std::vector<ThreadReport> snapshot() {
  Registry& r = registry();
  std::vector<ThreadReport> out;
  const std::int64_t now = now_ns();
  MutexLock guard(r.lock);  // no slot is reused while we read it
  for (unsigned i = 0; i < kSlots; ++i) {
    Slot& s = r.slots[i];
    if (!s.in_use.load(std::memory_order_acquire)) continue;
    ThreadReport t;
    t.slot = i;
    t.generation = s.generation.load(std::memory_order_relaxed);
    t.state = static_cast<ThreadState>(s.state.load(std::memory_order_relaxed));
    t.progress = s.progress.load(std::memory_order_relaxed);
    t.errors = s.errors.load(std::memory_order_relaxed);
    const std::int64_t last = s.last_progress_ns.load(std::memory_order_relaxed);
    const std::int64_t since = s.working_since_ns.load(std::memory_order_relaxed);
    t.since_progress = std::chrono::nanoseconds(std::max<std::int64_t>(0, now - last));
    if (t.state == ThreadState::working && since != 0)
      t.working_for = std::chrono::nanoseconds(std::max<std::int64_t>(0, now - since));
    {
      MutexLock text(s.text_lock);
      t.name = s.name;
      t.last_error = s.last_error;
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace liveness

LivenessMonitor::Changes LivenessMonitor::check() {
  const std::vector<ThreadReport> now = liveness::snapshot();
  MutexLock guard(lock_);
  Changes c;
  std::vector<Seen> next;
  next.reserve(now.size());
  for (const ThreadReport& t : now) {
    const auto it = std::find_if(seen_.begin(), seen_.end(), [&](const Seen& s) {
      return s.slot == t.slot && s.generation == t.generation;
    });
    const bool known = it != seen_.end();
    Seen s{t.slot, t.generation, t.progress, t.errors, t.state, 0, false};
    if (known && t.state == ThreadState::working && it->state == ThreadState::working &&
        it->progress == t.progress)
      s.stalled = it->stalled + 1;
    s.stuck = s.stalled >= stuck_checks();
    const bool was_stuck = known && it->stuck;
    const bool down = t.state == ThreadState::failed || t.state == ThreadState::dead;
    const bool was_down = known && (it->state == ThreadState::failed || it->state == ThreadState::dead);
    Thread view{t, s.stalled, s.stuck};
    if (s.stuck && !was_stuck) c.newly_stuck.push_back(view);
    if (!s.stuck && was_stuck) c.unstuck.push_back(view);
    if (down && !was_down) c.newly_down.push_back(view);
    if (!down && t.errors > (known ? it->errors : 0)) c.new_errors.push_back(view);
    if (s.stuck) ++c.stuck;
    if (down) ++c.down;
    c.max_stalled_checks = std::max(c.max_stalled_checks, s.stalled);
    next.push_back(s);
  }
  seen_ = std::move(next);
  return c;
}

std::vector<LivenessMonitor::Thread> LivenessMonitor::threads() const {
  const std::vector<ThreadReport> now = liveness::snapshot();
  MutexLock guard(lock_);
  std::vector<Thread> out;
  out.reserve(now.size());
  for (const ThreadReport& t : now) {
    Thread view{t, 0, false};
    for (const Seen& s : seen_)
      if (s.slot == t.slot && s.generation == t.generation) {
        view.stalled_checks = s.stalled;
        view.stuck = s.stuck;
      }
    out.push_back(std::move(view));
  }
  return out;
}

}  // namespace uzswap
