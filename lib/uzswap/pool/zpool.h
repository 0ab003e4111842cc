// ZPool: the compressed-object allocator (zsmalloc's job).
//
// Memory. Each NUMA node has one arena: a memfd mapped once, split into eight
// regions, one per span length (1..8 pages). The arenas may instead be
// segments of a SharedState, so the objects outlive this process; the span
// headers and free lists do not: adopt_objects() rebuilds them from the live
// handles. A span is a run of pages holding
// objects of one size class. RAM is taken for a span with fallocate() on the
// memfd (a clean ENOMEM instead of a fault) and given back with
// FALLOC_FL_PUNCH_HOLE, which works on locked memory, unlike MADV_DONTNEED. A
// few empty spans per region stay resident for reuse.
//
// Handles are opaque 64-bit values that encode node, span length, span index
// and byte offset, so map() is pure arithmetic. An object moves only through
// migrate(), called by the owner of the handle during compaction.
//
// Compaction. begin_compaction() picks, per class, the sparsest spans whose
// objects fit in the free room of the others and marks them draining (no new
// objects). The owner then visits its handles, migrate()s each one for which
// needs_migration() is true (freeing the old handle once nothing refers to
// it any more), and calls end_compaction(), which returns
// drained spans and the empty-span cache to the system. The pool keeps no
// back-pointers from objects to owners: compaction trades one scan of the
// owner's table for zero bytes per object.
//
// The reserve. Stores take new spans from a per-node reserve of spans already
// backed by RAM (the "warm" stacks), topped up by refill_reserve() on a
// background thread; an empty reserve costs a store one populate, and a
// failed one fails the alloc (the store then goes to the next tier). The
// span headers and free-span stacks are populated ahead of use in the same
// way (at construction, then by the refiller), so the request path neither
// asks the kernel for memory nor faults on the pool's own metadata.
//
// Locking. One mutex per (node, class) guards that class's span lists and the
// span headers of its spans; one mutex per (node, region) guards the free-span
// stacks. Order: class -> region. Object contents are not guarded by the pool:
// the owner serialises alloc/map/free/migrate of a handle.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "uzswap/common/result.h"
#include "uzswap/common/page.h"
#include "uzswap/common/mapped_array.h"
#include "uzswap/pool/size_classes.h"

