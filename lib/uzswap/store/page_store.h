// PageStore: the compressed page store behind the swap device
// (zswap_store / zswap_load / zswap_invalidate).
//
// store(slot, page) keeps the newest version of a slot, load(slot) returns
// exactly the bytes last stored there, invalidate(first, count) forgets a range
// (the kernel's discard of free swap clusters). Any number of threads may call
// them at once, on the same or different slots; each call is atomic per slot.
//
// Request-path rules: every call here is noexcept and allocates nothing, once
// the calling thread has run prepare_thread() (the first call on a thread that
// did not does it then). Compression runs before the slot lock is taken; the
// lock covers only the entry swap and the copy of compressed bytes.
//
// Writeback (writeback/shrink_memcg.h): entries that hold pool memory sit
// on the ListLru of their (cgroup, node), added referenced on store, marked
// referenced again on load. The writeback engine walks the lists and moves
// cold entries to the backing store through two transitions of this store,
// WritebackSide::claim() and finish() (check-lock-check). An
// entry's file_write bit stays set while any write of that slot to the
// backing file is in flight, across re-stores, so two writes of one slot are
// never in flight at once and a read of a written-back slot never races a
// write. A store that finds the pool full (or cannot get memory for it)
// writes the page to the backing store itself, as the kernel writes to the
// swap device when zswap_store fails; so does one whose page compresses
// poorly while the pool is near its limit (PageStoreOptions::spill_length).
//
// Cgroups (memcg/memcontrol.h): every entry carries the id of the cgroup it
// is charged to; memcg() holds the registry, policy and counters.
//
// Interface: the request path, the backing store and a few gauges are
// members; everything else is one of a few facets, each for the callers
// named at its accessor ("The facets" in the class).
//
// Lock order: compaction_lock_ -> slot stripe -> LRU list -> pool class ->
// pool region. Reads of written-back slots run without the slot lock and
// check the entry's version again afterwards.
//
// Integrity: every page's checksum (common/checksum.h) is taken when it is
// stored and kept beside its entry; every load of bytes from the pool or the
// backing file checks it.
//
// Surviving the process. The slot table, the pool's object bytes and the
// cgroup registry live in a SharedState (state/layout.h) that outlives this
// process. Every change of an entry is published through the slot table's
// journal, and a pool object is freed only once no entry refers to it, so a
// process may die at any instruction: the next PageStore made on the same
// SharedState rolls back the half-done change, rebuilds the pool's span
// lists, the LRU lists and every counter from the entries (adopt()), and
// serves the same pages.
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "uzswap/backing/backing_store.h"
#include "uzswap/common/mutex.h"
#include "uzswap/common/page.h"
#include "uzswap/compress/compressor.h"
#include "uzswap/lru/list_lru.h"
#include "uzswap/memcg/memcontrol.h"
#include "uzswap/pool/zpool.h"
#include "uzswap/state/shared_state.h"
#include "uzswap/store/slot_table.h"
#include "uzswap/store/store_errors.h"
#include "uzswap/store/store_settings.h"
#include "uzswap/store/store_stats.h"

