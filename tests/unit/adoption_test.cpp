// A page store made on the shared state a dead process left serves the same
// pages: half-done changes are rolled back, the pool and the LRU lists are
// rebuilt around the entries, damaged entries read as errors, never as
// wrong bytes. The kill tests let a child process run a real store workload
// and SIGKILL it at a random instruction, again and again, against a
// reference model the child keeps in shared memory.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "uzswap/backing/backing_store.h"
#include "uzswap/store/page_store.h"
#include "uzswap/writeback/shrink_memcg.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

using Page = std::array<std::byte, kPageSize>;
constexpr std::uint64_t kSlots = 2048;

Page page_of(Slot slot, std::uint32_t version) {
  Page p;
  testing::make_mixed_page(slot * 1000003 + version, p);
  return p;
}

PageStoreOptions options() {
  PageStoreOptions o;
  o.slots = kSlots;
  o.pool.reserve_bytes_per_node = 64u << 20;
  return o;
}

SharedState new_state(const PageStoreOptions& o = options()) {
  return SharedState::create({o.slots, o.pool.nodes, ZPool::region_bytes_for(o.pool.reserve_bytes_per_node)});
}

// The same segments, as a new process would attach them.
SharedState reopen(const SharedState& state) {
  auto adopted = SharedState::attach(state.ids());
  EXPECT_TRUE(adopted.has_value()) << adopted.error();
  return std::move(*adopted);
}

bool holds(PageStore& store, Slot slot, const Page& want) {
  Page got;
  return store.load(slot, got).has_value() && got == want;
}

TEST(Adoption, AFreshStateIsNotAdopted) {
  SharedState state = new_state();
  PageStore store(options(), state);
  EXPECT_FALSE(store.restart_side().report().adopted);
  EXPECT_EQ(state.header().serving, 1u);
}

TEST(Adoption, TheNextStoreServesEveryPageAndTheSameCounters) {
  SharedState state = new_state();
  PageStoreStats before;
  {
    PageStore first(options(), state);
    for (Slot s = 0; s < kSlots; ++s) ASSERT_TRUE(first.store(s, page_of(s, 1)));
    ASSERT_TRUE(first.invalidate(100, 50));
    before = first.stats();
  }
  SharedState again = reopen(state);
  PageStore second(options(), again);
  Writeback second_writeback(second);
  EXPECT_TRUE(second.restart_side().report().adopted);
  EXPECT_EQ(second.restart_side().report().rolled_back, 0u);
  for (Slot s = 0; s < kSlots; ++s) {
    if (s >= 100 && s < 150) {
      Page got;
      ASSERT_EQ(second.load(s, got).value(), LoadedFrom::empty);
    } else {
      ASSERT_TRUE(holds(second, s, page_of(s, 1))) << "slot " << s;
    }
  }
  const PageStoreStats after = second.stats();
  EXPECT_EQ(after.stored_pages, before.stored_pages);
  EXPECT_EQ(after.same_filled_pages, before.same_filled_pages);
  EXPECT_EQ(after.incompressible_pages, before.incompressible_pages);
  EXPECT_EQ(after.compressed_bytes, before.compressed_bytes);
  EXPECT_EQ(after.pool.objects, before.pool.objects);
  // Every page that holds pool memory is on an LRU list again.
  EXPECT_EQ(second_writeback.lru_pages(kRootCgroup), before.pool.objects);
  // The rebuilt pool allocates and frees as usual.
  for (Slot s = 0; s < kSlots; ++s) ASSERT_TRUE(second.store(s, page_of(s, 2)));
  for (Slot s = 0; s < kSlots; ++s) ASSERT_TRUE(holds(second, s, page_of(s, 2)));
  ASSERT_TRUE(second.invalidate(0, kSlots));
  EXPECT_EQ(second.stats().pool.objects, 0u);
}

