// Model-based stress test of PageStore: several threads store, load and
// invalidate at random on overlapping slots while another thread compacts the
// pool and switches codecs. Every load is checked byte for byte.
//
// Private slots (each owned by one thread) are checked against an exact
// reference map. Shared slots are written by every thread with tagged pages
// (slot and sequence number in the first bytes, the rest a pure function of
// both), so any load can be checked: it must be all zeros (empty) or exactly
// the page of a (slot, seq) that some thread stored.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <atomic>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include <filesystem>
#include <unistd.h>

#include "uzswap/backing/backing_store.h"
#include "uzswap/reclaim/reclaimer.h"
#include "uzswap/store/page_store.h"
#include "uzswap/writeback/shrink_memcg.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

using Page = std::array<std::byte, kPageSize>;
using testing::Rng;

constexpr unsigned kThreads = 4;
constexpr Slot kPrivateSlots = 1024;  // slot % kThreads is the owner
constexpr Slot kSharedSlots = 256;
constexpr Slot kSlots = kPrivateSlots + kSharedSlots;

Page tagged_page(Slot slot, std::uint64_t seq) {
  Page p;
  testing::make_mixed_page(slot * 1000003 + seq, p);
  std::memcpy(p.data(), &slot, 8);
  std::memcpy(p.data() + 8, &seq, 8);
  return p;
}

// Empty, or exactly a tagged page of this slot with a sequence number issued.
::testing::AssertionResult valid_shared(const Page& p, Slot slot, std::uint64_t max_seq) {
  static const Page zeros{};
  if (p == zeros) return ::testing::AssertionSuccess();
  Slot tag_slot;
  std::uint64_t seq;
  std::memcpy(&tag_slot, p.data(), 8);
  std::memcpy(&seq, p.data() + 8, 8);
  if (tag_slot != slot)
    return ::testing::AssertionFailure() << "slot " << slot << " holds a page of slot " << tag_slot;
  if (seq > max_seq)
    return ::testing::AssertionFailure() << "slot " << slot << " holds unissued seq " << seq;
  if (p != tagged_page(slot, seq))
    return ::testing::AssertionFailure() << "slot " << slot << " seq " << seq << " is corrupt";
  return ::testing::AssertionSuccess();
}

struct Config {
  std::uint64_t ops_per_thread;
  std::uint64_t max_pool_bytes;
  bool writeback = false;  // a real backing file and a shrinker thread
  bool kswapd = false;     // also the per-node reclaim threads, fed requests and PSI events
};

