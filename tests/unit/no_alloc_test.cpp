// Proves the request path allocates nothing: malloc and friends are wrapped
// in this binary and counted while store/load/invalidate run. Built only
// without sanitizers, which bring their own allocator.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>

#include "uzswap/store/page_store.h"
#include "uzswap/testing/page_mix.h"

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
}

namespace {
thread_local bool t_counting = false;
std::atomic<unsigned> g_allocations{0};
void note() {
  if (t_counting) g_allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* malloc(std::size_t n) {
  note();
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
  note();
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
  note();
  return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t align, std::size_t n) {
  note();
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, std::size_t align, std::size_t n) {
  note();
  *out = __libc_memalign(align, n);
  return *out ? 0 : ENOMEM;
}
}

namespace uzswap {
namespace {

TEST(RequestPath, StoreLoadInvalidateAllocateNothingOncePrepared) {
  PageStoreOptions o;
  o.slots = 4096;
  o.pool.reserve_bytes_per_node = 64u << 20;
  PageStore store(o);
  PageStore::prepare_thread();
  std::array<std::byte, kPageSize> page, out;

  t_counting = true;
  for (int round = 0; round < 3; ++round) {
    store.set_codec(round == 1 ? Codec::zstd : Codec::lz4, round == 1 ? 19 : 1);
    for (Slot s = 0; s < 4096; ++s) {
      testing::make_mixed_page(s * 31 + round, page);
      ASSERT_TRUE(store.store(s, page).has_value());
    }
    for (Slot s = 0; s < 4096; ++s) ASSERT_TRUE(store.load(s, out).has_value());
    ASSERT_TRUE(store.invalidate(0, 2048).has_value());
  }
  t_counting = false;
  EXPECT_EQ(g_allocations.load(), 0u);
}

TEST(RequestPath, TheCounterSeesAllocations) {
  t_counting = true;
  void* p = std::malloc(100);
  t_counting = false;
  std::free(p);
  EXPECT_GE(g_allocations.load(), 1u);
}

}  // namespace
}  // namespace uzswap
