#include "uzswap/pool/zpool.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/mempolicy.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <algorithm>
#include <cstring>
#include <string>
#include <system_error>

#include "uzswap/common/mutex.h"

namespace uzswap {

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace {

constexpr std::uint32_t kNoSpan = UINT32_MAX;
// Pool metadata is populated this many spans at a time, and again once
// fewer than half of them are left ahead of the high-water mark.
constexpr std::uint32_t kMetadataChunk = 2048;
constexpr std::uint16_t kNoObject = UINT16_MAX;

// Span lists of a class: four fullness quarters of partly used spans (alloc
// takes from the fullest), full spans, and spans being drained by compaction.
constexpr unsigned kFullList = 4;
constexpr unsigned kDrainingList = 5;
constexpr unsigned kListCount = 6;

unsigned list_for(unsigned inuse, unsigned objs) {
  return inuse == objs ? kFullList : inuse * 4 / objs;
}

// Handle layout: valid:1 | unused:7 | node:6 | pages-1:3 | span:32 | offset:15.
constexpr unsigned kOffsetBits = 15;
constexpr unsigned kSpanShift = kOffsetBits;
constexpr unsigned kPagesShift = kSpanShift + 32;
constexpr unsigned kNodeShift = kPagesShift + 3;
constexpr PoolHandle kValidBit = PoolHandle{1} << 63;
constexpr unsigned kMaxNodes = 64;

PoolHandle make_handle(unsigned node, unsigned pages, std::uint32_t span, std::uint32_t offset) {
  return kValidBit | (PoolHandle{node} << kNodeShift) | (PoolHandle{pages - 1} << kPagesShift) |
         (PoolHandle{span} << kSpanShift) | offset;
}
unsigned handle_pages(PoolHandle h) { return static_cast<unsigned>((h >> kPagesShift) & 7) + 1; }
std::uint32_t handle_span(PoolHandle h) { return static_cast<std::uint32_t>(h >> kSpanShift); }
std::uint32_t handle_offset(PoolHandle h) {
  return static_cast<std::uint32_t>(h & ((1u << kOffsetBits) - 1));
}

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

}  // namespace

struct ZPool::SpanHeader {
  std::uint32_t prev;
  std::uint32_t next;
  std::uint16_t inuse;
  std::uint16_t free_head;    // first freed object, chained through the objects
  std::uint16_t carved;       // objects [carved, objs) have never been handed out
  std::uint16_t class_index;  // set while the span belongs to a class
  std::uint8_t list;
  std::uint8_t draining;      // read without the class lock: atomic_ref only
};

// A region holds the spans of one length on one node.
struct ZPool::Region {
  Mutex lock;
  std::byte* base = nullptr;
  off_t file_offset = 0;
  unsigned pages = 0;
  std::uint32_t capacity = 0;
  MappedArray<SpanHeader> headers;
  MappedArray<std::uint32_t> cold;  // free spans with no RAM behind them
  MappedArray<std::uint32_t> warm;  // free spans still resident
  std::uint32_t cold_top GUARDED_BY(lock) = 0;
  std::uint32_t warm_top GUARDED_BY(lock) = 0;
  std::uint32_t high_water GUARDED_BY(lock) = 0;  // spans ever used
  // Spans whose header and free-stack entries are populated (backed and,
  // under mlockall, locked): the refiller keeps it ahead of high_water, so
  // the request path never faults on pool metadata.
  std::atomic<std::uint32_t> meta_ready{0};

  std::size_t span_bytes() const { return std::size_t{pages} * kPageSize; }
};

struct ZPool::ClassState {
  Mutex lock;
  std::uint32_t heads[kListCount] GUARDED_BY(lock);
  std::uint64_t spans GUARDED_BY(lock) = 0;
  std::uint64_t inuse GUARDED_BY(lock) = 0;
  ClassState() { std::fill(std::begin(heads), std::end(heads), kNoSpan); }
};

struct ZPool::Arena {
  unsigned node = 0;
  int fd = -1;
  std::byte* base = nullptr;
  std::size_t mapped_bytes = 0;
  bool owns_mapping = true;
  std::array<Region, SizeClasses::kMaxPagesPerSpan> regions;
  std::unique_ptr<ClassState[]> classes;

  std::atomic<std::uint64_t> span_bytes{0};
  std::atomic<std::uint64_t> cached_bytes{0};
  std::atomic<std::uint64_t> alloc_failures{0};
  std::atomic<std::uint64_t> released_bytes{0};
  std::atomic<std::uint64_t> reserve_hits{0};
  std::atomic<std::uint64_t> reserve_misses{0};
  std::atomic<std::uint64_t> reserve_refills{0};
  std::atomic<std::uint64_t> reserve_refill_failures{0};
  std::atomic<std::uint64_t> miss_populated_bytes{0};

