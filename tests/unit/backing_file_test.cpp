// BackingFile's set-up: every block of the file written once before it is
// used (so the swap-out path never converts an unwritten extent, a journal
// transaction), pages written before kept. On a file under /var/tmp, on the
// machine's disk: tmpfs has no unwritten extents to speak of.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "uzswap/backing/backing_store.h"

namespace uzswap {
namespace {

// The file's extents as FIEMAP reports them, independently of the code
// under test; nullopt if the filesystem has no FIEMAP.
std::optional<std::vector<FileExtent>> extents_of(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  constexpr unsigned kMax = 4096;
  std::vector<std::uint64_t> storage((sizeof(fiemap) + kMax * sizeof(fiemap_extent)) / 8 + 1);
  auto* map = reinterpret_cast<fiemap*>(storage.data());
  map->fm_start = 0;
  map->fm_length = FIEMAP_MAX_OFFSET;
  map->fm_flags = FIEMAP_FLAG_SYNC;
  map->fm_extent_count = kMax;
  const int rc = ioctl(fd, FS_IOC_FIEMAP, map);
  close(fd);
  if (rc != 0) return std::nullopt;
  std::vector<FileExtent> out;
  for (unsigned i = 0; i < map->fm_mapped_extents; ++i)
    out.push_back({map->fm_extents[i].fe_logical, map->fm_extents[i].fe_length,
                   (map->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0});
  return out;
}

// Unwritten or missing bytes of [0, bytes).
std::uint64_t not_written(const std::vector<FileExtent>& extents, std::uint64_t bytes) {
  std::uint64_t total = 0;
  for (const FileRange& r : ranges_to_write_once(extents, bytes)) total += r.length;
  return total;
}

std::array<std::byte, kPageSize> pattern(Slot slot) {
  std::array<std::byte, kPageSize> page;
  for (std::size_t i = 0; i < kPageSize; ++i) page[i] = static_cast<std::byte>((slot * 131 + i * 7) % 251 + 1);
  return page;
}

class BackingFileSetupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = "/var/tmp/uzswap-backing-file-test-" + std::to_string(getpid());
    std::filesystem::remove(path_);
    // Does this filesystem keep unwritten extents, as ext4 and xfs do?
    const int fd = open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    const bool preallocates = fallocate(fd, 0, 0, 1 << 20) == 0;
    close(fd);
    const auto extents = extents_of(path_);
    std::filesystem::remove(path_);
    if (!preallocates || !extents || extents->empty() || !(*extents)[0].unwritten)
      GTEST_SKIP() << "/var/tmp keeps no unwritten extents (fallocate or FIEMAP missing)";
  }
  void TearDown() override { std::filesystem::remove(path_); }

