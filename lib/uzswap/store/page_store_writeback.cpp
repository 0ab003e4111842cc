// PageStore's writeback half: cgroups and their policy, shrink_memcg, the
// check-lock-check writeback of isolated entries, and stores that go straight
// to the backing store while the pool is full.
#include <algorithm>
#include <cstring>
#include <string>

#include "uzswap/common/checksum.h"
#include "uzswap/store/page_store.h"

namespace uzswap {

namespace {

// Writeback batches, two of them: one is prepared (claimed, decompressed)
// while the other's write is in flight.
struct WritebackBatch {
  std::vector<std::byte> pages;
  std::vector<PageWrite> writes;
  std::vector<std::uint64_t> versions;  // by slot order of `writes` at claim time
  std::vector<Slot> slots;
  std::size_t count = 0;
  explicit WritebackBatch(std::size_t batch)
      : pages(batch * kPageSize), writes(batch), versions(batch), slots(batch) {}
};

struct WritebackBuffers {
  CompressorSet compressors;
  WritebackBatch batches[2];
  explicit WritebackBuffers(std::size_t batch) : batches{WritebackBatch(batch), WritebackBatch(batch)} {}
  std::size_t capacity() const { return batches[0].writes.size(); }
};

}  // namespace

namespace {

// The page store as seen by the shrinker registry: its objects are the pages
// on a (cgroup, node) list, and scanning writes them back.
class StoreShrinker final : public Shrinker {
 public:
  explicit StoreShrinker(PageStore& store) : store_(store) { batch = 64; }
  std::uint64_t count(CgroupId cgroup, unsigned node) override {
    const std::uint64_t on_list = store_.lru_count(cgroup, node);
    if (on_list == 0) return kShrinkEmpty;
    if (!store_.has_backing() || !store_.cgroup_policy(cgroup).writeback) return 0;
    return on_list;
  }
  std::uint64_t scan(ShrinkControl& control) override {
    const WritebackResult r = store_.shrink_list(control.cgroup, control.node, control.nr_to_scan);
    control.nr_scanned = r.written + r.rotated + r.failed + r.raced;
    return r.written;
  }

