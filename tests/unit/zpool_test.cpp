#include "uzswap/pool/zpool.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <atomic>
#include <chrono>
#include <map>
#include <thread>
#include <vector>

#include "uzswap/daemon/config.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

ZPoolOptions small_pool(unsigned nodes = 1) {
  ZPoolOptions o;
  o.nodes = nodes;
  o.reserve_bytes_per_node = 64u << 20;
  o.empty_span_cache_bytes = 64u << 10;
  return o;
}

// Writes a pattern derived from the object's identity; check() verifies it.
void fill(ZPool& pool, PoolHandle h, std::size_t len, std::uint64_t id) {
  testing::Rng rng(id);
  std::byte* p = pool.map(h);
  for (std::size_t i = 0; i < len; ++i) p[i] = static_cast<std::byte>(rng.next());
}
bool check(const ZPool& pool, PoolHandle h, std::size_t len, std::uint64_t id) {
  testing::Rng rng(id);
  const std::byte* p = pool.map(h);
  for (std::size_t i = 0; i < len; ++i)
    if (p[i] != static_cast<std::byte>(rng.next())) return false;
  return true;
}

struct Object {
  std::size_t len;
  std::uint64_t id;
};

TEST(ZPool, ObjectsOfEverySizeKeepTheirBytesAndDoNotOverlap) {
  ZPool pool(small_pool());
  std::map<PoolHandle, Object> live;
  std::uint64_t id = 1;
  for (std::size_t len = 1; len <= kPageSize; len += 7) {
    for (int copies = 0; copies < 3; ++copies) {
      const PoolHandle h = pool.alloc(len, 0);
      ASSERT_NE(h, kNullHandle);
      ASSERT_FALSE(live.contains(h));
      fill(pool, h, len, id);
      live[h] = {len, id++};
    }
  }
  for (const auto& [h, o] : live) ASSERT_TRUE(check(pool, h, o.len, o.id)) << o.len;
  const ZPoolStats s = pool.stats();
  EXPECT_EQ(s.objects, live.size());
  for (const auto& [h, o] : live) pool.free(h);
  EXPECT_EQ(pool.stats().objects, 0u);
  EXPECT_EQ(pool.stats().object_bytes, 0u);
}

TEST(ZPool, FreedObjectsAreReused) {
  ZPool pool(small_pool());
  const PoolHandle a = pool.alloc(1000, 0);
  pool.free(a);
  const PoolHandle b = pool.alloc(1000, 0);
  EXPECT_EQ(a, b);
  pool.free(b);
}

TEST(ZPool, EmptySpansGoToTheCacheThenBackToTheSystem) {
  ZPool pool(small_pool());
  std::vector<PoolHandle> handles;
  for (int i = 0; i < 2000; ++i) handles.push_back(pool.alloc(1500, 0));
  const ZPoolStats full = pool.stats();
  EXPECT_GE(full.span_bytes, 2000u * 1500u);
  for (PoolHandle h : handles) pool.free(h);
  const ZPoolStats empty = pool.stats();
  EXPECT_EQ(empty.spans, 0u);
  EXPECT_LE(empty.span_bytes, 64u << 10) << "only the cache stays resident";
  CompactionStats c = pool.begin_compaction();
  pool.end_compaction(c);
  EXPECT_EQ(pool.stats().span_bytes, 0u);
  EXPECT_EQ(pool.stats().cached_spans, 0u);
}