  std::string path_;
};

TEST(RangesToWriteOnce, UnwrittenExtentsAndHolesNotWrittenOnes) {
  const std::vector<FileExtent> extents = {
      {0, 4096, false},       // written
      {4096, 8192, true},     // unwritten
      {12288, 4096, true},    // unwritten, adjacent: merged
      {20480, 4096, false},   // after a hole [16384, 20480): merged too
      {24576, 16384, true},   // unwritten, past the end: clipped
  };
  const std::vector<FileRange> expected = {{4096, 16384}, {24576, 8192}};
  EXPECT_EQ(ranges_to_write_once(extents, 32768), expected);
  EXPECT_EQ(ranges_to_write_once({}, 8192), (std::vector<FileRange>{{0, 8192}})) << "no extent: all a hole";
  EXPECT_EQ(ranges_to_write_once(std::vector<FileExtent>{{0, 65536, false}}, 8192), std::vector<FileRange>{});
  const std::vector<FileRange> tail = {{8192, 8192}};
  EXPECT_EQ(ranges_to_write_once(std::vector<FileExtent>{{0, 8192, false}}, 16384), tail) << "a hole at the end";
}

TEST_F(BackingFileSetupTest, ANewFileHasNoUnwrittenBlockOnceMade) {
  constexpr std::uint64_t kBytes = 64u << 20;
  std::uint64_t reports = 0;
  BackingFile file(path_, kBytes, [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_LE(done, total);
    ++reports;
  });
  EXPECT_TRUE(file.setup().mapped);
  EXPECT_EQ(file.setup().written_bytes, kBytes);
  EXPECT_GE(file.setup().seconds, 0.0);
  const auto extents = extents_of(path_);
  ASSERT_TRUE(extents);
  EXPECT_EQ(not_written(*extents, kBytes), 0u) << "FIEMAP still shows unwritten or missing blocks";
  for (const FileExtent& e : *extents) EXPECT_FALSE(e.unwritten) << "extent at " << e.offset;
  // And it reads as zeros.
  alignas(kPageSize) std::array<std::byte, kPageSize> page;
  ASSERT_FALSE(file.read(kBytes / kPageSize - 1, page));
  EXPECT_TRUE(std::all_of(page.begin(), page.end(), [](std::byte b) { return b == std::byte{0}; }));
  (void)reports;  // a fast disk may finish within the first second
}

TEST_F(BackingFileSetupTest, PagesWrittenBeforeSurviveAndAReopenWritesNothing) {
  constexpr std::uint64_t kSlots = 4096;  // 16 MiB
  const std::vector<Slot> slots = {0, 1, 7, 300, 301, 2049, kSlots - 1};
  {
    BackingFile file(path_, kSlots * kPageSize);
    std::vector<std::array<std::byte, kPageSize>> pages;
    std::vector<PageWrite> writes;
    for (Slot s : slots) pages.push_back(pattern(s));
    for (std::size_t i = 0; i < slots.size(); ++i) writes.push_back({slots[i], pages[i].data(), 0});
    file.write(writes);
    for (const PageWrite& w : writes) ASSERT_EQ(w.result, 0) << w.slot;
  }
  // The same size again (a restart): nothing to write, nothing zeroed.
  {
    BackingFile file(path_, kSlots * kPageSize);
    EXPECT_TRUE(file.setup().mapped);
    EXPECT_EQ(file.setup().written_bytes, 0u) << "a ready file costs nothing";
    alignas(kPageSize) std::array<std::byte, kPageSize> page;
    for (Slot s : slots) {
      ASSERT_FALSE(file.read(s, page));
      EXPECT_EQ(page, pattern(s)) << "slot " << s << " zeroed by the reopen";
    }
  }
  // Larger (the device grew): only the new part is written.
  {
    BackingFile file(path_, 2 * kSlots * kPageSize);
    EXPECT_EQ(file.setup().written_bytes, kSlots * kPageSize);
    alignas(kPageSize) std::array<std::byte, kPageSize> page;
    for (Slot s : slots) {
      ASSERT_FALSE(file.read(s, page));
      EXPECT_EQ(page, pattern(s)) << "slot " << s;
    }
  }
  const auto extents = extents_of(path_);
  ASSERT_TRUE(extents);
  EXPECT_EQ(not_written(*extents, 2 * kSlots * kPageSize), 0u);
}

TEST_F(BackingFileSetupTest, APartlyWrittenFileKeepsItsPagesAndGetsTheRestWritten) {
  // A file another tool (or a version of uzswapd that only preallocated)
  // left: unwritten extents with a few written blocks in them.
  constexpr std::uint64_t kSlots = 8192;  // 32 MiB
  const std::vector<Slot> slots = {3, 4, 1000, 5000, kSlots - 2};
  {
    const int fd = open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fallocate(fd, 0, 0, kSlots * kPageSize), 0);
    for (Slot s : slots) {
      const auto page = pattern(s);
      ASSERT_EQ(pwrite(fd, page.data(), kPageSize, static_cast<off_t>(s * kPageSize)),
                static_cast<ssize_t>(kPageSize));
    }
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
  const auto before = extents_of(path_);
  ASSERT_TRUE(before);
  ASSERT_GT(not_written(*before, kSlots * kPageSize), 0u);

  BackingFile file(path_, kSlots * kPageSize);
  // ext4 may have written zeros around a block written into an unwritten
  // extent itself (up to 32 KiB, its extent_max_zeroout_kb): those count
  // as written.
  const std::uint64_t unwritten = (kSlots - slots.size()) * kPageSize;
  EXPECT_LE(file.setup().written_bytes, unwritten) << "written blocks skipped";
  EXPECT_GE(file.setup().written_bytes, unwritten - slots.size() * (64u << 10));
  EXPECT_GE(file.setup().ranges, slots.size());
  const auto after = extents_of(path_);
  ASSERT_TRUE(after);
  EXPECT_EQ(not_written(*after, kSlots * kPageSize), 0u);
  alignas(kPageSize) std::array<std::byte, kPageSize> page;
  for (Slot s : slots) {
    ASSERT_FALSE(file.read(s, page));
    EXPECT_EQ(page, pattern(s)) << "slot " << s << " zeroed by the set-up";
  }
  ASSERT_FALSE(file.read(5, page));
  EXPECT_TRUE(std::all_of(page.begin(), page.end(), [](std::byte b) { return b == std::byte{0}; }));
}

}  // namespace
}  // namespace uzswap
