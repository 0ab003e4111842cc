#include "uzswap/lru/shrinker.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <map>

#include "uzswap/backing/backing_store.h"
#include "uzswap/store/page_store.h"
#include "uzswap/writeback/shrink_memcg.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

// A shrinker with a number of objects per (cgroup, node) that frees them on scan.
class FakeShrinker : public Shrinker {
 public:
  std::map<std::pair<CgroupId, unsigned>, std::uint64_t> objects;
  std::uint64_t count_calls = 0, scan_calls = 0, scanned = 0;
  bool stop = false;
  bool unfreeable = false;  // objects there, none freeable: count 0

  std::uint64_t count(CgroupId cg, unsigned node) override {
    ++count_calls;
    const std::uint64_t n = objects[{cg, node}];
    return n == 0 && !unfreeable ? kShrinkEmpty : n;
  }
  std::uint64_t scan(ShrinkControl& c) override {
    ++scan_calls;
    if (stop) return kShrinkStop;
    auto& n = objects[{c.cgroup, c.node}];
    const std::uint64_t freed = std::min(n, c.nr_to_scan);
    n -= freed;
    scanned += c.nr_to_scan;
    return freed;
  }
};

TEST(ShrinkerRegistry, OnlyShrinkersWithTheirBitSetAreAsked) {
  ShrinkerRegistry registry(1);
  FakeShrinker a, b;
  const int ia = registry.add(a), ib = registry.add(b);
  ASSERT_GE(ia, 0);
  ASSERT_GE(ib, 0);
  a.objects[{kRootCgroup, 0}] = 10000;
  b.objects[{kRootCgroup, 0}] = 10000;
  registry.set_bit(kRootCgroup, 0, ia);
  EXPECT_GT(registry.shrink_slab(kRootCgroup, 0, 0), 0u);
  EXPECT_GT(a.count_calls, 0u);
  EXPECT_EQ(b.count_calls, 0u) << "no bit, no call";
}

TEST(ShrinkerRegistry, AnEmptyCountClearsTheBit) {
  ShrinkerRegistry registry(2);
  FakeShrinker a;
  const int id = registry.add(a);
  registry.set_bit(kRootCgroup, 1, id);
  EXPECT_TRUE(registry.bit(kRootCgroup, 1, id));
  EXPECT_EQ(registry.shrink_slab(kRootCgroup, 1, ShrinkerRegistry::kDefaultPriority), 0u);
  EXPECT_FALSE(registry.bit(kRootCgroup, 1, id));
}

TEST(ShrinkerRegistry, PriorityScalesTheScanAndLeftoverWorkIsDeferred) {
  ShrinkerRegistry registry(1);
  FakeShrinker a;
  a.batch = 128;
  const int id = registry.add(a);
  a.objects[{kRootCgroup, 0}] = 1u << 20;
  registry.set_bit(kRootCgroup, 0, id);
  // priority 12: delta = (2^20 >> 12) * 4 / 2 = 512 objects.
  EXPECT_EQ(registry.shrink_slab(kRootCgroup, 0, 12), 512u);
  EXPECT_EQ(registry.deferred(kRootCgroup, 0, id), 0u);
  // A shrinker that stops at once: the whole delta is carried over.
  a.stop = true;
  registry.shrink_slab(kRootCgroup, 0, 12);
  const std::uint64_t owed = registry.deferred(kRootCgroup, 0, id);
  EXPECT_GT(owed, 0u);
  a.stop = false;
  const std::uint64_t before = a.scanned;
  registry.shrink_slab(kRootCgroup, 0, 0);
  EXPECT_GT(a.scanned - before, owed) << "the deferred work is done on the next pass";
}