void run_stress(const Config& cfg) {
  PageStoreOptions o;
  o.slots = kSlots;
  o.pool.nodes = 2;  // simulated: stores spread over two arenas
  o.pool.reserve_bytes_per_node = 64u << 20;
  o.pool.empty_span_cache_bytes = 32u << 10;
  o.max_pool_bytes = cfg.max_pool_bytes;
  PageStore store(o);
  Writeback writeback(store);
  const std::string backing_path = "/var/tmp/uzswap-stress-" + std::to_string(getpid());
  std::unique_ptr<BackingFile> backing;
  if (cfg.writeback) {
    backing = std::make_unique<BackingFile>(backing_path, kSlots * kPageSize);
    std::filesystem::remove(backing_path);  // the open file outlives its name
    store.attach_backing(backing.get());
  }

  std::atomic<std::uint64_t> next_seq{1};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> loads_checked{0}, rejected{0};

  // Reference for private slots: seed of the page stored, nullopt = empty.
  std::vector<std::optional<std::uint64_t>> model(kPrivateSlots);

  auto worker = [&](unsigned id) {
    PageStore::prepare_thread();
    Rng rng(id * 7777 + 1);
    Page page, got;
    std::vector<std::byte> run(16 * kPageSize);  // a request's worth for store_many
    for (std::uint64_t op = 0; op < cfg.ops_per_thread; ++op) {
      const bool shared = rng.below(4) == 0;
      const Slot slot = shared ? kPrivateSlots + rng.below(kSharedSlots)
                               : rng.below(kPrivateSlots / kThreads) * kThreads + id;
      const unsigned node = static_cast<unsigned>(rng.below(2));
      const unsigned what = static_cast<unsigned>(rng.below(100));
      if (what < 50 && shared && rng.below(4) == 0) {  // store_many: a run of shared slots, as one request
        const Slot n = 1 + rng.below(16);
        const Slot first = std::min(slot, kSlots - n);
        for (Slot i = 0; i < n; ++i) {
          page = tagged_page(first + i, next_seq.fetch_add(1));
          std::memcpy(run.data() + i * kPageSize, page.data(), kPageSize);
        }
        const auto r = store.store_many(first, std::span(run.data(), n * kPageSize), static_cast<int>(node));
        if (r.error) {
          ASSERT_EQ(r.error, StoreError::pool_full);
          rejected.fetch_add(n - r.pages, std::memory_order_relaxed);  // the store counts each page it refused
        }
      } else if (what < 50) {  // store
        std::uint64_t seed = 0;
        if (shared) {
          page = tagged_page(slot, next_seq.fetch_add(1));
        } else {
          seed = rng.next();
          testing::make_mixed_page(seed, page);
        }
        auto r = store.store(slot, page, node);
        if (!r) {
          // Without a backing file a full pool refuses; with one, a store
          // is refused only while an older write of its slot is in flight.
          ASSERT_EQ(r.error(), StoreError::pool_full);
          rejected.fetch_add(1, std::memory_order_relaxed);
          continue;  // nothing changed
        }
        if (!shared) model[slot] = seed;
      } else if (what < 90) {  // load
        ASSERT_TRUE(store.load(slot, got).has_value());
        if (shared) {
          ASSERT_TRUE(valid_shared(got, slot, next_seq.load()));
        } else {
          if (model[slot]) testing::make_mixed_page(*model[slot], page);
          else page.fill(std::byte{0});
          ASSERT_EQ(got, page) << "private slot " << slot;
        }
        loads_checked.fetch_add(1, std::memory_order_relaxed);
      } else {  // invalidate
        if (shared) {
          const Slot n = 1 + rng.below(8);
          const Slot first = std::min(slot, kSlots - n);
          ASSERT_TRUE(store.invalidate(first, n).has_value());
        } else {
          ASSERT_TRUE(store.invalidate(slot, 1).has_value());
          model[slot].reset();
        }
      }
    }
  };

  std::thread compactor([&] {
    PageStore::prepare_thread();
    while (!stop.load()) {
      store.housekeeping().compact();
      std::this_thread::yield();
    }
  });
  std::thread switcher([&] {
    for (unsigned i = 0; !stop.load(); ++i) {
      if (i % 2) store.settings().set_codec(Codec::zstd, 1 + i % 5);
      else store.settings().set_codec(Codec::lz4, 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::atomic<std::uint64_t> written_back{0};
  std::thread shrinker([&] {
    if (!cfg.writeback) return;
    while (!stop.load()) {
      written_back += writeback.shrink_memcg(kRootCgroup, 32).written;
      std::this_thread::yield();
    }
  });
  std::unique_ptr<Reclaimer> reclaimer;
  if (cfg.kswapd) {
    ReclaimOptions r;
    r.watch_pressure = false;
    r.kswapd.watermark_scale_factor = 3000;  // wide marks: the threads run often
    r.psi_reclaim_pages = 64;
    reclaimer = std::make_unique<Reclaimer>(writeback, r);
  }
  std::thread requester([&] {
    if (!reclaimer) return;
    for (unsigned i = 0; !stop.load(); ++i) {
      if (i % 2) written_back += reclaimer->writeback(48, std::nullopt).written;
      else reclaimer->handle({PressureEvent::Kind::psi, std::nullopt, 0});
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < kThreads; ++t) workers.emplace_back(worker, t);
  for (auto& w : workers) w.join();
  stop = true;
  compactor.join();
  switcher.join();
  shrinker.join();
  requester.join();
  if (reclaimer) {
    std::uint64_t by_nodes = 0, watermark_wakeups = 0;
    for (const KswapdStats& k : reclaimer->node_stats()) {
      by_nodes += k.written;
      watermark_wakeups += k.wakeups[static_cast<unsigned>(WakeCause::watermark)];
    }
    std::printf("reclaim threads: %llu pages written, %llu watermark wakeups\n",
                static_cast<unsigned long long>(by_nodes),
                static_cast<unsigned long long>(watermark_wakeups));
    EXPECT_GT(by_nodes, 0u);
    reclaimer.reset();  // threads stopped before the quiescent check
  }
  if (cfg.writeback) {
    std::printf("written back by the shrinker: %llu, stored straight to the file: %llu\n",
                static_cast<unsigned long long>(written_back.load()),
                static_cast<unsigned long long>(store.stats().direct_writes));
    EXPECT_GT(written_back.load(), 0u);
  }

  // Quiescent: every slot once more, and the counters against the model.
  Page got, want;
  std::uint64_t stored = 0;
  for (Slot slot = 0; slot < kPrivateSlots; ++slot) {
    ASSERT_TRUE(store.load(slot, got).has_value());
    if (model[slot]) testing::make_mixed_page(*model[slot], want);
    else want.fill(std::byte{0});
    ASSERT_EQ(got, want) << "private slot " << slot;
    stored += model[slot].has_value() && want != Page{};
  }
  std::uint64_t shared_stored = 0;
  for (Slot slot = kPrivateSlots; slot < kSlots; ++slot) {
    ASSERT_TRUE(store.load(slot, got).has_value());
    ASSERT_TRUE(valid_shared(got, slot, next_seq.load()));
    shared_stored += got != Page{};
  }
  const PageStoreStats s = store.stats();
  // Zero pages stored count as stored though they read like empty ones.
  EXPECT_GE(s.stored_pages + s.written_back_pages, stored + shared_stored);
  EXPECT_EQ(s.load_errors, 0u);
  if (!cfg.writeback) {
    EXPECT_EQ(s.reject_pool_full, rejected.load());
  }
  EXPECT_GT(loads_checked.load(), cfg.ops_per_thread);
  EXPECT_GT(s.compactions, 0u);

  // Drain everything: the pool must end empty.
  ASSERT_TRUE(store.invalidate(0, kSlots).has_value());
  const PageStoreStats empty = store.stats();
  EXPECT_EQ(empty.stored_pages, 0u);
  EXPECT_EQ(empty.written_back_pages, 0u);
  EXPECT_EQ(empty.compressed_bytes, 0u);
  EXPECT_EQ(empty.pool.objects, 0u);
  EXPECT_EQ(empty.pool.spans, 0u);
}

TEST(StoreStress, ConcurrentStoreLoadInvalidateCompactMatchTheModel) {
  run_stress({.ops_per_thread = 50000, .max_pool_bytes = 0});
}

TEST(StoreStress, WritebackUnderATinyPoolLimitLosesNothing) {
  // A shrinker writes back while stores, loads, invalidates and compaction
  // run; the pool limit is so small that most stores go straight to the
  // backing file.
  run_stress({.ops_per_thread = 20000, .max_pool_bytes = 256u << 10, .writeback = true});
}

TEST(StoreStress, ReclaimThreadsWriteBackWhileEverythingElseRuns) {
  // The per-node kswapd threads (woken by stores below their low marks, by
  // requests and by PSI events) race the workers, the compactor, the codec
  // switcher and the pool-limit shrinker.
  run_stress({.ops_per_thread = 20000, .max_pool_bytes = 512u << 10, .writeback = true, .kswapd = true});
}

TEST(StoreStress, WritebackWithoutAPoolLimit) {
  run_stress({.ops_per_thread = 20000, .max_pool_bytes = 0, .writeback = true});
}

TEST(StoreStress, ATinyPoolLimitRejectsCleanlyUnderConcurrency) {
  run_stress({.ops_per_thread = 10000, .max_pool_bytes = 512u << 10});
}

}  // namespace
}  // namespace uzswap
