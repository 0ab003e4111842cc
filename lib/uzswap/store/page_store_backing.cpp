// PageStore and the backing store: the entry transitions of writeback
// (the engine itself is writeback/shrink_memcg.h), stores that go straight
// to the backing store while the pool is full, wiping the blocks of freed
// written-back pages, and the cgroup labels of entries (attribution).
#include <algorithm>
#include <cstring>

#include "uzswap/common/checksum.h"
#include "uzswap/store/page_store.h"

namespace uzswap {

bool PageStore::set_slot_cgroup(Slot slot, CgroupId cgroup) noexcept {
  if (slot >= table_.size() || !memcg_.live(cgroup)) return false;
  Removed old;
  {
    MutexLock guard(table_.lock_for(slot));
    const SlotEntry& entry = table_.entryLocked(slot);
    if (entry.slot_state() == SlotState::lost) return false;
    if (entry.slot_state() == SlotState::empty || entry.cgroup == cgroup) return entry.cgroup == cgroup;
    // Leave the old cgroup's list and counters and join the new one's, as
    // one step under the slot lock. Not a store: no version change.
    old = detachLocked(slot, entry);
    MemcgCounters& from = counters_of(old.cgroup);
    MemcgCounters& to = counters_of(cgroup);
    const bool stored = entry.slot_state() != SlotState::written_back;
    (stored ? from.stored_pages : from.written_back_pages).fetch_sub(1, std::memory_order_relaxed);
    (stored ? to.stored_pages : to.written_back_pages).fetch_add(1, std::memory_order_relaxed);
    if (entry.in_pool()) {
      from.compressed_bytes.fetch_sub(entry.length, std::memory_order_relaxed);
      to.compressed_bytes.fetch_add(entry.length, std::memory_order_relaxed);
    }
    SlotEntry next = entry;
    next.cgroup = cgroup;
    table_.publishLocked(slot, next);
    // An entry isolated for writeback stays off the lists until that ends.
    if (entry.slot_state() == SlotState::compressed || entry.slot_state() == SlotState::incompressible)
      lru_.add(static_cast<std::uint32_t>(slot), cgroup, entry.node, !saves_little(entry));
  }
  return true;
}

std::vector<CgroupId> PageStore::release_cgroups(const std::vector<CgroupId>& removed) {
  const MemCgroups::Release release = memcg_.prepare_release(removed);
  if (release.ids.empty()) return {};
  // Re-label: the entries' lists and counters are the target's already
  // (remove_cgroup moved both), so only the id in the entry changes. Not a
  // store: no version change, and a writeback in flight completes as usual.
  for (Slot first = 0; first < table_.size(); first += SlotTable::kRun) {
    MutexLock guard(table_.lock_for(first));
    const Slot end = std::min<Slot>(first + SlotTable::kRun, table_.size());
    for (Slot slot = first; slot < end; ++slot) {
      table_.assert_same_stripe(first, slot);
      const SlotEntry& entry = table_.entryLocked(slot);
      if (entry.slot_state() == SlotState::empty || !release.dead[entry.cgroup]) continue;
      SlotEntry next = entry;
      next.cgroup = release.target[entry.cgroup];
      table_.publishLocked(slot, next);
    }
  }
  memcg_.forget(release.ids);
  return release.ids;
}

PageStore::Claim PageStore::claim_for_writeback(Slot slot, PageBuffer page, CompressorSet& compressors,
                                                std::uint64_t& version) noexcept {
  MutexLock guard(table_.lock_for(slot));
  const SlotEntry& entry = table_.entryLocked(slot);
  const SlotState state = entry.slot_state();
  const auto item = static_cast<std::uint32_t>(slot);
  const auto cgroup = static_cast<CgroupId>(entry.cgroup);
  // Invalidated, or claimed by another shrinker, since it was isolated.
  if (state != SlotState::compressed && state != SlotState::incompressible) return Claim::raced;
  // Re-stored since it was isolated: the new version went onto a list and
  // is not ours to take (claiming it would leave a written-back entry on an
  // LRU list).
  if (lru_.on_list(item, cgroup, entry.node)) return Claim::raced;
  if (entry.file_write) {
    // An older write of this slot is still in flight: try again later.
    lru_.add(item, cgroup, entry.node, !saves_little(entry));
    return Claim::raced;
  }
  const std::byte* object = pool_.map(entry.value);
  if (entry.length == kPageSize) {
    std::memcpy(page.data(), object, kPageSize);
  } else if (!compressors.get(static_cast<Codec>(entry.codec))
                  .decompress(std::span<const std::byte>(object, entry.length), page)) {
    // Never expected; leave the page in RAM rather than write garbage.
    lru_.add(item, cgroup, entry.node, !saves_little(entry));
    return Claim::failed;
  }
  if (page_checksum(page) != table_.checksumLocked(slot)) {
    // Damaged in the pool: writing it out would only move the damage. It
    // stays, and its loads fail the same check.
    counters_.add(Counter::integrity_errors);
    integrity_log_.note(slot, false);
    lru_.add(item, cgroup, entry.node, !saves_little(entry));
    return Claim::failed;
  }
  SlotEntry claimed = entry;
  claimed.state = static_cast<std::uint64_t>(SlotState::writeback);
  claimed.file_write = 1;
  table_.publishLocked(slot, claimed);
  version = entry.version;
  return Claim::claimed;
}

PageStore::Finish PageStore::finish_writeback(Slot slot, std::uint64_t version, int write_result) noexcept {
  PoolHandle freed = kNullHandle;
  std::uint32_t length = 0;
  CgroupId cgroup = kRootCgroup;
  unsigned node = 0;
  {
    MutexLock guard(table_.lock_for(slot));
    SlotEntry entry = table_.entryLocked(slot);
    entry.file_write = 0;  // our write is over, whatever the entry is now
    if (entry.version != version || entry.slot_state() != SlotState::writeback) {
      table_.publishLocked(slot, entry);
      counters_.add(Counter::writeback_raced);
      return Finish::raced;
    }
    if (write_result != 0) {
      // Nothing is dropped: back to RAM-only, back on the LRU.
      entry.state = static_cast<std::uint64_t>(entry.length == kPageSize ? SlotState::incompressible
                                                                          : SlotState::compressed);
      table_.publishLocked(slot, entry);
      lru_.add(static_cast<std::uint32_t>(slot), static_cast<CgroupId>(entry.cgroup), entry.node,
               !saves_little(entry));
      counters_.add(Counter::writeback_failures);
      return Finish::failed;
    }
    freed = entry.value;
    length = static_cast<std::uint32_t>(entry.length);
    cgroup = static_cast<CgroupId>(entry.cgroup);
    node = entry.node;
    entry.state = static_cast<std::uint64_t>(SlotState::written_back);
    entry.value = 0;
    entry.length = 0;
    table_.publishLocked(slot, entry);
  }
  // Counters as for a page leaving the pool and one entering the file.
  MemcgCounters& cg = counters_of(cgroup);
  counters_.sub(Counter::stored_pages);
  cg.stored_pages.fetch_sub(1, std::memory_order_relaxed);
  if (length == kPageSize) counters_.sub(Counter::incompressible_pages);
  counters_.sub(Counter::compressed_bytes, length);
  cg.compressed_bytes.fetch_sub(length, std::memory_order_relaxed);
  counters_.add(Counter::written_back_pages);
  cg.written_back_pages.fetch_add(1, std::memory_order_relaxed);
  counters_.add(Counter::writebacks);
  node_writebacks_[node].fetch_add(1, std::memory_order_relaxed);
  pool_.free(freed);
  return Finish::written;
}

Result<StoredAs> PageStore::store_to_backing(Slot slot, PageView page,
                                                                std::uint32_t checksum) noexcept {
  const auto version = begin_file_write(slot);
  if (!version) return std::unexpected(StoreError::pool_full);
  PageWrite write{slot, page.data(), 0};
  backing_->write(std::span(&write, 1));
  return end_file_write(slot, *version, checksum, write.result);
}

std::optional<std::uint64_t> PageStore::begin_file_write(Slot slot) noexcept {
  MutexLock guard(table_.lock_for(slot));
  SlotEntry entry = table_.entryLocked(slot);
  // memory.zswap.writeback=0 forbids this too: the page stays with the kernel.
  // The page is unattributed (the root's) until the next pass, and most
  // likely the old page's owner's, writing its slot again: both must allow it.
  if (!memcg_.writeback_allowed(static_cast<CgroupId>(entry.cgroup)) || !memcg_.writeback_allowed(kRootCgroup))
    return std::nullopt;
  // A write of this slot is already in flight: the kernel retries later.
  if (entry.file_write) return std::nullopt;
  // From here the slot's block is being overwritten: an older page of the
  // slot still there (written back) is dead, and no load reads it (see
  // load_once).
  entry.file_write = 1;
  table_.publishLocked(slot, entry);
  return std::uint64_t{entry.version};
}

Result<StoredAs> PageStore::end_file_write(Slot slot, std::uint64_t version, std::uint32_t checksum,
                                           int result) noexcept {
  Removed old{SlotState::empty, 0, 0, kRootCgroup};
  bool stored = false;
  {
    MutexLock guard(table_.lock_for(slot));
    SlotEntry entry = table_.entryLocked(slot);
    entry.file_write = 0;
    // A store that overtook this one wins: this one is older. A failed
    // write changes nothing: the kernel, told of it, keeps its page and
    // writes again. Should the failed write have torn the block of an older
    // written-back page (dead anyway: the kernel wrote the slot anew), a
    // load of it fails the checksum: never wrong bytes.
    if (entry.version == version && result == 0) {
      old = detachLocked(slot, entry);
      SlotEntry fresh{};
      fresh.state = static_cast<std::uint64_t>(SlotState::written_back);
      fresh.version = entry.version + 1;
      fresh.cgroup = kRootCgroup;  // unattributed, as install() says why
      attachLocked(slot, fresh);
      counters_.add(Counter::stores);
      stored = true;
      entry = fresh;
    }
    table_.publishLocked(slot, entry, stored ? checksum : table_.checksumLocked(slot));
  }
  account_removed(old);
  if (result != 0) return std::unexpected(StoreError::backing_failed);
  counters_.add(Counter::direct_writes);
  return StoredAs::written_back;
}

// A request's pages for the file, claimed (begin_file_write) and written
// together by flush(). On the caller's stack: a request path allocates
// nothing.
class PageStore::FileBatch {
 public:
  static constexpr std::size_t kPages = 64;
  struct Claimed {
    std::uint64_t version;
    std::uint32_t checksum;
    bool spill;  // a page the pool could have taken: it may still, should the write fail
  };
  PageWrite writes[kPages];
  Claimed claimed[kPages];
  std::size_t count = 0;
};

std::optional<Result<StoredAs>> PageStore::to_file(Slot slot, PageView page, std::uint32_t checksum,
                                                   FileBatch* batch, bool spill) noexcept {
  if (batch == nullptr) return store_to_backing(slot, page, checksum);
  const auto version = begin_file_write(slot);
  if (!version) return std::unexpected(StoreError::pool_full);
  batch->writes[batch->count] = PageWrite{slot, page.data(), 0};
  batch->claimed[batch->count] = FileBatch::Claimed{*version, checksum, spill};
  ++batch->count;
  return std::nullopt;
}

namespace {

void count_outcome(PageStore::StoredMany& many, const Result<StoredAs>& one) noexcept {
  if (one) ++many.pages;
  else if (!many.error) many.error = one.error();
}

}  // namespace

void PageStore::flush(FileBatch& batch, unsigned node, StoredMany& result) noexcept {
  if (batch.count == 0) return;
  backing_->write(std::span(batch.writes, batch.count));
  for (std::size_t i = 0; i < batch.count; ++i) {
    const PageWrite& w = batch.writes[i];
    const FileBatch::Claimed& c = batch.claimed[i];
    Result<StoredAs> outcome = end_file_write(w.slot, c.version, c.checksum, w.result);
    if (c.spill) {
      if (outcome) {
        counters_.add(Counter::spilled_pages);
      } else if (auto pooled = *store_one(w.slot, PageView(w.page, kPageSize), node, nullptr, false)) {
        // As store() does: a spill the file failed goes to the pool if it can;
        // if it cannot, the answer is the file's failure.
        outcome = *pooled;
      }
    }
    count_outcome(result, outcome);
  }
  batch.count = 0;
}

PageStore::StoredMany PageStore::store_many(Slot first, std::span<const std::byte> data, int node) noexcept {
  StoredMany result;
  FileBatch batch;
  const unsigned where = node >= 0 ? static_cast<unsigned>(node) : current_node();
  for (std::size_t done = 0; done + kPageSize <= data.size(); done += kPageSize) {
    if (batch.count == FileBatch::kPages) flush(batch, where, result);
    const PageView page(data.data() + done, kPageSize);
    if (const auto outcome = store_one(first + done / kPageSize, page, where, &batch, true))
      count_outcome(result, *outcome);
  }
  flush(batch, where, result);
  return result;
}

void PageStore::mark_for_wipe(Slot slot) noexcept {
  const std::uint64_t bit = std::uint64_t{1} << (slot % 64);
  if ((wipe_bits_[slot / 64].fetch_or(bit, std::memory_order_relaxed) & bit) == 0)
    wipe_pending_count_.fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t PageStore::wipe_freed(std::uint64_t max_pages) noexcept {
  if (backing_ == nullptr || wipe_pending_count_.load(std::memory_order_relaxed) == 0) return 0;
  alignas(4096) static const std::byte zeros[kPageSize] = {};
  constexpr std::size_t kBatch = 64;
  PageWrite writes[kBatch];
  std::uint64_t wiped = 0;
  const std::uint64_t words = (table_.size() + 63) / 64;
  std::uint64_t visited = 0;
  while (wiped < max_pages && visited < words && wipe_pending_count_.load(std::memory_order_relaxed) > 0) {
    // Claim up to a batch of marked slots: each must be neither written back
    // (its block holds a live page again) nor have a write in flight.
    std::size_t n = 0;
    for (; visited < words && n < kBatch && wiped + n < max_pages; ++visited) {
      const std::uint64_t w = wipe_cursor_ / 64 % words;
      wipe_cursor_ = (w + 1) * 64;
      std::uint64_t bits = wipe_bits_[w].load(std::memory_order_relaxed);
      while (bits != 0 && n < kBatch) {
        const unsigned b = static_cast<unsigned>(__builtin_ctzll(bits));
        bits &= bits - 1;
        const Slot slot = w * 64 + b;
        MutexLock guard(table_.lock_for(slot));
        SlotEntry entry = table_.entryLocked(slot);
        if (entry.file_write) continue;  // busy: the next call sees it again
        wipe_bits_[w].fetch_and(~(std::uint64_t{1} << b), std::memory_order_relaxed);
        wipe_pending_count_.fetch_sub(1, std::memory_order_relaxed);
        if (entry.slot_state() == SlotState::written_back) continue;  // live again
        entry.file_write = 1;  // no other write of the block meanwhile
        table_.publishLocked(slot, entry);
        writes[n++] = {slot, zeros, 0};
      }
      if (bits != 0) {
        wipe_cursor_ = w * 64;  // the rest of this word next time
        break;
      }
    }
    if (n == 0) continue;
    backing_->write(std::span(writes, n));
    for (std::size_t i = 0; i < n; ++i) {
      MutexLock guard(table_.lock_for(writes[i].slot));
      SlotEntry entry = table_.entryLocked(writes[i].slot);
      entry.file_write = 0;
      table_.publishLocked(writes[i].slot, entry);
      if (writes[i].result != 0) {
        mark_for_wipe(writes[i].slot);  // tried again later
        continue;
      }
      ++wiped;
      counters_.add(Counter::wiped_pages);
    }
    if (wiped == 0) break;  // every write failed: not now
  }
  return wiped;
}

}  // namespace uzswap
