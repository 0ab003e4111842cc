#include "uzswap/store/page_store.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include "uzswap/compress/same_filled.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

using testing::PageKind;
using Page = std::array<std::byte, kPageSize>;

PageStoreOptions options(std::uint64_t slots = 4096) {
  PageStoreOptions o;
  o.slots = slots;
  o.pool.reserve_bytes_per_node = 256u << 20;
  o.pool.empty_span_cache_bytes = 64u << 10;
  return o;
}

Page page_of(PageKind kind, std::uint64_t seed) {
  Page p;
  testing::make_page(kind, seed, p);
  return p;
}

Page load_ok(PageStore& store, Slot slot) {
  Page p;
  p.fill(std::byte{0x5A});
  auto r = store.load(slot, p);
  EXPECT_TRUE(r.has_value()) << "slot " << slot;
  return p;
}

TEST(PageStore, EveryKindOfPageLoadsBackExactly) {
  PageStore store(options());
  for (std::size_t k = 0; k < testing::kPageKinds; ++k) {
    const Page p = page_of(static_cast<PageKind>(k), k + 100);
    ASSERT_TRUE(store.store(k, p).has_value());
    EXPECT_EQ(load_ok(store, k), p) << testing::kind_name(static_cast<PageKind>(k));
  }
}

TEST(PageStore, SameFilledPagesTakeNoPoolMemory) {
  PageStore store(options());
  auto r = store.store(1, page_of(PageKind::same_filled, 3));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, StoredAs::same_filled);
  EXPECT_EQ(*store.store(2, page_of(PageKind::zero, 0)), StoredAs::same_filled);
  const PageStoreStats s = store.stats();
  EXPECT_EQ(s.same_filled_pages, 2u);
  EXPECT_EQ(s.stored_pages, 2u);
  EXPECT_EQ(s.compressed_bytes, 0u);
  EXPECT_EQ(s.pool.objects, 0u);
  EXPECT_EQ(load_ok(store, 1), page_of(PageKind::same_filled, 3));
}

TEST(PageStore, IncompressiblePagesAreKeptRawAndCounted) {
  PageStore store(options());
  auto r = store.store(7, page_of(PageKind::random, 1));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, StoredAs::incompressible);
  const PageStoreStats s = store.stats();
  EXPECT_EQ(s.incompressible_pages, 1u);
  EXPECT_EQ(s.compressed_bytes, kPageSize);
  EXPECT_EQ(load_ok(store, 7), page_of(PageKind::random, 1));
}

TEST(PageStore, ThresholdDefaultsToLargestSavingClassAndIsConfigurable) {
  PageStore by_default(options());
  EXPECT_GT(by_default.incompressible_threshold(), kPageSize / 2);
  EXPECT_LT(by_default.incompressible_threshold(), kPageSize);

  PageStoreOptions o = options();
  o.incompressible_threshold = 512;  // text does not get that small
  PageStore strict(o);
  EXPECT_EQ(*strict.store(0, page_of(PageKind::text, 1)), StoredAs::incompressible);
  EXPECT_EQ(load_ok(strict, 0), page_of(PageKind::text, 1));

  o.incompressible_threshold = kPageSize + 1;
  EXPECT_THROW(PageStore bad(o), std::invalid_argument);
}

TEST(PageStore, EmptySlotsReadAsZeros) {
  PageStore store(options());
  Page p;
  p.fill(std::byte{1});
  auto r = store.load(5, p);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, LoadedFrom::empty);
  EXPECT_EQ(p, page_of(PageKind::zero, 0));
  EXPECT_EQ(store.stats().empty_loads, 1u);
}

