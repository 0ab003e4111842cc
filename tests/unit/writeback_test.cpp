#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <chrono>
#include <thread>
#include <vector>

#include "uzswap/backing/backing_store.h"
#include "uzswap/store/page_store.h"
#include "uzswap/writeback/shrink_memcg.h"
#include "support/faulty_backing.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

using testing::PageKind;
using Page = std::array<std::byte, kPageSize>;
constexpr std::uint64_t kSlots = 1024;

Page page_of(std::uint64_t seed) {
  Page p;
  testing::make_page(seed % 2 ? PageKind::text : PageKind::binary, seed, p);
  return p;
}

// A real O_DIRECT file on the test machine's disk, wrapped for faults.
class WritebackTest : public ::testing::Test {
 protected:
  WritebackTest()
      : path_("/var/tmp/uzswap-wb-test-" + std::to_string(getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()),
        file_(path_, kSlots * kPageSize),
        faulty_(file_),
        store_(options()) {
    store_.attach_backing(&faulty_);
    // Open files outlive their name: nothing is left behind, even on a crash.
    std::filesystem::remove(path_);
  }

  static PageStoreOptions options() {
    PageStoreOptions o;
    o.slots = kSlots;
    o.pool.reserve_bytes_per_node = 64u << 20;
    return o;
  }
  // The spill tests': a 512 KiB pool.
  static PageStoreOptions small_pool() {
    PageStoreOptions o = options();
    o.max_pool_bytes = 512u << 10;
    return o;
  }

  Page load(Slot slot, LoadedFrom* from = nullptr) {
    Page p;
    auto r = store_.load(slot, p);
    EXPECT_TRUE(r.has_value()) << "slot " << slot;
    if (from && r) *from = *r;
    return p;
  }

  // Two walks, as a list of one fresh (referenced) entry needs: the walk ends
  // when the rotated entry was the last.
  WritebackResult shrink_all(std::uint64_t pages) {
    WritebackResult total;
    for (int pass = 0; pass < 2; ++pass) {
      const auto r = writeback_.shrink_memcg(kRootCgroup, pages);
      total.written += r.written;
      total.raced += r.raced;
      total.failed += r.failed;
    }
    return total;
  }

  std::string path_;
  BackingFile file_;
  testing::FaultyBacking faulty_;
  PageStore store_;
  Writeback writeback_{store_};
};

TEST_F(WritebackTest, TheBackingFileKeepsPagesAtTheirSlots) {
  std::array<Page, 4> pages = {page_of(1), page_of(2), page_of(3), page_of(4)};
  std::array<PageWrite, 4> writes = {PageWrite{7, pages[0].data()}, PageWrite{5, pages[1].data()},
                                     PageWrite{6, pages[2].data()}, PageWrite{100, pages[3].data()}};
  file_.write(writes);
  for (const PageWrite& w : writes) EXPECT_EQ(w.result, 0);
  Page out;
  ASSERT_FALSE(file_.read(5, out));
  EXPECT_EQ(out, pages[1]);
  ASSERT_FALSE(file_.read(7, out));
  EXPECT_EQ(out, pages[0]);
  ASSERT_FALSE(file_.read(100, out));
  EXPECT_EQ(out, pages[3]);
  // Several at once: 5..7 adjacent (one read), 100 alone, 8 never written.
  std::array<Page, 5> outs;
  std::array<PageRead, 5> reads = {PageRead{5, outs[0].data()}, PageRead{6, outs[1].data()},
                                   PageRead{7, outs[2].data()}, PageRead{8, outs[3].data()},
                                   PageRead{100, outs[4].data()}};
  file_.read_many(reads);
  for (const PageRead& r : reads) EXPECT_EQ(r.result, 0) << r.slot;
  EXPECT_EQ(outs[0], pages[1]);
  EXPECT_EQ(outs[1], pages[2]);
  EXPECT_EQ(outs[2], pages[0]);
  EXPECT_EQ(outs[3], Page{});
  EXPECT_EQ(outs[4], pages[3]);
}

// A READ of several pages: those in the file are read together, in one
// call of the backing store, whatever lies between them.
TEST_F(WritebackTest, AMultiPageReadReadsTheWrittenBackPagesTogether) {
  for (Slot s = 0; s < 8; ++s) ASSERT_TRUE(store_.store(s, page_of(s)));
  ASSERT_EQ(shrink_all(8).written, 8u);
  ASSERT_TRUE(store_.store(2, page_of(102)));  // back in the pool
  ASSERT_TRUE(store_.store(5, page_of(105)));
  const auto before = store_.stats();
  const std::uint64_t calls = faulty_.read_many_calls(), reads = faulty_.reads();
  std::vector<Page> out(10);
  ASSERT_EQ(store_.load_many(0, std::as_writable_bytes(std::span(out))), 10u);
  for (Slot s = 0; s < 8; ++s) EXPECT_EQ(out[s], page_of(s == 2 || s == 5 ? 100 + s : s)) << s;
  EXPECT_EQ(out[8], Page{});
  EXPECT_EQ(out[9], Page{});
  EXPECT_EQ(faulty_.read_many_calls(), calls + 1) << "one submission for the six pages in the file";
  EXPECT_EQ(faulty_.reads(), reads) << "no page read alone";
  const auto after = store_.stats();
  EXPECT_EQ(after.backing_reads - before.backing_reads, 6u);
  EXPECT_EQ(after.loads - before.loads, 10u);
}

TEST_F(WritebackTest, AMultiPageReadAnswersThePagesBeforeTheFirstBadOne) {
  for (Slot s = 0; s < 8; ++s) ASSERT_TRUE(store_.store(s, page_of(s)));
  ASSERT_EQ(shrink_all(8).written, 8u);
  std::vector<Page> out(8);
  faulty_.fail_reads_of(5, EIO);
  EXPECT_EQ(store_.load_many(0, std::as_writable_bytes(std::span(out))), 5u);
  for (Slot s = 0; s < 5; ++s) EXPECT_EQ(out[s], page_of(s)) << s;
  EXPECT_EQ(store_.stats().backing_read_errors, 1u);
  faulty_.fail_reads_of(5, 0);
  // Damage is the same: the pages before it, never wrong bytes after.
  ASSERT_TRUE(store_.store(0, page_of(100)));  // in the pool: not damaged
  faulty_.corrupt_reads(true);
  EXPECT_EQ(store_.load_many(0, std::as_writable_bytes(std::span(out))), 1u);
  EXPECT_EQ(out[0], page_of(100));
  EXPECT_EQ(store_.stats().integrity_errors, 1u) << "the first damaged page ends the read";
  faulty_.corrupt_reads(false);
  EXPECT_EQ(store_.load_many(0, std::as_writable_bytes(std::span(out))), 8u);
  EXPECT_EQ(out[7], page_of(7));
  // Past the end of the table: the pages before it.
  std::vector<Page> tail(3);
  EXPECT_EQ(store_.load_many(kSlots - 2, std::as_writable_bytes(std::span(tail))), 2u);
}

TEST_F(WritebackTest, AMultiPageReadRacingAStoreReturnsTheNewPage) {
  for (Slot s = 0; s < 4; ++s) ASSERT_TRUE(store_.store(s, page_of(s)));
  ASSERT_EQ(shrink_all(4).written, 4u);
  faulty_.on_next_read([&] { ASSERT_TRUE(store_.store(2, page_of(77))); });
  std::vector<Page> out(4);
  ASSERT_EQ(store_.load_many(0, std::as_writable_bytes(std::span(out))), 4u);
  EXPECT_EQ(out[1], page_of(1));
  EXPECT_EQ(out[2], page_of(77));
  EXPECT_EQ(out[3], page_of(3));
  EXPECT_EQ(store_.stats().integrity_errors, 0u);
}

TEST_F(WritebackTest, ColdPagesAreWrittenBackAndReadBackExactly) {
  for (Slot s = 0; s < 100; ++s) ASSERT_TRUE(store_.store(s, page_of(s)).has_value());
  const auto before = store_.stats();
  EXPECT_EQ(writeback_.lru_pages(kRootCgroup), 100u);
  // A walk of twice the batch: 80 referenced entries only lose their second
  // chance and move to the tail.
  EXPECT_EQ(writeback_.shrink_memcg(kRootCgroup, 40).written, 0u);
  // Now 80..99 (still referenced) come first, then 0..79: the oldest
  // unreferenced ones, 0..39, go.
  const auto r = writeback_.shrink_memcg(kRootCgroup, 40);
  EXPECT_EQ(r.written, 40u);
  const auto after = store_.stats();
  EXPECT_EQ(after.written_back_pages, 40u);
  EXPECT_EQ(after.stored_pages, 60u);
  EXPECT_EQ(after.pool.objects, 60u);
  EXPECT_LT(after.compressed_bytes, before.compressed_bytes);
  EXPECT_EQ(writeback_.lru_pages(kRootCgroup), 60u);
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).written_back_pages, 40u);
  EXPECT_EQ(writeback_.node_stats(0).writebacks, 40u);
  EXPECT_EQ(writeback_.node_stats(0).lru_pages, 60u);
  for (Slot s = 0; s < 100; ++s) {
    LoadedFrom from;
    EXPECT_EQ(load(s, &from), page_of(s)) << s;
    EXPECT_EQ(from, s < 40 ? LoadedFrom::backing : LoadedFrom::pool) << s;
  }
  EXPECT_EQ(store_.stats().backing_reads, 40u);
}

