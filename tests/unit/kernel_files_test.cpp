#include "uzswap/reclaim/kernel_files.h"

#include <gtest/gtest.h>

namespace uzswap {
namespace {

TEST(Pagemap, DecodesSwappedPresentAndEmptyWords) {
  // Swapped: bit 62, type 3, offset 0x12345.
  const std::uint64_t swapped = (std::uint64_t{1} << 62) | (std::uint64_t{0x12345} << 5) | 3;
  const PagemapEntry s = decode_pagemap(swapped);
  EXPECT_TRUE(s.swapped);
  EXPECT_FALSE(s.present);
  EXPECT_EQ(s.swap_type, 3u);
  EXPECT_EQ(s.swap_offset, 0x12345u);
  const PagemapEntry p = decode_pagemap((std::uint64_t{1} << 63) | 0xabcdef);
  EXPECT_TRUE(p.present);
  EXPECT_FALSE(p.swapped);
  EXPECT_EQ(p.swap_offset, 0u);
  const PagemapEntry none = decode_pagemap(0);
  EXPECT_FALSE(none.present);
  EXPECT_FALSE(none.swapped);
  // The largest offset the format carries (50 bits) and type 31.
  const PagemapEntry big = decode_pagemap((std::uint64_t{1} << 62) | (((std::uint64_t{1} << 50) - 1) << 5) | 31);
  EXPECT_EQ(big.swap_type, 31u);
  EXPECT_EQ(big.swap_offset, (std::uint64_t{1} << 50) - 1);
}

TEST(Maps, ParsesCapturedText) {
  const char* text =
      "55d4a0000000-55d4a0021000 rw-p 00000000 00:00 0                          [heap]\n"
      "7f1c2a000000-7f1c2a200000 r--s 00000000 08:01 1234                       /usr/lib/my lib.so\n"
      "7ffc12340000-7ffc12361000 rw-p 00000000 00:00 0                          [stack]\n"
      "7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n"
      "garbage line\n"
      "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]";
  const auto r = parse_maps(text);
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(r[0].start, 0x55d4a0000000u);
  EXPECT_EQ(r[0].end, 0x55d4a0021000u);
  EXPECT_TRUE(r[0].readable);
  EXPECT_FALSE(r[0].shared);
  EXPECT_EQ(r[0].path, "[heap]");
  EXPECT_TRUE(r[1].shared);
  EXPECT_EQ(r[1].path, "/usr/lib/my lib.so");
  EXPECT_FALSE(r[3].readable);
  EXPECT_EQ(r[4].path, "[vsyscall]");
  EXPECT_TRUE(parse_maps("").empty());
}

TEST(Smaps, EachRangeCarriesItsSwap) {
  const char* text =
      "55d4a0000000-55d4a0021000 rw-p 00000000 00:00 0                          [heap]\n"
      "Size:                132 kB\n"
      "Rss:                  64 kB\n"
      "Swap:                 68 kB\n"
      "SwapPss:              68 kB\n"
      "VmFlags: rd wr mr mw me ac sd\n"
      "600000000000-640000000000 rw-p 00000000 00:00 0 \n"
      "Size:         1073741824 kB\n"
      "Swap:                  0 kB\n"
      "VmFlags: rd wr mr mw me nr sd\n";
  const auto r = parse_smaps(text);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].path, "[heap]");
  EXPECT_EQ(r[0].swap_kb, 68u);
  EXPECT_EQ(r[1].start, 0x600000000000u);
  EXPECT_EQ(r[1].swap_kb, 0u);
  EXPECT_TRUE(parse_smaps("Swap: 4 kB\n").empty()) << "a field before any range is ignored";
}

TEST(MemoryEvents, KeysAreReadByName) {
  const auto e = parse_memory_events("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\nnewkey 99\n");
  EXPECT_EQ(e.at("high"), 12u);
  EXPECT_EQ(e.at("max"), 3u);
  EXPECT_EQ(e.at("oom_kill"), 1u);
  EXPECT_EQ(e.at("newkey"), 99u);
  EXPECT_FALSE(e.contains("oom_group"));
  EXPECT_TRUE(parse_memory_events("").empty());
  EXPECT_TRUE(parse_memory_events("high x\n\n").empty());
}

TEST(MemInfo, TotalAndAvailableAreRead) {
  const auto m = parse_meminfo(
      "MemTotal:       24567892 kB\nMemFree:        14000000 kB\nMemAvailable:   18000000 kB\n"
      "Buffers:          123456 kB\n");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->total_kb, 24567892u);
  EXPECT_EQ(m->available_kb, 18000000u);
  EXPECT_FALSE(parse_meminfo("MemTotal:       24567892 kB\n").has_value()) << "no MemAvailable";
  EXPECT_FALSE(parse_meminfo("").has_value());
  EXPECT_FALSE(parse_meminfo("MemTotal: lots kB\nMemAvailable: 1 kB\n").has_value());
}

TEST(Psi, ParsesSomeAndFull) {
  const Psi p = parse_psi(
      "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n"
      "full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n");
  ASSERT_TRUE(p.some && p.full);
  EXPECT_DOUBLE_EQ(p.some->avg10, 1.5);
  EXPECT_EQ(p.some->total_us, 123456u);
  EXPECT_EQ(p.full->total_us, 789u);
  const Psi some_only = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n");
  EXPECT_TRUE(some_only.some);
  EXPECT_FALSE(some_only.full);
  EXPECT_FALSE(parse_psi("some avg10=x avg60=0 avg300=0 total=1").some);
  EXPECT_FALSE(parse_psi("").some);
}

TEST(CgroupProcs, OnePidPerLine) {
  EXPECT_EQ(parse_cgroup_procs("1\n42\n\n300\nx\n-5\n"), (std::vector<int>{1, 42, 300}));
  EXPECT_TRUE(parse_cgroup_procs("").empty());
}

}  // namespace
}  // namespace uzswap
