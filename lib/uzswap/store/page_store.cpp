#include "uzswap/store/page_store.h"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "uzswap/compress/same_filled.h"

namespace uzswap {

namespace {

// What each thread needs to store and load: its compressors and a buffer for
// compressed bytes. Made once per thread; see PageStore::prepare_thread().
struct ThreadContext {
  CompressorSet compressors;
  alignas(64) std::byte buffer[2 * kPageSize];
};

thread_local std::unique_ptr<ThreadContext> t_context;

ThreadContext& thread_context() noexcept {
  if (!t_context) t_context = std::make_unique<ThreadContext>();
  return *t_context;
}

std::size_t resolve_threshold(const PageStoreOptions& options, const ZPool& pool) {
  const std::size_t largest = pool.classes().largest_saving_size();
  if (options.incompressible_threshold == 0) return largest;
  if (options.incompressible_threshold > kPageSize)
    throw std::invalid_argument("incompressible threshold must be at most " +
                                std::to_string(kPageSize) + " bytes");
  return options.incompressible_threshold;
}

}  // namespace

void PageStore::prepare_thread() { thread_context(); }

PageStore::PageStore(const PageStoreOptions& options)
    : options_(options),
      pool_(options.pool),
      table_(options.slots),
      threshold_(resolve_threshold(options, pool_)),
      codec_(options.codec),
      level_(options.level),
      max_pool_bytes_(options.max_pool_bytes),
      accept_threshold_percent_(options.accept_threshold_percent) {
  if (options.accept_threshold_percent == 0 || options.accept_threshold_percent > 100)
    throw std::invalid_argument("accept threshold must be 1..100 percent");
  if (!valid_level(options.codec, options.level))
    throw std::invalid_argument("invalid " + std::string(codec_name(options.codec)) +
                                " level " + std::to_string(options.level));
}

void PageStore::set_codec(Codec codec, int level) noexcept {
  // Two stores: a page stored in between may pair the new codec with the old
  // level, which is harmless (any level decodes the same way).
  codec_.store(codec, std::memory_order_relaxed);
  level_.store(level, std::memory_order_relaxed);
}

unsigned PageStore::current_node() const noexcept {
  unsigned cpu = 0, node = 0;
  if (getcpu(&cpu, &node) != 0) return 0;
  return node % pool_.nodes();
}

std::expected<StoredAs, StoreError> PageStore::store(Slot slot, PageView page) noexcept {
  return store(slot, page, current_node());
}

std::expected<StoredAs, StoreError> PageStore::store(Slot slot, PageView page,
                                                     unsigned node) noexcept {
  if (slot >= table_.size()) {
    counters_.add(Counter::out_of_range);
    return std::unexpected(StoreError::out_of_range);
  }
  SlotEntry fresh{};

  if (const auto word = same_filled_word(page)) {
    fresh.state = static_cast<std::uint64_t>(SlotState::same_filled);
    fresh.value = *word;
    install(slot, fresh, 0);
    return StoredAs::same_filled;
  }

  ThreadContext& ctx = thread_context();
  const Codec codec = codec_.load(std::memory_order_relaxed);
  // A buffer of the worst-case size lets lz4 run its unchecked fast path;
  // bounding the output by the threshold instead is slower on every page.
  const std::size_t compressed = ctx.compressors.get(codec).compress(
      page, ctx.buffer, level_.load(std::memory_order_relaxed));
  const bool raw = compressed == 0 || compressed > threshold_;
  const std::size_t length = raw ? kPageSize : compressed;

  if (!admit_to_pool()) {
    counters_.add(Counter::reject_pool_full);
    return std::unexpected(StoreError::pool_full);
  }
  const PoolHandle handle = pool_.alloc(length, node);
  if (handle == kNullHandle) {
    counters_.add(Counter::reject_alloc_failed);
    return std::unexpected(StoreError::alloc_failed);
  }
  std::memcpy(pool_.map(handle), raw ? page.data() : ctx.buffer, length);

  fresh.state = static_cast<std::uint64_t>(raw ? SlotState::incompressible : SlotState::compressed);
  fresh.value = handle;
  fresh.length = length;
  fresh.codec = static_cast<std::uint64_t>(codec);
  fresh.node = node;
  install(slot, fresh, static_cast<std::uint32_t>(length));
  return raw ? StoredAs::incompressible : StoredAs::compressed;
}

bool PageStore::admit_to_pool() noexcept {
  const std::uint64_t limit = max_pool_bytes_.load(std::memory_order_relaxed);
  if (limit == 0) {
    pool_full_.store(false, std::memory_order_relaxed);
    return true;
  }
  const std::uint64_t used = pool_.span_bytes();
  if (pool_full_.load(std::memory_order_relaxed)) {
    const unsigned accept = accept_threshold_percent_.load(std::memory_order_relaxed);
    if (used * 100 >= limit * accept) return false;
    pool_full_.store(false, std::memory_order_relaxed);
    return true;
  }
  if (used < limit) return true;
  pool_full_.store(true, std::memory_order_relaxed);
  counters_.add(Counter::pool_limit_hits);
  return false;
}

void PageStore::install(Slot slot, const SlotEntry& fresh, std::uint32_t length) noexcept {
  Removed old;
  {
    std::lock_guard guard(table_.lock_for(slot));
    SlotEntry& entry = table_.entryLocked(slot);
    old = {entry.slot_state(), entry.value, static_cast<std::uint32_t>(entry.length)};
    const std::uint64_t version = entry.version + 1;
    const std::uint64_t cgroup = entry.cgroup;  // kept until re-attributed
    entry = fresh;
    entry.version = version;
    entry.cgroup = cgroup;
  }
  counters_.add(Counter::stores);
  counters_.add(Counter::stored_pages);
  switch (fresh.slot_state()) {
    case SlotState::same_filled:
      counters_.add(Counter::same_filled_pages);
      break;
    case SlotState::incompressible:
      counters_.add(Counter::incompressible_pages);
      [[fallthrough]];
    default:
      counters_.add(Counter::compressed_bytes, length);
  }
  account_removed(old);
}

void PageStore::account_removed(const Removed& removed) noexcept {
  if (removed.state == SlotState::empty) return;
  counters_.sub(Counter::stored_pages);
  switch (removed.state) {
    case SlotState::same_filled:
      counters_.sub(Counter::same_filled_pages);
      return;
    case SlotState::incompressible:
      counters_.sub(Counter::incompressible_pages);
      [[fallthrough]];
    case SlotState::compressed:
    case SlotState::writeback:
      counters_.sub(Counter::compressed_bytes, removed.length);
      pool_.free(removed.handle);
      return;
    case SlotState::empty:
    case SlotState::written_back:
      return;
  }
}

std::expected<LoadedFrom, LoadError> PageStore::load(Slot slot, PageBuffer out) noexcept {
  if (slot >= table_.size()) {
    counters_.add(Counter::out_of_range);
    return std::unexpected(LoadError::out_of_range);
  }
  counters_.add(Counter::loads);
  ThreadContext& ctx = thread_context();
  SlotEntry entry;
  {
    std::lock_guard guard(table_.lock_for(slot));
    entry = table_.entryLocked(slot);
    // Copy pool bytes out under the lock: once it drops, a store or a
    // compaction may free or move the object.
    if (entry.slot_state() == SlotState::incompressible)
      std::memcpy(out.data(), pool_.map(entry.value), kPageSize);
    else if (entry.in_pool())
      std::memcpy(ctx.buffer, pool_.map(entry.value), entry.length);
  }
  switch (entry.slot_state()) {
    case SlotState::empty:
      counters_.add(Counter::empty_loads);
      fill_page(out, 0);
      return LoadedFrom::empty;
    case SlotState::same_filled:
      fill_page(out, entry.value);
      return LoadedFrom::same_filled;
    case SlotState::incompressible:
      return LoadedFrom::pool;
    case SlotState::compressed:
    case SlotState::writeback:
      if (ctx.compressors.get(static_cast<Codec>(entry.codec))
              .decompress(std::span<const std::byte>(ctx.buffer, entry.length), out))
        return LoadedFrom::pool;
      break;
    case SlotState::written_back:
      break;  // no backing store yet: nothing can be in this state
  }
  counters_.add(Counter::load_errors);
  return std::unexpected(LoadError::corrupt);
}

std::expected<std::uint64_t, LoadError> PageStore::invalidate(Slot first,
                                                              std::uint64_t count) noexcept {
  if (first >= table_.size() || count > table_.size() - first) {
    counters_.add(Counter::out_of_range);
    return std::unexpected(LoadError::out_of_range);
  }
  std::uint64_t dropped = 0;
  for (Slot slot = first; slot < first + count; ++slot) {
    Removed old;
    {
      std::lock_guard guard(table_.lock_for(slot));
      SlotEntry& entry = table_.entryLocked(slot);
      if (entry.slot_state() == SlotState::empty) continue;
      old = {entry.slot_state(), entry.value, static_cast<std::uint32_t>(entry.length)};
      const std::uint64_t version = entry.version + 1;
      entry = SlotEntry{};
      entry.version = version;
    }
    account_removed(old);
    ++dropped;
  }
  counters_.add(Counter::invalidations, dropped);
  return dropped;
}

CompactionStats PageStore::compact() {
  std::lock_guard compaction(compaction_lock_);
  CompactionStats stats = pool_.begin_compaction();
  std::uint64_t moved = 0;
  if (stats.objects_to_move > 0) {
    // One pass over the table, a run of slots per lock: the pool keeps no
    // pointers back from objects to slots.
    for (Slot run = 0; run < table_.size(); run += SlotTable::kRun) {
      std::lock_guard guard(table_.lock_for(run));
      const Slot end = std::min<Slot>(run + SlotTable::kRun, table_.size());
      for (Slot slot = run; slot < end; ++slot) {
        SlotEntry& entry = table_.entryLocked(slot);
        if (!entry.in_pool() || !pool_.needs_migration(entry.value)) continue;
        const PoolHandle moved_to = pool_.migrate(entry.value, entry.length);
        if (moved_to == kNullHandle) continue;  // stays where it is
        entry.value = moved_to;
        ++moved;
      }
    }
  }
  pool_.end_compaction(stats);
  counters_.add(Counter::compactions);
  counters_.add(Counter::compaction_moved, moved);
  return stats;
}

std::uint64_t StoreCounters::sum(Counter c) const noexcept {
  std::int64_t total = 0;
  for (const Shard& shard : shards_)
    total += shard.values[static_cast<unsigned>(c)].load(std::memory_order_relaxed);
  return total > 0 ? static_cast<std::uint64_t>(total) : 0;
}

StoreCounters::Shard& StoreCounters::shard() noexcept {
  const int cpu = sched_getcpu();
  return shards_[static_cast<unsigned>(cpu < 0 ? 0 : cpu) % kShards];
}

PageStoreStats PageStore::stats() const noexcept {
  PageStoreStats s;
  s.stored_pages = counters_.sum(Counter::stored_pages);
  s.same_filled_pages = counters_.sum(Counter::same_filled_pages);
  s.incompressible_pages = counters_.sum(Counter::incompressible_pages);
  s.orig_bytes = s.stored_pages * kPageSize;
  s.compressed_bytes = counters_.sum(Counter::compressed_bytes);
  s.pool = pool_.stats();
  s.pool_bytes = s.pool.pool_bytes();
  s.table_bytes = table_.bytes();
  s.stores = counters_.sum(Counter::stores);
  s.loads = counters_.sum(Counter::loads);
  s.empty_loads = counters_.sum(Counter::empty_loads);
  s.invalidations = counters_.sum(Counter::invalidations);
  s.reject_pool_full = counters_.sum(Counter::reject_pool_full);
  s.reject_alloc_failed = counters_.sum(Counter::reject_alloc_failed);
  s.out_of_range = counters_.sum(Counter::out_of_range);
  s.load_errors = counters_.sum(Counter::load_errors);
  s.pool_limit_hits = counters_.sum(Counter::pool_limit_hits);
  s.compactions = counters_.sum(Counter::compactions);
  s.compaction_moved = counters_.sum(Counter::compaction_moved);
  return s;
}

}  // namespace uzswap
