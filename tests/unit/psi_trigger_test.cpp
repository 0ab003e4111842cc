#include "uzswap/reclaim/psi_trigger.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "uzswap/reclaim/kernel_files.h"

namespace uzswap {
namespace {

TEST(PsiTrigger, RegistersOnTheSystemFileFallingBackToTwoSecondWindows) {
  if (!std::filesystem::exists("/proc/pressure/memory")) GTEST_SKIP() << "no PSI";
  bool fell_back = false;
  auto t = PsiTrigger::open("/proc/pressure/memory", 100'000, 1'000'000, fell_back);
  ASSERT_TRUE(t.has_value()) << t.error().message();
  if (fell_back) {
    // Unprivileged: the window became 2 s, the stall kept its share.
    EXPECT_EQ(t->window_us(), PsiTrigger::kUnprivilegedWindowUs);
    EXPECT_EQ(t->stall_us(), 200'000u);
  } else {
    EXPECT_EQ(t->window_us(), 1'000'000u);
  }
  EXPECT_EQ(t->wait(0), PsiTrigger::Event::none);
}

TEST(PsiTrigger, AWindowThatIsAlreadyAMultipleOfTwoSecondsIsKept) {
  if (!std::filesystem::exists("/proc/pressure/memory")) GTEST_SKIP() << "no PSI";
  bool fell_back = true;
  auto t = PsiTrigger::open("/proc/pressure/memory", 150'000, 2'000'000, fell_back);
  ASSERT_TRUE(t.has_value()) << t.error().message();
  EXPECT_FALSE(fell_back);
  EXPECT_EQ(t->window_us(), 2'000'000u);
}

TEST(PsiTrigger, AnImpossibleTriggerIsAnError) {
  if (!std::filesystem::exists("/proc/pressure/memory")) GTEST_SKIP() << "no PSI";
  bool fell_back = false;
  // The stall cannot exceed the window.
  EXPECT_FALSE(PsiTrigger::open("/proc/pressure/memory", 5'000'000, 2'000'000, fell_back).has_value());
  EXPECT_FALSE(PsiTrigger::open("/nonexistent/memory.pressure", 1, 2'000'000, fell_back).has_value());
}

// A cgroup that goes away reports POLLERR: the trigger says "gone".
TEST(PsiTrigger, ARemovedCgroupIsReportedGone) {
  std::string root;
  for (const char* candidate : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"})
    if (std::filesystem::exists(std::string(candidate) + "/cgroup.procs") &&
        std::filesystem::exists(std::string(candidate) + "/cgroup.controllers")) {
      root = candidate;
      break;
    }
  if (root.empty() || geteuid() != 0) GTEST_SKIP() << "needs root and a cgroup v2 tree";
  const std::string cg = root + "/uzswap-psi-test-" + std::to_string(getpid());
  if (mkdir(cg.c_str(), 0755) != 0) GTEST_SKIP() << "cannot make a cgroup";
  if (!std::filesystem::exists(cg + "/memory.pressure")) {
    rmdir(cg.c_str());
    GTEST_SKIP() << "no memory.pressure in the v2 tree";
  }
  bool fell_back = false;
  auto t = PsiTrigger::open(cg + "/memory.pressure", 100'000, 2'000'000, fell_back);
  ASSERT_EQ(rmdir(cg.c_str()), 0);
  ASSERT_TRUE(t.has_value()) << t.error().message();
  EXPECT_EQ(t->wait(2000), PsiTrigger::Event::gone);
}

TEST(PsiTrigger, TheSystemPressureFileParses) {
  std::ifstream f("/proc/pressure/memory");
  if (!f) GTEST_SKIP() << "no PSI";
  std::stringstream text;
  text << f.rdbuf();
  const Psi psi = parse_psi(text.str());
  EXPECT_TRUE(psi.some.has_value());
  EXPECT_TRUE(psi.full.has_value());
}

}  // namespace
}  // namespace uzswap