TEST_F(WritebackTest, ALoadGivesASecondChance) {
  for (Slot s = 0; s < 4; ++s) ASSERT_TRUE(store_.store(s, page_of(s)).has_value());
  ASSERT_EQ(writeback_.shrink_memcg(kRootCgroup, 2).written, 0u);  // a walk of 4: clears referenced
  load(0);                                                     // slot 0 used again
  const auto r = writeback_.shrink_memcg(kRootCgroup, 3);
  EXPECT_EQ(r.written, 3u);
  LoadedFrom from;
  load(0, &from);
  EXPECT_EQ(from, LoadedFrom::pool) << "the recently loaded page stayed in RAM";
}

TEST_F(WritebackTest, StoringOverAWrittenBackSlotReplacesIt) {
  ASSERT_TRUE(store_.store(3, page_of(1)).has_value());
  ASSERT_EQ(shrink_all(1).written, 1u);
  ASSERT_TRUE(store_.store(3, page_of(2)).has_value());
  LoadedFrom from;
  EXPECT_EQ(load(3, &from), page_of(2));
  EXPECT_EQ(from, LoadedFrom::pool);
  EXPECT_EQ(store_.stats().written_back_pages, 0u);
  EXPECT_EQ(store_.stats().stored_pages, 1u);
}

