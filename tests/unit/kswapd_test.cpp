// The per-node reclaim threads, driven without their threads by a fake
// clock (Kswapd::step), on several simulated NUMA nodes, against a real
// backing file; every page is checked byte for byte afterwards.
#include "uzswap/reclaim/kswapd.h"

#include <gtest/gtest.h>

#include <fstream>
#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>

#include "uzswap/backing/backing_store.h"
#include "uzswap/reclaim/reclaimer.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

using namespace std::chrono_literals;
using Page = std::array<std::byte, kPageSize>;
constexpr std::uint64_t kSlots = 8192;

Page page_of(std::uint64_t seed) {
  Page p;
  testing::make_page(testing::PageKind::text, seed, p);
  return p;
}

std::uint64_t wakeups(const KswapdStats& s, WakeCause cause) {
  return s.wakeups[static_cast<unsigned>(cause)];
}

class KswapdTest : public ::testing::Test {
 protected:
  KswapdTest()
      : path_("/var/tmp/uzswap-kswapd-test-" + std::to_string(getpid())),
        file_(path_, kSlots * kPageSize) {
    std::filesystem::remove(path_);  // the open file outlives its name
  }

  static PageStoreOptions options(unsigned nodes, std::uint64_t max_pool_bytes) {
    PageStoreOptions o;
    o.slots = kSlots;
    o.max_pool_bytes = max_pool_bytes;
    o.pool.nodes = nodes;
    o.pool.reserve_bytes_per_node = 64u << 20;
    o.pool.empty_span_cache_bytes = 0;
    return o;
  }
  static ReclaimOptions manual(unsigned scale_factor = 1000, unsigned idle_seconds = 0) {
    ReclaimOptions r;
    r.start_threads = false;
    r.watch_pressure = false;
    r.kswapd.watermark_scale_factor = scale_factor;
    r.kswapd.idle_seconds = idle_seconds;
    return r;
  }

  // Stores pages on `node` until the node's pool is past `bytes`.
  Slot fill(PageStore& store, unsigned node, std::uint64_t bytes) {
    while (store.node(node).pool_bytes() <= bytes) {
      EXPECT_LT(next_, kSlots);
      if (next_ >= kSlots) break;
      EXPECT_TRUE(store.store(next_, page_of(next_), node).has_value());
      ++next_;
    }
    return next_;
  }
  // Arms the node's wake mark (a first step) and fills the node to just
  // below its low mark.
  Watermarks fill_to_low_mark(PageStore& store, Kswapd& k) {
    k.step(t0_);
    const Watermarks w = k.watermarks();
    fill(store, k.node(), w.share - w.low);
    return w;
  }
  void verify(PageStore& store) {
    Page out;
    for (Slot s = 0; s < next_; ++s) {
      ASSERT_TRUE(store.load(s, out).has_value());
      ASSERT_EQ(out, page_of(s)) << "slot " << s;
    }
  }

  std::string path_;
  BackingFile file_;
  Slot next_ = 0;
  const ReclaimClock::time_point t0_ = ReclaimClock::time_point{} + 1000s;
};

TEST_F(KswapdTest, WatermarksAreSpreadOverTheNodesShareOfThePoolLimit) {
  PageStore store(options(2, 8u << 20));
  Writeback writeback(store);
  ShrinkerRegistry registry(2);
  Kswapd k(writeback, registry, 1, KswapdOptions{.watermark_scale_factor = 1000});
  const Watermarks w = k.watermarks();
  EXPECT_EQ(w.share, 4u << 20);
  const std::uint64_t gap = w.share / 10'000 * 1000;
  EXPECT_EQ(w.min, gap / 2);
  EXPECT_EQ(w.low, w.min + gap);
  EXPECT_EQ(w.high, w.min + 2 * gap);
  EXPECT_TRUE(k.balanced());

  store.settings().set_max_pool_bytes(0);
  EXPECT_EQ(k.watermarks().share, 0u) << "no limit, no watermarks";
  EXPECT_TRUE(k.balanced());
}