TEST(ZPool, CompactionMovesObjectsOutOfSparseSpansAndKeepsTheirBytes) {
  ZPool pool(small_pool());
  std::map<PoolHandle, Object> live;
  testing::Rng rng(42);
  std::uint64_t id = 1;
  for (int i = 0; i < 20000; ++i) {
    const std::size_t len = 200 + rng.below(3000);
    const PoolHandle h = pool.alloc(len, 0);
    ASSERT_NE(h, kNullHandle);
    fill(pool, h, len, id);
    live[h] = {len, id++};
  }
  // Free three objects out of four, at random.
  for (auto it = live.begin(); it != live.end();) {
    if (rng.below(4) != 0) {
      pool.free(it->first);
      it = live.erase(it);
    } else {
      ++it;
    }
  }
  const ZPoolStats before = pool.stats();
  CompactionStats c = pool.begin_compaction();
  EXPECT_GT(c.draining_spans, 0u);
  // The owner's pass: move every object that sits in a draining span.
  std::map<PoolHandle, Object> moved;
  std::uint64_t moved_count = 0;
  for (const auto& [h, o] : live) {
    if (pool.needs_migration(h)) {
      const PoolHandle n = pool.migrate(h, o.len);
      ASSERT_NE(n, kNullHandle);
      pool.free(h);  // the owner frees the old copy once nothing refers to it
      moved[n] = o;
      ++moved_count;
    } else {
      moved[h] = o;
    }
  }
  pool.end_compaction(c);
  EXPECT_EQ(moved_count, c.objects_to_move);
  for (const auto& [h, o] : moved) ASSERT_TRUE(check(pool, h, o.len, o.id));
  const ZPoolStats after = pool.stats();
  EXPECT_LT(after.span_bytes, before.span_bytes);
  EXPECT_GT(c.released_bytes, 0u);
  EXPECT_EQ(after.objects, live.size());
  // At most one partly used span per class remains.
  EXPECT_LE(after.span_bytes, after.object_bytes + pool.classes().count() * 8 * kPageSize);
  for (const auto& [h, o] : moved) pool.free(h);
}

TEST(ZPool, HandlesRecordTheirNode) {
  ZPool pool(small_pool(3));
  for (unsigned node = 0; node < 3; ++node) {
    const PoolHandle h = pool.alloc(100, node);
    ASSERT_NE(h, kNullHandle);
    EXPECT_EQ(ZPool::node_of(h), node);
    fill(pool, h, 100, node + 1);
    EXPECT_TRUE(check(pool, h, 100, node + 1));
    pool.free(h);
  }
}

TEST(ZPool, ExhaustedReservationFailsCleanlyAndCounts) {
  ZPoolOptions o = small_pool();
  o.reserve_bytes_per_node = 1;  // rounds up to one tile of 840 pages
  ZPool pool(o);
  std::vector<PoolHandle> handles;
  for (;;) {
    const PoolHandle h = pool.alloc(kPageSize, 0);
    if (h == kNullHandle) break;
    handles.push_back(h);
    ASSERT_LT(handles.size(), 100000u);
  }
  EXPECT_EQ(handles.size(), 840u);
  EXPECT_EQ(pool.stats().alloc_failures, 1u);
  pool.free(handles.back());
  EXPECT_NE(pool.alloc(kPageSize, 0), kNullHandle) << "freed room is usable again";
}

TEST(ZPool, StoresTakeSpansFromTheReserveTheRefillerPopulated) {
  ZPool pool(small_pool());  // 64 KiB: 8 KiB a span length, two 1-page spans, one 8-page span
  EXPECT_GT(pool.refill_reserve(), 0u);
  const ZPoolStats filled = pool.stats();
  EXPECT_GT(filled.reserve_refills, 0u);
  EXPECT_EQ(filled.reserve_bytes, filled.span_bytes) << "the reserve is populated RAM";
  EXPECT_EQ(pool.refill_reserve(), 0u) << "a full reserve needs nothing";
  const PoolHandle h = pool.alloc(kPageSize, 0);  // a whole 1-page span
  ASSERT_NE(h, kNullHandle);
  ZPoolStats s = pool.stats();
  EXPECT_EQ(s.reserve_hits, 1u);
  EXPECT_EQ(s.reserve_misses, 0u);
  EXPECT_EQ(s.span_bytes, filled.span_bytes) << "no new RAM on the store path";
  EXPECT_EQ(pool.refill_reserve(), 1u) << "the span taken is replaced";
  pool.free(h);
}

TEST(ZPool, AnEmptyReserveGrowsOnceAndFailsFast) {
  ZPoolOptions o = small_pool();
  o.fail_growth_every = 1;  // every populate fails: no memory at all
  ZPool pool(o);
  EXPECT_EQ(pool.refill_reserve(), 0u);
  EXPECT_EQ(pool.stats().reserve_refill_failures, std::uint64_t{SizeClasses::kMaxPagesPerSpan})
      << "one failure per span length, then the refiller stops";
  EXPECT_EQ(pool.alloc(1000, 0), kNullHandle);
  const ZPoolStats s = pool.stats();
  EXPECT_EQ(s.reserve_misses, 1u);
  EXPECT_EQ(s.alloc_failures, 1u);
  EXPECT_EQ(s.span_bytes, 0u);
}