TEST_F(WritebackTest, InvalidatingAWrittenBackSlotEmptiesIt) {
  ASSERT_TRUE(store_.store(3, page_of(1)).has_value());
  ASSERT_EQ(shrink_all(1).written, 1u);
  EXPECT_EQ(*store_.invalidate(3, 1), 1u);
  LoadedFrom from;
  EXPECT_EQ(load(3, &from), Page{});
  EXPECT_EQ(from, LoadedFrom::empty);
  EXPECT_EQ(store_.stats().written_back_pages, 0u);
}

TEST_F(WritebackTest, SameFilledPagesAreNeverWrittenBack) {
  Page zero{};
  ASSERT_TRUE(store_.store(1, zero).has_value());
  EXPECT_EQ(writeback_.lru_pages(kRootCgroup), 0u);
  EXPECT_EQ(shrink_all(10).written, 0u);
}

TEST_F(WritebackTest, FailedWritesLoseNothingAndAreRetriedLater) {
  for (Slot s = 0; s < 20; ++s) ASSERT_TRUE(store_.store(s, page_of(s)).has_value());
  for (int error : {EIO, ENOSPC}) {
    faulty_.fail_writes(error);
    // One walk of 40: 20 second chances, then 20 attempts.
    const auto r = writeback_.shrink_memcg(kRootCgroup, 20);
    EXPECT_EQ(r.written, 0u);
    EXPECT_EQ(r.failed, 20u);
    EXPECT_EQ(writeback_.lru_pages(kRootCgroup), 20u) << "back on the LRU for a later try";
    for (Slot s = 0; s < 20; ++s) EXPECT_EQ(load(s), page_of(s));
  }
  EXPECT_EQ(store_.stats().writeback_failures, 40u);
  EXPECT_EQ(store_.stats().written_back_pages, 0u);
  faulty_.fail_writes(0);
  EXPECT_EQ(writeback_.shrink_memcg(kRootCgroup, 20).written, 20u) << "the retry succeeds";
  for (Slot s = 0; s < 20; ++s) EXPECT_EQ(load(s), page_of(s));
}

TEST_F(WritebackTest, AShortWriteKeepsTheUnwrittenPagesInRam) {
  for (Slot s = 0; s < 10; ++s) ASSERT_TRUE(store_.store(s, page_of(s)).has_value());
  faulty_.short_writes(4);
  const auto r = writeback_.shrink_memcg(kRootCgroup, 10);
  EXPECT_EQ(r.written, 4u);
  EXPECT_EQ(r.failed, 6u);
  for (Slot s = 0; s < 10; ++s) EXPECT_EQ(load(s), page_of(s));
  EXPECT_EQ(store_.stats().written_back_pages, 4u);
  EXPECT_EQ(store_.stats().stored_pages, 6u);
}

TEST_F(WritebackTest, AFailedReadIsAnErrorNotMadeUpData) {
  ASSERT_TRUE(store_.store(3, page_of(1)).has_value());
  ASSERT_EQ(shrink_all(1).written, 1u);
  faulty_.fail_reads(EIO);
  Page p;
  EXPECT_EQ(store_.load(3, p).error(), LoadError::backing_io);
  faulty_.fail_reads(0);
  EXPECT_EQ(load(3), page_of(1));
}

// Interleavings forced inside the write, between check and re-check.

TEST_F(WritebackTest, AStoreDuringWritebackWins) {
  ASSERT_TRUE(store_.store(3, page_of(1)).has_value());
  faulty_.on_next_write([&] { ASSERT_TRUE(store_.store(3, page_of(2)).has_value()); });
  const auto r = shrink_all(1);
  EXPECT_EQ(r.written, 0u);
  EXPECT_EQ(r.raced, 1u);
  LoadedFrom from;
  EXPECT_EQ(load(3, &from), page_of(2));
  EXPECT_EQ(from, LoadedFrom::pool);
  EXPECT_EQ(store_.stats().written_back_pages, 0u);
  EXPECT_EQ(store_.stats().pool.objects, 1u) << "the old version was freed once";
}

TEST_F(WritebackTest, AnInvalidateDuringWritebackWins) {
  ASSERT_TRUE(store_.store(3, page_of(1)).has_value());
  faulty_.on_next_write([&] { ASSERT_EQ(*store_.invalidate(3, 1), 1u); });
  EXPECT_EQ(shrink_all(1).raced, 1u);
  EXPECT_EQ(load(3), Page{});
  EXPECT_EQ(store_.stats().written_back_pages, 0u);
  EXPECT_EQ(store_.stats().pool.objects, 0u);
}

TEST_F(WritebackTest, ALoadDuringWritebackIsServedFromRam) {
  ASSERT_TRUE(store_.store(3, page_of(1)).has_value());
  faulty_.on_next_write([&] {
    LoadedFrom from;
    EXPECT_EQ(load(3, &from), page_of(1));
    EXPECT_EQ(from, LoadedFrom::pool);
  });
  EXPECT_EQ(shrink_all(1).written, 1u);
  EXPECT_EQ(load(3), page_of(1));
}