namespace uzswap {

struct PageStoreOptions {
  std::uint64_t slots = 0;
  Codec codec = Codec::lz4;
  int level = kDefaultLz4Acceleration;
  // A page whose compressed size exceeds this is kept raw (incompressible).
  // 0 = the largest pool size class that still saves memory.
  std::size_t incompressible_threshold = 0;
  // Limit on pool RAM (zswap's max_pool_percent). Once reached, stores fail
  // with pool_full until the pool is back under accept_threshold_percent of
  // the limit (zswap's hysteresis). 0 = no limit.
  std::uint64_t max_pool_bytes = 0;
  unsigned accept_threshold_percent = 90;
  // With a backing store and a limit: once the pool is near its limit (at
  // or above accept_threshold_percent of it), a page whose compressed size
  // exceeds this goes to the backing store instead of the pool, and such
  // pages already in the pool are the first writeback takes (they join the
  // LRU without the second chance). The pool's RAM goes to the pages that
  // save the most per byte. 0 = half a page (the page saves less than a
  // byte per byte of RAM it takes); kPageSize = no preference.
  std::size_t spill_length = 0;
  ZPoolOptions pool;
};

enum class StoredAs : std::uint8_t { same_filled, compressed, incompressible, written_back };
enum class LoadedFrom : std::uint8_t { empty, same_filled, pool, backing };

// What adopting a shared state found (RestartSide::report()).
struct AdoptionReport {
  bool adopted = false;              // false: the state was fresh
  std::uint64_t rolled_back = 0;     // half-done entry changes put back
  std::uint64_t writebacks_reset = 0;  // writebacks in flight at death, back to RAM-only
  std::uint64_t stale_file_writes = 0;  // slots whose file write may still land
  std::uint64_t pool_objects = 0;    // live objects found in the pool
  std::uint64_t lost = 0;            // entries whose pool object was damaged (reads fail)
  std::uint64_t written_back = 0;    // entries in the backing file
  std::uint64_t cgroups = 0;         // live cgroups restored
  double seconds = 0;                // time to adopt
};

class StoreNode;
class WritebackSide;
class AttributionSide;
class RestartSide;
class Housekeeping;

// What a store calls out to (PageStore::hooks()). Both are called from a
// store, on the request path, so they must be cheap and noexcept (a
// wake-up). Set them before serving; clear them once nothing stores.
struct StoreHooks {
  // The pool hit its limit: wakes the pool-limit worker
  // (writeback/shrink_worker.h; the daemon sets it).
  std::function<void()> pool_full;
  // The pool on `node` grew past that node's wake mark
  // (StoreNode::set_wake_bytes): wakes the node's kswapd (the Reclaimer
  // sets it).
  std::function<void(unsigned node)> node_grown;
};

class PageStore {
 public:
  // A store on its own, private state (tests, tools). Throws on bad options.
  explicit PageStore(const PageStoreOptions& options);
  // A store on `state`, which must outlive it: a fresh state is initialised,
  // one a dead process left is adopted (options.slots and options.pool.nodes
  // are then taken from the state). Throws on bad options.
  PageStore(const PageStoreOptions& options, SharedState& state);
  PageStore(const PageStore&) = delete;
  PageStore& operator=(const PageStore&) = delete;

  // Stores on the calling CPU's NUMA node.
  Result<StoredAs> store(Slot slot, PageView page) noexcept;
  // Stores on `node` (< pool nodes): for callers that know better, and tests.
  Result<StoredAs> store(Slot slot, PageView page, unsigned node) noexcept;

  // Stores the whole pages of `data` in slots first, first + 1, ..., as
  // store() does each, but the pages bound for the backing file (the pool
  // has no room, or they save little) are written together: one submission
  // for a request's worth, not one wait for the disk per page. `node` < 0:
  // the calling CPU's. Every page is tried; the count is of those stored,
  // and the error is that of one that failed (the kernel, told, writes the
  // whole request again).
  struct StoredMany {
    std::size_t pages = 0;
    std::error_code error;  // none when every page was stored
  };
  StoredMany store_many(Slot first, std::span<const std::byte> data, int node = -1) noexcept;

  // Fills `out` with the slot's page; an empty slot reads as zeros. A page
  // whose bytes do not match the checksum taken when it was stored is an
  // error (corrupt), counted and noted in integrity_log(): never wrong bytes.
  Result<LoadedFrom> load(Slot slot, PageBuffer out) noexcept;
  // Loads slots first, first + 1, ... into the pages of `out` (whole
  // pages), as load() does each, but the pages in the backing file are read
  // together (BackingStore::read_many: one submission, adjacent slots one
  // I/O). Returns how many pages from the start loaded; the first one that
  // failed ends the count (and is counted as load() counts it).
  std::size_t load_many(Slot first, std::span<std::byte> out) noexcept;