TEST(Adoption, AHalfDoneChangeIsRolledBack) {
  SharedState state = new_state();
  {
    PageStore first(options(), state);
    ASSERT_TRUE(first.store(7, page_of(7, 1)));
  }
  // A process that died between arming the journal and disarming it: the
  // entry holds garbage, the record the old entry.
  const std::size_t stripe = (7 / SlotTable::kRun) % SlotTable::kStripes;
  JournalRecord& record = state.journal()[stripe];
  record.old = state.slots()[7];
  record.old_checksum = state.checksums()[7];
  record.armed_slot = 7 + 1;
  state.checksums()[7] = 0x12345678;
  state.slots()[7].value = 0xdeadbeefdeadbeef;
  state.slots()[7].length = 77;
  SharedState again = reopen(state);
  PageStore second(options(), again);
  EXPECT_EQ(second.restart_side().report().rolled_back, 1u);
  EXPECT_TRUE(holds(second, 7, page_of(7, 1)));
  EXPECT_EQ(record.armed_slot, 0u);
}

TEST(Adoption, ADamagedEntryReadsAsAnErrorNeverAsWrongBytes) {
  SharedState state = new_state();
  {
    PageStore first(options(), state);
    for (Slot s = 0; s < 64; ++s) ASSERT_TRUE(first.store(s, page_of(s, 1)));
  }
  // Slot 3's handle points nowhere this pool could have made.
  for (Slot s = 0; s < 64; ++s) {
    if (state.slots()[s].in_pool()) {
      state.slots()[s].value ^= 0x7;  // an offset no size class has
      SharedState again = reopen(state);
      PageStore second(options(), again);
      EXPECT_EQ(second.restart_side().report().lost, 1u);
      Page got;
      const auto loaded = second.load(s, got);
      ASSERT_FALSE(loaded.has_value());
      EXPECT_EQ(loaded.error(), LoadError::corrupt);
      EXPECT_EQ(second.stats().integrity_errors, 1u);
      EXPECT_EQ(second.stats().lost_pages, 1u);
      for (Slot t = 0; t < 64; ++t) {
        if (t != s) {
          EXPECT_TRUE(holds(second, t, page_of(t, 1)));
        }
      }
      // A new store of the slot heals it.
      ASSERT_TRUE(second.store(s, page_of(s, 2)));
      EXPECT_TRUE(holds(second, s, page_of(s, 2)));
      EXPECT_EQ(second.stats().lost_pages, 0u);
      return;
    }
  }
  FAIL() << "no page went to the pool";
}

TEST(Adoption, CgroupsAndTheirPolicyComeBack) {
  SharedState state = new_state();
  {
    PageStore first(options(), state);
    ASSERT_TRUE(first.memcg().add(1, kRootCgroup));
    ASSERT_TRUE(first.memcg().add(2, 1));
    ASSERT_TRUE(first.memcg().add(3, kRootCgroup));
    first.memcg().record_identity(2, 4242, "/a/b");
    first.memcg().set_policy(2, {false, 1u << 20});
    first.memcg().set_next_id(4);
    for (Slot s = 0; s < 10; ++s) ASSERT_TRUE(first.store(s, page_of(s, 1)));
    for (Slot s = 0; s < 10; ++s) ASSERT_TRUE(first.attribution_side().set_slot_cgroup(s, s < 5 ? 2 : 3));
    ASSERT_TRUE(first.memcg().remove(3));  // its pages are the root's now
  }
  SharedState again = reopen(state);
  PageStore second(options(), again);
  EXPECT_EQ(second.restart_side().report().cgroups, 2u);
  EXPECT_EQ(second.memcg().next_id(), 4u);
  const CgroupPolicy p = second.memcg().policy(2);
  EXPECT_FALSE(p.writeback);
  EXPECT_EQ(p.max_bytes, 1u << 20);
  EXPECT_EQ(second.memcg().stats(2).stored_pages, 5u);
  EXPECT_EQ(second.memcg().stats(kRootCgroup).stored_pages, 5u);
  const auto known = second.memcg().persisted();
  ASSERT_EQ(known.size(), 2u);
  EXPECT_EQ(known[1].id, 2);
  EXPECT_EQ(known[1].inode, 4242u);
  EXPECT_EQ(known[1].path, "/a/b");
}

