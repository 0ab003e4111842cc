#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "uzswap/daemon/safety.h"
#include "uzswap/device/loop_device.h"
#include "uzswap/device/swap.h"
#include "uzswap/device/swap_header.h"

namespace uzswap {
namespace {

std::string run(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[256];
  while (std::fgets(buf, sizeof(buf), p)) out += buf;
  pclose(p);
  return out;
}

TEST(SwapHeader, RoundTrips) {
  std::array<std::byte, kPageSize> page;
  const Uuid uuid = random_uuid().value();
  make_swap_header(page, 1000, uuid, "mylabel");
  const auto info = parse_swap_header(page);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->version, 1u);
  EXPECT_EQ(info->last_page, 999u);
  EXPECT_EQ(info->nr_badpages, 0u);
  EXPECT_EQ(info->uuid, uuid);
  EXPECT_EQ(info->label, "mylabel");
}

TEST(SwapHeader, LongLabelsAreCutTo16Bytes) {
  std::array<std::byte, kPageSize> page;
  make_swap_header(page, 10, random_uuid().value(), "a-very-long-label-indeed");
  EXPECT_EQ(parse_swap_header(page)->label, "a-very-long-labe");
}

TEST(SwapHeader, PagesWithoutTheSignatureAreNotHeaders) {
  std::array<std::byte, kPageSize> page{};
  EXPECT_FALSE(parse_swap_header(page).has_value());
}

TEST(SwapHeader, UuidsAreVersion4AndFormatLikeUtilLinux) {
  const Uuid u = random_uuid().value();
  EXPECT_EQ(u[6] >> 4, 4);
  EXPECT_EQ(u[8] >> 6, 2);
  EXPECT_EQ(format_uuid(u).size(), 36u);
  EXPECT_NE(random_uuid().value(), u);
}

// Compatibility both ways with util-linux: our header parses like mkswap's,
// and swaplabel reads ours.
TEST(SwapHeader, MatchesMkswap) {
  if (system("command -v mkswap >/dev/null && command -v swaplabel >/dev/null") != 0)
    GTEST_SKIP() << "util-linux mkswap/swaplabel not installed";
  const std::string file = "/tmp/uzswap-mkswap-" + std::to_string(getpid());
  const std::string uuid = "0f1e2d3c-4b5a-4697-8877-665544332211";
  ASSERT_EQ(system(("truncate -s 4M " + file + " && mkswap -q -L theirs -U " + uuid + " " + file +
                    " >/dev/null 2>&1").c_str()),
            0);
  std::array<std::byte, kPageSize> page;
  {
    std::ifstream f(file, std::ios::binary);
    f.read(reinterpret_cast<char*>(page.data()), kPageSize);
  }
  const auto theirs = parse_swap_header(page);
  ASSERT_TRUE(theirs.has_value());
  EXPECT_EQ(theirs->version, 1u);
  EXPECT_EQ(theirs->last_page, (4u << 20) / kPageSize - 1);
  EXPECT_EQ(theirs->label, "theirs");
  EXPECT_EQ(format_uuid(theirs->uuid), uuid);

  Uuid ours_uuid = random_uuid().value();
  make_swap_header(page, (4u << 20) / kPageSize, ours_uuid, "ours");
  {
    std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
    f.write(reinterpret_cast<const char*>(page.data()), kPageSize);
  }
  const std::string label = run("swaplabel " + file);
  std::remove(file.c_str());
  EXPECT_NE(label.find("LABEL: ours"), std::string::npos) << label;
  EXPECT_NE(label.find("UUID:  " + format_uuid(ours_uuid)), std::string::npos) << label;
}

TEST(LoopDevice, APathThatIsNotALoopDeviceIsInvalid) {
  for (const char* path : {"/dev/sda", "/dev/loop", "/dev/loopx", "/dev/loop1x", "/dev/loop99999999999"}) {
    const auto dev = LoopDevice::open_existing(path);
    ASSERT_FALSE(dev.has_value()) << path;
    EXPECT_EQ(dev.error(), std::errc::invalid_argument) << path;
  }
}

// A sysfs of one device, in a temporary directory.
struct FakeSysBlock {
  std::string root;
  explicit FakeSysBlock(const char* value) {
    char tmpl[] = "/tmp/uzswap-sysblock-XXXXXX";
    root = mkdtemp(tmpl);
    std::filesystem::create_directories(root + "/loop9/queue");
    if (value != nullptr) std::ofstream(root + "/loop9/queue/wbt_lat_usec") << value;
  }
  ~FakeSysBlock() { std::filesystem::remove_all(root); }
  std::string value() const {
    std::ifstream f(root + "/loop9/queue/wbt_lat_usec");
    std::string v;
    f >> v;
    return v;
  }
};

TEST(WritebackThrottling, IsTurnedOffAndItsTargetReported) {
  FakeSysBlock sys("2000\n");
  EXPECT_EQ(disable_writeback_throttling("/dev/loop9", sys.root), 2000u);
  EXPECT_EQ(sys.value(), "0");
  EXPECT_EQ(disable_writeback_throttling("/dev/loop9", sys.root), 0u) << "already off: nothing written";
}

TEST(WritebackThrottling, AKernelWithoutItIsNotAnError) {
  FakeSysBlock sys(nullptr);
  EXPECT_EQ(disable_writeback_throttling("/dev/loop9", sys.root), 0u);
}

TEST(WritebackThrottling, AValueThatDoesNotParseIsAnError) {
  FakeSysBlock sys("fast\n");
  const auto r = disable_writeback_throttling("/dev/loop9", sys.root);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), std::errc::invalid_argument);
  EXPECT_EQ(sys.value(), "fast") << "unchanged";
}