  // Forgets slots [first, first + count). Returns how many held a page.
  Result<std::uint64_t> invalidate(Slot first, std::uint64_t count) noexcept;

  // Creates the calling thread's compressors and buffers (allocates), and
  // its ring on the backing store if one is attached.
  void prepare_thread_with_backing();
  static void prepare_thread();

  // Where written-back pages go. Attach before serving; without one, a full
  // pool refuses stores and nothing is written back.
  void attach_backing(BackingStore* backing) noexcept { backing_ = backing; }
  BackingStore* backing() const noexcept { return backing_; }

  std::uint64_t slots() const noexcept { return table_.size(); }
  unsigned nodes() const noexcept { return pool_.nodes(); }
  PageStoreStats stats() const noexcept;
  // The slots whose pages came back damaged (load answered an error).
  const IntegrityLog& integrity_log() const noexcept { return integrity_log_; }
  // True from the moment the pool hit its limit until it is back under the
  // accept threshold.
  bool pool_full() const noexcept { return pool_full_.load(std::memory_order_relaxed); }
  std::size_t incompressible_threshold() const noexcept { return threshold_; }

  // The facets: everything else the store offers, each for the callers
  // named. A facet is a member (settings, hooks, memcg) or a view of a
  // word or two made inline: no allocation, no virtual call, and the
  // request path reads the members directly.

  // The live settings (store_settings.h): the daemon's `set` and status,
  // and tests.
  StoreSettings& settings() noexcept { return settings_; }
  const StoreSettings& settings() const noexcept { return settings_; }
  // The pool's reserve of populated spans (pool/zpool.h), for the daemon's
  // refill thread (uzswap-reserve).
  PoolReserve reserve() noexcept { return PoolReserve(pool_); }
  // The hooks a store calls: the daemon sets pool_full, the Reclaimer
  // node_grown.
  StoreHooks& hooks() noexcept { return hooks_; }
  // One NUMA node of the pool (`node` < nodes()): its RAM, its writebacks
  // and the wake mark its kswapd sets (reclaim/kswapd.h).
  StoreNode node(unsigned node) noexcept;
  // Cgroups (memcg/memcontrol.h; ids from the attribution, 0 is the root
  // and always exists): the registry, policy and counters, for the daemon,
  // the attribution and the writeback engine.
  MemCgroups& memcg() noexcept { return memcg_; }
  const MemCgroups& memcg() const noexcept { return memcg_; }
  // The attribution's (reclaim/attribution.h) changes of entries' cgroups.
  AttributionSide attribution_side() noexcept;
  // The writeback engine's (writeback/shrink_memcg.h, shrink_worker.h) view:
  // the LRU lists, the two entry transitions and the shrinker's target.
  // A facet rather than private members and friend classes: the engine
  // sees these and not the store's insides, no list of friends grows with
  // it, and its tests reach them as it does, with no peer class.
  WritebackSide writeback_side() noexcept;
  // Life across processes ("Surviving the process"): the shared state, what
  // adopting it found, the file writes a dead process left in flight. The
  // daemon's start-up and status, and tests.
  RestartSide restart_side() noexcept;
  // Work off the request path that gives RAM and disk back: compaction
  // (kswapd, the pool-limit worker) and wiping freed blocks of the backing
  // file (the daemon's uzswap-wipe thread).
  Housekeeping housekeeping() noexcept;

 private:
  friend class StoreNode;
  friend class WritebackSide;
  friend class AttributionSide;
  friend class RestartSide;
  friend class Housekeeping;

  PageStore(const PageStoreOptions& options, std::unique_ptr<SharedState>&& own);
  PageStore(const PageStoreOptions& options, SharedState& state, std::unique_ptr<SharedState>&& own);

