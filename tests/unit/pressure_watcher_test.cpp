// The pressure watcher: memory.events against a tree of plain files (this
// machine has no v2 memory controller), PSI triggers against the real
// /proc/pressure/memory and a real v2 cgroup's memory.pressure.
#include "uzswap/reclaim/pressure_watcher.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "uzswap/reclaim/attribution.h"

namespace uzswap {
namespace {

namespace fs = std::filesystem;

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}

std::string events_text(unsigned high, unsigned max) {
  return "low 0\nhigh " + std::to_string(high) + "\nmax " + std::to_string(max) +
         "\noom 0\noom_kill 0\noom_group_kill 0\n";
}

// Polls until an event arrives (for liveness: at most 10 s).
std::vector<PressureEvent> poll_until_event(PressureWatcher& w) {
  for (int i = 0; i < 20; ++i) {
    auto events = w.poll(500);
    if (!events.empty()) return events;
  }
  return {};
}

class PressureWatcherTest : public ::testing::Test {
 protected:
  PressureWatcherTest() : root_(fs::path("/tmp") / ("uzswap-pw-test-" + std::to_string(getpid()))) {
    fs::create_directories(root_ / "a");
    fs::create_directories(root_ / "b");
    write_file(root_ / "a" / "memory.events", events_text(3, 1));
    write_file(root_ / "b" / "memory.events", events_text(0, 0));
  }
  ~PressureWatcherTest() override { fs::remove_all(root_); }

  static PressureOptions files_only() {
    PressureOptions o;
    o.system_psi.clear();
    o.cgroup_psi = false;
    return o;
  }

  fs::path root_;
};

TEST_F(PressureWatcherTest, AnIncrementOfHighOrMaxIsReportedWithItsSize) {
  PressureWatcher w(files_only());
  w.track({{7, root_ / "a"}, {8, root_ / "b"}});
  EXPECT_EQ(w.status().events_files, 2u);
  EXPECT_TRUE(w.poll(0).empty()) << "the first read is the baseline";

  write_file(root_ / "a" / "memory.events", events_text(5, 2));  // +2 high, +1 max
  const auto events = poll_until_event(w);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, PressureEvent::Kind::memory_events);
  EXPECT_EQ(events[0].cgroup, CgroupId{7});
  EXPECT_EQ(events[0].increment, 3u);
  EXPECT_EQ(w.status().memory_events, 1u);
}

TEST_F(PressureWatcherTest, KeysAreReadByNameInAnyOrder) {
  PressureWatcher w(files_only());
  w.track({{8, root_ / "b"}});
  write_file(root_ / "b" / "memory.events", "oom_kill 0\nmax 4\nnew_key_from_a_future_kernel 9\nhigh 1\n");
  const auto events = poll_until_event(w);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].increment, 5u);
}

TEST_F(PressureWatcherTest, OtherCountersAndDecreasesAreNotPressure) {
  PressureWatcher w(files_only());
  w.track({{7, root_ / "a"}});
  write_file(root_ / "a" / "memory.events", "low 9\nhigh 3\nmax 1\noom 1\n");
  write_file(root_ / "a" / "memory.events", events_text(0, 0));  // a new cgroup under the old path
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(w.poll(400).empty());
  write_file(root_ / "a" / "memory.events", events_text(1, 0));
  const auto events = poll_until_event(w);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].increment, 1u) << "counted from the new baseline";
}

TEST_F(PressureWatcherTest, AVanishedOrUntrackedCgroupIsSkippedQuietly) {
  PressureWatcher w(files_only());
  EXPECT_TRUE(w.track({{7, root_ / "a"}, {8, root_ / "b"}, {9, root_ / "never-existed"}}))
      << "a cgroup that is not there is no error";
  EXPECT_EQ(w.status().events_files, 2u);
  fs::remove_all(root_ / "a");
  EXPECT_TRUE(w.poll(200).empty());
  w.track({{8, root_ / "b"}});
  EXPECT_EQ(w.status().events_files, 1u);
  write_file(root_ / "b" / "memory.events", events_text(1, 0));
  const auto events = poll_until_event(w);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].cgroup, CgroupId{8});
}

TEST_F(PressureWatcherTest, InterruptEndsAPollAtOnce) {
  PressureWatcher w(files_only());
  w.interrupt();
  EXPECT_TRUE(w.poll(60'000).empty());
}

TEST(PressureWatcherPsi, RegistersTheMachinesTriggerOrSaysWhyNot) {
  if (access("/proc/pressure/memory", R_OK) != 0) GTEST_SKIP() << "no PSI on this kernel";
  PressureOptions o;
  o.cgroup_psi = false;
  o.stall_us = 100'000;
  o.window_us = 1'000'000;
  PressureWatcher w(o);
  const PressureStatus s = w.status();
  if (!s.system_trigger && s.system_error.find("ermission") != std::string::npos)
    GTEST_SKIP() << s.system_error;
  ASSERT_TRUE(s.system_trigger) << s.system_error;
  // Either the 1 s window was accepted (CAP_SYS_RESOURCE) or it fell back
  // to 2 s with the stall scaled alike.
  if (s.fell_back) {
    EXPECT_EQ(s.window_us, 2'000'000u);
    EXPECT_EQ(s.stall_us, 200'000u);
  } else {
    EXPECT_EQ(s.window_us, 1'000'000u);
  }

  PressureOptions missing;
  missing.system_psi = "/proc/pressure/no-such-file";
  PressureWatcher m(missing);
  EXPECT_FALSE(m.status().system_trigger);
  EXPECT_NE(m.status().system_error.find("no-such-file"), std::string::npos);
}

TEST(PressureWatcherPsi, ARemovedCgroupsTriggerIsDropped) {
  const std::string root = Attribution::default_root();
  const fs::path dir = fs::path(root) / ("uzswap-pw-" + std::to_string(getpid()));
  if (geteuid() != 0 || mkdir(dir.c_str(), 0755) != 0) GTEST_SKIP() << "cannot make a v2 cgroup";
  if (access((dir / "memory.pressure").c_str(), R_OK) != 0) {
    rmdir(dir.c_str());
    GTEST_SKIP() << "no memory.pressure in the v2 tree";
  }
  PressureOptions o;
  o.system_psi.clear();
  o.window_us = 2'000'000;
  o.stall_us = 200'000;
  PressureWatcher w(o);
  w.track({{5, dir.string()}});
  EXPECT_EQ(w.status().cgroup_triggers, 1u);
  ASSERT_EQ(rmdir(dir.c_str()), 0);
  for (int i = 0; i < 20 && w.status().cgroup_triggers != 0; ++i) w.poll(250);
  EXPECT_EQ(w.status().cgroup_triggers, 0u) << "POLLERR: the cgroup is gone";
}

}  // namespace
}  // namespace uzswap