TEST_F(KswapdTest, AStoreBelowTheLowMarkWakesItsNodeWhichReclaimsToTheHighMark) {
  PageStore store(options(2, 4u << 20));
  Writeback writeback(store);
  store.attach_backing(&file_);
  Reclaimer reclaimer(writeback, manual());
  Kswapd& k0 = reclaimer.kswapd(0);
  Kswapd& k1 = reclaimer.kswapd(1);
  k0.step(t0_);  // arms the store's wake mark
  k1.step(t0_);
  const Watermarks w = k0.watermarks();
  fill(store, 1, (w.share - w.low) / 2);  // node 1: half way, no wake
  fill(store, 0, w.share - w.low);         // node 0: just below its low mark
  EXPECT_EQ(wakeups(k0.stats(), WakeCause::watermark), 0u);

  k0.step(t0_ + 1s);
  k1.step(t0_ + 1s);
  const KswapdStats s0 = k0.stats(), s1 = k1.stats();
  EXPECT_EQ(wakeups(s0, WakeCause::watermark), 1u);
  EXPECT_GE(s0.balance_runs, 1u);
  EXPECT_GT(s0.written, 0u);
  EXPECT_GE(s0.scanned, s0.written);
  EXPECT_TRUE(k0.balanced()) << "pool " << store.node(0).pool_bytes() << " share " << w.share;
  // It stops near the high mark rather than emptying the node (nr_to_reclaim).
  EXPECT_GE(store.node(0).pool_bytes(), (w.share - w.high) * 3 / 4);
  EXPECT_EQ(s1.balance_runs, 0u) << "the other node was never low";
  EXPECT_EQ(s1.written, 0u);
  EXPECT_EQ(writeback.node_stats(1).writebacks, 0u);
  EXPECT_EQ(writeback.node_stats(0).writebacks, s0.written);
  verify(store);
}

TEST_F(KswapdTest, AFragmentedPoolIsCompactedBeforeAnythingIsWritten) {
  PageStore store(options(1, 0));
  Writeback writeback(store);
  store.attach_backing(&file_);
  Reclaimer reclaimer(writeback, manual());
  Kswapd& k = reclaimer.kswapd(0);
  for (Slot s = 0; s < 6000; ++s) ASSERT_TRUE(store.store(s, page_of(s), 0).has_value());
  next_ = 6000;
  // Two pages in three go: the spans stay, a third full.
  testing::Rng rng(7);
  for (Slot s = 0; s < 6000; ++s) {
    if (rng.below(3) != 0) {
      ASSERT_TRUE(store.invalidate(s, 1).has_value());
    }
  }
  const std::uint64_t before = store.node(0).pool_bytes();
  // A limit that puts the node just below its low mark.
  store.settings().set_max_pool_bytes(before + before / 20);
  ASSERT_FALSE(k.balanced());
  k.step(t0_);
  const KswapdStats st = k.stats();
  EXPECT_EQ(st.compactions, 1u);
  EXPECT_EQ(st.written, 0u) << "compaction alone balanced the node";
  EXPECT_EQ(st.balance_runs, 0u);
  EXPECT_TRUE(k.balanced());
  EXPECT_LT(store.node(0).pool_bytes(), before / 2);
  // Pages that were invalidated read as zeros; the rest as stored.
  rng = testing::Rng(7);
  Page out, zero{};
  for (Slot s = 0; s < 6000; ++s) {
    ASSERT_TRUE(store.load(s, out).has_value());
    ASSERT_EQ(out, rng.below(3) != 0 ? zero : page_of(s)) << "slot " << s;
  }
}

TEST_F(KswapdTest, EachOfFourNodesWakesOnlyForItsOwnWatermark) {
  PageStore store(options(4, 8u << 20));
  Writeback writeback(store);
  store.attach_backing(&file_);
  Reclaimer reclaimer(writeback, manual());
  for (unsigned n = 0; n < 4; ++n) reclaimer.kswapd(n).step(t0_);
  const Watermarks w = reclaimer.kswapd(0).watermarks();
  for (unsigned n = 0; n < 4; ++n) fill(store, n, n % 2 == 1 ? w.share - w.low : w.share / 2);
  for (unsigned n = 0; n < 4; ++n) reclaimer.kswapd(n).step(t0_ + 1s);
  for (unsigned n = 0; n < 4; ++n) {
    const KswapdStats s = reclaimer.kswapd(n).stats();
    EXPECT_EQ(wakeups(s, WakeCause::watermark), n % 2) << "node " << n;
    EXPECT_EQ(s.written > 0, n % 2 == 1) << "node " << n;
    EXPECT_EQ(writeback.node_stats(n).writebacks, s.written) << "node " << n;
    EXPECT_TRUE(reclaimer.kswapd(n).balanced()) << "node " << n;
  }
  verify(store);
}