TEST_F(WritebackTest, ANewVersionIsNotWrittenWhileTheOldWriteIsInFlight) {
  ASSERT_TRUE(store_.store(3, page_of(1)).has_value());
  WritebackResult nested;
  faulty_.on_next_write([&] {
    ASSERT_TRUE(store_.store(3, page_of(2)).has_value());
    // Another shrinker, on another thread, finds the new version.
    std::thread other([&] {
      writeback_.shrink_memcg(kRootCgroup, 1);
      nested = writeback_.shrink_memcg(kRootCgroup, 1);
    });
    other.join();
  });
  shrink_all(1);
  EXPECT_EQ(nested.written, 0u) << "two writes of one slot must never be in flight";
  EXPECT_EQ(load(3), page_of(2));
  // Once the first write is over, the new version can go.
  EXPECT_EQ(shrink_all(1).written, 1u);
  LoadedFrom from;
  EXPECT_EQ(load(3, &from), page_of(2));
  EXPECT_EQ(from, LoadedFrom::backing);
}

// A slot isolated for writeback and re-stored before the writeback claims it:
// the new version is back on its LRU list and must not be taken (the stress
// test found this one: claiming it left a written-back entry on a list).
TEST_F(WritebackTest, AVersionStoredAfterIsolationIsNotClaimed) {
  ASSERT_TRUE(store_.store(3, page_of(1)).has_value());
  ASSERT_TRUE(store_.store(3, page_of(2)).has_value());  // on the list, as after a re-store
  const Slot slots[] = {3};
  const auto r = writeback_.writeback_isolated(slots);
  EXPECT_EQ(r.written, 0u);
  EXPECT_EQ(r.raced, 1u);
  EXPECT_EQ(writeback_.lru_pages(kRootCgroup), 1u);
  EXPECT_EQ(load(3), page_of(2));
  EXPECT_EQ(shrink_all(1).written, 1u) << "the new version is written back the normal way";
  EXPECT_EQ(writeback_.lru_pages(kRootCgroup), 0u);
  EXPECT_EQ(load(3), page_of(2));
}

TEST_F(WritebackTest, AFullPoolSendsStoresStraightToTheBackingFile) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 64u << 10;
  PageStore store(o);
  store.attach_backing(&faulty_);
  bool hook_ran = false;
  store.hooks().pool_full = [&] { hook_ran = true; };
  std::uint64_t direct = 0;
  for (Slot s = 0; s < 200; ++s) {
    auto r = store.store(s, page_of(s));
    ASSERT_TRUE(r.has_value());
    direct += *r == StoredAs::written_back;
  }
  EXPECT_GT(direct, 0u);
  EXPECT_TRUE(hook_ran);
  EXPECT_EQ(store.stats().direct_writes, direct);
  // Rejected by the full pool, or sent ahead as it neared its limit (pages
  // that save less than half their size).
  EXPECT_EQ(store.stats().reject_pool_full + store.stats().spilled_pages, direct);
  for (Slot s = 0; s < 200; ++s) {
    Page p;
    ASSERT_TRUE(store.load(s, p).has_value());
    EXPECT_EQ(p, page_of(s)) << s;
  }
  // A failing backing file: the store is refused, the old version stays.
  faulty_.fail_writes(EIO);
  Page p = page_of(9999);
  auto r = store.store(150, p);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), StoreError::backing_failed);
  Page back;
  ASSERT_TRUE(store.load(150, back).has_value());
  EXPECT_EQ(back, page_of(150));
}

TEST_F(WritebackTest, ACgroupWithWritebackOffIsNeverWrittenBack) {
  ASSERT_TRUE(store_.memcg().add(5, kRootCgroup));
  for (Slot s = 0; s < 10; ++s) {
    ASSERT_TRUE(store_.store(s, page_of(s)).has_value());
    ASSERT_TRUE(store_.attribution_side().set_slot_cgroup(s, 5));
  }
  EXPECT_EQ(store_.memcg().stats(5).stored_pages, 10u);
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).stored_pages, 0u);
  EXPECT_EQ(writeback_.lru_pages(5), 10u);
  store_.memcg().set_policy(5, {.writeback = false, .max_bytes = 0});
  for (int i = 0; i < 3; ++i) EXPECT_EQ(writeback_.shrink_memcg(5, 10).written, 0u);
  store_.memcg().set_policy(5, {.writeback = true, .max_bytes = 0});
  EXPECT_EQ(writeback_.shrink_memcg(5, 10).written, 10u);
  EXPECT_EQ(store_.memcg().stats(5).written_back_pages, 10u);
}