  // The facets' work, documented where they offer it (below).
  CompactionStats compact();
  bool compact_if_fragmented();
  std::uint64_t wipe_freed(std::uint64_t max_pages) noexcept;
  std::vector<CgroupId> release_cgroups(const std::vector<CgroupId>& removed);
  bool set_slot_cgroup(Slot slot, CgroupId cgroup) noexcept;
  enum class Claim { claimed, raced, failed };
  Claim claim_for_writeback(Slot slot, PageBuffer page, CompressorSet& compressors,
                            std::uint64_t& version) noexcept;
  enum class Finish { written, raced, failed };
  Finish finish_writeback(Slot slot, std::uint64_t version, int write_result) noexcept;
  bool above_accept_threshold() const noexcept;
  std::uint64_t release_stale_file_writes() noexcept;

  struct Removed {
    SlotState state;
    PoolHandle handle;
    std::uint32_t length;
    CgroupId cgroup;
    Slot slot = 0;
  };
  // Swaps `fresh` into the slot (keeping cgroup and file_write), fixes LRU
  // membership and counters, frees the old version. Takes the slot lock.
  void install(Slot slot, const SlotEntry& fresh, std::uint32_t checksum) noexcept;
  // A load in two halves around the backing file's read. load_begin()
  // answers under the slot lock, unless the page is in the file: then it
  // returns nullopt with what it saw, and load_end() checks the read (made
  // without the lock) against it. load_once() is both for one page;
  // load_retrying() repeats it while a write races the read.
  struct BackingReadPlan {
    SlotEntry seen;
    std::uint32_t checksum = 0;
  };
  std::optional<Result<LoadedFrom>> load_begin(Slot slot, PageBuffer out, BackingReadPlan& plan) noexcept;
  Result<LoadedFrom> load_end(Slot slot, PageBuffer out, const BackingReadPlan& plan,
                              std::error_code read_error) noexcept;
  Result<LoadedFrom> load_once(Slot slot, PageBuffer out) noexcept;
  Result<LoadedFrom> load_retrying(Slot slot, PageBuffer out) noexcept;
  // LRU membership and counters of an entry leaving/entering the slot; the
  // caller holds the slot lock.
  Removed detachLocked(Slot slot, const SlotEntry& entry) noexcept REQUIRES(table_.lock_for(slot));
  void attachLocked(Slot slot, const SlotEntry& entry) noexcept REQUIRES(table_.lock_for(slot));
  void account_removed(const Removed& removed) noexcept;
  // Counters of the live cgroup that `cgroup`'s pages belong to now.
  MemcgCounters& counters_of(CgroupId cgroup) noexcept { return memcg_.counters_of(cgroup); }
  unsigned current_node() const noexcept;
  // The store made on a state a dead process left: see "Surviving the
  // process". It runs in the constructor, before any other thread can see
  // the store, and reads and publishes entries without their stripe locks:
  // NO_THREAD_SAFETY_ANALYSIS, as nothing else exists to race it.
  void adopt() NO_THREAD_SAFETY_ANALYSIS;
  // Gauges and LRU membership of an entry found at adoption.
  void account_adopted(Slot slot, const SlotEntry& entry) noexcept REQUIRES(table_.lock_for(slot));
  bool admit_to_pool() noexcept;
  // Under a pool limit, a pool entry longer than spill_length saves little:
  // it joins an LRU list without the second chance (every lru_.add of an
  // entry passes !saves_little(entry) as `referenced`), so writeback takes
  // it before the better ones; a load gives it one, as to any other.
  bool saves_little(const SlotEntry& entry) const noexcept;
  Result<StoredAs> store_to_backing(Slot slot, PageView page,
                                                       std::uint32_t checksum) noexcept;
  // store_to_backing in two halves around the write, so that one write can
  // carry many pages: begin claims the slot for the file (its file_write
  // bit; nullopt if the slot may not go there now) and returns its version;
  // end publishes the outcome of the write (`result` 0 or -errno).
  std::optional<std::uint64_t> begin_file_write(Slot slot) noexcept;
  Result<StoredAs> end_file_write(Slot slot, std::uint64_t version, std::uint32_t checksum, int result) noexcept;
  // The pages of one store_many call on their way to the file.
  class FileBatch;
  // store() with a batch: a page for the file is claimed into `batch`
  // (nullopt: its outcome comes with the batch's write); `may_use_file`
  // false keeps it from the file altogether (a spill whose write failed).
  std::optional<Result<StoredAs>> store_one(Slot slot, PageView page, unsigned node, FileBatch* batch,
                                            bool may_use_file) noexcept;
  std::optional<Result<StoredAs>> to_file(Slot slot, PageView page, std::uint32_t checksum, FileBatch* batch,
                                          bool spill) noexcept;
  // Writes the batch (its pages were stored on `node`) and publishes each.
  void flush(FileBatch& batch, unsigned node, StoredMany& result) noexcept;