TEST_F(KswapdTest, WakesDuringTheNapAndUnbalancedNodesAfterItAreCountedAsPremature) {
  PageStore store(options(1, 4u << 20));
  Writeback writeback(store);
  store.attach_backing(&file_);
  Reclaimer reclaimer(writeback, manual());
  Kswapd& k = reclaimer.kswapd(0);
  const Watermarks w = fill_to_low_mark(store, k);
  // Woken, balances, naps until t0 + 1 s + 100 ms.
  const auto nap_end = k.step(t0_ + 1s);
  EXPECT_EQ(nap_end, t0_ + 1s + 100ms);
  // A request 50 ms into the nap: low_wmark_hit_quickly.
  reclaimer.kswapd(0).post({WakeCause::request, std::nullopt, 10, nullptr});
  k.step(t0_ + 1s + 50ms);
  EXPECT_EQ(k.stats().low_wmark_hit_quickly, 1u);
  EXPECT_EQ(k.stats().high_wmark_hit_quickly, 0u);
  EXPECT_EQ(wakeups(k.stats(), WakeCause::request), 1u);

  // The limit drops during the next nap, with no store to wake the thread:
  // the end of the nap finds the node unbalanced (high_wmark_hit_quickly).
  store.settings().set_max_pool_bytes(store.node(0).pool_bytes() + w.min);
  EXPECT_FALSE(k.balanced()) << store.node(0).pool_bytes() << " " << k.watermarks().share << " "
                             << k.watermarks().high;
  EXPECT_EQ(k.step(t0_ + 2s), t0_ + 2s + 100ms) << "balanced again, napping";
  EXPECT_EQ(k.stats().high_wmark_hit_quickly, 1u);
  EXPECT_TRUE(k.balanced());
  // A nap that ends balanced is followed by sleep until the timer.
  EXPECT_EQ(k.step(t0_ + 3s), t0_ + 4s);
  EXPECT_EQ(k.stats().high_wmark_hit_quickly, 1u);
  verify(store);
}

TEST_F(KswapdTest, GivesUpAfterRepeatedFailuresAndTriesAgainAfterTheBackoff) {
  PageStore store(options(1, 4u << 20));
  Writeback writeback(store);
  store.attach_backing(&file_);
  Reclaimer reclaimer(writeback, manual());
  Kswapd& k = reclaimer.kswapd(0);
  fill_to_low_mark(store, k);
  store.memcg().set_policy(kRootCgroup, CgroupPolicy{.writeback = false});  // nothing can be reclaimed

  auto now = t0_ + 1s;
  for (int i = 0; i < 16; ++i) now = k.step(now) + 1ms;
  KswapdStats s = k.stats();
  EXPECT_EQ(s.balance_runs, 16u);
  EXPECT_EQ(s.giveups, 1u);
  EXPECT_TRUE(s.given_up);
  EXPECT_EQ(s.written, 0u);

  // Given up: further stores do not wake it, and timer steps do not run.
  k.wake_watermark();
  for (int i = 0; i < 5; ++i) now = k.step(now) + 1ms;
  EXPECT_EQ(k.stats().balance_runs, 16u);
  EXPECT_EQ(wakeups(k.stats(), WakeCause::watermark), 1u);

  // After the backoff (10 s) it tries again, and this time it can write.
  store.memcg().set_policy(kRootCgroup, CgroupPolicy{});
  k.step(now + 10s);
  s = k.stats();
  EXPECT_FALSE(s.given_up);
  EXPECT_EQ(s.balance_runs, 17u);
  EXPECT_GT(s.written, 0u);
  EXPECT_TRUE(k.balanced());
  verify(store);
}

