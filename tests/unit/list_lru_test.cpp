#include "uzswap/lru/list_lru.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace uzswap {
namespace {

std::vector<std::uint32_t> items_in_order(ListLru& lru, CgroupId cg, unsigned node) {
  std::vector<std::uint32_t> seen;
  std::uint64_t budget = 1000;
  lru.walk(cg, node, budget, [&](std::uint32_t item, ListLru::WalkedList&) {
    seen.push_back(item);
    return LruStatus::skip;
  });
  return seen;
}

TEST(ListLru, AddAppendsAtTheTailAndDelRemoves) {
  ListLru lru(100, 1);
  EXPECT_TRUE(lru.add(5, kRootCgroup, 0));
  EXPECT_TRUE(lru.add(7, kRootCgroup, 0));
  EXPECT_TRUE(lru.add(6, kRootCgroup, 0));
  EXPECT_FALSE(lru.add(7, kRootCgroup, 0)) << "already on a list";
  EXPECT_EQ(lru.count(kRootCgroup, 0), 3u);
  EXPECT_EQ(items_in_order(lru, kRootCgroup, 0), (std::vector<std::uint32_t>{5, 7, 6}));
  EXPECT_TRUE(lru.del(7, kRootCgroup, 0));
  EXPECT_FALSE(lru.del(7, kRootCgroup, 0));
  EXPECT_EQ(items_in_order(lru, kRootCgroup, 0), (std::vector<std::uint32_t>{5, 6}));
  EXPECT_EQ(lru.count(kRootCgroup, 0), 2u);
}

TEST(ListLru, ListsAreSeparatePerCgroupAndNode) {
  ListLru lru(100, 2);
  ASSERT_TRUE(lru.add_cgroup(3, kRootCgroup));
  lru.add(1, kRootCgroup, 0);
  lru.add(2, kRootCgroup, 1);
  lru.add(3, 3, 0);
  EXPECT_EQ(lru.count(kRootCgroup, 0), 1u);
  EXPECT_EQ(lru.count(kRootCgroup, 1), 1u);
  EXPECT_EQ(lru.count(3, 0), 1u);
  EXPECT_EQ(lru.count(3, 1), 0u);
  EXPECT_EQ(items_in_order(lru, 3, 0), std::vector<std::uint32_t>{3});
}

TEST(ListLru, RemovedItemsAreCountedAndTheWalkGoesOn) {
  ListLru lru(10, 1);
  for (std::uint32_t i = 0; i < 5; ++i) lru.add(i, kRootCgroup, 0);
  std::uint64_t budget = 10;
  const auto removed = lru.walk(kRootCgroup, 0, budget, [](std::uint32_t item, ListLru::WalkedList& l) {
    if (item % 2 == 0) {
      l.isolate(item);
      return LruStatus::removed;
    }
    return LruStatus::skip;
  });
  EXPECT_EQ(removed, 3u);
  EXPECT_EQ(budget, 5u);
  EXPECT_EQ(items_in_order(lru, kRootCgroup, 0), (std::vector<std::uint32_t>{1, 3}));
}

TEST(ListLru, RotateGivesASecondChance) {
  ListLru lru(10, 1);
  for (std::uint32_t i = 0; i < 3; ++i) lru.add(i, kRootCgroup, 0);
  // zswap's shrink_memcg_cb: referenced -> clear and rotate; else isolate.
  auto second_chance = [](std::uint32_t item, ListLru::WalkedList& l) {
    if (l.referenced(item)) {
      l.clear_referenced(item);
      return LruStatus::rotate;
    }
    l.isolate(item);
    return LruStatus::removed;
  };
  std::uint64_t budget = 3;
  EXPECT_EQ(lru.walk(kRootCgroup, 0, budget, second_chance), 0u) << "all were referenced";
  EXPECT_EQ(items_in_order(lru, kRootCgroup, 0), (std::vector<std::uint32_t>{0, 1, 2}));
  budget = 1;
  EXPECT_EQ(lru.walk(kRootCgroup, 0, budget, second_chance), 1u);
  EXPECT_EQ(items_in_order(lru, kRootCgroup, 0), (std::vector<std::uint32_t>{1, 2}));
}

TEST(ListLru, RotateMovesToTheTail) {
  ListLru lru(10, 1);
  for (std::uint32_t i = 0; i < 3; ++i) lru.add(i, kRootCgroup, 0);
  std::uint64_t budget = 1;
  lru.walk(kRootCgroup, 0, budget, [](std::uint32_t, ListLru::WalkedList&) { return LruStatus::rotate; });
  EXPECT_EQ(items_in_order(lru, kRootCgroup, 0), (std::vector<std::uint32_t>{1, 2, 0}));
}

TEST(ListLru, StopEndsTheWalk) {
  ListLru lru(10, 1);
  for (std::uint32_t i = 0; i < 5; ++i) lru.add(i, kRootCgroup, 0);
  std::uint64_t budget = 10;
  int calls = 0;
  lru.walk(kRootCgroup, 0, budget, [&](std::uint32_t, ListLru::WalkedList&) {
    ++calls;
    return LruStatus::stop;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(budget, 9u);
}

TEST(ListLru, RemovedRetryRestartsFromTheHeadAfterTheLockWasDropped) {
  ListLru lru(10, 1);
  for (std::uint32_t i = 0; i < 4; ++i) lru.add(i, kRootCgroup, 0);
  std::uint64_t budget = 10;
  std::vector<std::uint32_t> seen;
  const auto removed = lru.walk(kRootCgroup, 0, budget, [&](std::uint32_t item, ListLru::WalkedList& l) {
    seen.push_back(item);
    l.isolate(item);
    l.unlock();
    // With the lock dropped, another thread changes the list.
    if (item == 0) lru.add(9, kRootCgroup, 0);
    l.lock();
    return LruStatus::removed_retry;
  });
  EXPECT_EQ(removed, 5u);
  EXPECT_EQ(seen, (std::vector<std::uint32_t>{0, 1, 2, 3, 9}));
  EXPECT_EQ(lru.count(kRootCgroup, 0), 0u);
}

TEST(ListLru, RetryCannotLoopForeverBecauseTheBudgetShrinks) {
  ListLru lru(10, 1);
  lru.add(1, kRootCgroup, 0);
  std::uint64_t budget = 7;
  int calls = 0;
  lru.walk(kRootCgroup, 0, budget, [&](std::uint32_t, ListLru::WalkedList& l) {
    ++calls;
    l.unlock();
    l.lock();
    return LruStatus::retry;
  });
  EXPECT_EQ(calls, 7);
  EXPECT_EQ(budget, 0u);
  EXPECT_EQ(lru.count(kRootCgroup, 0), 1u);
}

TEST(ListLru, ReparentingSplicesListsIntoTheParent) {
  ListLru lru(100, 2);
  ASSERT_TRUE(lru.add_cgroup(1, kRootCgroup));
  ASSERT_TRUE(lru.add_cgroup(2, 1));
  lru.add(10, 1, 0);
  lru.add(20, 2, 0);
  lru.add(21, 2, 0);
  lru.add(22, 2, 1);
  ASSERT_TRUE(lru.remove_cgroup(2));
  EXPECT_FALSE(lru.has_cgroup(2));
  EXPECT_EQ(lru.resolve(2), 1);
  EXPECT_EQ(items_in_order(lru, 1, 0), (std::vector<std::uint32_t>{10, 20, 21}));
  EXPECT_EQ(lru.count(1, 0), 3u);
  EXPECT_EQ(lru.count(1, 1), 1u);
  // Items added under the dead id land on the parent; del finds them there.
  lru.add(23, 2, 0);
  EXPECT_EQ(lru.count(1, 0), 4u);
  EXPECT_TRUE(lru.del(20, 2, 0));
  // Removing the parent moves everything to the root.
  ASSERT_TRUE(lru.remove_cgroup(1));
  EXPECT_EQ(lru.resolve(2), kRootCgroup);
  EXPECT_EQ(items_in_order(lru, kRootCgroup, 0), (std::vector<std::uint32_t>{10, 21, 23}));
  EXPECT_EQ(lru.count(kRootCgroup, 1), 1u);
}

TEST(ListLru, CgroupRulesAreEnforced) {
  ListLru lru(10, 1);
  EXPECT_EQ(lru.add_cgroup(kRootCgroup, kRootCgroup).error(), LruError::root);
  EXPECT_EQ(lru.add_cgroup(5, 4).error(), LruError::no_parent) << "the parent must exist";
  EXPECT_TRUE(lru.add_cgroup(4, kRootCgroup));
  EXPECT_TRUE(lru.add_cgroup(4, kRootCgroup)) << "idempotent";
  EXPECT_EQ(lru.release_cgroup(4).error(), LruError::live);
  EXPECT_EQ(lru.remove_cgroup(kRootCgroup).error(), LruError::root);
  EXPECT_TRUE(lru.remove_cgroup(4));
  EXPECT_EQ(lru.remove_cgroup(4).error(), LruError::unknown);
  EXPECT_EQ(lru.add_cgroup(4, kRootCgroup).error(), LruError::removed) << "a removed id is not reused";
  EXPECT_EQ(lru.resolve(777), kRootCgroup) << "unknown ids resolve to the root";
}

}  // namespace
}  // namespace uzswap