namespace uzswap {

using PoolHandle = std::uint64_t;
inline constexpr PoolHandle kNullHandle = 0;

struct ZPoolOptions {
  unsigned nodes = 1;
  // Address space reserved for each span length on each node; the pool can
  // never hold more than this on one node. 0 = physical RAM size. uzswapd
  // sizes it by its pool limit instead (region_bytes_for_limit).
  std::size_t reserve_bytes_per_node = 0;
  // mlock2(MLOCK_ONFAULT) the arenas, so pool pages can never be swapped out
  // (the daemon also runs under mlockall).
  bool lock_memory = false;
  // Bind each node's arena to that node with mbind(). Off when the nodes are
  // simulated (more pool nodes than the machine has).
  bool bind_nodes = false;
  // The reserve: empty spans kept resident (backed by RAM) per node, in
  // bytes, shared equally by the eight span lengths. Stores take new spans
  // from it without a system call; refill_reserve() tops it up off the
  // request path, and freed spans return to it.
  std::size_t empty_span_cache_bytes = 1u << 20;
  // What a store does when it finds the reserve empty. true: backs one new
  // span itself (MADV_POPULATE_WRITE), failing if the kernel has no memory.
  // false (uzswapd): wakes the refiller and waits for it, up to miss_wait,
  // then fails; it never asks the kernel for memory on the request path:
  // that ask can enter memory reclaim, which swaps pages out through this
  // very daemon and waits for it (seen under a memory cgroup's limit: both
  // FUSE workers in wbt_wait below try_charge_memcg, the machine's swap
  // hung; tests/e2e/self_pressure.sh). The wait is bounded, so a refiller
  // stuck in that reclaim holds a store up by miss_wait at most, and the
  // store's fallback (the backing file) completes the I/O it waits for.
  bool grow_on_miss = true;
  std::chrono::microseconds miss_wait{5000};
  // Arenas attached elsewhere (SharedState), one per node, each of
  // 8 * region_bytes, kept in RAM by SHM_LOCK: the pool neither maps nor
  // locks them, and gives RAM back with MADV_REMOVE. Empty: the pool makes
  // its own memfds.
  std::vector<std::byte*> arena_bases;
  // Bytes per span-length region; 0 = region_bytes_for(reserve_bytes_per_node).
  std::size_t region_bytes = 0;
  // Fault injection: every Nth attempt to back a new span with RAM fails as
  // if the system had none (0 = never). For tests of the paths a real
  // shortage takes; uzswapd takes it from UZSWAP_FAULT_POOL_GROWTH.
  unsigned fail_growth_every = 0;
};

// A live object, as the owner of its handle knows it (for adopt_objects).
struct LiveObject {
  PoolHandle handle;
  std::uint32_t length;
};

struct ZPoolStats {
  std::uint64_t span_bytes = 0;      // RAM in spans, including cached empty ones
  std::uint64_t metadata_bytes = 0;  // span headers and free-span stacks
  std::uint64_t object_bytes = 0;    // sum of class sizes of live objects
  std::uint64_t objects = 0;
  std::uint64_t spans = 0;           // spans holding objects
  std::uint64_t cached_spans = 0;    // empty spans kept resident
  std::uint64_t alloc_failures = 0;
  // The reserve of populated spans: new spans an alloc took from it (hits)
  // or had to populate itself (misses, successful or not), spans the
  // refiller populated ahead of demand, and its populates that failed.
  std::uint64_t reserve_hits = 0;
  std::uint64_t reserve_misses = 0;
  std::uint64_t reserve_refills = 0;
  std::uint64_t reserve_refill_failures = 0;
  std::uint64_t reserve_bytes = 0;   // RAM in the reserve now (cached spans)
  std::uint64_t miss_populated_bytes = 0;  // RAM allocs populated themselves on a miss
  std::uint64_t pool_bytes() const noexcept { return span_bytes + metadata_bytes; }
};

struct CompactionStats {
  std::uint64_t draining_spans = 0;   // spans picked for evacuation
  std::uint64_t objects_to_move = 0;  // live objects in those spans
  std::uint64_t released_bytes = 0;   // RAM given back by end_compaction
};

class ZPool {
 public:
  explicit ZPool(const ZPoolOptions& options);  // throws std::system_error
  ~ZPool();
  ZPool(const ZPool&) = delete;
  ZPool& operator=(const ZPool&) = delete;

  // An object of `len` bytes (1..kPageSize) on `node` (< nodes()).
  // kNullHandle when no memory can be had.
  PoolHandle alloc(std::size_t len, unsigned node) noexcept;
  void free(PoolHandle handle) noexcept;
  std::byte* map(PoolHandle handle) const noexcept;

  static unsigned node_of(PoolHandle handle) noexcept;
  // The region size a reservation gives (0 = physical RAM): what a
  // SharedState must be made with.
  static std::size_t region_bytes_for(std::size_t reserve_bytes_per_node);
  // The region size for a pool limit (PageStoreOptions::max_pool_bytes, all
  // nodes together; 0 = no limit = physical RAM): any one span length on
  // any one node can take the whole limit plus what may pass it (see
  // kLimitSlackBytes), so no region runs out before the limit is reached.
  // The address space is then nodes * 8 * that, not nodes * 8 * RAM.
  static std::size_t region_bytes_for_limit(std::uint64_t pool_limit_bytes);
  // The largest pool limit regions of `region_bytes` hold: the inverse of
  // region_bytes_for_limit (regions an older process sized by RAM answer a
  // little less than RAM).
  static std::uint64_t pool_limit_for_region(std::size_t region_bytes);
  // Whether a pool can be made on regions of that size: they must tile
  // every span length and number their spans in 32 bits (16 TiB at most).
  static Parsed<> check_region_bytes(std::size_t region_bytes);

  // On a pool made on memfds a dead process filled: takes `objects` as the
  // live ones and rebuilds span headers, class lists and free stacks around
  // them; spans with no live object are given back to the system. Objects
  // whose handle cannot be one this pool made for their length (or that
  // another object already claims) are left out and returned, for the
  // owner to treat as lost. Call once, before any alloc; sorts `objects`.
  std::vector<PoolHandle> adopt_objects(std::vector<LiveObject>& objects);
  unsigned nodes() const noexcept { return static_cast<unsigned>(arenas_.size()); }
  const SizeClasses& classes() const noexcept { return classes_; }

