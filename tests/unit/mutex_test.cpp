// The annotated mutex wrappers (uzswap/common/mutex.h): they lock like the
// std types they wrap and cost no more. That the analysis rejects an access
// without the lock is the clang build's business (-Dthread_safety=true).
#include "uzswap/common/mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace uzswap {
namespace {

using namespace std::chrono_literals;

// Zero cost: the same size as what they wrap, and constant-initialised (a
// global Mutex needs no constructor run at start-up).
static_assert(sizeof(Mutex) == sizeof(std::mutex));
static_assert(sizeof(MutexLock) == sizeof(Mutex*));
static_assert(sizeof(CondVar) == sizeof(std::condition_variable));
constinit Mutex g_constant_initialised;

// Whether another thread could take `m` now (try_lock on a mutex the
// calling thread holds is undefined).
bool free_for_others(Mutex& m) {
  bool taken = false;
  std::thread([&] {
    if (m.try_lock()) {
      taken = true;
      m.unlock();
    }
  }).join();
  return taken;
}

struct Counter {
  Mutex lock;
  std::uint64_t value GUARDED_BY(lock) = 0;
  bool ready GUARDED_BY(lock) = false;
  CondVar changed;

  std::uint64_t get() {
    MutexLock guard(lock);
    return value;
  }
};

TEST(MutexTest, MutexLockExcludesOtherThreads) {
  Counter c;
  constexpr std::uint64_t kPerThread = 100'000;
  const auto add = [&c] {
    for (std::uint64_t i = 0; i < kPerThread; ++i) {
      MutexLock guard(c.lock);
      c.value = c.value + 1;  // a read and a write: lost updates without the lock
    }
  };
  std::thread a(add), b(add);
  a.join();
  b.join();
  EXPECT_EQ(c.get(), 2 * kPerThread);
}

TEST(MutexTest, TryLockFailsWhileAnotherThreadHoldsIt) {
  Mutex m;
  m.lock();
  EXPECT_FALSE(free_for_others(m));
  m.unlock();
  EXPECT_TRUE(free_for_others(m));
}

TEST(MutexTest, MutexLockReleasesAtScopeEnd) {
  Mutex m;
  {
    MutexLock guard(m);
    EXPECT_FALSE(free_for_others(m));
  }
  EXPECT_TRUE(free_for_others(m));
}

TEST(MutexTest, UniqueLockUnlocksAndRelocks) {
  Counter c;
  {
    UniqueLock guard(c.lock);
    c.value = 1;
    guard.unlock();
    // Dropped: another thread gets in meanwhile.
    std::thread([&c] {
      MutexLock inner(c.lock);
      c.value = 2;
    }).join();
    guard.lock();
    EXPECT_EQ(c.value, 2u);
  }
  // Released at the end, not left held.
  EXPECT_TRUE(free_for_others(c.lock));
}

TEST(MutexTest, UniqueLockLeftUnlockedLeavesTheMutexAlone) {
  Mutex m;
  std::atomic<bool> held{false}, release{false};
  std::thread holder;
  {
    UniqueLock guard(m);
    guard.unlock();
    holder = std::thread([&] {
      m.lock();
      held = true;
      while (!release) std::this_thread::yield();
      m.unlock();
    });
    while (!held) std::this_thread::yield();
  }  // ends unlocked: the holder's hold stays
  EXPECT_FALSE(free_for_others(m));
  release = true;
  holder.join();
  EXPECT_TRUE(free_for_others(m));
}

TEST(MutexTest, CondVarWaitWakesOnNotifyWithTheLockHeld) {
  Counter c;
  std::thread setter([&c] {
    std::this_thread::sleep_for(10ms);
    {
      MutexLock guard(c.lock);
      c.ready = true;
      c.value = 7;
    }
    c.changed.notify_one();
  });
  {
    MutexLock guard(c.lock);
    while (!c.ready) c.changed.wait(c.lock);
    EXPECT_EQ(c.value, 7u);
  }
  setter.join();
  EXPECT_TRUE(free_for_others(c.lock));
}

TEST(MutexTest, CondVarTimedWaitsTimeOut) {
  Counter c;
  MutexLock guard(c.lock);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(c.changed.wait_for(c.lock, 20ms), std::cv_status::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
  EXPECT_EQ(c.changed.wait_until(c.lock, std::chrono::steady_clock::now() - 1s), std::cv_status::timeout);
  c.value = 1;  // still held after the timeouts
}

TEST(MutexTest, CondVarNotifyAllWakesEveryWaiter) {
  Counter c;
  std::atomic<int> woken{0};
  const auto waiter = [&] {
    MutexLock guard(c.lock);
    while (!c.ready) c.changed.wait(c.lock);
    woken.fetch_add(1);
  };
  std::thread a(waiter), b(waiter), d(waiter);
  {
    MutexLock guard(c.lock);
    c.ready = true;
  }
  c.changed.notify_all();
  a.join();
  b.join();
  d.join();
  EXPECT_EQ(woken.load(), 3);
}

TEST(MutexTest, GlobalMutexIsUsable) {
  MutexLock guard(g_constant_initialised);
  SUCCEED();
}

}  // namespace
}  // namespace uzswap