TEST(PageStore, StoringAgainReplacesAndFreesTheOldVersion) {
  PageStore store(options());
  for (std::uint64_t v = 0; v < 50; ++v) {
    const Page p = page_of(v % 2 ? PageKind::text : PageKind::binary, v);
    ASSERT_TRUE(store.store(3, p).has_value());
    EXPECT_EQ(load_ok(store, 3), p);
  }
  const PageStoreStats s = store.stats();
  EXPECT_EQ(s.stored_pages, 1u);
  EXPECT_EQ(s.pool.objects, 1u);
  EXPECT_EQ(s.stores, 50u);
}

TEST(PageStore, InvalidateForgetsTheRangeOnly) {
  PageStore store(options());
  for (Slot s = 0; s < 10; ++s) ASSERT_TRUE(store.store(s, page_of(PageKind::text, s)).has_value());
  auto dropped = store.invalidate(2, 5);
  ASSERT_TRUE(dropped.has_value());
  EXPECT_EQ(*dropped, 5u);
  for (Slot s = 0; s < 10; ++s) {
    if (s >= 2 && s < 7)
      EXPECT_EQ(load_ok(store, s), page_of(PageKind::zero, 0));
    else
      EXPECT_EQ(load_ok(store, s), page_of(PageKind::text, s));
  }
  EXPECT_EQ(store.stats().stored_pages, 5u);
  EXPECT_EQ(store.stats().invalidations, 5u);
  EXPECT_EQ(*store.invalidate(0, 10), 5u) << "empty slots are not counted";
  EXPECT_EQ(store.stats().pool.objects, 0u);
  EXPECT_EQ(store.stats().compressed_bytes, 0u);
}

TEST(PageStore, OutOfRangeRequestsFailAndChangeNothing) {
  PageStore store(options(16));
  ASSERT_TRUE(store.store(15, page_of(PageKind::text, 1)).has_value());
  const PageStoreStats before = store.stats();
  EXPECT_EQ(store.store(16, page_of(PageKind::text, 2)).error(), StoreError::out_of_range);
  Page p;
  EXPECT_EQ(store.load(16, p).error(), LoadError::out_of_range);
  EXPECT_EQ(store.invalidate(15, 2).error(), LoadError::out_of_range);
  EXPECT_EQ(store.invalidate(UINT64_MAX, 2).error(), LoadError::out_of_range);
  EXPECT_EQ(store.invalidate(1, UINT64_MAX).error(), LoadError::out_of_range);
  const PageStoreStats after = store.stats();
  EXPECT_EQ(after.stored_pages, before.stored_pages);
  EXPECT_EQ(after.out_of_range, 5u);
  EXPECT_EQ(load_ok(store, 15), page_of(PageKind::text, 1));
}

TEST(PageStore, PoolLimitRejectsNewPagesAndKeepsOldOnes) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 256u << 10;
  PageStore store(o);
  Slot slot = 0;
  for (; slot < 4096; ++slot) {
    auto r = store.store(slot, page_of(PageKind::binary, slot));
    if (!r) {
      EXPECT_EQ(r.error(), StoreError::pool_full);
      break;
    }
  }
  ASSERT_LT(slot, 4096u) << "the limit was never hit";
  EXPECT_EQ(store.stats().reject_pool_full, 1u);
  EXPECT_EQ(load_ok(store, slot), page_of(PageKind::zero, 0)) << "a rejected store stores nothing";
  for (Slot s = 0; s < slot; ++s) ASSERT_EQ(load_ok(store, s), page_of(PageKind::binary, s));
  // Same-filled pages need no pool memory and are still accepted.
  EXPECT_TRUE(store.store(slot, page_of(PageKind::zero, 0)).has_value());
  store.settings().set_max_pool_bytes(0);
  EXPECT_TRUE(store.store(slot + 1, page_of(PageKind::binary, 1)).has_value());
}