TEST_F(WritebackTest, AStoreOverAnAttributedSlotIsUnattributedUntilTheNextPass) {
  // The kernel reuses a freed slot for anyone's page, unannounced: the old
  // label must not pass to the new page, or cgroup 5's writeback would take
  // a page of a cgroup that forbids it.
  ASSERT_TRUE(store_.memcg().add(5, kRootCgroup));
  for (Slot s = 0; s < 4; ++s) {
    ASSERT_TRUE(store_.store(s, page_of(s)).has_value());
    ASSERT_TRUE(store_.attribution_side().set_slot_cgroup(s, 5));
  }
  ASSERT_TRUE(store_.store(0, page_of(40)).has_value());
  ASSERT_TRUE(store_.store(1, page_of(41)).has_value());
  EXPECT_EQ(store_.memcg().stats(5).stored_pages, 2u);
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).stored_pages, 2u);
  EXPECT_EQ(writeback_.shrink_memcg(5, 10).written, 2u);
  EXPECT_EQ(store_.memcg().stats(5).written_back_pages, 2u);
  for (Slot s = 0; s < 2; ++s) EXPECT_EQ(load(s), page_of(40 + s));
  // Straight to the file at a full pool: the written-back page is
  // unattributed too.
  store_.settings().set_max_pool_bytes(1);
  ASSERT_EQ(store_.store(3, page_of(43)), StoredAs::written_back);
  EXPECT_EQ(store_.memcg().stats(5).written_back_pages, 1u);  // slot 2's
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).written_back_pages, 1u);
  EXPECT_EQ(load(3), page_of(43));
  // A slot of a cgroup with writeback off is most likely written again by
  // that cgroup: not to the file, whatever the label becomes.
  store_.memcg().set_policy(5, {.writeback = false, .max_bytes = 0});
  EXPECT_EQ(store_.store(2, page_of(42)), std::unexpected(StoreError::pool_full));
  EXPECT_EQ(load(2), page_of(2));
}

TEST_F(WritebackTest, RemovingACgroupHandsItsPagesToTheParent) {
  ASSERT_TRUE(store_.memcg().add(5, kRootCgroup));
  for (Slot s = 0; s < 10; ++s) {
    ASSERT_TRUE(store_.store(s, page_of(s)).has_value());
    ASSERT_TRUE(store_.attribution_side().set_slot_cgroup(s, 5));
  }
  ASSERT_TRUE(store_.memcg().remove(5));
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).stored_pages, 10u);
  EXPECT_EQ(writeback_.lru_pages(kRootCgroup), 10u);
  EXPECT_EQ(shrink_all(10).written, 10u);
  for (Slot s = 0; s < 10; ++s) EXPECT_EQ(load(s), page_of(s));
  // Slots still carrying the removed id behave as the parent's.
  ASSERT_TRUE(store_.store(0, page_of(77)).has_value());
  EXPECT_EQ(load(0), page_of(77));
  EXPECT_EQ(store_.memcg().stats(kRootCgroup).stored_pages, 1u);
}

}  // namespace
}  // namespace uzswap

namespace uzswap {
namespace {

// Integrity: every page's checksum is taken when it is stored and checked
// whenever its bytes come back, from the pool or from the backing file.

TEST_F(WritebackTest, ABlockDamagedInTheBackingFileIsAnErrorNeverWrongBytes) {
  for (Slot s = 0; s < 8; ++s) ASSERT_TRUE(store_.store(s, page_of(s)));
  ASSERT_EQ(shrink_all(8).written, 8u);
  faulty_.corrupt_reads(true);
  Page p;
  const auto r = store_.load(3, p);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), LoadError::corrupt);
  EXPECT_EQ(store_.stats().integrity_errors, 1u);
  ASSERT_EQ(store_.integrity_log().count(), 1u);
  EXPECT_EQ(store_.integrity_log().at(0), std::make_pair(std::uint64_t{3}, true));
  faulty_.corrupt_reads(false);
  EXPECT_EQ(load(3), page_of(3)) << "the block itself was fine: only that read was damaged";
}

TEST_F(WritebackTest, APageDamagedInThePoolIsNeitherReadNorWrittenBack) {
  for (Slot s = 0; s < 8; ++s) ASSERT_TRUE(store_.store(s, page_of(s)));
  store_.restart_side().state().checksums()[5] ^= 1;  // as if its bytes had changed
  Page p;
  const auto r = store_.load(5, p);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), LoadError::corrupt);
  const WritebackResult w = shrink_all(8);
  EXPECT_EQ(w.written, 7u) << "the damaged page is not moved to the file";
  EXPECT_EQ(w.failed, 1u);
  EXPECT_FALSE(store_.load(5, p).has_value()) << "still an error, from the pool";
  EXPECT_EQ(store_.stats().integrity_errors, 3u);
  for (Slot s = 0; s < 8; ++s) {
    if (s != 5) {
      EXPECT_EQ(load(s), page_of(s)) << s;
    }
  }
}