  Region& region(unsigned pages) { return regions[pages - 1]; }

  // Gives the RAM behind [offset, offset + bytes) back to the system; works
  // on locked memory, unlike MADV_DONTNEED.
  bool punch(off_t offset, std::size_t bytes) const {
    if (fd >= 0) return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, static_cast<off_t>(bytes)) == 0;
    return madvise(base + offset, bytes, MADV_REMOVE) == 0;
  }

  ~Arena() {
    if (base != nullptr && owns_mapping) munmap(base, mapped_bytes);
    if (fd >= 0) close(fd);
  }
};

std::size_t ZPool::region_bytes_for(std::size_t reserve) {
  if (reserve == 0)
    reserve = static_cast<std::size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  // Every span length must tile its region; 840 = lcm(1..8).
  return round_up(reserve, 840 * kPageSize);
}

namespace {

// What may pass the pool limit in one region, on top of the limit itself.
// Spans are all alike in a region and a freed one is reused before the
// region grows, so the address space does not fragment: a region runs out
// only once its spans in use or in the reserve fill it. Past the limit go:
// the reserve of empty spans (empty_span_cache_bytes per node, topped up
// whatever the limit) and the stores admitted just under the limit (each
// may take one new span of up to 8 pages: one per serving thread). A fixed
// 64 MiB covers both many times over; a sixteenth of the limit more is a
// margin for what this reckoning missed. It costs address space only.
constexpr std::uint64_t kLimitSlackBytes = 64u << 20;
constexpr std::uint64_t kLimitSlackShare = 16;
// Far above any region check_region_bytes() allows; keeps the sums exact.
constexpr std::uint64_t kLargestLimit = std::uint64_t{1} << 56;

std::uint64_t proportional_slack(std::uint64_t limit) { return limit + limit / kLimitSlackShare; }
std::uint64_t limit_with_slack(std::uint64_t limit) { return proportional_slack(limit) + kLimitSlackBytes; }

}  // namespace

std::size_t ZPool::region_bytes_for_limit(std::uint64_t limit) {
  if (limit == 0) return region_bytes_for(0);
  return region_bytes_for(limit_with_slack(std::min(limit, kLargestLimit)));
}

std::uint64_t ZPool::pool_limit_for_region(std::size_t region_bytes) {
  // region_bytes_for_limit(L) <= R  <=>  limit_with_slack(L) <= R, R being a
  // whole number of tiles: the largest such L, found from below.
  if (region_bytes <= kLimitSlackBytes) return 0;
  const std::uint64_t room = std::min<std::uint64_t>(region_bytes, kLargestLimit) - kLimitSlackBytes;
  std::uint64_t limit = room / (kLimitSlackShare + 1) * kLimitSlackShare;  // fits: 17/16 of it is <= room
  while (proportional_slack(limit + 1) <= room) ++limit;                    // at most 16 steps
  return limit;
}

Parsed<> ZPool::check_region_bytes(std::size_t region_bytes) {
  if (region_bytes == 0 || region_bytes % (840 * kPageSize) != 0)
    return std::unexpected("pool region size must tile every span length");
  if (region_bytes / kPageSize > UINT32_MAX)
    return std::unexpected("pool reservation too large (" + std::to_string(region_bytes >> 30) +
                           " GiB a span length, 16 TiB at most)");
  return {};
}

