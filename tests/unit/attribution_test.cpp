// Attribution against a cgroup tree made of plain files (the root is a
// setting): cgroups are found by inode, get the kernel's zswap knobs as
// their defaults, and are removed (reparented) when their directory goes.
#include "uzswap/reclaim/attribution.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
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
  EXPECT_EQ(store_.memcg().cgroups().size(), 4u);  // with the root
  const auto b = attribution.id_of("/a/b");
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(store_.memcg().policy(*b).writeback);
  EXPECT_EQ(store_.memcg().policy(*b).max_bytes, 1u << 20);
  const auto c = attribution.id_of("/c");
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(store_.memcg().policy(*c).writeback);
  EXPECT_EQ(store_.memcg().policy(*c).max_bytes, 0u);
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
  ASSERT_TRUE(store_.attribution_side().set_slot_cgroup(5, b));
  EXPECT_EQ(store_.memcg().stats(b).stored_pages, 1u);
  fs::remove_all(root_ + "/a/b");
  const AttributionPass pass = attribution.scan();
  EXPECT_EQ(pass.removed_cgroups, 1u);
  EXPECT_FALSE(attribution.id_of("/a/b").has_value());
  EXPECT_EQ(store_.memcg().stats(a).stored_pages, 1u) << "reparented";
  // A directory made again at the same path is a new cgroup: it starts
  // empty and the old page stays with the parent (its id may be reused).
  make("/a/b");
  attribution.scan();
  const CgroupId again = *attribution.id_of("/a/b");
  EXPECT_EQ(store_.memcg().stats(again).stored_pages, 0u);
  EXPECT_EQ(store_.memcg().stats(a).stored_pages, 1u);
}

TEST_F(AttributionTest, TheIdOfARemovedCgroupIsHandedOutAgainFromTheNextPass) {
  make("/a");
  Attribution attribution(store_, {root_, 0, 1u << 20});
  attribution.scan();
  const CgroupId a = *attribution.id_of("/a");
  std::array<std::byte, kPageSize> page{};
  page[7] = std::byte{3};
  ASSERT_TRUE(store_.store(9, page).has_value());
  ASSERT_TRUE(store_.attribution_side().set_slot_cgroup(9, a));
  store_.memcg().set_policy(a, {false, 4096});
  make("/b");  // in the same pass as the removal: gets another id
  fs::remove_all(root_ + "/a");  // (after: a plain filesystem would give /b a's inode)
  AttributionPass pass = attribution.scan();
  EXPECT_EQ(pass.removed_cgroups, 1u);
  EXPECT_EQ(pass.released_ids, 1u);
  EXPECT_NE(*attribution.id_of("/b"), a);
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).stored_pages, 1u);
  make("/c");  // the next pass: a's id is free again
  attribution.scan();
  const CgroupId c = *attribution.id_of("/c");
  EXPECT_EQ(c, a);
  EXPECT_EQ(store_.memcg().stats(c).stored_pages, 0u) << "the old page is not the new cgroup's";
  EXPECT_TRUE(store_.memcg().policy(c).writeback) << "the old policy is not the new cgroup's";
  EXPECT_EQ(store_.memcg().policy(c).max_bytes, 0u);
  // The page's entry was re-labelled: removing c moves nothing from it.
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).stored_pages, 1u);
  std::array<std::byte, kPageSize> got{};
  ASSERT_TRUE(store_.load(9, got).has_value());
  EXPECT_EQ(got, page);
  fs::remove_all(root_ + "/c");
  attribution.scan();
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).stored_pages, 1u);
}

TEST_F(AttributionTest, CgroupsBeyondTheLastIdAreUntrackedAndCounted) {
  AttributionOptions o{root_, 0, 1u << 20};
  o.max_cgroups = 3;  // ids 1 and 2
  make("/a");
  make("/b");
  Attribution attribution(store_, o);
  EXPECT_EQ(attribution.scan().new_cgroups, 2u);
  EXPECT_EQ(attribution.free_ids(), 0u);
  make("/c");
  write(root_ + "/c/memory.zswap.writeback", "0\n");
  make("/d");
  write(root_ + "/d/memory.zswap.max", "65536\n");
  AttributionPass pass = attribution.scan();
  EXPECT_EQ(pass.new_cgroups, 0u);
  EXPECT_EQ(pass.untracked_cgroups, 2u);
  EXPECT_EQ(attribution.untracked().writeback_off, 1u);
  EXPECT_EQ(attribution.untracked().with_max, 1u);
  EXPECT_FALSE(attribution.id_of("/c").has_value());
  // An id comes free: from the pass after the release, one of them has it.
  fs::remove_all(root_ + "/a");
  EXPECT_EQ(attribution.scan().untracked_cgroups, 2u);
  pass = attribution.scan();
  EXPECT_EQ(pass.new_cgroups, 1u);
  EXPECT_EQ(pass.untracked_cgroups, 1u);
  EXPECT_EQ(attribution.untracked().writeback_off + attribution.untracked().with_max, 1u);
  const auto c = attribution.id_of("/c");
  if (c) {
    EXPECT_FALSE(store_.memcg().policy(*c).writeback) << "its own knob, once it has an id";
  }
}

TEST_F(AttributionTest, IdsAnEarlierProcessRemovedButNeverReleasedAreFreed) {
  make("/a");
  {
    Attribution first(store_, {root_, 0, 1u << 20});
    first.scan();
  }
  const CgroupId a = static_cast<CgroupId>(store_.memcg().next_id() - 1);
  ASSERT_TRUE(store_.memcg().remove(a));  // and the process died before releasing it
  fs::remove_all(root_ + "/a");
  Attribution second(store_, {root_, 0, 1u << 20});
  second.scan();
  make("/b");
  second.scan();
  EXPECT_EQ(*second.id_of("/b"), a);
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