TEST_F(WritebackTest, AWrittenBackPageBeingOverwrittenIsNeverReadTorn) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 1;  // once one page is in, every store goes straight to the file
  PageStore store(o);
  store.attach_backing(&faulty_);
  ASSERT_TRUE(store.store(100, page_of(100)));
  ASSERT_EQ(store.store(5, page_of(1)), StoredAs::written_back);
  // Slot 5 is stored anew; while that write is in flight (no slot lock
  // held), a read of slot 5 must not see a half-written block: it waits for
  // the write and returns the new page.
  std::thread reader;
  Page during{};
  bool read_ok = false;
  faulty_.on_next_write([&] {
    reader = std::thread([&] { read_ok = store.load(5, during).has_value(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // it is waiting now
  });
  ASSERT_EQ(store.store(5, page_of(2)), StoredAs::written_back);
  reader.join();
  EXPECT_TRUE(read_ok);
  EXPECT_EQ(during, page_of(2)) << "never the torn or the old block";
  Page p;
  ASSERT_TRUE(store.load(5, p).has_value());
  EXPECT_EQ(p, page_of(2));
}

TEST_F(WritebackTest, ALoadRacingAStoreDuringTheFileReadReturnsTheNewPage) {
  for (Slot s = 0; s < 4; ++s) ASSERT_TRUE(store_.store(s, page_of(s)));
  ASSERT_EQ(shrink_all(4).written, 4u);
  // The file read runs without the slot lock: a store that lands meanwhile
  // makes the load start over and return what is there now.
  faulty_.on_next_read([&] { ASSERT_TRUE(store_.store(2, page_of(77))); });
  LoadedFrom from{};
  EXPECT_EQ(load(2, &from), page_of(77));
  EXPECT_EQ(from, LoadedFrom::pool);
  EXPECT_EQ(store_.stats().integrity_errors, 0u);
}

TEST_F(WritebackTest, WhenThePoolCannotGrowStoresGoToTheBackingFileNotToAnError) {
  PageStoreOptions o = options();
  o.pool.fail_growth_every = 2;  // every second new span: no memory
  PageStore store(o);
  store.attach_backing(&faulty_);
  std::uint64_t direct = 0;
  for (Slot s = 0; s < 300; ++s) {
    const auto r = store.store(s, page_of(s));
    ASSERT_TRUE(r.has_value()) << "slot " << s << ": the kernel would have seen an error";
    direct += *r == StoredAs::written_back;
  }
  EXPECT_GT(direct, 0u);
  EXPECT_EQ(store.stats().reject_alloc_failed, direct);
  for (Slot s = 0; s < 300; ++s) {
    Page p;
    ASSERT_TRUE(store.load(s, p).has_value());
    EXPECT_EQ(p, page_of(s)) << s;
  }
  // Without a backing file the store is refused (the kernel keeps the page).
  PageStore alone(o);
  std::uint64_t refused = 0;
  for (Slot s = 0; s < 300; ++s) refused += !alone.store(s, page_of(s)).has_value();
  EXPECT_GT(refused, 0u);
}

TEST_F(WritebackTest, FreedWrittenBackPagesAreWipedFromTheFile) {
  for (Slot s = 0; s < 12; ++s) ASSERT_TRUE(store_.store(s, page_of(s)));
  ASSERT_EQ(shrink_all(12).written, 12u);
  ASSERT_TRUE(store_.invalidate(0, 4));          // discarded by the kernel
  ASSERT_TRUE(store_.invalidate(5, 1));          // discarded, then written back anew:
  ASSERT_TRUE(store_.store(5, page_of(50)));
  ASSERT_EQ(shrink_all(1).written, 1u);          // its block is live again
  ASSERT_TRUE(store_.store(4, page_of(40)));     // replaced by a page in the pool
  EXPECT_EQ(store_.housekeeping().wipe_pending(), 6u);
  EXPECT_EQ(store_.housekeeping().wipe_freed(1000), 5u);
  EXPECT_EQ(store_.housekeeping().wipe_pending(), 0u);
  EXPECT_EQ(store_.stats().wiped_pages, 5u);
  const Page zero{};
  for (Slot s = 0; s < 5; ++s) {
    Page block;
    ASSERT_FALSE(file_.read(s, block));
    EXPECT_EQ(block, zero) << "slot " << s << ": the freed page is gone from the disk";
  }
  EXPECT_EQ(load(4), page_of(40));
  EXPECT_EQ(load(5), page_of(50));
  for (Slot s = 6; s < 12; ++s) EXPECT_EQ(load(s), page_of(s));
  EXPECT_EQ(store_.housekeeping().wipe_freed(1000), 0u);
}

TEST_F(WritebackTest, AFailedWriteOverAWrittenBackPageNeverReadsAsWrongBytes) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 1;
  PageStore store(o);
  store.attach_backing(&faulty_);
  ASSERT_TRUE(store.store(100, page_of(100)));
  ASSERT_EQ(store.store(5, page_of(1)), StoredAs::written_back);
  // A write that fails after tearing the block: half the new page landed.
  faulty_.on_next_write([&] {
    Page half = page_of(1);
    std::memcpy(half.data(), page_of(2).data(), kPageSize / 2);
    PageWrite w{5, half.data(), 0};
    file_.write(std::span(&w, 1));
    faulty_.fail_writes(EIO);
  });
  EXPECT_FALSE(store.store(5, page_of(2)).has_value());
  faulty_.fail_writes(0);
  Page p;
  const auto r = store.load(5, p);
  ASSERT_FALSE(r.has_value()) << "the torn block fails its checksum";
  EXPECT_EQ(r.error(), LoadError::corrupt);
}

// A page that compresses to about `random_bytes` (the rest is zeros).
Page page_saving(std::uint64_t seed, std::size_t random_bytes) {
  Page p{};
  Page noise;
  testing::make_page(PageKind::random, seed, noise);
  std::memcpy(p.data(), noise.data(), random_bytes);
  return p;
}
Page good_page(std::uint64_t seed) { return page_saving(seed, 1024); }
Page poor_page(std::uint64_t seed) { return page_saving(seed, kPageSize); }

TEST_F(WritebackTest, NearThePoolLimitPagesThatSaveLittleGoToTheBackingFile) {
  PageStore store(small_pool());
  store.attach_backing(&faulty_);
  // Below the mark, the pool takes anything, incompressible pages too.
  ASSERT_EQ(store.store(0, poor_page(0)), StoredAs::incompressible);
  Slot s = 1;
  for (; !store.writeback_side().above_accept_threshold() && s < 900; ++s)
    ASSERT_EQ(store.store(s, good_page(s)), StoredAs::compressed);
  ASSERT_TRUE(store.writeback_side().above_accept_threshold()) << "the pool never got near its limit";
  ASSERT_FALSE(store.pool_full());
  const auto before = store.stats();
  // Near it: an incompressible page goes to the file, a good one to the pool.
  EXPECT_EQ(store.store(s, poor_page(s)), StoredAs::written_back);
  EXPECT_EQ(store.store(s + 1, good_page(s + 1)), StoredAs::compressed);
  const auto after = store.stats();
  EXPECT_EQ(after.spilled_pages, 1u);
  EXPECT_EQ(after.direct_writes - before.direct_writes, 1u);
  EXPECT_EQ(after.reject_pool_full, before.reject_pool_full) << "not a refusal of the pool";
  Page p;
  ASSERT_EQ(store.load(s, p), LoadedFrom::backing);
  EXPECT_EQ(p, poor_page(s));
  ASSERT_EQ(store.load(0, p), LoadedFrom::pool);
  EXPECT_EQ(p, poor_page(0));
  // Should the file refuse, the pool still takes the page while it can.
  faulty_.fail_writes(EIO);
  EXPECT_EQ(store.store(s + 2, poor_page(s + 2)), StoredAs::incompressible);
  ASSERT_EQ(store.load(s + 2, p), LoadedFrom::pool);
  EXPECT_EQ(p, poor_page(s + 2));
}

// Stores good pages from slot 0 until a 512 KiB pool refuses one (the pool
// is then full, and spills poor pages); returns the next free slot.
Slot fill_until_full(PageStore& store) {
  Slot s = 0;
  for (; !store.pool_full() && s < 2000; ++s) EXPECT_TRUE(store.store(s, good_page(s)).has_value());
  EXPECT_TRUE(store.pool_full()) << "the pool never filled";
  return s;
}

TEST_F(WritebackTest, SpillingEndsOnceThePoolIsBackUnderItsLimit) {
  PageStore store(small_pool());
  store.attach_backing(&faulty_);
  Slot s = fill_until_full(store);
  ASSERT_TRUE(store.pool_full());
  ASSERT_EQ(store.store(s, poor_page(s)), StoredAs::written_back);
  ++s;
  const std::uint64_t spilled = store.stats().spilled_pages;
  // A higher limit: the pool is far from it, although no store has cleared
  // the full flag yet (a spilled page does not pass the pool's admission).
  store.settings().set_max_pool_bytes(64u << 20);
  EXPECT_EQ(store.store(s, poor_page(s)), StoredAs::incompressible);
  ++s;
  // No limit at all: never a spill.
  store.settings().set_max_pool_bytes(0);
  EXPECT_EQ(store.store(s, poor_page(s)), StoredAs::incompressible);
  EXPECT_EQ(store.stats().spilled_pages, spilled);
}

TEST_F(WritebackTest, AFailedSpillAtAFullPoolIsNotWrittenTwice) {
  PageStore store(small_pool());
  store.attach_backing(&faulty_);
  Slot s = fill_until_full(store);
  ASSERT_TRUE(store.pool_full());
  faulty_.fail_writes(EIO);
  const std::uint64_t writes = faulty_.writes();
  const auto r = store.store(s, poor_page(s));
  ASSERT_FALSE(r.has_value()) << "neither the file nor the pool took it";
  EXPECT_EQ(r.error(), StoreError::backing_failed);
  EXPECT_EQ(faulty_.writes(), writes + 1) << "one write of the page, not two";
  faulty_.fail_writes(0);
  Page p;
  ASSERT_EQ(store.load(s, p), LoadedFrom::empty) << "the refused page left nothing behind";
}

// `count` pages from `seed`, poor and good alternating, as one request.
std::vector<std::byte> request_of(std::uint64_t seed, std::size_t count) {
  std::vector<std::byte> bytes(count * kPageSize);
  for (std::size_t i = 0; i < count; ++i) {
    const Page p = i % 2 ? good_page(seed + i) : poor_page(seed + i);
    std::memcpy(bytes.data() + i * kPageSize, p.data(), kPageSize);
  }
  return bytes;
}
Page page_of(const std::vector<std::byte>& request, std::size_t i) {
  Page p;
  std::memcpy(p.data(), request.data() + i * kPageSize, kPageSize);
  return p;
}

TEST_F(WritebackTest, StoreManyWritesTheFilesPagesOfARequestTogether) {
  PageStore store(small_pool());
  store.attach_backing(&faulty_);
  const Slot s = fill_until_full(store);
  // 100 pages at a full pool: all for the file, in batches of 64.
  const auto request = request_of(s, 100);
  const std::uint64_t calls = faulty_.write_calls(), pages = faulty_.writes();
  const auto stored = store.store_many(s, request);
  EXPECT_EQ(stored.pages, 100u);
  EXPECT_FALSE(stored.error);
  EXPECT_EQ(faulty_.write_calls() - calls, 2u) << "two submissions, not 100";
  EXPECT_EQ(faulty_.writes() - pages, 100u);
  Page p;
  for (std::size_t i = 0; i < 100; ++i) {
    ASSERT_EQ(store.load(s + i, p), LoadedFrom::backing) << "page " << i;
    EXPECT_EQ(p, page_of(request, i)) << "page " << i;
  }
}

TEST_F(WritebackTest, StoreManyNearTheLimitSpillsOnlyThePoorPagesAndThePoolTakesWhatTheFileFailed) {
  PageStore store(small_pool());
  store.attach_backing(&faulty_);
  Slot s = 0;
  for (; !store.writeback_side().above_accept_threshold() && s < 900; ++s)
    ASSERT_EQ(store.store(s, good_page(s)), StoredAs::compressed);
  ASSERT_FALSE(store.pool_full());
  const auto request = request_of(s, 8);
  const std::uint64_t calls = faulty_.write_calls();
  auto stored = store.store_many(s, request);
  EXPECT_EQ(stored.pages, 8u);
  EXPECT_EQ(faulty_.write_calls() - calls, 1u);
  EXPECT_EQ(store.stats().spilled_pages, 4u) << "the poor half";
  Page p;
  for (std::size_t i = 0; i < 8; ++i) {
    ASSERT_EQ(store.load(s + i, p), i % 2 ? LoadedFrom::pool : LoadedFrom::backing) << "page " << i;
    EXPECT_EQ(p, page_of(request, i));
  }
  // The file fails: the poor pages go to the pool after all, as store() does.
  faulty_.fail_writes(EIO);
  const auto again = request_of(s + 100, 8);
  stored = store.store_many(s + 100, again);
  EXPECT_EQ(stored.pages, 8u);
  EXPECT_FALSE(stored.error);
  for (std::size_t i = 0; i < 8; ++i) {
    ASSERT_EQ(store.load(s + 100 + i, p), LoadedFrom::pool) << "page " << i;
    EXPECT_EQ(p, page_of(again, i));
  }
}

TEST_F(WritebackTest, StoreManyAtAFullPoolReportsTheFilesFailureAndKeepsWhatItWrote) {
  PageStore store(small_pool());
  store.attach_backing(&faulty_);
  const Slot s = fill_until_full(store);
  faulty_.short_writes(3);
  const auto request = request_of(s, 8);
  const auto stored = store.store_many(s, request);
  EXPECT_EQ(stored.pages, 3u);
  EXPECT_EQ(stored.error, StoreError::backing_failed);
  faulty_.short_writes(~std::size_t{0});
  Page p;
  for (std::size_t i = 0; i < 8; ++i) {
    if (i < 3) {
      ASSERT_EQ(store.load(s + i, p), LoadedFrom::backing) << "page " << i;
      EXPECT_EQ(p, page_of(request, i));
    } else {
      EXPECT_EQ(store.load(s + i, p), LoadedFrom::empty) << "page " << i << ": a refused page leaves nothing";
    }
  }
}

TEST_F(WritebackTest, NoSpillWithoutAPreference) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 512u << 10;
  o.spill_length = kPageSize;  // no preference: only a full pool sends pages to the file
  PageStore store(o);
  store.attach_backing(&faulty_);
  Slot s = 0;
  for (; !store.writeback_side().above_accept_threshold() && s < 900; ++s)
    ASSERT_TRUE(store.store(s, good_page(s)).has_value());
  ASSERT_FALSE(store.pool_full());
  EXPECT_EQ(store.store(s, poor_page(s)), StoredAs::incompressible);
  EXPECT_EQ(store.stats().spilled_pages, 0u);
}