ZPool::ZPool(const ZPoolOptions& options) : options_(options) {
  if (options_.nodes == 0 || options_.nodes > kMaxNodes)
    throw std::system_error(EINVAL, std::generic_category(),
                            "pool nodes must be 1.." + std::to_string(kMaxNodes));
  region_bytes_ = options_.region_bytes != 0 ? options_.region_bytes
                                              : region_bytes_for(options_.reserve_bytes_per_node);
  if (const auto valid = check_region_bytes(region_bytes_); !valid)
    throw std::system_error(EINVAL, std::generic_category(), valid.error());
  if (!options_.arena_bases.empty() && options_.arena_bases.size() != options_.nodes)
    throw std::system_error(EINVAL, std::generic_category(), "one arena per pool node");

  for (unsigned node = 0; node < options_.nodes; ++node) {
    auto arena = std::make_unique<Arena>();
    arena->node = node;
    arena->mapped_bytes = region_bytes_ * SizeClasses::kMaxPagesPerSpan;
    if (!options_.arena_bases.empty()) {
      arena->base = options_.arena_bases[node];
      arena->owns_mapping = false;
      // Under mlockall(MCL_FUTURE) the segment was attached locked, and
      // MADV_REMOVE refuses locked ranges; SHM_LOCK keeps it in RAM anyway.
      // The system call itself: AddressSanitizer's munlock() is a no-op,
      // which left the arena locked and no span could be given back.
      if (syscall(SYS_munlock, arena->base, arena->mapped_bytes) != 0)
        throw std::system_error(errno, std::generic_category(), "munlock pool segment");
    } else {
      const std::string name = "uzswap-pool-node" + std::to_string(node);
      arena->fd = memfd_create(name.c_str(), MFD_CLOEXEC);
      if (arena->fd < 0) throw std::system_error(errno, std::generic_category(), "memfd_create");
      if (ftruncate(arena->fd, static_cast<off_t>(arena->mapped_bytes)) != 0)
        throw std::system_error(errno, std::generic_category(), "ftruncate pool memfd");
      void* base = mmap(nullptr, arena->mapped_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                        arena->fd, 0);
      if (base == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap pool arena");
      arena->base = static_cast<std::byte*>(base);
      if (options_.lock_memory && mlock2(base, arena->mapped_bytes, MLOCK_ONFAULT) != 0)
        throw std::system_error(errno, std::generic_category(), "mlock2 pool arena");
    }
    if (options_.bind_nodes) {
      unsigned long mask[kMaxNodes / (8 * sizeof(unsigned long))] = {};
      mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
      if (syscall(SYS_mbind, arena->base, arena->mapped_bytes, MPOL_BIND, mask, kMaxNodes + 1, 0) != 0)
        throw std::system_error(errno, std::generic_category(),
                                "mbind pool arena to node " + std::to_string(node));
    }
    for (unsigned pages = 1; pages <= SizeClasses::kMaxPagesPerSpan; ++pages) {
      Region& region = arena->region(pages);
      region.pages = pages;
      region.file_offset = static_cast<off_t>((pages - 1) * region_bytes_);
      region.base = arena->base + region.file_offset;
      region.capacity = static_cast<std::uint32_t>(region_bytes_ / region.span_bytes());
      region.headers = MappedArray<SpanHeader>(region.capacity);
      region.cold = MappedArray<std::uint32_t>(region.capacity);
      region.warm = MappedArray<std::uint32_t>(region.capacity);
      populate_metadata_ahead(region);
    }
    arena->classes = std::make_unique<ClassState[]>(classes_.count());
    arenas_.push_back(std::move(arena));
  }
}

ZPool::~ZPool() = default;

unsigned ZPool::node_of(PoolHandle handle) noexcept {
  return static_cast<unsigned>((handle >> kNodeShift) & (kMaxNodes - 1));
}

ZPool::SpanHeader& ZPool::header(unsigned node, unsigned pages, std::uint32_t span) const noexcept {
  return arenas_[node]->region(pages).headers[span];
}

std::byte* ZPool::map(PoolHandle handle) const noexcept {
  assert(handle & kValidBit);
  const Region& region = arenas_[node_of(handle)]->region(handle_pages(handle));
  return region.base + std::size_t{handle_span(handle)} * region.span_bytes() +
         handle_offset(handle);
}

std::uint32_t ZPool::reserve_target(const Region& region) const noexcept {
  // The node's reserve shared by the eight span lengths, one span at least.
  const std::size_t share = options_.empty_span_cache_bytes / SizeClasses::kMaxPagesPerSpan;
  if (options_.empty_span_cache_bytes == 0) return 0;
  return static_cast<std::uint32_t>(std::max<std::size_t>(1, share / region.span_bytes()));
}

void ZPool::want_refill() noexcept {
  // A futex wake only when the refiller is not already due: no lock, no
  // allocation, at most one system call per drop of the reserve.
  if (refill_wanted_.exchange(1, std::memory_order_release) == 0) refill_wanted_.notify_one();
}

void ZPool::wake_reserve_refiller() noexcept { want_refill(); }

void ZPool::wait_for_reserve_use() noexcept {
  refill_wanted_.wait(0, std::memory_order_acquire);
  refill_wanted_.store(0, std::memory_order_relaxed);
}

void ZPool::populate_metadata_ahead(Region& region) noexcept {
  std::uint32_t high_water;
  {
    MutexLock guard(region.lock);
    high_water = region.high_water;
  }
  const std::uint32_t ready = region.meta_ready.load(std::memory_order_relaxed);
  if (ready >= region.capacity || ready >= high_water + kMetadataChunk / 2) return;
  const std::uint32_t upto = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(region.capacity, std::uint64_t{high_water} + kMetadataChunk));
  // Best effort: what the kernel cannot back now is faulted in on use.
  if (region.headers.populate(ready, upto - ready) && region.cold.populate(ready, upto - ready) &&
      region.warm.populate(ready, upto - ready))
    region.meta_ready.store(upto, std::memory_order_relaxed);
}

