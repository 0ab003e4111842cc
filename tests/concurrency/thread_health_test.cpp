// Threads that cannot die silently (issue 17): the liveness registry and its
// monitor, the Thread trampoline, the /dev/fuse workers' and the FUSE ring
// threads' error handling, IoRing after a failed submission, and
// BackingFile::begin_write past its buffer. In the concurrency suite: the
// registry is written by the threads and read by the monitor.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "uzswap/backing/backing_store.h"
#include "uzswap/backing/io_ring.h"
#include "uzswap/common/liveness.h"
#include "uzswap/common/thread.h"
#include "uzswap/fuse/fuse_server.h"
#include "uzswap/fuse/fuse_session.h"
#include "uzswap/fuse/fuse_uring.h"
#include "uzswap/store/page_store.h"

namespace uzswap {
namespace {

using namespace std::chrono_literals;

std::optional<ThreadReport> find_thread(const std::string& name) {
  for (ThreadReport& t : liveness::snapshot())
    if (t.name == name) return t;
  return std::nullopt;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(Liveness, AnExceptionThatEscapesAThreadMarksItDeadInsteadOfEndingTheProcess) {
  // Before: the trampoline caught nothing, and this was std::terminate.
  Thread t("test-throws", [] { throw std::runtime_error("epoll_ctl: No space left on device"); });
  ASSERT_TRUE(eventually([] {
    const auto r = find_thread("test-throws");
    return r && r->state == ThreadState::dead;
  }));
  const auto r = find_thread("test-throws");
  EXPECT_EQ(r->last_error, "epoll_ctl: No space left on device");
  t.join();
  EXPECT_FALSE(find_thread("test-throws")) << "the slot is released at join";
}

TEST(Liveness, ThreadsReportTheirStateAndProgress) {
  std::atomic<int> step{0};
  Thread t("test-reports", [&] {
    liveness::waiting();
    while (step.load() == 0) std::this_thread::sleep_for(1ms);
    liveness::working();
    liveness::progressed();
    liveness::error("a survived error");
    step.store(2);
    while (step.load() == 2) std::this_thread::sleep_for(1ms);
    liveness::failed("cannot go on");
  });
  ASSERT_TRUE(eventually([] {
    const auto r = find_thread("test-reports");
    return r && r->state == ThreadState::waiting;
  }));
  step.store(1);
  ASSERT_TRUE(eventually([&] { return step.load() == 2; }));
  auto r = find_thread("test-reports");
  EXPECT_EQ(r->progress, 1u);
  EXPECT_EQ(r->errors, 1u);
  EXPECT_EQ(r->last_error, "a survived error");
  step.store(3);
  t.join();
}

TEST(Liveness, AFailedThreadStaysFailedWhenItsBodyReturns) {
  Thread t("test-fails", [] { liveness::failed("ring broken"); });
  ASSERT_TRUE(eventually([] {
    const auto r = find_thread("test-fails");
    return r && r->state == ThreadState::failed;
  }));
  std::this_thread::sleep_for(10ms);
  EXPECT_EQ(find_thread("test-fails")->state, ThreadState::failed);
  t.join();
}

LivenessMonitor::Thread monitored(const LivenessMonitor& m, const std::string& name) {
  for (const auto& t : m.threads())
    if (t.report.name == name) return t;
  ADD_FAILURE() << name << " not in the registry";
  return {};
}

TEST(LivenessMonitor, AWorkingThreadWithNoProgressIsStuckAfterThatManyChecks) {
  std::atomic<bool> release{false}, in{false};
  Thread t("test-stuck", [&] {
    liveness::working();
    in.store(true);
    while (!release.load()) std::this_thread::sleep_for(1ms);
    liveness::progressed();
  });
  ASSERT_TRUE(eventually([&] { return in.load(); }));
  LivenessMonitor monitor(3);
  bool reported = false;
  for (int i = 0; i < 3; ++i) {
    const auto c = monitor.check();
    for (const auto& s : c.newly_stuck) reported = reported || s.report.name == "test-stuck";
  }
  EXPECT_FALSE(monitored(monitor, "test-stuck").stuck) << "two stalled checks are not three";
  const auto c = monitor.check();
  for (const auto& s : c.newly_stuck) reported = reported || s.report.name == "test-stuck";
  EXPECT_TRUE(reported);
  EXPECT_TRUE(monitored(monitor, "test-stuck").stuck);
  release.store(true);
  t.join();
}

TEST(LivenessMonitor, AnIdleThreadAndASlowButProgressingOneAreNotStuck) {
  std::atomic<bool> stop{false};
  // Blocked for work as long as it likes: a /dev/fuse worker with no requests.
  Thread idle("test-idle", [&] {
    liveness::waiting();
    while (!stop.load()) std::this_thread::sleep_for(1ms);
  });
  // Every piece of work is slow, but each one ends: thrashing.
  Thread slow("test-slow", [&] {
    while (!stop.load()) {
      liveness::working();
      std::this_thread::sleep_for(5ms);
      liveness::progressed();
    }
  });
  ASSERT_TRUE(eventually([] { return find_thread("test-idle") && find_thread("test-slow"); }));
  LivenessMonitor monitor(2);
  for (int i = 0; i < 8; ++i) {
    monitor.check();
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_FALSE(monitored(monitor, "test-idle").stuck);
  EXPECT_FALSE(monitored(monitor, "test-slow").stuck);
  stop.store(true);
  idle.join();
  slow.join();
}

TEST(LivenessMonitor, ReportsADeadThreadOnceAndNewErrors) {
  LivenessMonitor monitor(5);
  monitor.check();
  Thread t("test-dies", [] {
    liveness::error("first");
    throw std::runtime_error("gone");
  });
  ASSERT_TRUE(eventually([] {
    const auto r = find_thread("test-dies");
    return r && r->state == ThreadState::dead;
  }));
  auto c = monitor.check();
  ASSERT_EQ(std::count_if(c.newly_down.begin(), c.newly_down.end(),
                          [](const auto& d) { return d.report.name == "test-dies"; }),
            1);
  EXPECT_GE(c.down, 1u);
  c = monitor.check();
  EXPECT_TRUE(std::none_of(c.newly_down.begin(), c.newly_down.end(),
                           [](const auto& d) { return d.report.name == "test-dies"; }));
  t.join();
}

TEST(FuseUringDecisions, AnInterruptedWaitIsWaitedAgain) {
  // liburing returns -EINTR (errno untouched) when SIGSTOP/SIGCONT, a cgroup
  // freeze or a ptrace stop interrupts the wait. Before: the thread tested
  // errno, ended, and the kernel failed what its queues held.
  EXPECT_EQ(FuseUring::classify_wait(-EINTR), FuseUring::WaitOutcome::reap);
  EXPECT_EQ(FuseUring::classify_wait(-EAGAIN), FuseUring::WaitOutcome::reap);
  EXPECT_EQ(FuseUring::classify_wait(-EBUSY), FuseUring::WaitOutcome::reap);
  EXPECT_EQ(FuseUring::classify_wait(3), FuseUring::WaitOutcome::reap);
  EXPECT_EQ(FuseUring::classify_wait(-EBADF), FuseUring::WaitOutcome::broken);
}

TEST(FuseUringDecisions, OnlyTheConnectionsEndDropsAnEntry) {
  EXPECT_EQ(FuseUring::classify_completion(0), FuseUring::EntryOutcome::request);
  EXPECT_EQ(FuseUring::classify_completion(-EAGAIN), FuseUring::EntryOutcome::register_again);
  // Before: every error but EAGAIN dropped the entry for good.
  EXPECT_EQ(FuseUring::classify_completion(-ENOENT), FuseUring::EntryOutcome::register_again);
  EXPECT_EQ(FuseUring::classify_completion(-EINVAL), FuseUring::EntryOutcome::register_again);
  EXPECT_EQ(FuseUring::classify_completion(-EIO), FuseUring::EntryOutcome::register_again);
  EXPECT_EQ(FuseUring::classify_completion(-ENOTCONN), FuseUring::EntryOutcome::gone);
  EXPECT_EQ(FuseUring::classify_completion(-ECANCELED), FuseUring::EntryOutcome::gone);
}

class FuseWorkersTest : public ::testing::Test {
 protected:
  FuseWorkersTest() : store_(store_options()), server_(store_, config()) {}
  static PageStoreOptions store_options() {
    PageStoreOptions o;
    o.slots = 64;
    o.pool.reserve_bytes_per_node = 16u << 20;
    return o;
  }
  static FuseConfig config() {
    FuseConfig c;
    c.size_bytes = 64 * kPageSize;
    c.max_write = 16 * kPageSize;
    return c;
  }
  PageStore store_;
  FuseServer server_;
};

TEST_F(FuseWorkersTest, AnUnexpectedReadErrorIsCountedAndTheWorkersServeOn) {
  // read() of a directory fails with EISDIR: an error no worker should meet.
  // Before: the worker ended at once, leaving the connection without it.
  const int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  {
    FuseWorkers workers(fd, server_, 2, {});
    ASSERT_TRUE(eventually([&] { return workers.health().read_errors >= 4; }));
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(workers.health().exited, 0u);
    bool reported = false;
    for (const ThreadReport& t : liveness::snapshot())
      if (t.name.starts_with("uzswap-fuse") && t.errors > 0 &&
          t.last_error.find("read /dev/fuse") != std::string::npos)
        reported = true;
    EXPECT_TRUE(reported) << "the error reaches the liveness registry";
    workers.request_stop();
  }
  close(fd);
}

TEST_F(FuseWorkersTest, ARefusedReplyIsCountedAndAnsweredWithAnError) {
  // The worker reads requests from a pipe and "replies" into its read end,
  // which refuses every write (EBADF). Before: the failure was ignored.
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  {
    FuseWorkers workers(p[0], server_, 1, {});
    fuse_in_header in{};
    in.len = sizeof(in) + sizeof(fuse_getattr_in);
    in.opcode = FUSE_GETATTR;
    in.unique = 42;
    in.nodeid = FUSE_ROOT_ID;
    std::byte req[sizeof(fuse_in_header) + sizeof(fuse_getattr_in)]{};
    std::memcpy(req, &in, sizeof(in));
    ASSERT_EQ(write(p[1], req, sizeof(req)), static_cast<ssize_t>(sizeof(req)));
    EXPECT_TRUE(eventually([&] { return workers.health().reply_errors == 1; }));
    EXPECT_EQ(workers.health().exited, 0u);
    workers.request_stop();
    close(p[1]);  // read() returns 0 from now on: the worker sees its stop
  }
  close(p[0]);
}

TEST(IoRingFailure, CompletionsOfAFailedBatchNeverReachTheNextOne) {
  // A read of an empty pipe stays in flight. The next submission fails: the
  // batch ends with that error. The stale read must not complete an op of
  // the next batch. Before: it was credited to the next batch's op 0, which
  // "completed" with its buffer never filled.
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  IoRing ring(p[0], 8, 4);
  ring.fail_submit_for_testing(1, -EBADF);  // start()'s submission works, finish()'s fails
  IoOp a{0, 0, 1, false, 0};
  ring.start(std::span(&a, 1));
  ring.finish();
  EXPECT_EQ(a.result, -EBADF);

  std::vector<std::byte> data(4096, std::byte{0x5a});
  ASSERT_EQ(write(p[1], data.data(), data.size()), 4096);
  std::memset(ring.buffer(1), 0, 4096);
  IoOp b{0, 1, 1, false, 0};
  ring.start(std::span(&b, 1));
  ring.finish();
  ASSERT_EQ(b.result, 4096);
  EXPECT_EQ(std::memcmp(ring.buffer(1), data.data(), 4096), 0) << "op b completed but its buffer is not filled";
  EXPECT_EQ(ring.replaced(), 1u);
  close(p[1]);
  close(p[0]);
}

TEST(BackingFileBatch, PagesPastTheBufferAreNotReportedWritten) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("uzswap-thread-health-" + std::to_string(getpid()))).string();
  {
    BackingFile file(path, 256 * kPageSize);
    std::vector<std::byte> page(kPageSize, std::byte{1});
    std::vector<PageWrite> writes;
    for (Slot s = 0; s < BackingFile::kBatchPages + 2; ++s) writes.push_back({s, page.data(), 0});
    file.begin_write(writes);
    file.end_write();
    unsigned written = 0, refused = 0;
    for (const PageWrite& w : writes) (w.result == 0 ? written : refused)++;
    EXPECT_EQ(written, BackingFile::kBatchPages);
    EXPECT_EQ(refused, 2u) << "before: the two pages past the buffer kept result 0, as if written";
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace uzswap
