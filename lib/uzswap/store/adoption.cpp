// PageStore on a state a dead process left: adoption ("Surviving the
// process" in page_store.h). The slot table, its checksums and journal, the
// pool's object bytes and the cgroup registry are in the shared state
// (state/layout.h); everything else (the pool's span lists, the LRU lists,
// every counter) is rebuilt here from the entries, which are the one source
// of truth.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "uzswap/store/page_store.h"

namespace uzswap {

void PageStore::account_adopted(Slot slot, const SlotEntry& entry) noexcept {
  const SlotState state = entry.slot_state();
  if (state == SlotState::lost) {
    counters_.add(Counter::lost_pages);
    return;
  }
  attachLocked(slot, entry);
}

void PageStore::adopt() {
  const auto start = std::chrono::steady_clock::now();
  StateHeader& header = state_->header();
  AdoptionReport& report = adoption_;
  report.adopted = true;
  // 1. Changes a dead process left half done: their old entries come back.
  report.rolled_back = table_.roll_back_torn();

  // 2. The cgroup registry: live cgroups, each after its parent.
  report.cgroups = memcg_.restore();

  // 3. One pass over the table: writebacks that were in flight are RAM-only
  //    again (the pool object is still theirs), every entry belongs to a
  //    live cgroup; collect the pool objects. A write to the backing file
  //    that was in flight may still land: its slot keeps file_write until
  //    release_stale_file_writes().
  std::vector<LiveObject> objects;
  const std::uint64_t slots = table_.size();
  for (Slot slot = 0; slot < slots; ++slot) {
    const SlotEntry& entry = table_.entryLocked(slot);
    SlotEntry next = entry;
    if (entry.state > static_cast<std::uint64_t>(SlotState::lost)) next.state = static_cast<std::uint64_t>(SlotState::lost);
    if (next.slot_state() == SlotState::writeback) {
      next.state = static_cast<std::uint64_t>(next.length == kPageSize ? SlotState::incompressible
                                                                       : SlotState::compressed);
      ++report.writebacks_reset;
    }
    if (next.file_write) stale_file_writes_.push_back(slot);
    if (next.slot_state() != SlotState::empty) next.cgroup = memcg_.live_ancestor(static_cast<CgroupId>(next.cgroup));
    if (next.in_pool() && next.node >= pool_.nodes()) next.state = static_cast<std::uint64_t>(SlotState::lost);
    if (std::memcmp(&next, &entry, sizeof(next)) != 0) table_.publishLocked(slot, next);
    if (next.in_pool()) objects.push_back({next.value, static_cast<std::uint32_t>(next.length)});
  }
  report.pool_objects = objects.size();

  // 4. The pool around its live objects; a handle it cannot vouch for makes
  //    its entry lost (reads fail: never wrong bytes).
  std::vector<PoolHandle> rejected = pool_.adopt_objects(objects);
  std::sort(rejected.begin(), rejected.end());
  std::vector<LiveObject>().swap(objects);

  // 5. LRU lists and counters, from the entries.
  for (Slot slot = 0; slot < slots; ++slot) {
    SlotEntry entry = table_.entryLocked(slot);
    if (entry.in_pool() && std::binary_search(rejected.begin(), rejected.end(), entry.value)) {
      entry.state = static_cast<std::uint64_t>(SlotState::lost);
      entry.value = 0;
      table_.publishLocked(slot, entry);
    }
    if (entry.slot_state() == SlotState::lost) ++report.lost;
    if (entry.slot_state() == SlotState::written_back) ++report.written_back;
    if (entry.slot_state() != SlotState::empty) account_adopted(slot, entry);
  }
  report.pool_objects -= std::min<std::uint64_t>(report.pool_objects, rejected.size());
  report.stale_file_writes = stale_file_writes_.size();
  ++header.adoptions;
  header.serving = 1;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::uint64_t PageStore::release_stale_file_writes() noexcept {
  MutexLock compaction(compaction_lock_);
  for (const Slot slot : stale_file_writes_) {
    MutexLock guard(table_.lock_for(slot));
    SlotEntry entry = table_.entryLocked(slot);
    entry.file_write = 0;
    table_.publishLocked(slot, entry);
  }
  const std::uint64_t released = stale_file_writes_.size();
  stale_file_writes_.clear();
  return released;
}

}  // namespace uzswap