bool ZPool::populate_span(Region& region, std::uint32_t span) noexcept {
  // Back the span with RAM and map it now, in one call, so a shortage is an
  // error here rather than a fault on first touch.
  std::byte* start = region.base + std::size_t{span} * region.span_bytes();
  const unsigned every = options_.fail_growth_every;
  const bool injected = every != 0 && growth_attempts_.fetch_add(1, std::memory_order_relaxed) % every == every - 1;
  return !injected && madvise(start, region.span_bytes(), MADV_POPULATE_WRITE) == 0;
}

std::uint32_t ZPool::acquire_span(Arena& arena, unsigned pages, bool may_grow) noexcept {
  Region& region = arena.region(pages);
  std::uint32_t span;
  {
    UniqueLock guard(region.lock);
    if (region.warm_top > 0) {
      span = region.warm[--region.warm_top];
      const bool low = region.warm_top * 2 < reserve_target(region);
      guard.unlock();
      arena.cached_bytes.fetch_sub(region.span_bytes(), std::memory_order_relaxed);
      arena.reserve_hits.fetch_add(1, std::memory_order_relaxed);
      if (low) want_refill();  // ahead of demand: below half of the target
      return span;
    }
    if (!may_grow) return kNoSpan;
    arena.reserve_misses.fetch_add(1, std::memory_order_relaxed);
    if (!options_.grow_on_miss) {
      guard.unlock();
      return wait_for_refill(arena, region);
    }
    if (region.cold_top > 0) {
      span = region.cold[--region.cold_top];
    } else if (region.high_water < region.capacity) {
      span = region.high_water++;
    } else {
      return kNoSpan;
    }
  }
  want_refill();
  // The reserve is empty: one populate (zswap's __GFP_NORETRY), and a
  // failure is final for this store, which then goes to the next tier.
  if (!populate_span(region, span)) {
    MutexLock guard(region.lock);
    region.cold[region.cold_top++] = span;
    return kNoSpan;
  }
  arena.span_bytes.fetch_add(region.span_bytes(), std::memory_order_relaxed);
  arena.miss_populated_bytes.fetch_add(region.span_bytes(), std::memory_order_relaxed);
  return span;
}