TEST(Adoption, AReusedIdBelowItsParentsComesBackUnderThatParent) {
  // Ids of removed cgroups are handed out again, so a child may have a
  // lower id than its parent: adoption must add the parent first.
  SharedState state = new_state();
  {
    PageStore first(options(), state);
    ASSERT_TRUE(first.memcg().add(1, kRootCgroup));
    ASSERT_TRUE(first.memcg().add(2, kRootCgroup));
    first.memcg().set_next_id(3);
    ASSERT_TRUE(first.memcg().remove(1));
    ASSERT_EQ(first.attribution_side().release_cgroups({1}), std::vector<CgroupId>{1});
    ASSERT_TRUE(first.memcg().add(1, 2));  // reused, as a child of 2
    first.memcg().set_policy(1, {false, 0});
    for (Slot s = 0; s < 4; ++s) ASSERT_TRUE(first.store(s, page_of(s, 1)));
    for (Slot s = 0; s < 4; ++s) ASSERT_TRUE(first.attribution_side().set_slot_cgroup(s, 1));
  }
  SharedState again = reopen(state);
  PageStore second(options(), again);
  EXPECT_EQ(second.restart_side().report().cgroups, 2u);
  EXPECT_FALSE(second.memcg().policy(1).writeback);
  EXPECT_EQ(second.memcg().stats(1).stored_pages, 4u);
  ASSERT_TRUE(second.memcg().remove(1));
  EXPECT_EQ(second.memcg().stats(2).stored_pages, 4u) << "its parent is 2, not the root";
}

TEST(Adoption, RefusesAStateOfAnotherLayout) {
  SharedState state = new_state();
  state.header().layout_version = kStateLayoutVersion + 1;
  auto adopted = SharedState::attach(state.ids());
  ASSERT_FALSE(adopted.has_value());
  EXPECT_NE(adopted.error().find("layout version"), std::string::npos) << adopted.error();
}

// The model a killed child leaves: per slot, the version of its last
// acknowledged change (0 = empty), and the change it was making.
struct Model {
  std::atomic<std::uint32_t> acked[kSlots];
  std::atomic<std::uint64_t> inflight_slot;  // slot + 1, 0 = none
  std::atomic<std::uint32_t> inflight_version;
  std::atomic<std::uint64_t> inflight_first, inflight_count;  // an invalidate
  std::atomic<std::uint64_t> ops;
};

// Runs store/invalidate/compaction/writeback forever; acknowledges each
// change in the model only once it returned, as the kernel learns of it.
[[noreturn]] void child_workload(SharedState& state, Model& model, const std::string& backing_path,
                                 std::uint64_t seed) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 0;
  PageStore store(o, state);
  Writeback writeback(store);
  // Its own open file, as a serving process has.
  std::unique_ptr<BackingFile> backing;
  if (!backing_path.empty()) {
    backing = std::make_unique<BackingFile>(backing_path, kSlots * kPageSize);
    store.restart_side().release_stale_file_writes();  // the parent waited for the last child's writes
    store.attach_backing(backing.get());
  }
  testing::Rng rng(seed);
  for (;;) {
    const std::uint64_t op = rng.below(100);
    const Slot slot = rng.below(kSlots);
    if (op < 70) {
      const std::uint32_t version = model.acked[slot].load() + 1 + static_cast<std::uint32_t>(rng.below(3));
      model.inflight_version = version;
      model.inflight_slot = slot + 1;
      if (store.store(slot, page_of(slot, version))) model.acked[slot] = version;
      model.inflight_slot = 0;
    } else if (op < 85) {
      const std::uint64_t count = 1 + rng.below(16);
      const std::uint64_t n = std::min(count, kSlots - slot);
      model.inflight_first = slot;
      model.inflight_count = n;
      if (store.invalidate(slot, n))
        for (Slot s = slot; s < slot + n; ++s) model.acked[s] = 0;
      model.inflight_count = 0;
    } else if (op < 90) {
      store.housekeeping().compact();
    } else if (backing != nullptr) {
      writeback.shrink_memcg(kRootCgroup, 1 + rng.below(64));
    }
    model.ops.fetch_add(1);
  }
}