 private:
  PageStore& store_;
};

}  // namespace

int PageStore::register_shrinker(ShrinkerRegistry& registry) {
  shrinker_ = std::make_unique<StoreShrinker>(*this);
  shrinker_id_ = registry.add(*shrinker_);
  if (shrinker_id_ < 0) return -1;
  registry_ = &registry;
  for (const CgroupId cg : cgroups()) registry.add_cgroup(cg);
  lru_.set_populated_hook([this](CgroupId cgroup, unsigned node) {
    registry_->set_bit(cgroup, node, shrinker_id_);
  });
  // Lists that already hold pages.
  for (const CgroupId cg : cgroups())
    for (unsigned node = 0; node < lru_.nodes(); ++node)
      if (lru_.count(cg, node) > 0) registry.set_bit(cg, node, shrinker_id_);
  return shrinker_id_;
}

bool PageStore::add_cgroup(CgroupId cgroup, CgroupId parent) {
  if (registry_ != nullptr) registry_->add_cgroup(cgroup);
  if (!lru_.add_cgroup(cgroup, parent)) return false;
  CgroupRecord& record = state_->cgroups()[cgroup];
  if (!record.used) {
    record.writeback = 1;
    record.max_bytes = 0;
  }
  record.parent = parent;
  record.live = 1;
  record.used = 1;
  std::lock_guard guard(cgroups_lock_);
  if (std::find(cgroups_.begin(), cgroups_.end(), cgroup) == cgroups_.end())
    cgroups_.push_back(cgroup);
  return true;
}

bool PageStore::remove_cgroup(CgroupId cgroup) {
  if (!lru_.remove_cgroup(cgroup)) return false;
  state_->cgroups()[cgroup].live = 0;
  if (registry_ != nullptr) registry_->reparent(cgroup, lru_.resolve(cgroup));
  {
    std::lock_guard guard(cgroups_lock_);
    cgroups_.erase(std::remove(cgroups_.begin(), cgroups_.end(), cgroup), cgroups_.end());
  }
  // Its pages are the parent's now, in the statistics as on the lists. Their
  // entries keep the old id, which resolves to the parent; their counters
  // move once, here.
  CgroupCounters& from = cgroup_counters_[cgroup];
  CgroupCounters& to = cgroup_counters_[lru_.resolve(cgroup)];
  for (auto member : {&CgroupCounters::stored_pages, &CgroupCounters::compressed_bytes,
                      &CgroupCounters::written_back_pages}) {
    const std::int64_t moved = (from.*member).exchange(0, std::memory_order_relaxed);
    (to.*member).fetch_add(moved, std::memory_order_relaxed);
  }
  return true;
}

std::vector<CgroupId> PageStore::release_cgroups(const std::vector<CgroupId>& removed) {
  std::vector<CgroupId> released;
  std::vector<CgroupId> target(kMaxCgroups, kRootCgroup);
  std::vector<bool> dead(kMaxCgroups, false);
  for (const CgroupId id : removed) {
    if (id == kRootCgroup || lru_.has_cgroup(id) || !state_->cgroups()[id].used) continue;
    dead[id] = true;
    target[id] = lru_.resolve(id);
    released.push_back(id);
  }
  if (released.empty()) return released;
  // Re-label: the entries' lists and counters are the target's already
  // (remove_cgroup moved both), so only the id in the entry changes. Not a
  // store: no version change, and a writeback in flight completes as usual.
  for (Slot first = 0; first < table_.size(); first += SlotTable::kRun) {
    std::lock_guard guard(table_.lock_for(first));
    const Slot end = std::min<Slot>(first + SlotTable::kRun, table_.size());
    for (Slot slot = first; slot < end; ++slot) {
      const SlotEntry& entry = table_.entryLocked(slot);
      if (entry.slot_state() == SlotState::empty || !dead[entry.cgroup]) continue;
      SlotEntry next = entry;
      next.cgroup = target[entry.cgroup];
      table_.publishLocked(slot, next);
    }
  }
  for (const CgroupId id : released) {
    lru_.release_cgroup(id);
    CgroupRecord& record = state_->cgroups()[id];
    record.live = 0;
    record.inode = 0;
    record.path[0] = '\0';
    record.writeback = 1;
    record.max_bytes = 0;
    record.parent = kRootCgroup;
    record.used = 0;  // last: the id is free from here on
    cgroup_counters_[id].writeback.store(true, std::memory_order_relaxed);
    cgroup_counters_[id].max_bytes.store(0, std::memory_order_relaxed);
  }
  return released;
}

std::vector<CgroupId> PageStore::handed_out_ids(bool used) const {
  // Ids below next_cgroup_id() whose record is (or is not) in use and that
  // the lists do not know as live.
  std::vector<CgroupId> out;
  const CgroupRecord* records = state_->cgroups();
  const std::uint64_t next = std::min<std::uint64_t>(state_->header().next_cgroup_id, kMaxCgroups);
  for (std::uint64_t id = 1; id < next; ++id)
    if ((records[id].used != 0) == used && !lru_.has_cgroup(static_cast<CgroupId>(id)))
      out.push_back(static_cast<CgroupId>(id));
  return out;
}

std::vector<CgroupId> PageStore::cgroups() const {
  std::lock_guard guard(cgroups_lock_);
  return cgroups_;
}

void PageStore::set_cgroup_policy(CgroupId cgroup, const CgroupPolicy& policy) noexcept {
  cgroup_counters_[cgroup].writeback.store(policy.writeback, std::memory_order_relaxed);
  cgroup_counters_[cgroup].max_bytes.store(policy.max_bytes, std::memory_order_relaxed);
  CgroupRecord& record = state_->cgroups()[cgroup];
  record.writeback = policy.writeback ? 1 : 0;
  record.max_bytes = policy.max_bytes;
}

void PageStore::record_cgroup_identity(CgroupId cgroup, std::uint64_t inode, const std::string& path) noexcept {
  CgroupRecord& record = state_->cgroups()[cgroup];
  record.inode = inode;
  const std::size_t n = std::min(path.size(), sizeof(record.path) - 1);
  std::memcpy(record.path, path.data(), n);
  record.path[n] = '\0';
}

std::vector<PersistedCgroup> PageStore::persisted_cgroups() const {
  std::vector<PersistedCgroup> out;
  const CgroupRecord* records = state_->cgroups();
  for (unsigned id = 1; id < kMaxCgroups; ++id) {
    const CgroupRecord& r = records[id];
    if (r.used && r.live && lru_.has_cgroup(static_cast<CgroupId>(id)))
      out.push_back({static_cast<CgroupId>(id), r.inode,
                     std::string(r.path, strnlen(r.path, sizeof(r.path)))});
  }
  return out;
}

CgroupPolicy PageStore::cgroup_policy(CgroupId cgroup) const noexcept {
  return {cgroup_counters_[cgroup].writeback.load(std::memory_order_relaxed),
          cgroup_counters_[cgroup].max_bytes.load(std::memory_order_relaxed)};
}

CgroupStats PageStore::cgroup_stats(CgroupId cgroup) const noexcept {
  const auto get = [](const std::atomic<std::int64_t>& v) {
    const std::int64_t n = v.load(std::memory_order_relaxed);
    return n > 0 ? static_cast<std::uint64_t>(n) : 0;
  };
  const CgroupCounters& c = cgroup_counters_[cgroup];
  return {get(c.stored_pages), get(c.compressed_bytes), get(c.written_back_pages)};
}

bool PageStore::set_slot_cgroup(Slot slot, CgroupId cgroup) noexcept {
  if (slot >= table_.size() || !lru_.has_cgroup(cgroup)) return false;
  Removed old;
  {
    std::lock_guard guard(table_.lock_for(slot));
    const SlotEntry& entry = table_.entryLocked(slot);
    if (entry.slot_state() == SlotState::lost) return false;
    if (entry.slot_state() == SlotState::empty || entry.cgroup == cgroup) return entry.cgroup == cgroup;
    // Leave the old cgroup's list and counters and join the new one's, as
    // one step under the slot lock. Not a store: no version change.
    old = detachLocked(slot, entry);
    CgroupCounters& from = counters_of(old.cgroup);
    CgroupCounters& to = counters_of(cgroup);
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
      lru_.add(static_cast<std::uint32_t>(slot), cgroup, entry.node);
  }
  return true;
}

PageStore::NodeStats PageStore::node_stats(unsigned node) const {
  NodeStats s;
  if (node >= lru_.nodes()) return s;
  for (const CgroupId cg : cgroups()) s.lru_pages += lru_.count(cg, node);
  s.writebacks = node_writebacks_[node].load(std::memory_order_relaxed);
  return s;
}

std::uint64_t PageStore::lru_pages(CgroupId cgroup) const noexcept {
  std::uint64_t total = 0;
  for (unsigned node = 0; node < lru_.nodes(); ++node) total += lru_.count(cgroup, node);
  return total;
}

WritebackResult PageStore::shrink_memcg(CgroupId cgroup, std::uint64_t nr_pages) {
  // Node by node, like shrink_memcg's one walk per node.
  WritebackResult total;
  for (unsigned node = 0; node < lru_.nodes() && total.written < nr_pages; ++node) {
    const WritebackResult r = shrink_list(cgroup, node, nr_pages - total.written);
    total.written += r.written;
    total.raced += r.raced;
    total.failed += r.failed;
    total.rotated += r.rotated;
  }
  return total;
}

WritebackResult PageStore::shrink_list(CgroupId cgroup, unsigned node, std::uint64_t nr_pages,
                                       std::uint64_t max_walk) {
  if (backing_ == nullptr || nr_pages == 0 || node >= lru_.nodes()) return {};
  if (!counters_of(cgroup).writeback.load(std::memory_order_relaxed)) return {};
  // Up to four backing-store batches per walk, so that writeback_isolated()
  // can prepare one while another is being written.
  constexpr std::uint64_t kMaxIsolated = 1024;
  const std::uint64_t batch =
      std::min<std::uint64_t>({nr_pages, 4 * backing_->max_batch(), kMaxIsolated});
  Slot isolated[kMaxIsolated];
  std::uint64_t count = 0, rotated = 0;
  // A referenced entry gets its second chance (rotate), so walk up to twice
  // the batch.
  std::uint64_t budget = max_walk != 0 ? max_walk : 2 * batch;
  lru_.walk(cgroup, node, budget, [&](std::uint32_t item, ListLru::WalkedList& list) {
    if (count >= batch) return LruStatus::stop;
    if (list.referenced(item)) {
      list.clear_referenced(item);
      ++rotated;
      return LruStatus::rotate;
    }
    list.isolate(item);
    isolated[count++] = item;
    return LruStatus::removed;
  });
  WritebackResult result = writeback_isolated(std::span<const Slot>(isolated, count));
  result.rotated = rotated;
  return result;
}

WritebackResult PageStore::writeback_isolated(std::span<const Slot> slots) {
  WritebackResult result;
  if (backing_ == nullptr || slots.empty()) return result;
  thread_local std::unique_ptr<WritebackBuffers> t_buffers;
  const std::size_t batch = backing_->max_batch();
  if (!t_buffers || t_buffers->capacity() < batch) t_buffers = std::make_unique<WritebackBuffers>(batch);
  WritebackBuffers& b = *t_buffers;

  // Check: claim each entry under its lock, recording its version, and
  // decompress it for the file.
  const auto claim = [&](std::span<const Slot> chunk, WritebackBatch& out) {
    out.count = 0;
    for (const Slot slot : chunk) {
      std::lock_guard guard(table_.lock_for(slot));
      const SlotEntry& entry = table_.entryLocked(slot);
      const SlotState state = entry.slot_state();
      const auto item = static_cast<std::uint32_t>(slot);
      const auto cgroup = static_cast<CgroupId>(entry.cgroup);
      if (state != SlotState::compressed && state != SlotState::incompressible) {
        ++result.raced;  // invalidated, or claimed by another shrinker, since it was isolated
        continue;
      }
      // Re-stored since it was isolated: the new version went onto a list
      // and is not ours to take (claiming it would leave a written-back
      // entry on an LRU list).
      if (lru_.on_list(item, cgroup, entry.node)) {
        ++result.raced;
        continue;
      }
      if (entry.file_write) {
        // An older write of this slot is still in flight: try again later.
        lru_.add(item, cgroup, entry.node);
        ++result.raced;
        continue;
      }
      std::byte* page = out.pages.data() + out.count * kPageSize;
      const std::byte* object = pool_.map(entry.value);
      if (entry.length == kPageSize) {
        std::memcpy(page, object, kPageSize);
      } else if (!b.compressors.get(static_cast<Codec>(entry.codec))
                      .decompress(std::span<const std::byte>(object, entry.length),
                                  PageBuffer(page, kPageSize))) {
        // Never expected; leave the page in RAM rather than write garbage.
        lru_.add(item, cgroup, entry.node);
        ++result.failed;
        continue;
      }
      if (page_checksum(PageView(page, kPageSize)) != table_.checksumLocked(slot)) {
        // Damaged in the pool: writing it out would only move the damage.
        // It stays, and its loads fail the same check.
        counters_.add(Counter::integrity_errors);
        integrity_log_.note(slot, false);
        lru_.add(item, cgroup, entry.node);
        ++result.failed;
        continue;
      }
      SlotEntry claimed = entry;
      claimed.state = static_cast<std::uint64_t>(SlotState::writeback);
      claimed.file_write = 1;
      table_.publishLocked(slot, claimed);
      out.slots[out.count] = slot;
      out.versions[out.count] = entry.version;
      out.writes[out.count] = {slot, page, 0};
      ++out.count;
    }
  };

  // Lock and check again: only an untouched entry becomes written back.
  const auto complete = [&](WritebackBatch& done) {
    for (std::size_t i = 0; i < done.count; ++i) {
      const PageWrite& w = done.writes[i];  // sorted by the store: find its version
      const std::size_t at = static_cast<std::size_t>(
          std::find(done.slots.begin(), done.slots.begin() + done.count, w.slot) - done.slots.begin());
      const Slot slot = w.slot;
      PoolHandle freed = kNullHandle;
      std::uint32_t length = 0;
      CgroupId cgroup = kRootCgroup;
      unsigned node = 0;
      {
        std::lock_guard guard(table_.lock_for(slot));
        SlotEntry entry = table_.entryLocked(slot);
        entry.file_write = 0;  // our write is over, whatever the entry is now
        if (entry.version != done.versions[at] || entry.slot_state() != SlotState::writeback) {
          table_.publishLocked(slot, entry);
          ++result.raced;
          counters_.add(Counter::writeback_raced);
          continue;
        }
        if (w.result != 0) {
          // Nothing is dropped: back to RAM-only, back on the LRU.
          entry.state = static_cast<std::uint64_t>(entry.length == kPageSize ? SlotState::incompressible
                                                                              : SlotState::compressed);
          table_.publishLocked(slot, entry);
          lru_.add(static_cast<std::uint32_t>(slot), static_cast<CgroupId>(entry.cgroup), entry.node);
          ++result.failed;
          counters_.add(Counter::writeback_failures);
          continue;
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
      CgroupCounters& cg = counters_of(cgroup);
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
      ++result.written;
    }
  };

  // Pipelined: batch k is claimed and decompressed while batch k-1's write
  // is in flight, and batch k-1 is completed while batch k's is.
  WritebackBatch* in_flight = nullptr;
  unsigned next = 0;
  while (!slots.empty() || in_flight != nullptr) {
    WritebackBatch* prepared = nullptr;
    if (!slots.empty()) {
      const std::size_t n = std::min(slots.size(), batch);
      prepared = &b.batches[next];
      next ^= 1;
      claim(slots.first(n), *prepared);
      slots = slots.subspan(n);
    }
    WritebackBatch* written = nullptr;
    if (in_flight != nullptr) {
      backing_->end_write();
      written = in_flight;
      in_flight = nullptr;
    }
    if (prepared != nullptr && prepared->count > 0) {
      backing_->begin_write(std::span(prepared->writes.data(), prepared->count));
      in_flight = prepared;
    }
    if (written != nullptr) complete(*written);
  }
  return result;
}

std::expected<StoredAs, StoreError> PageStore::store_to_backing(Slot slot, PageView page,
                                                                std::uint32_t checksum) noexcept {
  std::uint64_t version;
  {
    std::lock_guard guard(table_.lock_for(slot));
    SlotEntry entry = table_.entryLocked(slot);
    // memory.zswap.writeback=0 forbids this too: the page stays with the kernel.
    if (!counters_of(static_cast<CgroupId>(entry.cgroup)).writeback.load(std::memory_order_relaxed))
      return std::unexpected(StoreError::pool_full);
    // A write of this slot is already in flight: the kernel retries later.
    if (entry.file_write) return std::unexpected(StoreError::pool_full);
    // From here the slot's block is being overwritten: an older page of the
    // slot still there (written back) is dead, and no load reads it (see
    // load_once).
    entry.file_write = 1;
    table_.publishLocked(slot, entry);
    version = entry.version;
  }
  PageWrite write{slot, page.data(), 0};
  backing_->write(std::span(&write, 1));

  Removed old{SlotState::empty, 0, 0, kRootCgroup};
  bool stored = false;
  {
    std::lock_guard guard(table_.lock_for(slot));
    SlotEntry entry = table_.entryLocked(slot);
    entry.file_write = 0;
    // A store that overtook this one wins: this one is older. A failed
    // write changes nothing: the kernel, told of it, keeps its page and
    // writes again. Should the failed write have torn the block of an older
    // written-back page (dead anyway: the kernel wrote the slot anew), a
    // load of it fails the checksum: never wrong bytes.
    if (entry.version == version && write.result == 0) {
      old = detachLocked(slot, entry);
      SlotEntry fresh{};
      fresh.state = static_cast<std::uint64_t>(SlotState::written_back);
      fresh.version = entry.version + 1;
      fresh.cgroup = entry.cgroup;
      attachLocked(slot, fresh);
      counters_.add(Counter::stores);
      stored = true;
      entry = fresh;
    }
    table_.publishLocked(slot, entry, stored ? checksum : table_.checksumLocked(slot));
  }
  account_removed(old);
  if (write.result != 0) return std::unexpected(StoreError::backing_failed);
  counters_.add(Counter::direct_writes);
  return StoredAs::written_back;
}

}  // namespace uzswap