  std::unique_ptr<SharedState> own_state_;  // only for a store on its own
  SharedState* state_;
  ZPool pool_;
  SlotTable table_;
  ListLru lru_;
  MemCgroups memcg_;
  BackingStore* backing_ = nullptr;
  StoreHooks hooks_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> node_writebacks_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> node_wake_bytes_;

  std::size_t threshold_;
  std::size_t spill_length_;
  StoreSettings settings_;
  std::atomic<bool> pool_full_{false};
  Mutex compaction_lock_;
  mutable StoreCounters counters_;
  IntegrityLog integrity_log_;
  // Slots whose block in the backing file holds a freed page (wipe_freed):
  // one bit per slot, set on the request path without allocating.
  void mark_for_wipe(Slot slot) noexcept;
  std::unique_ptr<std::atomic<std::uint64_t>[]> wipe_bits_;
  std::atomic<std::uint64_t> wipe_pending_count_{0};
  Slot wipe_cursor_ = 0;  // where the last wipe_freed() stopped
  AdoptionReport adoption_;
  std::vector<Slot> stale_file_writes_ GUARDED_BY(compaction_lock_);
};

// The facets. Each view holds the store it was made from and must not
// outlive it; making one costs nothing once inlined.

class StoreNode {
 public:
  // Pool RAM in spans on the node.
  std::uint64_t pool_bytes() const noexcept { return store_.pool_.span_bytes(node_); }
  // Pages written back from the node's pool.
  std::uint64_t writebacks() const noexcept {
    return store_.node_writebacks_[node_].load(std::memory_order_relaxed);
  }
  // The node's wake mark in pool bytes (kswapd's low watermark): a store
  // that finds the node's pool past it calls StoreHooks::node_grown. 0 =
  // never wake.
  void set_wake_bytes(std::uint64_t bytes) noexcept {
    store_.node_wake_bytes_[node_].store(bytes, std::memory_order_relaxed);
  }

 private:
  friend class PageStore;
  StoreNode(PageStore& store, unsigned node) noexcept : store_(store), node_(node) {}
  PageStore& store_;
  unsigned node_;
};

class AttributionSide {
 public:
  // Moves a stored slot to `cgroup`'s accounting and lists.
  bool set_slot_cgroup(Slot slot, CgroupId cgroup) noexcept { return store_.set_slot_cgroup(slot, cgroup); }
  // Makes removed ids free to be handed out again: every entry still
  // carrying one of them is re-labelled with the live cgroup it resolves to
  // (one pass over the slot table, a stripe lock at a time), then the ids
  // are forgotten by the lists and the shared registry. Ids that are live
  // or unknown are left alone. Returns the ids released. One caller at a
  // time, and the only one that hands out ids (the attribution).
  std::vector<CgroupId> release_cgroups(const std::vector<CgroupId>& removed) {
    return store_.release_cgroups(removed);
  }