TEST(ShrinkerRegistry, ReparentingMovesBitsAndDeferredWork) {
  ShrinkerRegistry registry(1);
  FakeShrinker a;
  const int id = registry.add(a);
  registry.add_cgroup(4);
  a.objects[{4, 0}] = 1u << 20;
  registry.set_bit(4, 0, id);
  a.stop = true;
  registry.shrink_slab(4, 0, 12);
  const std::uint64_t owed = registry.deferred(4, 0, id);
  ASSERT_GT(owed, 0u);
  registry.reparent(4, kRootCgroup);
  EXPECT_TRUE(registry.bit(kRootCgroup, 0, id));
  EXPECT_EQ(registry.deferred(kRootCgroup, 0, id), owed);
}

TEST(ShrinkerRegistry, NothingFreeableNowKeepsTheBit) {
  ShrinkerRegistry registry(1);
  FakeShrinker a;
  a.unfreeable = true;
  const int id = registry.add(a);
  registry.set_bit(kRootCgroup, 0, id);
  EXPECT_EQ(registry.shrink_slab(kRootCgroup, 0, 0), 0u);
  EXPECT_TRUE(registry.bit(kRootCgroup, 0, id)) << "found again once they can be freed";
  EXPECT_EQ(a.scan_calls, 0u);
}

TEST(ShrinkerRegistry, TheRegistryHasRoomForEightShrinkers) {
  ShrinkerRegistry registry(1);
  std::array<FakeShrinker, ShrinkerRegistry::kMaxShrinkers + 1> many;
  for (unsigned i = 0; i < ShrinkerRegistry::kMaxShrinkers; ++i) EXPECT_GE(registry.add(many[i]), 0);
  EXPECT_EQ(registry.add(many.back()), -1);
}

TEST(ShrinkerRegistry, ThePageStoreIsAShrinkerOfItsLists) {
  const std::string path = "/var/tmp/uzswap-shrinker-test-" + std::to_string(getpid());
  BackingFile file(path, 1024 * kPageSize);
  std::filesystem::remove(path);  // the open file outlives its name
  PageStoreOptions o;
  o.slots = 1024;
  o.pool.nodes = 2;
  o.pool.reserve_bytes_per_node = 64u << 20;
  PageStore store(o);
  Writeback writeback(store);
  store.attach_backing(&file);
  ShrinkerRegistry registry(2);
  const int id = writeback.register_shrinker(registry);
  ASSERT_GE(id, 0);
  EXPECT_FALSE(registry.bit(kRootCgroup, 1, id));
  std::array<std::byte, kPageSize> page;
  for (Slot s = 0; s < 600; ++s) {
    testing::make_page(testing::PageKind::text, s, page);
    ASSERT_TRUE(store.store(s, page, 1).has_value());
  }
  EXPECT_TRUE(registry.bit(kRootCgroup, 1, id)) << "set when the list was populated";
  EXPECT_FALSE(registry.bit(kRootCgroup, 0, id));
  std::uint64_t freed = 0;
  for (int priority = ShrinkerRegistry::kDefaultPriority; priority >= 0; --priority)
    freed += registry.shrink_slab(kRootCgroup, 1, priority);
  EXPECT_GT(freed, 0u);
  EXPECT_EQ(store.stats().written_back_pages, freed);
  for (Slot s = 0; s < 600; ++s) {
    std::array<std::byte, kPageSize> want, got;
    testing::make_page(testing::PageKind::text, s, want);
    ASSERT_TRUE(store.load(s, got).has_value());
    ASSERT_EQ(got, want);
  }
  // A cgroup's bits and lists follow it to its parent.
  ASSERT_TRUE(store.memcg().add(9, kRootCgroup));
  testing::make_page(testing::PageKind::text, 9999, page);
  ASSERT_TRUE(store.store(700, page, 0).has_value());
  ASSERT_TRUE(store.attribution_side().set_slot_cgroup(700, 9));
  EXPECT_TRUE(registry.bit(9, 0, id));
  ASSERT_TRUE(store.memcg().remove(9));
  EXPECT_TRUE(registry.bit(kRootCgroup, 0, id));
}

}  // namespace
}  // namespace uzswap
