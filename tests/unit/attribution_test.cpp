// Attribution against a cgroup tree made of plain files (the root is a
// setting): cgroups are found by inode, get the kernel's zswap knobs as
// their defaults, and are removed (reparented) when their directory goes.
#include "uzswap/reclaim/attribution.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace uzswap {
namespace {

namespace fs = std::filesystem;

class AttributionTest : public ::testing::Test {
 protected:
  AttributionTest() : root_("/tmp/uzswap-attr-test-" + std::to_string(getpid())), store_(options()) {
    fs::create_directories(root_);
    write(root_ + "/cgroup.procs", "");
  }
  ~AttributionTest() override { fs::remove_all(root_); }

  static PageStoreOptions options() {
    PageStoreOptions o;
    o.slots = 1024;
    o.pool.reserve_bytes_per_node = 16u << 20;
    return o;
  }
  static void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
  void make(const std::string& rel, const std::string& procs = "") {
    fs::create_directories(root_ + rel);
    write(root_ + rel + "/cgroup.procs", procs);
  }

  std::string root_;
  PageStore store_;
};

TEST_F(AttributionTest, CgroupsAreFoundWithTheirParentsAndKernelDefaults) {
  make("/a");
  make("/a/b");
  write(root_ + "/a/b/memory.zswap.writeback", "0\n");
  write(root_ + "/a/b/memory.zswap.max", "1048576\n");
  make("/c");
  write(root_ + "/c/memory.zswap.max", "max\n");
  Attribution attribution(store_, {root_, 0, 1u << 20});
  const AttributionPass pass = attribution.scan();
  EXPECT_EQ(pass.new_cgroups, 3u);
  EXPECT_TRUE(pass.complete);
  EXPECT_EQ(store_.cgroups().size(), 4u);  // with the root
  const auto b = attribution.id_of("/a/b");
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(store_.cgroup_policy(*b).writeback);
  EXPECT_EQ(store_.cgroup_policy(*b).max_bytes, 1u << 20);
  const auto c = attribution.id_of("/c");
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(store_.cgroup_policy(*c).writeback);
  EXPECT_EQ(store_.cgroup_policy(*c).max_bytes, 0u);
  EXPECT_EQ(attribution.path_of(*b), "/a/b");
  EXPECT_EQ(attribution.path_of(kRootCgroup), "/");
  // A second pass finds nothing new.
  EXPECT_EQ(attribution.scan().new_cgroups, 0u);
}

TEST_F(AttributionTest, AGoneCgroupIsRemovedAndItsPagesGoToTheParent) {
  make("/a");
  make("/a/b");
  Attribution attribution(store_, {root_, 0, 1u << 20});
  attribution.scan();
  const CgroupId a = *attribution.id_of("/a");
  const CgroupId b = *attribution.id_of("/a/b");
  std::array<std::byte, kPageSize> page{};
  page[100] = std::byte{1};
  ASSERT_TRUE(store_.store(5, page).has_value());
  ASSERT_TRUE(store_.set_slot_cgroup(5, b));
  EXPECT_EQ(store_.cgroup_stats(b).stored_pages, 1u);
  fs::remove_all(root_ + "/a/b");
  const AttributionPass pass = attribution.scan();
  EXPECT_EQ(pass.removed_cgroups, 1u);
  EXPECT_FALSE(attribution.id_of("/a/b").has_value());
  EXPECT_EQ(store_.cgroup_stats(a).stored_pages, 1u) << "reparented";
  // A directory made again at the same path is a new cgroup with a new id.
  make("/a/b");
  attribution.scan();
  EXPECT_NE(*attribution.id_of("/a/b"), b);
}

TEST_F(AttributionTest, ProcessesThatDoNotExistAreSkipped) {
  make("/a", "999999999\n1x\n");
  Attribution attribution(store_, {root_, 0, 1u << 20});
  const AttributionPass pass = attribution.scan();
  EXPECT_EQ(pass.processes, 0u);
  EXPECT_EQ(pass.attributed, 0u);
}

TEST_F(AttributionTest, AMissingTreeIsEmptyNotAnError) {
  Attribution attribution(store_, {root_ + "/nonexistent", 0, 1u << 20});
  const AttributionPass pass = attribution.scan();
  EXPECT_EQ(pass.cgroups, 0u);
}

TEST_F(AttributionTest, OnlyMappingsWithSwappedPagesAreRead) {
  // Our own process, in two cgroups of the fake tree: it has nothing swapped
  // out, so smaps lets the pass skip every mapping.
  make("/a", std::to_string(getpid()) + "\n");
  make("/b", std::to_string(getpid()) + "\n");
  Attribution attribution(store_, {root_, 0, 1024});
  const AttributionPass pass = attribution.scan();
  EXPECT_TRUE(pass.complete);
  EXPECT_EQ(pass.processes, 2u);
  EXPECT_EQ(pass.pages_scanned, 0u);
  EXPECT_EQ(pass.attributed, 0u);
}

}  // namespace
}  // namespace uzswap