// uzswapd's pool: a store never asks the kernel for memory. An empty
// reserve that nobody refills fails the allocation after miss_wait (the
// store goes to the next tier), having woken the refiller, and touches no
// new page; what the refiller then populates serves the next store.
TEST(ZPool, WithoutGrowthOnAMissAnEmptyReserveFailsAfterTheWaitAndWakesTheRefiller) {
  ZPoolOptions o = small_pool();
  o.grow_on_miss = false;
  o.miss_wait = std::chrono::microseconds(500);
  ZPool pool(o);
  EXPECT_EQ(pool.alloc(1000, 0), kNullHandle);  // first: the code's own pages fault in
  rusage before{};
  getrusage(RUSAGE_THREAD, &before);
  EXPECT_EQ(pool.alloc(1000, 0), kNullHandle);
  rusage after{};
  getrusage(RUSAGE_THREAD, &after);
  EXPECT_EQ(after.ru_minflt, before.ru_minflt) << "no page touched on the store path";
  ZPoolStats s = pool.stats();
  EXPECT_EQ(s.reserve_misses, 2u);
  EXPECT_EQ(s.alloc_failures, 2u);
  EXPECT_EQ(s.span_bytes, 0u) << "nothing populated";
  // The refiller was woken: its wait returns at once.
  std::thread waiter([&] { pool.wait_for_reserve_use(); });
  waiter.join();
  EXPECT_GT(pool.refill_reserve(), 0u);
  const PoolHandle h = pool.alloc(1000, 0);
  EXPECT_NE(h, kNullHandle) << "the refilled reserve serves the next store";
  s = pool.stats();
  EXPECT_EQ(s.reserve_hits, 1u);
  pool.free(h);
}

// With a refiller running, a store that finds the reserve empty waits for
// the span the refiller puts in, instead of failing.
TEST(ZPool, WithoutGrowthOnAMissAStoreWaitsForTheRefiller) {
  ZPoolOptions o = small_pool();
  o.grow_on_miss = false;
  o.miss_wait = std::chrono::seconds(10);  // a bound, not a timing: the refiller answers first
  ZPool pool(o);
  std::atomic<bool> stop{false};
  std::thread refiller([&] {
    while (!stop.load()) {
      pool.wait_for_reserve_use();
      pool.refill_reserve();
    }
  });
  const PoolHandle h = pool.alloc(1000, 0);
  EXPECT_NE(h, kNullHandle);
  const ZPoolStats s = pool.stats();
  EXPECT_EQ(s.reserve_misses, 1u);
  EXPECT_EQ(s.alloc_failures, 0u);
  stop = true;
  pool.wake_reserve_refiller();
  refiller.join();
  pool.free(h);
}