TEST(WritebackThrottling, FoundOffGoesBackToTheKernelsDefault) {
  FakeSysBlock off("0\n");
  EXPECT_EQ(default_writeback_throttling("/dev/loop9", off.root), true);
  EXPECT_EQ(off.value(), "-1") << "the kernel's default";
  FakeSysBlock on("2000\n");
  EXPECT_EQ(default_writeback_throttling("/dev/loop9", on.root), false);
  EXPECT_EQ(on.value(), "2000") << "a target of its own stays";
  FakeSysBlock none(nullptr);
  EXPECT_EQ(default_writeback_throttling("/dev/loop9", none.root), false);
}

TEST(ProcSwaps, ParsesCapturedText) {
  const std::string text =
      "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
      "/dev/zram0                              partition\t8388604\t\t1024\t\t100\n"
      "/swap\\040file                           file\t\t1048572\t\t0\t\t-2\n"
      "/dev/loop3                              partition\t262140\t\t0\t\t32767\n";
  const auto areas = parse_proc_swaps(text);
  ASSERT_EQ(areas.size(), 3u);
  EXPECT_EQ(areas[0].filename, "/dev/zram0");
  EXPECT_EQ(areas[0].size_kib, 8388604u);
  EXPECT_EQ(areas[0].used_kib, 1024u);
  EXPECT_EQ(areas[0].priority, 100);
  EXPECT_EQ(areas[1].filename, "/swap file");
  EXPECT_EQ(areas[1].type, "file");
  EXPECT_EQ(areas[1].priority, -2);
  EXPECT_EQ(areas[2].priority, 32767);
}

TEST(ProcSwaps, EmptyAndGarbageGiveNoAreas) {
  EXPECT_TRUE(parse_proc_swaps("").empty());
  EXPECT_TRUE(parse_proc_swaps("Filename\tType\tSize\tUsed\tPriority\n").empty());
  EXPECT_TRUE(parse_proc_swaps("Filename\n/dev/x partition notanumber 0 1\n").empty());
}

TEST(NodeList, CountsOnlineNodes) {
  EXPECT_EQ(parse_node_list_count("0\n"), 1u);
  EXPECT_EQ(parse_node_list_count("0-3"), 4u);
  EXPECT_EQ(parse_node_list_count("0,2-5\n"), 6u);
  EXPECT_EQ(parse_node_list_count(""), 0u);
  EXPECT_EQ(parse_node_list_count("x"), 0u);
  EXPECT_EQ(parse_node_list_count("-3"), 0u);
  EXPECT_GE(online_numa_nodes(), 1u);
}

// systemd names the supervisor (the unit's main process) in WATCHDOG_PID;
// the serving process, its child, must keep the watchdog all the same
// (found in the VM rig: systemd aborted every uzswapd.service 30 s after
// its start).
TEST(Watchdog, ServingProcessKeepsTheSupervisorsWatchdog) {
  EXPECT_EQ(watchdog_usec_for("30000000", "100", 100, 1), 30000000ull);  // the supervisor itself
  EXPECT_EQ(watchdog_usec_for("30000000", "100", 200, 100), 30000000ull);  // its serving process
  EXPECT_EQ(watchdog_usec_for("30000000", nullptr, 200, 100), 30000000ull);  // no pid: anyone
}

TEST(Watchdog, NoneWhenUnsetMalformedOrForAnotherProcess) {
  EXPECT_EQ(watchdog_usec_for(nullptr, nullptr, 200, 100), 0ull);
  EXPECT_EQ(watchdog_usec_for("", "100", 200, 100), 0ull);
  EXPECT_EQ(watchdog_usec_for("30s", "100", 200, 100), 0ull);
  EXPECT_EQ(watchdog_usec_for("99999999999999999999999", nullptr, 200, 100), 0ull);
  EXPECT_EQ(watchdog_usec_for("30000000", "300", 200, 100), 0ull);  // a grandchild's, not ours
  EXPECT_EQ(watchdog_usec_for("30000000", "x", 200, 100), 0ull);
}

}  // namespace
}  // namespace uzswap