class AdoptionKill : public ::testing::TestWithParam<bool> {};

TEST_P(AdoptionKill, EveryAcknowledgedPageSurvivesASigkillAtARandomInstruction) {
  const bool with_backing = GetParam();
  const std::string path = "/var/tmp/uzswap-adopt-test-" + std::to_string(getpid());
  std::unique_ptr<BackingFile> backing;
  if (with_backing) backing = std::make_unique<BackingFile>(path, kSlots * kPageSize);
  auto* model = static_cast<Model*>(
      mmap(nullptr, sizeof(Model), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(model, MAP_FAILED);
  SharedState state = new_state();
  testing::Rng rng(with_backing ? 77 : 78);
  std::uint64_t rolled = 0, reset = 0, verified = 0;
  constexpr int kKills = 25;
  for (int round = 0; round < kKills; ++round) {
    const std::uint64_t ops_before = model->ops.load();
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) child_workload(state, *model, with_backing ? path : std::string(), 1000 + round);
    // Let it work a random while, then kill it wherever it is.
    while (model->ops.load() < ops_before + 200) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(rng.below(20000)));
    kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status));

    PageStore store(options(), state);
    if (backing) store.attach_backing(backing.get());
    ASSERT_TRUE(store.restart_side().report().adopted);
    // Reads of written-back pages must wait for the dead child's writes too.
    if (backing) {
      ASSERT_TRUE(backing->wait_for_other_writers(std::chrono::seconds(10)));
      store.restart_side().release_stale_file_writes();
    }
    EXPECT_EQ(store.restart_side().report().lost, 0u);
    rolled += store.restart_side().report().rolled_back;
    reset += store.restart_side().report().writebacks_reset;
    const std::uint64_t in_slot = model->inflight_slot.load();
    const std::uint64_t first = model->inflight_first.load(), count = model->inflight_count.load();
    for (Slot s = 0; s < kSlots; ++s) {
      Page got;
      const auto loaded = store.load(s, got);
      ASSERT_TRUE(loaded.has_value()) << "round " << round << " slot " << s;
      const std::uint32_t want = model->acked[s].load();
      const bool acked_ok = want == 0 ? *loaded == LoadedFrom::empty : got == page_of(s, want);
      // The change in flight at the kill may have happened or not: the
      // kernel, never told, sends it again.
      bool inflight_ok = false;
      if (in_slot == s + 1) inflight_ok = got == page_of(s, model->inflight_version.load());
      if (count > 0 && s >= first && s < first + count) inflight_ok = *loaded == LoadedFrom::empty;
      ASSERT_TRUE(acked_ok || inflight_ok) << "round " << round << " slot " << s << " version " << want;
      // Settle the model on what the store holds now.
      if (!acked_ok) model->acked[s] = *loaded == LoadedFrom::empty ? 0 : model->inflight_version.load();
      ++verified;
    }
    model->inflight_slot = 0;
    model->inflight_count = 0;
    // The rebuilt pool accounts exactly for what the entries hold.
    const PageStoreStats st = store.stats();
    EXPECT_EQ(st.pool.objects, st.stored_pages - st.same_filled_pages);
  }
  std::printf("%d kills: %llu pages verified, %llu half-done changes rolled back, %llu writebacks reset\n", kKills,
              static_cast<unsigned long long>(verified), static_cast<unsigned long long>(rolled),
              static_cast<unsigned long long>(reset));
  munmap(model, sizeof(Model));
  if (with_backing) std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(PoolOnly, AdoptionKill, ::testing::Values(false));
INSTANTIATE_TEST_SUITE_P(WithBackingFile, AdoptionKill, ::testing::Values(true));

}  // namespace
}  // namespace uzswap