 private:
  friend class PageStore;
  explicit AttributionSide(PageStore& store) noexcept : store_(store) {}
  PageStore& store_;
};

class WritebackSide {
 public:
  // The LRU lists of entries in the pool, for the engine's walk.
  ListLru& lru() noexcept { return store_.lru_; }
  // The entry transitions, for an entry isolated from its list. Claim:
  // under the slot lock, an entry still in the pool, on no list and with no
  // write of its slot in flight is marked writeback and its page
  // decompressed into `page` (checked against its checksum); its version
  // is returned in `version`. An entry that cannot be claimed goes back on
  // its list where it belongs.
  using Claim = PageStore::Claim;
  Claim claim(Slot slot, PageBuffer page, CompressorSet& compressors, std::uint64_t& version) noexcept {
    return store_.claim_for_writeback(slot, page, compressors, version);
  }
  // Finish, once the write is over (`write_result` 0 or -errno): an
  // untouched entry becomes written back and its pool object is freed; one
  // a store or invalidate changed meanwhile is left to them; a failed write
  // puts the entry back in RAM and on its list. Nothing is ever dropped.
  using Finish = PageStore::Finish;
  Finish finish(Slot slot, std::uint64_t version, int write_result) noexcept {
    return store_.finish_writeback(slot, version, write_result);
  }
  // Pool RAM above the accept threshold of the limit: the pool-limit
  // worker's target.
  bool above_accept_threshold() const noexcept { return store_.above_accept_threshold(); }

 private:
  friend class PageStore;
  explicit WritebackSide(PageStore& store) noexcept : store_(store) {}
  PageStore& store_;
};

class RestartSide {
 public:
  // The state the store lives on (tests damage pages through it).
  SharedState& state() noexcept { return *store_.state_; }
  // What adopting the state found (nothing, if it was fresh).
  const AdoptionReport& report() const noexcept { return store_.adoption_; }
  // Slots whose write to the backing file was in flight when the last
  // process died keep their file_write bit, so nothing writes them again
  // while that write may still land. Once the backing store says the old
  // writes are over (BackingStore::wait_for_other_writers), this lets them
  // go. Returns how many were held.
  std::uint64_t release_stale_file_writes() noexcept { return store_.release_stale_file_writes(); }

 private:
  friend class PageStore;
  explicit RestartSide(PageStore& store) noexcept : store_(store) {}
  PageStore& store_;
};

class Housekeeping {
 public:
  // Moves objects out of sparse pool spans and returns empty spans to the
  // system. Runs alongside the request path.
  CompactionStats compact() { return store_.compact(); }
  // Compacts when the pool's spans hold more than its objects need by over
  // 10% and 1 MiB: RAM back without I/O, which reclaim tries before
  // writeback (zsmalloc's shrinker does the same). True if it compacted.
  bool compact_if_fragmented() { return store_.compact_if_fragmented(); }
  // Users' swapped memory does not stay on disk once it is freed: a slot
  // whose written-back page is discarded or replaced is marked, and this
  // overwrites the marked blocks of the backing file with zeros, up to
  // `max_pages` of them (a write, not a hole punch: the file's blocks stay
  // allocated, so no later write of the swap-out path needs the
  // filesystem's journal). One caller at a time. Returns how many blocks
  // were wiped.
  std::uint64_t wipe_freed(std::uint64_t max_pages) noexcept { return store_.wipe_freed(max_pages); }
  std::uint64_t wipe_pending() const noexcept {
    return store_.wipe_pending_count_.load(std::memory_order_relaxed);
  }

 private:
  friend class PageStore;
  explicit Housekeeping(PageStore& store) noexcept : store_(store) {}
  PageStore& store_;
};

inline StoreNode PageStore::node(unsigned node) noexcept { return StoreNode(*this, node); }
inline AttributionSide PageStore::attribution_side() noexcept { return AttributionSide(*this); }
inline WritebackSide PageStore::writeback_side() noexcept { return WritebackSide(*this); }
inline RestartSide PageStore::restart_side() noexcept { return RestartSide(*this); }
inline Housekeeping PageStore::housekeeping() noexcept { return Housekeeping(*this); }

}  // namespace uzswap