TEST_F(KswapdTest, IdleWritebackTakesOnlyPagesUntouchedForAWholePeriod) {
  PageStore store(options(1, 0));
  Writeback writeback(store);
  store.attach_backing(&file_);
  Reclaimer reclaimer(writeback, manual(1000, 10));
  Kswapd& k = reclaimer.kswapd(0);
  for (Slot s = 0; s < 200; ++s) ASSERT_TRUE(store.store(s, page_of(s), 0).has_value());
  next_ = 200;
  EXPECT_EQ(k.step(t0_), t0_ + 1s) << "the period comes before the first idle pass";
  k.step(t0_ + 10s);  // first pass: every page was just stored, all kept
  EXPECT_EQ(k.stats().idle_written, 0u);
  EXPECT_EQ(wakeups(k.stats(), WakeCause::idle), 1u);

  Page out;
  for (Slot s = 0; s < 200; s += 2) ASSERT_TRUE(store.load(s, out).has_value());  // touch the even ones
  k.step(t0_ + 20s);
  const KswapdStats s = k.stats();
  EXPECT_EQ(s.idle_written, 100u);
  EXPECT_EQ(s.written, 100u);
  EXPECT_EQ(store.stats().written_back_pages, 100u);
  EXPECT_EQ(writeback.lru_count(kRootCgroup, 0), 100u) << "the touched pages stay in RAM";
  verify(store);

  reclaimer.set_idle_seconds(0);
  k.step(t0_ + 40s);
  EXPECT_EQ(wakeups(k.stats(), WakeCause::idle), 2u) << "off: no more passes";
}

TEST_F(KswapdTest, AMemoryEventsIncrementShrinksThatCgroupOnly) {
  PageStore store(options(2, 0));
  Writeback writeback(store);
  store.attach_backing(&file_);
  Reclaimer reclaimer(writeback, [] {
    ReclaimOptions r = manual();
    r.events_reclaim_pages = 10;
    return r;
  }());
  ASSERT_TRUE(store.memcg().add(1, kRootCgroup));
  ASSERT_TRUE(store.memcg().add(2, kRootCgroup));
  for (Slot s = 0; s < 400; ++s) {
    ASSERT_TRUE(store.store(s, page_of(s), s % 2).has_value());
    ASSERT_TRUE(store.attribution_side().set_slot_cgroup(s, s < 200 ? 1 : 2));
  }
  next_ = 400;
  reclaimer.handle({PressureEvent::Kind::memory_events, CgroupId{1}, 3});  // 30 pages
  reclaimer.kswapd(0).step(t0_);
  reclaimer.kswapd(1).step(t0_);
  EXPECT_EQ(store.memcg().stats(1).written_back_pages, 30u);
  EXPECT_EQ(store.memcg().stats(2).written_back_pages, 0u);
  EXPECT_EQ(wakeups(reclaimer.kswapd(0).stats(), WakeCause::memory_events), 1u);
  EXPECT_EQ(wakeups(reclaimer.kswapd(1).stats(), WakeCause::memory_events), 1u);
  verify(store);
}

// A /proc/meminfo of a machine with `available_kb` of its 16 GiB available.
std::string meminfo_with(std::uint64_t available_kb) {
  const std::string path = "/tmp/uzswap-kswapd-test-meminfo-" + std::to_string(getpid());
  std::ofstream(path) << "MemTotal:       16777216 kB\nMemFree:          100000 kB\nMemAvailable:   "
                      << available_kb << " kB\nBuffers:           1000 kB\n";
  return path;
}

TEST_F(KswapdTest, TheMachinesPsiMakesEveryNodeGiveBackPagesThoughBalanced) {
  PageStore store(options(2, 0));
  Writeback writeback(store);
  store.attach_backing(&file_);
  const std::string meminfo = meminfo_with(300000);  // short: under 10% available
  Reclaimer reclaimer(writeback, [&] {
    ReclaimOptions r = manual();
    r.psi_reclaim_pages = 128;
    r.meminfo = meminfo;
    return r;
  }());
  for (Slot s = 0; s < 1000; ++s) ASSERT_TRUE(store.store(s, page_of(s), s % 2).has_value());
  next_ = 1000;
  reclaimer.handle({PressureEvent::Kind::psi, std::nullopt, 0});
  // Two steps each: the first clears the second chances of fresh pages
  // (rotations), reclaim follows at lower priorities.
  for (unsigned n = 0; n < 2; ++n) reclaimer.kswapd(n).step(t0_);
  for (unsigned n = 0; n < 2; ++n) {
    const KswapdStats s = reclaimer.kswapd(n).stats();
    EXPECT_EQ(wakeups(s, WakeCause::psi), 1u);
    EXPECT_GE(s.written, 64u) << "node " << n;
  }
  verify(store);
}

