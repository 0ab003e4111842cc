// ListLru under concurrent add, del, walk and reparenting (run under TSan by
// tests/run): every item ends on exactly one list, isolated, or deleted.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "uzswap/lru/list_lru.h"

namespace uzswap {
namespace {

std::vector<std::uint32_t> items_in_order(ListLru& lru, CgroupId cg, unsigned node) {
  std::vector<std::uint32_t> seen;
  std::uint64_t budget = 1u << 20;
  lru.walk(cg, node, budget, [&](std::uint32_t item, ListLru::WalkedList&) {
    seen.push_back(item);
    return LruStatus::skip;
  });
  return seen;
}

TEST(ListLru, ConcurrentAddDelWalkAndReparentKeepCountsExact) {
  constexpr std::uint32_t kItems = 4000;
  ListLru lru(kItems, 2);
  for (CgroupId c = 1; c <= 8; ++c) ASSERT_TRUE(lru.add_cgroup(c, kRootCgroup));
  std::atomic<std::uint64_t> isolated{0}, deleted{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      for (std::uint32_t i = t; i < kItems; i += 2) {
        lru.add(i, static_cast<CgroupId>(1 + i % 8), i % 2);
        if (i % 3 == 0 && lru.del(i, static_cast<CgroupId>(1 + i % 8), i % 2)) ++deleted;
      }
    });
  threads.emplace_back([&] {
    for (int round = 0; round < 200; ++round)
      for (CgroupId c = 0; c <= 8; ++c)
        for (unsigned node = 0; node < 2; ++node) {
          std::uint64_t budget = 4;
          isolated += lru.walk(c, node, budget, [](std::uint32_t item, ListLru::WalkedList& l) {
            if (item % 5 != 0) return LruStatus::rotate;
            l.isolate(item);
            return LruStatus::removed;
          });
        }
  });
  threads.emplace_back([&] {
    for (CgroupId c = 5; c <= 8; ++c) lru.remove_cgroup(c);
  });
  for (auto& t : threads) t.join();
  // Every item added is on exactly one live list, or was isolated, or deleted.
  std::uint64_t total = 0;
  for (CgroupId c = 0; c <= 8; ++c)
    if (lru.has_cgroup(c))
      for (unsigned node = 0; node < 2; ++node) {
        const auto items = items_in_order(lru, c, node);
        EXPECT_EQ(items.size(), lru.count(c, node));
        total += items.size();
      }
  EXPECT_EQ(total + isolated.load() + deleted.load(), kItems);
}

}  // namespace
}  // namespace uzswap
