#include "uzswap/writeback/shrink_worker.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <thread>

#include "uzswap/backing/backing_store.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

using Page = std::array<std::byte, kPageSize>;
constexpr std::uint64_t kSlots = 4096;

Page page_of(std::uint64_t seed) {
  Page p;
  testing::make_page(testing::PageKind::binary, seed, p);
  return p;
}

// Waits (for liveness, not speed) until `done` holds; false after 20 s.
template <typename F>
bool eventually(F&& done) {
  for (int i = 0; i < 2000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

class ShrinkWorkerTest : public ::testing::Test {
 protected:
  ShrinkWorkerTest()
      : path_("/var/tmp/uzswap-shrink-test-" + std::to_string(getpid())),
        file_(path_, kSlots * kPageSize) {
    std::filesystem::remove(path_);  // the open file outlives its name
  }

  static PageStoreOptions options(std::uint64_t max_pool_bytes) {
    PageStoreOptions o;
    o.slots = kSlots;
    o.max_pool_bytes = max_pool_bytes;
    o.accept_threshold_percent = 50;
    o.pool.reserve_bytes_per_node = 64u << 20;
    o.pool.empty_span_cache_bytes = 0;
    return o;
  }
  static ShrinkWorkerOptions fast() {
    ShrinkWorkerOptions w;
    w.period = std::chrono::milliseconds(20);
    w.backoff = std::chrono::milliseconds(20);
    return w;
  }

  std::string path_;
  BackingFile file_;
};

TEST_F(ShrinkWorkerTest, APoolAtItsLimitIsBroughtUnderTheAcceptThreshold) {
  PageStore store(options(1u << 20));
  Writeback writeback(store);
  store.attach_backing(&file_);
  ShrinkWorker worker(writeback, fast());
  store.hooks().pool_full = [&] { worker.wake(); };
  for (Slot s = 0; s < 2000; ++s) ASSERT_TRUE(store.store(s, page_of(s)).has_value());
  ASSERT_GT(store.stats().pool_limit_hits, 0u);
  EXPECT_TRUE(eventually([&] { return !store.writeback_side().above_accept_threshold(); }));
  EXPECT_GT(worker.stats().written, 0u);
  EXPECT_GT(worker.stats().wakeups + worker.stats().runs, 0u);
  for (Slot s = 0; s < 2000; ++s) {
    Page p;
    ASSERT_TRUE(store.load(s, p).has_value());
    ASSERT_EQ(p, page_of(s)) << s;
  }
}

TEST_F(ShrinkWorkerTest, ACgroupOverItsMaximumIsShrunkFirst) {
  PageStore store(options(0));
  Writeback writeback(store);
  store.attach_backing(&file_);
  ASSERT_TRUE(store.memcg().add(1, kRootCgroup));
  ASSERT_TRUE(store.memcg().add(2, kRootCgroup));
  for (Slot s = 0; s < 400; ++s) {
    ASSERT_TRUE(store.store(s, page_of(s)).has_value());
    ASSERT_TRUE(store.attribution_side().set_slot_cgroup(s, s < 200 ? 1 : 2));
  }
  const std::uint64_t max = store.memcg().stats(1).compressed_bytes / 4;
  store.memcg().set_policy(1, {.writeback = true, .max_bytes = max});
  ShrinkWorker worker(writeback, fast());
  EXPECT_TRUE(eventually([&] { return store.memcg().stats(1).compressed_bytes <= max; }));
  EXPECT_GT(worker.stats().over_max_runs, 0u);
  EXPECT_EQ(store.memcg().stats(2).written_back_pages, 0u) << "no pool pressure: cgroup 2 is left alone";
}

TEST_F(ShrinkWorkerTest, ACgroupWithWritebackOffKeepsItsPagesUnderPressure) {
  PageStore store(options(512u << 10));
  Writeback writeback(store);
  store.attach_backing(&file_);
  ASSERT_TRUE(store.memcg().add(1, kRootCgroup));
  store.memcg().set_policy(1, {.writeback = false, .max_bytes = 0});
  store.memcg().set_policy(kRootCgroup, {.writeback = false, .max_bytes = 0});
  ShrinkWorker worker(writeback, fast());
  store.hooks().pool_full = [&] { worker.wake(); };
  for (Slot s = 0; s < 1000; ++s) {
    if (!store.store(s, page_of(s)).has_value()) continue;
    store.attribution_side().set_slot_cgroup(s, 1);
  }
  EXPECT_TRUE(eventually([&] { return worker.stats().backoffs > 0; })) << "nothing to take: it backs off";
  EXPECT_EQ(store.memcg().stats(1).written_back_pages, 0u);
  EXPECT_EQ(store.stats().writebacks, 0u);
}

}  // namespace
}  // namespace uzswap