TEST_F(KswapdTest, TheMachinesPsiWritesNothingBackWhileTheMachineHasMemoryToSpare) {
  PageStore store(options(2, 0));
  Writeback writeback(store);
  store.attach_backing(&file_);
  const std::string meminfo = meminfo_with(8000000);  // half the machine available
  bool hooked = false;
  Reclaimer reclaimer(writeback, [&] {
    ReclaimOptions r = manual();
    r.psi_reclaim_pages = 128;
    r.meminfo = meminfo;
    return r;
  }(), [&] { hooked = true; });
  for (Slot s = 0; s < 1000; ++s) ASSERT_TRUE(store.store(s, page_of(s), s % 2).has_value());
  next_ = 1000;
  // The stall of a cgroup at its own limit: the pool's RAM is not its.
  reclaimer.handle({PressureEvent::Kind::psi, std::nullopt, 0});
  for (unsigned n = 0; n < 2; ++n) reclaimer.kswapd(n).step(t0_);
  EXPECT_EQ(reclaimer.psi_events_ignored(), 1u);
  EXPECT_TRUE(hooked) << "attribution is still told of the pressure";
  for (unsigned n = 0; n < 2; ++n) {
    EXPECT_EQ(wakeups(reclaimer.kswapd(n).stats(), WakeCause::psi), 0u);
    EXPECT_EQ(reclaimer.kswapd(n).stats().written, 0u);
  }
  EXPECT_EQ(store.stats().written_back_pages, 0u);
  verify(store);
}

TEST_F(KswapdTest, WritebackRequestsAreSplitBetweenTheNodesAndAnswered) {
  PageStore store(options(2, 0));
  Writeback writeback(store);
  store.attach_backing(&file_);
  ReclaimOptions r;
  r.watch_pressure = false;
  Reclaimer reclaimer(writeback, r);  // threads running
  for (Slot s = 0; s < 300; ++s) ASSERT_TRUE(store.store(s, page_of(s), s < 200 ? 0 : 1).has_value());
  next_ = 300;
  const WritebackResult first = reclaimer.writeback(150, std::nullopt);
  EXPECT_EQ(first.written, 150u);
  EXPECT_EQ(writeback.node_stats(0).writebacks, 100u);
  EXPECT_EQ(writeback.node_stats(1).writebacks, 50u);
  EXPECT_EQ(reclaimer.writeback(1000, kRootCgroup).written, 150u);
  EXPECT_EQ(store.stats().stored_pages, 0u) << "all of it on disk";
  EXPECT_EQ(reclaimer.writeback(10, std::nullopt).written, 0u) << "nothing left: answered at once";
  verify(store);
}

TEST_F(KswapdTest, HeldRootPagesGoOnlyWhenARequestNamesTheRoot) {
  PageStore store(options(1, 0));
  Writeback writeback(store);
  store.attach_backing(&file_);
  Reclaimer reclaimer(writeback, manual(1000, 10));
  ASSERT_TRUE(store.memcg().add(1, kRootCgroup));
  for (Slot s = 0; s < 200; ++s) ASSERT_TRUE(store.store(s, page_of(s), 0).has_value());
  for (Slot s = 100; s < 200; ++s) ASSERT_TRUE(store.attribution_side().set_slot_cgroup(s, 1));
  next_ = 200;
  reclaimer.set_hold_root(true);
  Kswapd& k = reclaimer.kswapd(0);
  reclaimer.handle({PressureEvent::Kind::psi, std::nullopt, 0});
  k.step(t0_);
  k.step(t0_ + 10s);  // idle passes too
  k.step(t0_ + 20s);
  reclaimer.kswapd(0).post({WakeCause::request, std::nullopt, 1000, nullptr});
  k.step(t0_ + 21s);
  EXPECT_EQ(store.memcg().stats(kRootCgroup).written_back_pages, 0u);
  EXPECT_EQ(store.memcg().stats(1).written_back_pages, 100u) << "attributed pages are not held";
  reclaimer.kswapd(0).post({WakeCause::request, kRootCgroup, 1000, nullptr});
  k.step(t0_ + 22s);
  EXPECT_EQ(store.memcg().stats(kRootCgroup).written_back_pages, 100u);
  verify(store);
}

}  // namespace
}  // namespace uzswap
