#include "uzswap/store/page_store.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <chrono>

#include "uzswap/common/checksum.h"
#include "uzswap/compress/same_filled.h"
#include "uzswap/store/slot_table.h"

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

void PageStore::prepare_thread_with_backing() {
  thread_context();
  if (backing_ != nullptr) backing_->prepare_thread();
}

namespace {

ZPoolOptions pool_options_on(const ZPoolOptions& base, const SharedState& state) {
  ZPoolOptions pool = base;
  pool.nodes = state.geometry().pool_nodes;
  pool.region_bytes = state.geometry().pool_region_bytes;
  for (unsigned node = 0; node < pool.nodes; ++node) pool.arena_bases.push_back(state.pool_base(node));
  return pool;
}

std::unique_ptr<SharedState> private_state(const PageStoreOptions& options) {
  if (options.slots == 0 || options.slots > kMaxSlots)
    throw std::invalid_argument("slot count must be 1.." + std::to_string(kMaxSlots));
  return std::make_unique<SharedState>(SharedState::create(
      {options.slots, options.pool.nodes, ZPool::region_bytes_for(options.pool.reserve_bytes_per_node)}));
}

}  // namespace

PageStore::PageStore(const PageStoreOptions& options) : PageStore(options, private_state(options)) {}

PageStore::PageStore(const PageStoreOptions& options, std::unique_ptr<SharedState>&& own)
    : PageStore(options, *own, std::move(own)) {}

PageStore::PageStore(const PageStoreOptions& options, SharedState& state) : PageStore(options, state, nullptr) {}

// own_state_ is the first member: should a later one throw, it goes too.
PageStore::PageStore(const PageStoreOptions& options, SharedState& state, std::unique_ptr<SharedState>&& own)
    : own_state_(std::move(own)),
      state_(&state),
      pool_(pool_options_on(options.pool, state)),
      table_(state.slots(), state.checksums(), state.journal(), state.geometry().slots),
      lru_(static_cast<std::uint32_t>(std::min<std::uint64_t>(state.geometry().slots, ListLru::kMaxItems)),
           state.geometry().pool_nodes),
      memcg_(lru_, state),
      node_writebacks_(std::make_unique<std::atomic<std::uint64_t>[]>(state.geometry().pool_nodes)),
      node_wake_bytes_(std::make_unique<std::atomic<std::uint64_t>[]>(state.geometry().pool_nodes)),
      threshold_(resolve_threshold(options, pool_)),
      spill_length_(options.spill_length == 0 ? kPageSize / 2 : std::min(options.spill_length, kPageSize)),
      settings_(options.codec, options.level, options.max_pool_bytes, options.accept_threshold_percent) {
  const std::uint64_t words = (table_.size() + 63) / 64;
  wipe_bits_ = std::make_unique<std::atomic<std::uint64_t>[]>(words);
  if (state.fresh()) {
    state.header().serving = 1;
  } else {
    adopt();
  }
}

unsigned PageStore::current_node() const noexcept {
  unsigned cpu = 0, node = 0;
  if (getcpu(&cpu, &node) != 0) return 0;
  return node % pool_.nodes();
}

Result<StoredAs> PageStore::store(Slot slot, PageView page) noexcept {
  return store(slot, page, current_node());
}

Result<StoredAs> PageStore::store(Slot slot, PageView page,
                                                     unsigned node) noexcept {
  return *store_one(slot, page, node, nullptr, true);  // no batch: always an outcome
}