TEST(PageStore, SwitchingCodecKeepsOlderPagesReadable) {
  PageStore store(options());
  ASSERT_TRUE(store.store(0, page_of(PageKind::text, 1)).has_value());
  store.settings().set_codec(Codec::zstd, 3);
  ASSERT_TRUE(store.store(1, page_of(PageKind::text, 2)).has_value());
  store.settings().set_codec(Codec::lz4, 1);
  ASSERT_TRUE(store.store(2, page_of(PageKind::text, 3)).has_value());
  EXPECT_EQ(load_ok(store, 0), page_of(PageKind::text, 1));
  EXPECT_EQ(load_ok(store, 1), page_of(PageKind::text, 2));
  EXPECT_EQ(load_ok(store, 2), page_of(PageKind::text, 3));
}

TEST(PageStore, ZstdStoresSmallerThanLz4) {
  PageStoreOptions o = options();
  PageStore lz4(o);
  o.codec = Codec::zstd;
  o.level = kDefaultZstdLevel;
  PageStore zstd(o);
  for (Slot s = 0; s < 200; ++s) {
    Page p;
    testing::make_mixed_page(s, p);
    ASSERT_TRUE(lz4.store(s, p).has_value());
    ASSERT_TRUE(zstd.store(s, p).has_value());
  }
  EXPECT_LT(zstd.stats().compressed_bytes, lz4.stats().compressed_bytes);
}

TEST(PageStore, BadLevelIsRefused) {
  PageStoreOptions o = options();
  o.codec = Codec::zstd;
  o.level = 99;
  EXPECT_THROW(PageStore store(o), std::invalid_argument);
}

TEST(PageStore, PagesOnSeveralNodesLoadBack) {
  PageStoreOptions o = options();
  o.pool.nodes = 4;
  PageStore store(o);
  for (Slot s = 0; s < 64; ++s)
    ASSERT_TRUE(store.store(s, page_of(PageKind::binary, s), static_cast<unsigned>(s % 4)).has_value());
  for (Slot s = 0; s < 64; ++s) EXPECT_EQ(load_ok(store, s), page_of(PageKind::binary, s));
}

TEST(PageStore, CompactionAfterRandomFreesKeepsDataAndReachesDensityTarget) {
  PageStore store(options(40000));
  testing::Rng rng(1);
  for (Slot s = 0; s < 40000; ++s) {
    Page p;
    testing::make_mixed_page(s, p);
    ASSERT_TRUE(store.store(s, p).has_value());
  }
  std::vector<bool> kept(40000);
  for (Slot s = 0; s < 40000; ++s) {
    kept[s] = rng.below(3) == 0;
    if (!kept[s]) {
      ASSERT_TRUE(store.invalidate(s, 1).has_value());
    }
  }
  const PageStoreStats before = store.stats();
  const CompactionStats c = store.housekeeping().compact();
  const PageStoreStats after = store.stats();
  EXPECT_GT(c.objects_to_move, 0u);
  EXPECT_LT(after.pool_bytes, before.pool_bytes);
  EXPECT_EQ(after.compaction_moved, c.objects_to_move);
  // The target: within 5% of the compressed data after compaction.
  EXPECT_LE(double(after.pool_bytes), 1.05 * double(after.compressed_bytes))
      << "pool " << after.pool_bytes << " compressed " << after.compressed_bytes;
  for (Slot s = 0; s < 40000; ++s) {
    Page want;
    if (kept[s]) testing::make_mixed_page(s, want);
    else want = page_of(PageKind::zero, 0);
    ASSERT_EQ(load_ok(store, s), want) << "slot " << s;
  }
}

TEST(PageStore, TheReserveOfPopulatedSpansIsNotFragmentation) {
  // A reserve of 8 MiB of populated empty spans, a handful of objects: the
  // spans exceed the objects by far, but only because of the reserve, and
  // compacting would only empty it.
  PageStoreOptions o = options();
  o.pool.empty_span_cache_bytes = 8u << 20;
  PageStore store(o);
  for (Slot slot = 0; slot < 8; ++slot) ASSERT_TRUE(store.store(slot, page_of(PageKind::text, slot)).has_value());
  store.reserve().refill();
  const PageStoreStats before = store.stats();
  ASSERT_GT(before.pool.reserve_bytes, 2u << 20);
  EXPECT_FALSE(store.housekeeping().compact_if_fragmented());
  EXPECT_EQ(store.stats().compactions, 0u);
  EXPECT_EQ(store.stats().pool.reserve_bytes, before.pool.reserve_bytes);
}

