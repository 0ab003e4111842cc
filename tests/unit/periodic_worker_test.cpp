// PeriodicWorker: the schedule (at once, every period, early on wake() but
// never within min_gap), stop() ending a wait at once and letting a pass
// finish, an event-driven wait with its unblock, and what the thread tells
// the liveness registry.
#include "uzswap/common/periodic_worker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>

#include "uzswap/common/liveness.h"

namespace uzswap {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::optional<ThreadReport> find_thread(const std::string& name) {
  for (ThreadReport& t : liveness::snapshot())
    if (t.name == name) return t;
  return std::nullopt;
}

PeriodicWorker::Options every(std::chrono::nanoseconds period, std::chrono::nanoseconds min_gap = {}) {
  PeriodicWorker::Options o;
  o.period = period;
  o.min_gap = min_gap;
  return o;
}

TEST(PeriodicWorker, RunsThePassAtOnceThenEveryPeriod) {
  std::atomic<unsigned> passes{0};
  PeriodicWorker worker;
  worker.start("test-periodic", every(10ms), [&] { ++passes; });
  EXPECT_TRUE(worker.running());
  EXPECT_TRUE(eventually([&] { return passes.load() >= 1; }, 1000ms)) << "the first pass runs at once";
  EXPECT_TRUE(eventually([&] { return passes.load() >= 5; }));
}

TEST(PeriodicWorker, WakeRunsTheNextPassEarly) {
  std::atomic<unsigned> passes{0};
  PeriodicWorker worker;
  worker.start("test-wake", every(1h), [&] { ++passes; });
  ASSERT_TRUE(eventually([&] { return passes.load() == 1; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(passes.load(), 1u) << "the next pass is an hour away";
  worker.wake();
  EXPECT_TRUE(eventually([&] { return passes.load() == 2; }));
}

TEST(PeriodicWorker, AWakeDuringAPassIsKeptForAfterIt) {
  std::atomic<unsigned> passes{0};
  std::atomic<bool> release{false};
  PeriodicWorker worker;
  worker.start("test-wake-kept", every(1h), [&] {
    if (++passes == 1)
      while (!release.load()) std::this_thread::sleep_for(1ms);
  });
  ASSERT_TRUE(eventually([&] { return passes.load() == 1; }));
  worker.wake();  // while the first pass still runs
  release = true;
  EXPECT_TRUE(eventually([&] { return passes.load() == 2; }));
}

TEST(PeriodicWorker, NoPassWithinMinGapOfTheLastHoweverEarlyTheWake) {
  std::atomic<unsigned> passes{0};
  std::atomic<Clock::rep> first_end{0}, second_start{0};
  PeriodicWorker worker;
  worker.start("test-min-gap", every(1h, 200ms), [&] {
    if (++passes == 1) first_end = Clock::now().time_since_epoch().count();
    else second_start = Clock::now().time_since_epoch().count();
  });
  ASSERT_TRUE(eventually([&] { return passes.load() == 1; }));
  worker.wake();
  ASSERT_TRUE(eventually([&] { return passes.load() == 2; }));
  EXPECT_GE(Clock::duration(second_start.load() - first_end.load()), 200ms);
}

TEST(PeriodicWorker, StopEndsAWaitAtOnce) {
  PeriodicWorker worker;
  std::atomic<unsigned> passes{0};
  worker.start("test-stop", every(1h, 1h), [&] { ++passes; });
  ASSERT_TRUE(eventually([&] { return passes.load() == 1; }));
  const auto before = Clock::now();
  worker.stop();
  EXPECT_LT(Clock::now() - before, 2s);
  EXPECT_FALSE(worker.running());
  EXPECT_EQ(passes.load(), 1u) << "stopping runs no further pass";
  worker.stop();  // idempotent
}

TEST(PeriodicWorker, StopLetsThePassUnderWayFinish) {
  std::atomic<bool> in_pass{false}, finished{false};
  PeriodicWorker worker;
  worker.start("test-stop-pass", every(1h), [&] {
    in_pass = true;
    std::this_thread::sleep_for(100ms);
    finished = true;
  });
  ASSERT_TRUE(eventually([&] { return in_pass.load(); }));
  worker.stop();
  EXPECT_TRUE(finished.load());
}

TEST(PeriodicWorker, WakeAndStopBeforeStartAreHarmless) {
  PeriodicWorker worker;
  worker.wake();
  worker.stop();
  EXPECT_FALSE(worker.running());
}

TEST(PeriodicWorker, AnEventWaitReplacesTheScheduleAndUnblockEndsIt) {
  // A pass per event, like the pool reserve's futex: wait() blocks until
  // posted, unblock() posts.
  std::atomic<unsigned> events{0}, passes{0}, started{0};
  PeriodicWorker::Options o;
  o.pass_at_start = false;
  o.on_start = [&] { ++started; };
  o.wait = [&] {
    events.wait(0);
    events.store(0);
  };
  o.unblock = [&] {
    events.store(1);
    events.notify_one();
  };
  PeriodicWorker worker;
  worker.start("test-event", o, [&] { ++passes; });
  ASSERT_TRUE(eventually([&] { return started.load() == 1; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(passes.load(), 0u) << "no pass before the first event";
  events.store(1);
  events.notify_one();
  EXPECT_TRUE(eventually([&] { return passes.load() == 1; }));
  worker.stop();
  EXPECT_EQ(passes.load(), 1u);
}

TEST(PeriodicWorker, ReportsWaitingBetweenPassesAndProgressPerPass) {
  std::atomic<unsigned> passes{0};
  PeriodicWorker worker;
  worker.start("test-liveness", every(1h), [&] { ++passes; });
  ASSERT_TRUE(eventually([&] { return passes.load() == 1; }));
  ASSERT_TRUE(eventually([] {
    const auto r = find_thread("test-liveness");
    return r && r->state == ThreadState::waiting && r->progress == 1;
  }));
  worker.stop();
  EXPECT_FALSE(find_thread("test-liveness")) << "its slot is released once joined";
}

TEST(PeriodicWorker, APassThatThrowsMarksTheThreadDead) {
  PeriodicWorker worker;
  worker.start("test-throwing", every(1h), [] { throw std::runtime_error("pass failed"); });
  ASSERT_TRUE(eventually([] {
    const auto r = find_thread("test-throwing");
    return r && r->state == ThreadState::dead;
  }));
  EXPECT_EQ(find_thread("test-throwing")->last_error, "pass failed");
  worker.stop();
}

}  // namespace
}  // namespace uzswap