std::optional<Result<StoredAs>> PageStore::store_one(Slot slot, PageView page, unsigned node, FileBatch* batch,
                                                     bool may_use_file) noexcept {
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
  // Of the page as the kernel wrote it: every load checks what it returns.
  const std::uint32_t checksum = page_checksum(page);
  const Codec codec = settings_.codec();
  // A buffer of the worst-case size lets lz4 run its unchecked fast path;
  // bounding the output by the threshold instead is slower on every page.
  const std::size_t compressed = ctx.compressors.get(codec).compress(
      page, ctx.buffer, settings_.level());
  const bool raw = compressed == 0 || compressed > threshold_;
  const std::size_t length = raw ? kPageSize : compressed;

  // Spend the pool on the pages that save the most: near its limit, a page
  // that saves little goes to the file, leaving the room to better ones.
  // (At or above the accept threshold of the limit: pool_full() alone may
  // be stale, as only a store the pool takes clears it.)
  std::optional<Result<StoredAs>> spilled;
  if (may_use_file && length > spill_length_ && backing_ != nullptr && above_accept_threshold()) {
    spilled = to_file(slot, page, checksum, batch, true);
    if (!spilled) return std::nullopt;  // with the batch
    if (*spilled) {
      counters_.add(Counter::spilled_pages);
      return *spilled;
    }
    // Not there (its cgroup may not write back, an older write of the slot
    // is in flight, the write failed): the pool takes it if it can, and if
    // it cannot, the answer is that refusal, not a second try of the file.
  }
  if (!admit_to_pool()) {
    counters_.add(Counter::reject_pool_full);
    if (spilled) return *spilled;
    if (backing_ != nullptr && may_use_file) return to_file(slot, page, checksum, batch, false);
    return std::unexpected(StoreError::pool_full);
  }
  const PoolHandle handle = pool_.alloc(length, node);
  if (handle == kNullHandle) {
    // No memory for the pool (zswap's __GFP_NORETRY store failing): the
    // next tier takes the page rather than the kernel getting an error.
    counters_.add(Counter::reject_alloc_failed);
    if (spilled) return *spilled;
    if (backing_ != nullptr && may_use_file) return to_file(slot, page, checksum, batch, false);
    return std::unexpected(StoreError::alloc_failed);
  }
  std::memcpy(pool_.map(handle), raw ? page.data() : ctx.buffer, length);

  fresh.state = static_cast<std::uint64_t>(raw ? SlotState::incompressible : SlotState::compressed);
  fresh.value = handle;
  fresh.length = length;
  fresh.codec = static_cast<std::uint64_t>(codec);
  fresh.node = node;
  install(slot, fresh, checksum);
  const std::uint64_t wake = node_wake_bytes_[node].load(std::memory_order_relaxed);
  if (wake != 0 && pool_.span_bytes(node) > wake && hooks_.node_grown) hooks_.node_grown(node);
  return raw ? StoredAs::incompressible : StoredAs::compressed;
}

bool PageStore::admit_to_pool() noexcept {
  const std::uint64_t limit = settings_.max_pool_bytes();
  if (limit == 0) {
    pool_full_.store(false, std::memory_order_relaxed);
    return true;
  }
  const std::uint64_t used = pool_.span_bytes();
  if (pool_full_.load(std::memory_order_relaxed)) {
    const unsigned accept = settings_.accept_threshold_percent();
    if (used * 100 >= limit * accept) return false;
    pool_full_.store(false, std::memory_order_relaxed);
    return true;
  }
  if (used < limit) return true;
  pool_full_.store(true, std::memory_order_relaxed);
  counters_.add(Counter::pool_limit_hits);
  if (hooks_.pool_full) hooks_.pool_full();
  return false;
}

bool PageStore::saves_little(const SlotEntry& entry) const noexcept {
  return entry.length > spill_length_ && settings_.max_pool_bytes() != 0;
}

bool PageStore::above_accept_threshold() const noexcept {
  const std::uint64_t limit = settings_.max_pool_bytes();
  if (limit == 0) return false;
  return pool_.span_bytes() * 100 >= limit * settings_.accept_threshold_percent();
}

PageStore::Removed PageStore::detachLocked(Slot slot, const SlotEntry& entry) noexcept {
  const Removed removed{entry.slot_state(), entry.value, static_cast<std::uint32_t>(entry.length),
                        static_cast<CgroupId>(entry.cgroup), slot};
  // An entry being written back was isolated already; del is then a no-op.
  if (entry.in_pool())
    lru_.del(static_cast<std::uint32_t>(slot), static_cast<CgroupId>(entry.cgroup), entry.node);
  return removed;
}