std::uint32_t ZPool::wait_for_refill(Arena& arena, Region& region) noexcept {
  want_refill();
  // Short sleeps, not a futex: the refiller puts spans in one at a time,
  // and a store needs only the first (clock_gettime is the vDSO's).
  const auto deadline = std::chrono::steady_clock::now() + options_.miss_wait;
  for (;;) {
    const timespec pause{0, 20000};  // 20 us
    nanosleep(&pause, nullptr);
    {
      MutexLock guard(region.lock);
      if (region.warm_top > 0) {
        const std::uint32_t span = region.warm[--region.warm_top];
        arena.cached_bytes.fetch_sub(region.span_bytes(), std::memory_order_relaxed);
        return span;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) return kNoSpan;
    want_refill();
  }
}

std::size_t ZPool::refill_reserve() noexcept {
  std::size_t refilled = 0;
  for (auto& arena_ptr : arenas_) {
    Arena& arena = *arena_ptr;
    for (Region& region : arena.regions) {
      populate_metadata_ahead(region);
      const std::uint32_t target = reserve_target(region);
      for (;;) {
        std::uint32_t span;
        {
          MutexLock guard(region.lock);
          if (region.warm_top >= target) break;
          if (region.cold_top > 0) span = region.cold[--region.cold_top];
          else if (region.high_water < region.capacity) span = region.high_water++;
          else break;
        }
        const bool backed = populate_span(region, span);
        MutexLock guard(region.lock);
        if (!backed) {
          // On to the next span length: one failure each at most per call,
          // so a shortage costs eight system calls, and a growth that failed
          // once (as under a cgroup's limit, or injected) starves no length.
          region.cold[region.cold_top++] = span;
          arena.reserve_refill_failures.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        arena.span_bytes.fetch_add(region.span_bytes(), std::memory_order_relaxed);
        arena.cached_bytes.fetch_add(region.span_bytes(), std::memory_order_relaxed);
        region.warm[region.warm_top++] = span;
        arena.reserve_refills.fetch_add(1, std::memory_order_relaxed);
        ++refilled;
      }
    }
  }
  return refilled;
}

void ZPool::release_span(Arena& arena, unsigned pages, std::uint32_t span, bool to_cache) noexcept {
  Region& region = arena.region(pages);
  const std::size_t bytes = region.span_bytes();
  if (to_cache) {
    std::uint64_t cached = arena.cached_bytes.load(std::memory_order_relaxed);
    while (cached + bytes <= options_.empty_span_cache_bytes) {
      if (arena.cached_bytes.compare_exchange_weak(cached, cached + bytes,
                                                   std::memory_order_relaxed)) {
        MutexLock guard(region.lock);
        region.warm[region.warm_top++] = span;
        return;
      }
    }
  }
  const off_t offset = region.file_offset + static_cast<off_t>(span * bytes);
  // Punching a hole in a memfd cannot fail for a valid range; if it ever did,
  // the span stays resident and is still reusable.
  const bool punched = arena.punch(offset, bytes);
  MutexLock guard(region.lock);
  if (punched) {
    arena.span_bytes.fetch_sub(bytes, std::memory_order_relaxed);
    arena.released_bytes.fetch_add(bytes, std::memory_order_relaxed);
    region.cold[region.cold_top++] = span;
  } else {
    arena.cached_bytes.fetch_add(bytes, std::memory_order_relaxed);
    region.warm[region.warm_top++] = span;
  }
}

void ZPool::link_span(ClassState& cls, Region& region, std::uint32_t span) noexcept REQUIRES(cls.lock) {
  SpanHeader& h = region.headers[span];
  h.prev = kNoSpan;
  h.next = cls.heads[h.list];
  if (h.next != kNoSpan) region.headers[h.next].prev = span;
  cls.heads[h.list] = span;
}

void ZPool::unlink_span(ClassState& cls, Region& region, std::uint32_t span) noexcept REQUIRES(cls.lock) {
  SpanHeader& h = region.headers[span];
  if (h.prev != kNoSpan) region.headers[h.prev].next = h.next;
  else cls.heads[h.list] = h.next;
  if (h.next != kNoSpan) region.headers[h.next].prev = h.prev;
}

void ZPool::relink_if_moved(ClassState& cls, Region& region, std::uint32_t span,
                            unsigned old_list) noexcept REQUIRES(cls.lock) {
  SpanHeader& h = region.headers[span];
  if (old_list == kDrainingList) return;
  const unsigned new_list = list_for(h.inuse, classes_[h.class_index].objs_per_span);
  if (new_list == old_list) return;
  unlink_span(cls, region, span);
  h.list = static_cast<std::uint8_t>(new_list);
  link_span(cls, region, span);
}

PoolHandle ZPool::alloc(std::size_t len, unsigned node) noexcept {
  assert(len >= 1 && len <= kPageSize && node < arenas_.size());
  return alloc_in_class(*arenas_[node], classes_.index_for(len), /*may_grow=*/true);
}

PoolHandle ZPool::alloc_in_class(Arena& arena, unsigned class_index, bool may_grow) noexcept {
  const SizeClass& sc = classes_[class_index];
  ClassState& cls = arena.classes[class_index];
  Region& region = arena.region(sc.pages_per_span);

  UniqueLock guard(cls.lock);
  std::uint32_t span = kNoSpan;
  for (unsigned list = kFullList; list-- > 0 && span == kNoSpan;) span = cls.heads[list];
  if (span == kNoSpan) {
    // Take a new span without holding the class lock across the syscall.
    guard.unlock();
    span = acquire_span(arena, sc.pages_per_span, may_grow);
    if (span == kNoSpan) {
      if (may_grow) arena.alloc_failures.fetch_add(1, std::memory_order_relaxed);
      return kNullHandle;
    }
    guard.lock();
    SpanHeader& fresh = region.headers[span];
    fresh.inuse = 0;
    fresh.free_head = kNoObject;
    fresh.carved = 0;
    fresh.class_index = static_cast<std::uint16_t>(class_index);
    fresh.list = 0;
    std::atomic_ref(fresh.draining).store(0, std::memory_order_relaxed);
    link_span(cls, region, span);
    ++cls.spans;
  }

  SpanHeader& h = region.headers[span];
  std::byte* span_base = region.base + std::size_t{span} * region.span_bytes();
  std::uint16_t index;
  if (h.free_head != kNoObject) {
    index = h.free_head;
    std::memcpy(&h.free_head, span_base + std::size_t{index} * sc.size, sizeof(h.free_head));
  } else {
    assert(h.carved < sc.objs_per_span);
    index = h.carved++;
  }
  const unsigned old_list = h.list;
  ++h.inuse;
  ++cls.inuse;
  relink_if_moved(cls, region, span, old_list);
  guard.unlock();

  return make_handle(arena.node, sc.pages_per_span, span,
                     static_cast<std::uint32_t>(index) * sc.size);
}

void ZPool::free(PoolHandle handle) noexcept {
  assert(handle & kValidBit);
  Arena& arena = *arenas_[node_of(handle)];
  const unsigned pages = handle_pages(handle);
  const std::uint32_t span = handle_span(handle);
  Region& region = arena.region(pages);
  SpanHeader& h = region.headers[span];
  // The span cannot change class while it holds this live object.
  const unsigned class_index = h.class_index;
  const SizeClass& sc = classes_[class_index];
  ClassState& cls = arena.classes[class_index];

  bool empty;
  {
    MutexLock guard(cls.lock);
    const std::uint32_t offset = handle_offset(handle);
    assert(offset % sc.size == 0 && h.inuse > 0);
    std::memcpy(region.base + std::size_t{span} * region.span_bytes() + offset, &h.free_head,
                sizeof(h.free_head));
    h.free_head = static_cast<std::uint16_t>(offset / sc.size);
    --h.inuse;
    --cls.inuse;
    empty = h.inuse == 0;
    if (empty) {
      unlink_span(cls, region, span);
      std::atomic_ref(h.draining).store(0, std::memory_order_relaxed);
      --cls.spans;
    } else {
      relink_if_moved(cls, region, span, h.list);
    }
  }
  if (empty) release_span(arena, pages, span, /*to_cache=*/true);
}

CompactionStats ZPool::begin_compaction() {
  CompactionStats result;
  for (auto& arena_ptr : arenas_) {
    Arena& arena = *arena_ptr;
    for (unsigned c = 0; c < classes_.count(); ++c) {
      const SizeClass& sc = classes_[c];
      ClassState& cls = arena.classes[c];
      Region& region = arena.region(sc.pages_per_span);
      MutexLock guard(cls.lock);
      const std::uint64_t needed = (cls.inuse + sc.objs_per_span - 1) / sc.objs_per_span;
      std::uint64_t excess = cls.spans - needed;
      // Sparsest quarter first; full spans are never drained.
      for (unsigned list = 0; list < kFullList && excess > 0; ++list) {
        while (excess > 0 && cls.heads[list] != kNoSpan) {
          const std::uint32_t span = cls.heads[list];
          SpanHeader& h = region.headers[span];
          unlink_span(cls, region, span);
          h.list = kDrainingList;
          std::atomic_ref(h.draining).store(1, std::memory_order_relaxed);
          link_span(cls, region, span);
          --excess;
          ++result.draining_spans;
          result.objects_to_move += h.inuse;
        }
      }
    }
  }
  // released_bytes starts at minus the running total, so that adding the
  // total again in end_compaction() leaves what was released in between.
  for (auto& arena : arenas_)
    result.released_bytes -= arena->released_bytes.load(std::memory_order_relaxed);
  return result;
}

bool ZPool::needs_migration(PoolHandle handle) const noexcept {
  SpanHeader& h = header(node_of(handle), handle_pages(handle), handle_span(handle));
  return std::atomic_ref(h.draining).load(std::memory_order_relaxed) != 0;
}

PoolHandle ZPool::migrate(PoolHandle handle, std::size_t len) noexcept {
  // The caller holds a slot lock: no system call here, only room the pool
  // already has (the spans not draining, or the reserve).
  assert(len >= 1 && len <= kPageSize);
  const PoolHandle moved = alloc_in_class(*arenas_[node_of(handle)], classes_.index_for(len), /*may_grow=*/false);
  if (moved == kNullHandle) return kNullHandle;
  std::memcpy(map(moved), map(handle), len);
  return moved;
}

void ZPool::end_compaction(CompactionStats& stats) {
  for (auto& arena_ptr : arenas_) {
    Arena& arena = *arena_ptr;
    for (unsigned c = 0; c < classes_.count(); ++c) {
      const SizeClass& sc = classes_[c];
      ClassState& cls = arena.classes[c];
      Region& region = arena.region(sc.pages_per_span);
      MutexLock guard(cls.lock);
      while (cls.heads[kDrainingList] != kNoSpan) {
        const std::uint32_t span = cls.heads[kDrainingList];
        SpanHeader& h = region.headers[span];
        unlink_span(cls, region, span);
        std::atomic_ref(h.draining).store(0, std::memory_order_relaxed);
        h.list = static_cast<std::uint8_t>(list_for(h.inuse, sc.objs_per_span));
        link_span(cls, region, span);
      }
    }
    // Give the empty-span cache (the reserve) back too: a compaction is
    // asked for when RAM is wanted; the refiller tops the reserve up again.
    // As many as were cached when it began: a span whose punch fails goes
    // back on the stack, and must not be taken again (that looped forever).
    for (Region& region : arena.regions) {
      std::uint32_t cached;
      {
        MutexLock guard(region.lock);
        cached = region.warm_top;
      }
      for (; cached > 0; --cached) {
        std::uint32_t span;
        {
          MutexLock guard(region.lock);
          if (region.warm_top == 0) break;
          span = region.warm[--region.warm_top];
        }
        arena.cached_bytes.fetch_sub(region.span_bytes(), std::memory_order_relaxed);
        release_span(arena, region.pages, span, /*to_cache=*/false);
      }
    }
  }
  for (auto& arena : arenas_)
    stats.released_bytes += arena->released_bytes.load(std::memory_order_relaxed);
  want_refill();
}

// Not checked (nor its give_back): adoption runs once, before any alloc and
// before the pool is shared with another thread, and builds the class and
// region state without their locks.
std::vector<PoolHandle> ZPool::adopt_objects(std::vector<LiveObject>& objects) NO_THREAD_SAFETY_ANALYSIS {
  std::vector<PoolHandle> rejected;
  std::sort(objects.begin(), objects.end(),
            [](const LiveObject& a, const LiveObject& b) { return a.handle < b.handle; });
  // Same handle twice: neither owner can be trusted with the bytes.
  for (std::size_t i = 1; i < objects.size(); ++i)
    if (objects[i].handle == objects[i - 1].handle) {
      rejected.push_back(objects[i - 1].handle);
      rejected.push_back(objects[i].handle);
    }
  const auto valid = [&](const LiveObject& o) -> int {  // class index, or -1
    if (!(o.handle & kValidBit) || o.length == 0 || o.length > kPageSize) return -1;
    if ((o.handle >> (kNodeShift + 6)) & 0x7f) return -1;  // unused bits
    const unsigned node = node_of(o.handle);
    if (node >= arenas_.size()) return -1;
    const unsigned c = classes_.index_for(o.length);
    const SizeClass& sc = classes_[c];
    if (sc.pages_per_span != handle_pages(o.handle)) return -1;
    const Region& region = arenas_[node]->region(sc.pages_per_span);
    const std::uint32_t offset = handle_offset(o.handle);
    if (handle_span(o.handle) >= region.capacity || offset % sc.size != 0 || offset / sc.size >= sc.objs_per_span)
      return -1;
    return static_cast<int>(c);
  };

  // Objects sorted by handle come grouped by (node, span length, span), in
  // offset order: one group is one span.
  struct SpanUse {
    unsigned node, pages;
    std::uint32_t span;
  };
  std::vector<SpanUse> used;
  std::size_t i = 0;
  while (i < objects.size()) {
    const PoolHandle span_key = objects[i].handle >> kSpanShift;
    std::size_t end = i;
    while (end < objects.size() && (objects[end].handle >> kSpanShift) == span_key) ++end;
    // The span's class is the one its first valid object names; objects
    // that disagree are not this pool's.
    int cls_index = -1;
    std::uint16_t inuse = 0;
    std::uint16_t last = kNoObject;
    std::uint16_t free_head = kNoObject;
    const unsigned node = node_of(objects[i].handle);
    const unsigned pages = handle_pages(objects[i].handle);
    const std::uint32_t span = handle_span(objects[i].handle);
    for (std::size_t k = i; k < end; ++k) {
      const LiveObject& o = objects[k];
      if (k > i && o.handle == objects[k - 1].handle) continue;  // already rejected
      if (k + 1 < end && o.handle == objects[k + 1].handle) continue;
      const int c = valid(o);
      if (c < 0 || (cls_index >= 0 && c != cls_index)) {
        rejected.push_back(o.handle);
        continue;
      }
      cls_index = c;
      const SizeClass& sc = classes_[static_cast<unsigned>(c)];
      const auto index = static_cast<std::uint16_t>(handle_offset(o.handle) / sc.size);
      // Chain the never-live objects below this one into the free list.
      Region& region = arenas_[node]->region(pages);
      std::byte* span_base = region.base + std::size_t{span} * region.span_bytes();
      for (std::uint16_t gap = last == kNoObject ? 0 : last + 1; gap < index; ++gap) {
        std::memcpy(span_base + std::size_t{gap} * sc.size, &free_head, sizeof(free_head));
        free_head = gap;
      }
      last = index;
      ++inuse;
    }
    i = end;
    if (cls_index < 0) continue;
    const unsigned c = static_cast<unsigned>(cls_index);
    const SizeClass& sc = classes_[c];
    Arena& arena = *arenas_[node];
    Region& region = arena.region(pages);
    ClassState& cls = arena.classes[c];
    SpanHeader& h = region.headers[span];
    h.inuse = inuse;
    h.free_head = free_head;
    h.carved = static_cast<std::uint16_t>(last + 1);
    h.class_index = static_cast<std::uint16_t>(c);
    h.list = static_cast<std::uint8_t>(list_for(inuse, sc.objs_per_span));
    h.draining = 0;
    link_span(cls, region, span);
    ++cls.spans;
    cls.inuse += inuse;
    arena.span_bytes.fetch_add(region.span_bytes(), std::memory_order_relaxed);
    region.high_water = std::max(region.high_water, span + 1);
    used.push_back({node, pages, span});
  }

  // Every other span of every region goes back to the system (the dead
  // process may have left cached or half-freed ones resident), and the
  // spans in use are mapped and locked here now rather than on a request.
  std::size_t u = 0;
  for (auto& arena_ptr : arenas_) {
    Arena& arena = *arena_ptr;
    for (Region& region : arena.regions) {
      std::uint32_t next_free = 0;
      const auto give_back = [&](std::uint32_t from, std::uint32_t to) NO_THREAD_SAFETY_ANALYSIS {
        if (from >= to) return;
        arena.punch(region.file_offset + static_cast<off_t>(std::size_t{from} * region.span_bytes()),
                    std::size_t{to - from} * region.span_bytes());
        // Below the high-water mark they are reusable cold spans.
        for (std::uint32_t s = std::min(to, region.high_water); s-- > from;) region.cold[region.cold_top++] = s;
      };
      const auto populate = [&](std::uint32_t from, std::uint32_t to) {
        if (from < to)
          madvise(region.base + std::size_t{from} * region.span_bytes(), std::size_t{to - from} * region.span_bytes(),
                  MADV_POPULATE_WRITE);
      };
      std::uint32_t run_start = 0;  // spans in use, [run_start, next_free)
      while (u < used.size() && used[u].node == arena.node && used[u].pages == region.pages) {
        const std::uint32_t span = used[u++].span;
        if (span != next_free) {
          populate(run_start, next_free);
          give_back(next_free, span);
          run_start = span;
        }
        next_free = span + 1;
      }
      populate(run_start, next_free);
      give_back(next_free, region.capacity);
      populate_metadata_ahead(region);
    }
  }
  return rejected;
}

std::uint64_t ZPool::span_bytes() const noexcept {
  std::uint64_t total = 0;
  for (const auto& arena : arenas_) total += arena->span_bytes.load(std::memory_order_relaxed);
  return total;
}

std::uint64_t ZPool::span_bytes(unsigned node) const noexcept {
  return arenas_[node]->span_bytes.load(std::memory_order_relaxed);
}

std::uint64_t ZPool::reserve_refill_failures() const noexcept {
  std::uint64_t n = 0;
  for (const auto& arena : arenas_) n += arena->reserve_refill_failures.load(std::memory_order_relaxed);
  return n;
}

ZPoolStats ZPool::stats() const noexcept {
  ZPoolStats s;
  for (const auto& arena_ptr : arenas_) {
    Arena& arena = *arena_ptr;
    s.span_bytes += arena.span_bytes.load(std::memory_order_relaxed);
    // Object and span counts come from the classes, not from counters on
    // the alloc/free path.
    for (unsigned c = 0; c < classes_.count(); ++c) {
      ClassState& cls = arena.classes[c];
      MutexLock guard(cls.lock);
      s.objects += cls.inuse;
      s.object_bytes += cls.inuse * classes_[c].size;
      s.spans += cls.spans;
    }
    s.alloc_failures += arena.alloc_failures.load(std::memory_order_relaxed);
    s.reserve_hits += arena.reserve_hits.load(std::memory_order_relaxed);
    s.reserve_misses += arena.reserve_misses.load(std::memory_order_relaxed);
    s.reserve_refills += arena.reserve_refills.load(std::memory_order_relaxed);
    s.reserve_refill_failures += arena.reserve_refill_failures.load(std::memory_order_relaxed);
    s.reserve_bytes += arena.cached_bytes.load(std::memory_order_relaxed);
    s.miss_populated_bytes += arena.miss_populated_bytes.load(std::memory_order_relaxed);
    for (Region& region : arena.regions) {
      MutexLock guard(region.lock);
      s.cached_spans += region.warm_top;
      // An upper bound on the pages of the header array and of both free-span
      // stacks populated or touched so far.
      const std::size_t spans = std::max(region.high_water, region.meta_ready.load(std::memory_order_relaxed));
      s.metadata_bytes += round_up(spans * (sizeof(SpanHeader) + 2 * sizeof(std::uint32_t)), kPageSize);
    }
  }
  return s;
}

}  // namespace uzswap