TEST(ZPool, TheRefillerIsWokenWhenTheReserveRunsLow) {
  ZPoolOptions o = small_pool();
  o.empty_span_cache_bytes = 8 * 4 * kPageSize;  // four 1-page spans
  ZPool pool(o);
  pool.refill_reserve();
  std::atomic<int> refills{0};
  std::atomic<bool> stop{false};
  std::thread refiller([&] {
    while (!stop.load()) {
      refills += static_cast<int>(pool.refill_reserve());
      pool.wait_for_reserve_use();
    }
  });
  std::vector<PoolHandle> handles;
  for (int i = 0; i < 3; ++i) handles.push_back(pool.alloc(kPageSize, 0));  // 4 -> 1: below half
  for (int i = 0; i < 1000 && refills.load() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_GE(refills.load(), 3) << "taken spans replaced without a store waiting";
  stop = true;
  pool.wake_reserve_refiller();
  refiller.join();
  for (PoolHandle h : handles) pool.free(h);
}

TEST(ZPool, MigrateNeverGrowsThePool) {
  // migrate() runs under the owner's slot lock: it must not populate a
  // span there (a system call that may enter reclaim), only use room the
  // pool has. A store that fills that room first leaves the object where
  // it is.
  ZPoolOptions o = small_pool();
  o.empty_span_cache_bytes = 0;  // no reserve: any new span is a populate
  ZPool pool(o);
  constexpr std::size_t kLen = 1000;
  const unsigned per_span = pool.classes()[pool.classes().index_for(kLen)].objs_per_span;
  ASSERT_GE(per_span, 4u);
  std::vector<PoolHandle> handles;  // spans A then B, carved in order
  for (unsigned i = 0; i < 2 * per_span; ++i) handles.push_back(pool.alloc(kLen, 0));
  for (unsigned i = 1; i <= per_span; ++i) pool.free(handles[i]);  // A keeps one, B has one free
  CompactionStats c = pool.begin_compaction();
  ASSERT_EQ(c.draining_spans, 1u);
  ASSERT_TRUE(pool.needs_migration(handles[0]));
  const PoolHandle concurrent_store = pool.alloc(kLen, 0);  // takes B's last room
  ASSERT_NE(concurrent_store, kNullHandle);
  ASSERT_FALSE(pool.needs_migration(concurrent_store));
  const ZPoolStats before = pool.stats();
  EXPECT_EQ(pool.migrate(handles[0], kLen), kNullHandle) << "migrate took a new span";
  const ZPoolStats after = pool.stats();
  EXPECT_EQ(after.span_bytes, before.span_bytes);
  EXPECT_EQ(after.reserve_misses, before.reserve_misses);
  pool.end_compaction(c);
  pool.free(concurrent_store);
  pool.free(handles[0]);
  for (unsigned i = per_span + 1; i < 2 * per_span; ++i) pool.free(handles[i]);
}

TEST(ZPool, RefusesZeroNodes) {
  ZPoolOptions o = small_pool();
  o.nodes = 0;
  EXPECT_THROW(ZPool pool(o), std::system_error);
}

TEST(ZPool, LockedArenasWork) {
  ZPoolOptions o = small_pool();
  o.lock_memory = true;
  std::unique_ptr<ZPool> pool;
  try {
    pool = std::make_unique<ZPool>(o);
  } catch (const std::system_error& e) {
    GTEST_SKIP() << "cannot lock memory here: " << e.what();
  }
  const PoolHandle h = pool->alloc(3000, 0);
  ASSERT_NE(h, kNullHandle);
  fill(*pool, h, 3000, 9);
  EXPECT_TRUE(check(*pool, h, 3000, 9));
  pool->free(h);
  CompactionStats c = pool->begin_compaction();
  pool->end_compaction(c);
  EXPECT_EQ(pool->stats().span_bytes, 0u) << "punching holes works on locked memory";
}

// An arena on memory someone else mapped (uzswapd's SHM_LOCKed segments),
// given to the pool `locked` (attached under mlockall(MCL_FUTURE)) or as a
// private mapping, which the system refuses to punch holes in.
struct ForeignArena {
  std::size_t bytes = 0;
  void* base = MAP_FAILED;
  ForeignArena(std::size_t region_bytes, bool shared, bool locked) : bytes(region_bytes * SizeClasses::kMaxPagesPerSpan) {
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    // The system call itself, as uzswapd's mlockall: a sanitizer's mlock() does nothing.
    if (base != MAP_FAILED && locked && syscall(SYS_mlock2, base, bytes, MLOCK_ONFAULT) != 0) {
      munmap(base, bytes);
      base = MAP_FAILED;
    }
  }
  ~ForeignArena() {
    if (base != MAP_FAILED) munmap(base, bytes);
  }
};

// Stores and frees enough objects that empty spans sit in the cache.
void leave_empty_spans(ZPool& pool) {
  std::vector<PoolHandle> handles;
  for (int i = 0; i < 500; ++i) handles.push_back(pool.alloc(1500, 0));
  for (PoolHandle h : handles) pool.free(h);
}

TEST(ZPool, ASegmentAttachedLockedGivesItsSpansBack) {
  ZPoolOptions o = small_pool();
  o.region_bytes = ZPool::region_bytes_for(o.reserve_bytes_per_node);
  ForeignArena arena(o.region_bytes, /*shared=*/true, /*locked=*/true);
  if (arena.base == MAP_FAILED) GTEST_SKIP() << "cannot lock memory here: " << std::strerror(errno);
  o.arena_bases = {static_cast<std::byte*>(arena.base)};
  ZPool pool(o);
  leave_empty_spans(pool);
  CompactionStats c = pool.begin_compaction();
  pool.end_compaction(c);
  EXPECT_EQ(pool.stats().span_bytes, 0u) << "the pool unlocked the segment, so its holes can be punched";
  EXPECT_GT(c.released_bytes, 0u);
}

TEST(ZPool, ACompactionEndsWhenTheSystemRefusesToTakeSpansBack) {
  ZPoolOptions o = small_pool();
  o.region_bytes = ZPool::region_bytes_for(o.reserve_bytes_per_node);
  ForeignArena arena(o.region_bytes, /*shared=*/false, /*locked=*/false);
  ASSERT_NE(arena.base, MAP_FAILED);
  o.arena_bases = {static_cast<std::byte*>(arena.base)};
  ZPool pool(o);
  leave_empty_spans(pool);
  const std::uint64_t cached = pool.stats().cached_spans;
  ASSERT_GT(cached, 0u);
  // MADV_REMOVE fails on a private mapping: each span goes back to the
  // cache, and the compaction must still end (it once took it again forever).
  CompactionStats c = pool.begin_compaction();
  pool.end_compaction(c);
  EXPECT_EQ(pool.stats().cached_spans, cached) << "the spans stay resident and reusable";
  const PoolHandle h = pool.alloc(1500, 0);
  ASSERT_NE(h, kNullHandle);
  fill(pool, h, 1500, 4);
  EXPECT_TRUE(check(pool, h, 1500, 4));
  pool.free(h);
}

// The address space: uzswapd sizes each region (one span length on one
// node) by its pool limit, not by RAM (issue #17).
TEST(ZPoolReservation, ARegionForALimitHoldsTheLimitAndItsSlack) {
  constexpr std::uint64_t kTile = 840 * kPageSize;
  for (const std::uint64_t limit :
       {std::uint64_t{1}, std::uint64_t{kPageSize}, std::uint64_t{(2u << 20) + 1}, std::uint64_t{1} << 30,
        std::uint64_t{3} << 30, std::uint64_t{23} << 30, (std::uint64_t{16} << 40) / 5, std::uint64_t{15} << 40}) {
    const std::size_t region = ZPool::region_bytes_for_limit(limit);
    EXPECT_EQ(region % kTile, 0u) << limit;
    EXPECT_GE(region, limit + limit / 16 + (64u << 20)) << limit;
    EXPECT_LT(region, limit + limit / 16 + (64u << 20) + kTile) << "no more than one tile of rounding: " << limit;
    EXPECT_TRUE(ZPool::check_region_bytes(region)) << limit;
    // The inverse: the limit fits, and the largest limit said to fit does.
    const std::uint64_t holds = ZPool::pool_limit_for_region(region);
    EXPECT_GE(holds, limit);
    EXPECT_LE(ZPool::region_bytes_for_limit(holds), region);
    EXPECT_GT(ZPool::region_bytes_for_limit(holds + 1), region) << "the largest such limit: " << limit;
  }
  EXPECT_EQ(ZPool::pool_limit_for_region(ZPool::region_bytes_for(1)), 0u) << "one tile holds only slack";
}

TEST(ZPoolReservation, ASmallLimitOnSixteenTibOfRamIsNotRefused) {
  // Regions of RAM size: 2^32 spans of one page, one too many.
  constexpr std::uint64_t kRam = std::uint64_t{16} << 40;
  EXPECT_FALSE(ZPool::check_region_bytes(ZPool::region_bytes_for(kRam)));
  // 20 % of it (max-pool-percent's default) leaves room to spare.
  const std::size_t region = ZPool::region_bytes_for_limit(kRam / 5);
  ASSERT_TRUE(ZPool::check_region_bytes(region));
  EXPECT_LT(region, kRam / 4);
  // A limit over what 32-bit span numbers reach is still refused, with the
  // reason.
  const auto too_large = ZPool::check_region_bytes(ZPool::region_bytes_for_limit(kRam));
  ASSERT_FALSE(too_large);
  EXPECT_NE(too_large.error().find("16 TiB"), std::string::npos) << too_large.error();
}

TEST(ZPoolReservation, OneSpanLengthOnOneNodeTakesTheWholeLimit) {
  // Every store of incompressible pages lands in the 1-page spans of the
  // node it runs on: that region alone must reach the limit, reserve
  // and all.
  constexpr std::uint64_t kLimit = 96u << 20;
  ZPoolOptions o;
  o.nodes = 2;
  o.region_bytes = ZPool::region_bytes_for_limit(kLimit);
  o.empty_span_cache_bytes = 1u << 20;
  ZPool pool(o);
  std::vector<PoolHandle> handles;
  while (pool.span_bytes() < kLimit + o.empty_span_cache_bytes) {
    if (handles.size() % 64 == 0) pool.refill_reserve();
    const PoolHandle h = pool.alloc(kPageSize, 1);
    ASSERT_NE(h, kNullHandle) << "ran out at " << pool.span_bytes() << " bytes";
    handles.push_back(h);
  }
  EXPECT_EQ(pool.stats().alloc_failures, 0u);
  for (PoolHandle h : handles) pool.free(h);
}

TEST(ZPoolReservation, APoolOnRegionsForSixteenTibOfRamAtTwentyPercentCanBeMade) {
  // What uzswapd makes on such a machine (per node: 8 regions of 3.4 TiB of
  // address space, nothing behind it until used). Regions of RAM size are
  // refused before any mapping.
  constexpr std::uint64_t kRam = std::uint64_t{16} << 40;
  ZPoolOptions o;
  o.reserve_bytes_per_node = kRam;
  EXPECT_THROW(ZPool refused(o), std::system_error);
  o.reserve_bytes_per_node = 0;
  o.region_bytes = ZPool::region_bytes_for_limit(kRam / 5);
  std::unique_ptr<ZPool> pool;
  try {
    pool = std::make_unique<ZPool>(o);
  } catch (const std::system_error& e) {
    GTEST_SKIP() << "this machine does not map 27 TiB of address space: " << e.what();
  }
  const PoolHandle h = pool->alloc(3000, 0);
  ASSERT_NE(h, kNullHandle);
  fill(*pool, h, 3000, 5);
  EXPECT_TRUE(check(*pool, h, 3000, 5));
  pool->free(h);
}

TEST(ZPoolReservation, TheDaemonsPercentFitsTheRegionMadeForIt) {
  // uzswapd: the supervisor makes the regions for max-pool-percent of RAM;
  // a serving process takes any percent whose limit they hold and refuses
  // (uzswapctl set) or lowers (a state made for less) the others.
  for (const std::uint64_t ram : {std::uint64_t{512} << 20, std::uint64_t{23} << 30, std::uint64_t{2} << 40}) {
    for (unsigned percent = 1; percent <= 90; ++percent) {
      const std::uint64_t limit = pool_limit_bytes(ram, percent);
      EXPECT_EQ(limit, ram * percent / 100);
      const std::uint64_t reserved = ZPool::pool_limit_for_region(ZPool::region_bytes_for_limit(limit));
      EXPECT_GE(max_pool_percent_within(ram, reserved), percent) << ram << " " << percent;
    }
  }
  constexpr std::uint64_t kRam = std::uint64_t{64} << 30;
  const std::uint64_t reserved = ZPool::pool_limit_for_region(ZPool::region_bytes_for_limit(pool_limit_bytes(kRam, 20)));
  const unsigned most = max_pool_percent_within(kRam, reserved);
  EXPECT_GE(most, 20u);
  EXPECT_LT(most, 25u) << "a limit well above the one reserved for does not fit";
  EXPECT_LE(pool_limit_bytes(kRam, most), reserved);
  EXPECT_GT(pool_limit_bytes(kRam, most + 1), reserved);
  EXPECT_EQ(max_pool_percent_within(kRam, 0), 0u);
  EXPECT_EQ(max_pool_percent_within(kRam, kRam), 90u);
  // A state an older uzswapd made, with regions of RAM size, holds any
  // percent the settings allow.
  EXPECT_EQ(max_pool_percent_within(kRam, ZPool::pool_limit_for_region(ZPool::region_bytes_for(kRam))), 90u);
}

}  // namespace
}  // namespace uzswap