void PageStore::attachLocked(Slot slot, const SlotEntry& entry) noexcept {
  const SlotState state = entry.slot_state();
  if (state == SlotState::empty) return;
  MemcgCounters& cg = counters_of(static_cast<CgroupId>(entry.cgroup));
  if (state == SlotState::written_back) {
    counters_.add(Counter::written_back_pages);
    cg.written_back_pages.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  counters_.add(Counter::stored_pages);
  cg.stored_pages.fetch_add(1, std::memory_order_relaxed);
  if (state == SlotState::same_filled) {
    counters_.add(Counter::same_filled_pages);
    return;
  }
  if (state == SlotState::incompressible) counters_.add(Counter::incompressible_pages);
  counters_.add(Counter::compressed_bytes, entry.length);
  cg.compressed_bytes.fetch_add(entry.length, std::memory_order_relaxed);
  lru_.add(static_cast<std::uint32_t>(slot), static_cast<CgroupId>(entry.cgroup), entry.node,
           !saves_little(entry));
}

void PageStore::install(Slot slot, const SlotEntry& fresh, std::uint32_t checksum) noexcept {
  Removed old;
  {
    MutexLock guard(table_.lock_for(slot));
    const SlotEntry& entry = table_.entryLocked(slot);
    old = detachLocked(slot, entry);
    SlotEntry next = fresh;
    next.version = entry.version + 1;
    // Whose page this is, only the next attribution pass can say: the old
    // label may be another cgroup's, as the kernel reuses a freed slot
    // without a word (its discards come per free cluster, not per slot).
    // Unattributed meanwhile, which holds it back from reclaim while some
    // cgroup has writeback off.
    next.cgroup = kRootCgroup;
    next.file_write = entry.file_write;  // an older write may be in flight
    table_.publishLocked(slot, next, checksum);
    attachLocked(slot, next);
  }
  counters_.add(Counter::stores);
  account_removed(old);
}

void PageStore::account_removed(const Removed& removed) noexcept {
  MemcgCounters& cg = counters_of(removed.cgroup);
  switch (removed.state) {
    case SlotState::empty:
      return;
    case SlotState::lost:
      counters_.sub(Counter::lost_pages);
      return;
    case SlotState::written_back:
      counters_.sub(Counter::written_back_pages);
      cg.written_back_pages.fetch_sub(1, std::memory_order_relaxed);
      mark_for_wipe(removed.slot);  // its block still holds the page
      return;
    case SlotState::same_filled:
      counters_.sub(Counter::stored_pages);
      cg.stored_pages.fetch_sub(1, std::memory_order_relaxed);
      counters_.sub(Counter::same_filled_pages);
      return;
    case SlotState::incompressible:
    case SlotState::compressed:
    case SlotState::writeback:
      counters_.sub(Counter::stored_pages);
      cg.stored_pages.fetch_sub(1, std::memory_order_relaxed);
      if (removed.length == kPageSize) counters_.sub(Counter::incompressible_pages);
      counters_.sub(Counter::compressed_bytes, removed.length);
      cg.compressed_bytes.fetch_sub(removed.length, std::memory_order_relaxed);
      pool_.free(removed.handle);
      return;
  }
}

Result<LoadedFrom> PageStore::load(Slot slot, PageBuffer out) noexcept {
  if (slot >= table_.size()) {
    counters_.add(Counter::out_of_range);
    return std::unexpected(LoadError::out_of_range);
  }
  counters_.add(Counter::loads);
  return load_retrying(slot, out);
}

Result<LoadedFrom> PageStore::load_retrying(Slot slot, PageBuffer out) noexcept {
  // A read of the backing file runs without the slot lock; should the slot
  // change meanwhile, or a newer page of it be on its way to the file, the
  // load starts over once that write is done (the kernel never reads a slot
  // it is writing, so this only serves other callers; a write that takes
  // over a second is a failing disk, and the read fails).
  for (unsigned attempt = 0;; ++attempt) {
    const auto loaded = load_once(slot, out);
    if (loaded || loaded.error() != LoadError::raced) return loaded;
    if (attempt == 10000) {
      counters_.add(Counter::backing_read_errors);
      return std::unexpected(LoadError::backing_io);
    }
    if (attempt >= 3) {
      const timespec pause{0, 100000};  // 0.1 ms
      nanosleep(&pause, nullptr);
    }
  }
}

std::size_t PageStore::load_many(Slot first, std::span<std::byte> out) noexcept {
  const std::size_t pages = out.size() / kPageSize;
  constexpr std::size_t kBatch = 64;
  std::size_t done = 0;
  while (done < pages) {
    // Answer what the pool holds and collect the pages in the file, up to
    // the first page that fails or a batch of reads.
    PageRead reads[kBatch];
    BackingReadPlan plans[kBatch];
    std::size_t at[kBatch];
    std::size_t nreads = 0;
    std::size_t end = done;  // pages [done, end) answered or read below
    bool failed = false;
    for (; end < pages && nreads < kBatch; ++end) {
      const Slot slot = first + end;
      const PageBuffer page(out.data() + end * kPageSize, kPageSize);
      if (slot >= table_.size()) {
        counters_.add(Counter::out_of_range);
        failed = true;
        break;
      }
      counters_.add(Counter::loads);
      if (const auto answered = load_begin(slot, page, plans[nreads])) {
        if (!*answered && answered->error() != LoadError::raced) {
          failed = true;
          break;
        }
        if (!*answered && !load_retrying(slot, page)) {
          failed = true;
          break;
        }
        continue;
      }
      reads[nreads] = PageRead{slot, page.data(), 0};
      at[nreads++] = end;
    }
    if (nreads > 0) {
      counters_.add(Counter::backing_reads, static_cast<std::int64_t>(nreads));
      backing_->read_many(std::span(reads, nreads));
    }
    for (std::size_t k = 0; k < nreads; ++k) {
      const PageBuffer page(reads[k].page, kPageSize);
      const std::error_code error = reads[k].result < 0 ? std::error_code(-reads[k].result, std::generic_category())
                                                        : std::error_code();
      const auto loaded = load_end(reads[k].slot, page, plans[k], error);
      if (loaded) continue;
      if (loaded.error() == LoadError::raced && load_retrying(reads[k].slot, page)) continue;
      return at[k];  // the pages before it are good
    }
    if (failed) return end;
    done = end;
  }
  return done;
}

Result<LoadedFrom> PageStore::load_once(Slot slot, PageBuffer out) noexcept {
  BackingReadPlan plan;
  if (auto answered = load_begin(slot, out, plan)) return *answered;
  counters_.add(Counter::backing_reads);
  return load_end(slot, out, plan, backing_->read(slot, out));
}

std::optional<Result<LoadedFrom>> PageStore::load_begin(Slot slot, PageBuffer out, BackingReadPlan& plan) noexcept {
  ThreadContext& ctx = thread_context();
  SlotEntry& seen = plan.seen;
  std::uint32_t& checksum = plan.checksum;
  {
    MutexLock guard(table_.lock_for(slot));
    const SlotEntry& entry = table_.entryLocked(slot);
    seen = entry;
    checksum = table_.checksumLocked(slot);
    // Copy pool bytes out under the lock: once it drops, a store, a
    // writeback or a compaction may free or move the object.
    if (entry.in_pool()) {
      std::memcpy(entry.length == kPageSize ? out.data() : ctx.buffer, pool_.map(entry.value), entry.length);
      // Used again: a second chance before writeback (the kernel may drop
      // its clean copy and read this one later).
      lru_.mark_referenced(static_cast<std::uint32_t>(slot), static_cast<CgroupId>(entry.cgroup),
                           entry.node);
    } else if (entry.slot_state() == SlotState::lost) {
      counters_.add(Counter::integrity_errors);
      return std::unexpected(LoadError::corrupt);
    }
  }
  const auto verified = [&](LoadedFrom from) -> Result<LoadedFrom> {
    if (page_checksum(out) == checksum) return from;
    counters_.add(Counter::integrity_errors);
    integrity_log_.note(slot, false);
    return std::unexpected(LoadError::corrupt);
  };
  switch (seen.slot_state()) {
    case SlotState::lost:
      break;
    case SlotState::empty:
      counters_.add(Counter::empty_loads);
      fill_page(out, 0);
      return LoadedFrom::empty;
    case SlotState::same_filled:
      fill_page(out, seen.value);
      return LoadedFrom::same_filled;
    case SlotState::written_back:
      // A newer page of this slot is being written over this one: never
      // read a torn block; load again once the write is over.
      if (seen.file_write) return std::unexpected(LoadError::raced);
      if (backing_ == nullptr) {
        counters_.add(Counter::backing_read_errors);
        return std::unexpected(LoadError::backing_io);
      }
      return std::nullopt;  // the caller reads the file, then load_end()
    case SlotState::incompressible:
    case SlotState::compressed:
    case SlotState::writeback:
      if (seen.length == kPageSize) return verified(LoadedFrom::pool);
      if (ctx.compressors.get(static_cast<Codec>(seen.codec))
              .decompress(std::span<const std::byte>(ctx.buffer, seen.length), out))
        return verified(LoadedFrom::pool);
      integrity_log_.note(slot, false);
      break;
  }
  counters_.add(Counter::load_errors);
  return std::unexpected(LoadError::corrupt);
}

Result<LoadedFrom> PageStore::load_end(Slot slot, PageBuffer out, const BackingReadPlan& plan,
                                       std::error_code read_error) noexcept {
  // EBADMSG: an encrypted block failed to authenticate (backing_cipher.h),
  // damage like a checksum mismatch, once the re-check says no write raced.
  if (read_error && read_error != std::errc::bad_message) {
    counters_.add(Counter::backing_read_errors);
    return std::unexpected(LoadError::backing_io);
  }
  {
    // Check again: only a block no write touched while it was read counts.
    MutexLock guard(table_.lock_for(slot));
    const SlotEntry& now = table_.entryLocked(slot);
    if (now.version != plan.seen.version || now.file_write || now.slot_state() != SlotState::written_back)
      return std::unexpected(LoadError::raced);
  }
  if (read_error || page_checksum(out) != plan.checksum) {
    counters_.add(Counter::integrity_errors);
    integrity_log_.note(slot, true);
    return std::unexpected(LoadError::corrupt);
  }
  return LoadedFrom::backing;
}

Result<std::uint64_t> PageStore::invalidate(Slot first,
                                                              std::uint64_t count) noexcept {
  if (first >= table_.size() || count > table_.size() - first) {
    counters_.add(Counter::out_of_range);
    return std::unexpected(LoadError::out_of_range);
  }
  std::uint64_t dropped = 0;
  for (Slot slot = first; slot < first + count; ++slot) {
    Removed old;
    {
      MutexLock guard(table_.lock_for(slot));
      const SlotEntry& entry = table_.entryLocked(slot);
      if (entry.slot_state() == SlotState::empty) continue;
      old = detachLocked(slot, entry);
      SlotEntry next{};
      next.version = entry.version + 1;
      next.file_write = entry.file_write;
      table_.publishLocked(slot, next);
    }
    account_removed(old);
    ++dropped;
  }
  counters_.add(Counter::invalidations, static_cast<std::int64_t>(dropped));
  return dropped;
}

CompactionStats PageStore::compact() {
  MutexLock compaction(compaction_lock_);
  CompactionStats stats = pool_.begin_compaction();
  std::uint64_t moved = 0;
  if (stats.objects_to_move > 0) {
    // One pass over the table, a run of slots per lock: the pool keeps no
    // pointers back from objects to slots.
    for (Slot run = 0; run < table_.size(); run += SlotTable::kRun) {
      MutexLock guard(table_.lock_for(run));
      const Slot end = std::min<Slot>(run + SlotTable::kRun, table_.size());
      for (Slot slot = run; slot < end; ++slot) {
        table_.assert_same_stripe(run, slot);
        const SlotEntry& entry = table_.entryLocked(slot);
        if (!entry.in_pool() || !pool_.needs_migration(entry.value)) continue;
        const PoolHandle from = entry.value;
        const PoolHandle moved_to = pool_.migrate(from, entry.length);
        if (moved_to == kNullHandle) continue;  // stays where it is
        SlotEntry next = entry;
        next.value = moved_to;
        table_.publishLocked(slot, next);
        pool_.free(from);  // only now that no entry refers to it
        ++moved;
      }
    }
  }
  pool_.end_compaction(stats);
  counters_.add(Counter::compactions);
  counters_.add(Counter::compaction_moved, moved);
  return stats;
}

bool PageStore::compact_if_fragmented() {
  const ZPoolStats s = pool_.stats();
  const std::uint64_t needed = s.object_bytes + s.object_bytes / 10 + (1u << 20);
  // The reserve's populated empty spans are kept on purpose, not
  // fragmentation: compacting for them would only empty the reserve.
  const std::uint64_t in_use = s.span_bytes - std::min(s.span_bytes, s.reserve_bytes);
  if (in_use <= needed) return false;
  compact();
  return true;
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
  s.lost_pages = counters_.sum(Counter::lost_pages);
  s.integrity_errors = counters_.sum(Counter::integrity_errors);
  s.pool_limit_hits = counters_.sum(Counter::pool_limit_hits);
  s.compactions = counters_.sum(Counter::compactions);
  s.written_back_pages = counters_.sum(Counter::written_back_pages);
  s.writebacks = counters_.sum(Counter::writebacks);
  s.writeback_failures = counters_.sum(Counter::writeback_failures);
  s.writeback_raced = counters_.sum(Counter::writeback_raced);
  s.direct_writes = counters_.sum(Counter::direct_writes);
  s.spilled_pages = counters_.sum(Counter::spilled_pages);
  s.backing_reads = counters_.sum(Counter::backing_reads);
  s.backing_read_errors = counters_.sum(Counter::backing_read_errors);
  s.wiped_pages = counters_.sum(Counter::wiped_pages);
  s.compaction_moved = counters_.sum(Counter::compaction_moved);
  return s;
}

}  // namespace uzswap
