// Proves the request path allocates nothing: malloc and friends are wrapped
// in this binary and counted while store/load/invalidate run. Built only
// without sanitizers, which bring their own allocator.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>

#include <linux/falloc.h>
#include <linux/fuse.h>

#include <cstring>
#include <vector>

#include "uzswap/fuse/fuse_server.h"
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

// The FUSE request path as the daemon's workers run it: one request buffer
// and one reply buffer per worker, made at start-up.
TEST(RequestPath, FuseReadWriteDiscardAllocateNothing) {
  PageStoreOptions o;
  o.slots = 1024;
  o.pool.reserve_bytes_per_node = 64u << 20;
  PageStore store(o);
  FuseConfig c;
  c.size_bytes = 1024 * kPageSize;
  c.max_write = 32 * kPageSize;
  FuseServer server(store, c);
  PageStore::prepare_thread();
  std::vector<std::byte> request(FuseServer::request_buffer_bytes(c));
  std::vector<std::byte> reply(FuseServer::reply_buffer_bytes(c));

  auto send = [&](std::uint32_t opcode, const auto& args, std::size_t data_bytes) {
    fuse_in_header in{};
    in.len = static_cast<std::uint32_t>(sizeof(in) + sizeof(args) + data_bytes);
    in.opcode = opcode;
    in.unique = 1;
    in.nodeid = FUSE_ROOT_ID;
    std::memcpy(request.data(), &in, sizeof(in));
    std::memcpy(request.data() + sizeof(in), &args, sizeof(args));
    const std::size_t n = server.handle(std::span(request.data(), in.len), reply);
    fuse_out_header out;
    std::memcpy(&out, reply.data(), sizeof(out));
    return n > 0 ? out.error : 0;
  };

  t_counting = true;
  for (std::uint64_t round = 0; round < 8; ++round) {
    for (std::uint64_t chunk = 0; chunk < 1024 / 32; ++chunk) {
      fuse_write_in wr{};
      wr.offset = chunk * 32 * kPageSize;
      wr.size = 32 * kPageSize;
      std::byte* data = request.data() + sizeof(fuse_in_header) + sizeof(wr);
      for (int p = 0; p < 32; ++p)
        testing::make_mixed_page(round * 100000 + chunk * 32 + p,
                                 std::span<std::byte, kPageSize>(data + p * kPageSize, kPageSize));
      ASSERT_EQ(send(FUSE_WRITE, wr, wr.size), 0);
      fuse_read_in rd{};
      rd.offset = wr.offset;
      rd.size = wr.size;
      ASSERT_EQ(send(FUSE_READ, rd, 0), 0);
    }
    fuse_fallocate_in fa{};
    fa.offset = 0;
    fa.length = 512 * kPageSize;
    fa.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    ASSERT_EQ(send(FUSE_FALLOCATE, fa, 0), 0);
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