TEST_F(WritebackTest, UnderAPoolLimitWritebackTakesPagesThatSaveLittleFirst) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 64u << 20;  // far from it
  PageStore store(o);
  store.attach_backing(&faulty_);
  Writeback writeback(store);
  // Interleaved: even slots compress well, odd ones not at all.
  for (Slot s = 0; s < 20; ++s)
    ASSERT_TRUE(store.store(s, (s % 2 ? poor_page(s) : good_page(s))).has_value());
  // One walk of the whole list: the good pages only lose their second chance.
  const auto r = writeback.shrink_memcg(kRootCgroup, 10);
  EXPECT_EQ(r.written, 10u);
  EXPECT_EQ(r.rotated, 10u);
  for (Slot s = 0; s < 20; ++s) {
    Page p;
    const auto from = store.load(s, p);
    ASSERT_TRUE(from.has_value());
    EXPECT_EQ(*from, s % 2 ? LoadedFrom::backing : LoadedFrom::pool) << s;
    EXPECT_EQ(p, (s % 2 ? poor_page(s) : good_page(s))) << s;
  }
}

TEST_F(WritebackTest, APageThatSavesLittleKeepsTheSecondChanceALoadGives) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 64u << 20;
  PageStore store(o);
  store.attach_backing(&faulty_);
  Writeback writeback(store);
  for (Slot s = 0; s < 4; ++s) ASSERT_TRUE(store.store(s, poor_page(s)).has_value());
  Page p;
  ASSERT_EQ(store.load(2, p), LoadedFrom::pool);  // used again
  EXPECT_EQ(writeback.shrink_memcg(kRootCgroup, 3).written, 3u);  // the other three
  ASSERT_EQ(store.load(2, p), LoadedFrom::pool) << "the recently loaded page stayed in RAM";
}

}  // namespace
}  // namespace uzswap