  CompactionStats begin_compaction();
  bool needs_migration(PoolHandle handle) const noexcept;
  // Copies the object to a span that is not draining and returns the new
  // handle, or kNullHandle when no memory can be had. The old handle stays
  // valid: the caller frees it once nothing refers to it (so a process that
  // dies in between leaves one of the two referenced, never a freed one).
  // The caller holds whatever lock serialises this handle.
  PoolHandle migrate(PoolHandle handle, std::size_t len) noexcept;
  // Returns spans that could not be drained to service and releases drained
  // and cached empty spans. Adds the bytes released to `stats`.
  void end_compaction(CompactionStats& stats);

  // Tops up every node's reserve of populated spans (MADV_POPULATE_WRITE,
  // which may enter reclaim: never call it on the request path). Stops at
  // the first span the system cannot back. Returns the spans populated.
  // Thread-safe; meant for one background thread (the daemon's
  // uzswap-reserve) looping on refill_reserve() + wait_for_reserve_use().
  std::size_t refill_reserve() noexcept;
  // Blocks until an alloc took a span from a reserve running low (or
  // missed it), or wake_reserve_refiller() was called.
  void wait_for_reserve_use() noexcept;
  void wake_reserve_refiller() noexcept;

  ZPoolStats stats() const noexcept;
  // stats().reserve_refill_failures alone, cheaply (for the refiller).
  std::uint64_t reserve_refill_failures() const noexcept;
  // RAM in spans: a lock-free read for the store path's pool-limit check.
  std::uint64_t span_bytes() const noexcept;
  // The same for one node's arena.
  std::uint64_t span_bytes(unsigned node) const noexcept;

 private:
  struct SpanHeader;
  struct Region;
  struct ClassState;
  struct Arena;

  SpanHeader& header(unsigned node, unsigned pages, std::uint32_t span) const noexcept;
  // may_grow = false: from the reserve only, never a system call.
  std::uint32_t acquire_span(Arena& arena, unsigned pages, bool may_grow) noexcept;
  // grow_on_miss off: waits up to miss_wait for the refiller to put a span
  // of this length in the reserve, and takes it; kNoSpan if none came.
  std::uint32_t wait_for_refill(Arena& arena, Region& region) noexcept;
  bool populate_span(Region& region, std::uint32_t span) noexcept;
  void populate_metadata_ahead(Region& region) noexcept;
  std::uint32_t reserve_target(const Region& region) const noexcept;
  void want_refill() noexcept;
  void release_span(Arena& arena, unsigned pages, std::uint32_t span, bool to_cache) noexcept;
  void link_span(ClassState& cls, Region& region, std::uint32_t span) noexcept;
  void unlink_span(ClassState& cls, Region& region, std::uint32_t span) noexcept;
  void relink_if_moved(ClassState& cls, Region& region, std::uint32_t span,
                       unsigned old_group) noexcept;
  PoolHandle alloc_in_class(Arena& arena, unsigned class_index, bool may_grow) noexcept;

  SizeClasses classes_;
  ZPoolOptions options_;
  std::atomic<std::uint64_t> growth_attempts_{0};  // for fail_growth_every
  std::atomic<std::uint32_t> refill_wanted_{0};    // futex word for the refiller
  std::size_t region_bytes_;
  std::vector<std::unique_ptr<Arena>> arenas_;
};

// The reserve of a pool, as its refiller sees it: the daemon's
// uzswap-reserve thread loops on refill() + wait_for_use(), and stops it
// with wake_refiller(). A view (PageStore::reserve()), never on the request
// path.
class PoolReserve {
 public:
  explicit PoolReserve(ZPool& pool) noexcept : pool_(pool) {}
  std::size_t refill() noexcept { return pool_.refill_reserve(); }
  // Growths of the pool the kernel refused to the refiller, so far.
  std::uint64_t refill_failures() const noexcept { return pool_.reserve_refill_failures(); }
  void wait_for_use() noexcept { pool_.wait_for_reserve_use(); }
  void wake_refiller() noexcept { pool_.wake_reserve_refiller(); }

 private:
  ZPool& pool_;
};

}  // namespace uzswap