TEST(PageStore, StatsAddUp) {
  PageStore store(options());
  std::uint64_t same = 0, raw = 0, total = 0;
  for (Slot s = 0; s < 500; ++s) {
    Page p;
    testing::make_mixed_page(s * 7919, p);
    auto r = store.store(s, p);
    ASSERT_TRUE(r.has_value());
    ++total;
    same += *r == StoredAs::same_filled;
    raw += *r == StoredAs::incompressible;
  }
  const PageStoreStats st = store.stats();
  EXPECT_EQ(st.stored_pages, total);
  EXPECT_EQ(st.same_filled_pages, same);
  EXPECT_EQ(st.incompressible_pages, raw);
  EXPECT_EQ(st.orig_bytes, total * kPageSize);
  EXPECT_EQ(st.pool.objects, total - same);
  EXPECT_GE(st.pool.object_bytes, st.compressed_bytes);
  EXPECT_GT(st.table_bytes, 0u);
  EXPECT_GE(st.pool_bytes, st.pool.span_bytes);
}

TEST(SlotTable, EntriesAreSixteenBytesWithAFourByteChecksum) {
  EXPECT_EQ(sizeof(SlotEntry), 16u);
  EXPECT_EQ(SlotTable::bytes_per_slot(), 20u);
  SharedState state = SharedState::create({1000, 1, ZPool::region_bytes_for(0)});
  SlotTable table(state.slots(), state.checksums(), state.journal(), 1000);
  EXPECT_EQ(table.size(), 1000u);
  EXPECT_GE(table.bytes(), 1000u * 16u);
  MutexLock guard(table.lock_for(999));
  EXPECT_EQ(table.entryLocked(999).slot_state(), SlotState::empty);
}

TEST(SlotTable, RefusesEmptyAndOversizedTables) {
  EXPECT_THROW(SlotTable(nullptr, nullptr, nullptr, 0), std::system_error);
  EXPECT_THROW(SlotTable(nullptr, nullptr, nullptr, std::uint64_t{1} << 33), std::system_error);
}

}  // namespace
}  // namespace uzswap

namespace uzswap {
namespace {

TEST(PageStore, AFullPoolAcceptsAgainOnlyBelowTheAcceptThreshold) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 512u << 10;
  o.accept_threshold_percent = 50;
  o.pool.empty_span_cache_bytes = 0;
  PageStore store(o);
  Slot slot = 0;
  while (store.store(slot, page_of(PageKind::binary, slot)).has_value()) ++slot;
  EXPECT_TRUE(store.pool_full());
  EXPECT_EQ(store.stats().pool_limit_hits, 1u);
  // Freeing a little is not enough: still above 50% of the limit.
  ASSERT_TRUE(store.invalidate(0, 4).has_value());
  EXPECT_FALSE(store.store(slot, page_of(PageKind::binary, slot)).has_value());
  // Freeing most of it is.
  ASSERT_TRUE(store.invalidate(0, slot * 3 / 4).has_value());
  EXPECT_TRUE(store.store(slot, page_of(PageKind::binary, slot)).has_value());
  EXPECT_FALSE(store.pool_full());
  EXPECT_EQ(store.stats().pool_limit_hits, 1u);
}

TEST(PageStore, AcceptThresholdOutOfRangeIsRefused) {
  PageStoreOptions o = options();
  o.accept_threshold_percent = 0;
  EXPECT_THROW(PageStore a(o), std::invalid_argument);
  o.accept_threshold_percent = 101;
  EXPECT_THROW(PageStore b(o), std::invalid_argument);
}

}  // namespace
}  // namespace uzswap
