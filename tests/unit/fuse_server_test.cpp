#include "uzswap/fuse/fuse_server.h"
#include "uzswap/writeback/shrink_memcg.h"

#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "support/page_mix.h"

namespace uzswap {
namespace {

constexpr std::uint64_t kSize = 64 * kPageSize;

class FuseServerTest : public ::testing::Test {
 protected:
  FuseServerTest() : store_(store_options()), server_(store_, config()) {
    reply_.resize(FuseServer::reply_buffer_bytes(config()));
  }

  static PageStoreOptions store_options() {
    PageStoreOptions o;
    o.slots = kSize / kPageSize;
    o.pool.reserve_bytes_per_node = 64u << 20;
    return o;
  }
  static FuseConfig config() {
    FuseConfig c;
    c.size_bytes = kSize;
    c.max_write = 16 * kPageSize;
    return c;
  }

  // Sends opcode with `args` then `data`; returns the reply's error (0 or
  // -errno) and leaves the body in body_.
  template <typename Args>
  int call(std::uint32_t opcode, const Args& args, std::span<const std::byte> data = {},
           std::uint64_t nodeid = FUSE_ROOT_ID) {
    std::vector<std::byte> req(sizeof(fuse_in_header) + sizeof(Args) + data.size());
    fuse_in_header in{};
    in.len = static_cast<std::uint32_t>(req.size());
    in.opcode = opcode;
    in.unique = ++unique_;
    in.nodeid = nodeid;
    std::memcpy(req.data(), &in, sizeof(in));
    std::memcpy(req.data() + sizeof(in), &args, sizeof(Args));
    if (!data.empty()) std::memcpy(req.data() + sizeof(in) + sizeof(Args), data.data(), data.size());
    return send(req);
  }

  int send(std::span<const std::byte> req) {
    const std::size_t n = server_.handle(req, reply_);
    replied_ = n > 0;
    if (n == 0) return 0;
    fuse_out_header out;
    std::memcpy(&out, reply_.data(), sizeof(out));
    EXPECT_EQ(out.len, n);
    EXPECT_EQ(out.unique, unique_);
    body_.assign(reply_.begin() + sizeof(out), reply_.begin() + n);
    return out.error;
  }

  template <typename T>
  T body() {
    T t{};
    EXPECT_GE(body_.size(), sizeof(T));
    std::memcpy(&t, body_.data(), std::min(sizeof(T), body_.size()));
    return t;
  }

  int write_pages(std::uint64_t offset, std::span<const std::byte> data) {
    fuse_write_in wr{};
    wr.offset = offset;
    wr.size = static_cast<std::uint32_t>(data.size());
    return call(FUSE_WRITE, wr, data);
  }
  int read_pages(std::uint64_t offset, std::uint32_t size) {
    fuse_read_in rd{};
    rd.offset = offset;
    rd.size = size;
    return call(FUSE_READ, rd);
  }

  PageStore store_;
  FuseServer server_;
  std::vector<std::byte> reply_;
  std::vector<std::byte> body_;
  std::uint64_t unique_ = 0;
  bool replied_ = false;
};

std::vector<std::byte> pages(std::size_t n, std::uint64_t seed) {
  std::vector<std::byte> v(n * kPageSize);
  for (std::size_t i = 0; i < n; ++i)
    testing::make_mixed_page(seed + i, PageBuffer(v.data() + i * kPageSize, kPageSize));
  return v;
}

TEST_F(FuseServerTest, InitNegotiatesLargeDirectIo) {
  fuse_init_in init{};
  init.major = 7;
  init.minor = 38;
  init.max_readahead = 128 << 10;
  init.flags = FUSE_BIG_WRITES | FUSE_ASYNC_DIO | FUSE_MAX_PAGES | FUSE_WRITEBACK_CACHE;
  ASSERT_EQ(call(FUSE_INIT, init), 0);
  const auto out = body<fuse_init_out>();
  EXPECT_EQ(out.major, 7u);
  EXPECT_EQ(out.minor, 38u);
  EXPECT_EQ(out.max_write, 16 * kPageSize);
  EXPECT_EQ(out.max_pages, 16u);
  EXPECT_TRUE(out.flags & FUSE_ASYNC_DIO);
  EXPECT_TRUE(out.flags & FUSE_MAX_PAGES);
  EXPECT_FALSE(out.flags & FUSE_WRITEBACK_CACHE) << "no page cache in the swap path";
  EXPECT_TRUE(server_.stats().initialized);
}

TEST_F(FuseServerTest, InitAgreesOnIoUringOnlyWhenBothSidesWantIt) {
  for (const bool ours : {false, true}) {
    for (const bool kernels : {false, true}) {
      FuseConfig c = config();
      c.over_io_uring = ours;
      FuseServer server(store_, c);
      std::vector<std::byte> req(sizeof(fuse_in_header) + sizeof(fuse_init_in));
      fuse_in_header in{};
      in.len = static_cast<std::uint32_t>(req.size());
      in.opcode = FUSE_INIT;
      in.unique = 1;
      fuse_init_in init{};
      init.major = 7;
      init.minor = 38;
      init.flags = FUSE_INIT_EXT | FUSE_ASYNC_DIO | FUSE_MAX_PAGES;
      init.flags2 = kernels ? kFuseOverIoUringFlags2 : 0;
      std::memcpy(req.data(), &in, sizeof(in));
      std::memcpy(req.data() + sizeof(in), &init, sizeof(init));
      ASSERT_GT(server.handle(req, reply_), sizeof(fuse_out_header));
      fuse_init_out out{};
      std::memcpy(&out, reply_.data() + sizeof(fuse_out_header), sizeof(out));
      const bool agreed = ours && kernels;
      EXPECT_EQ((out.flags2 & kFuseOverIoUringFlags2) != 0, agreed) << ours << kernels;
      EXPECT_EQ((out.flags & FUSE_INIT_EXT) != 0, agreed) << "flags2 is read only with INIT_EXT";
      EXPECT_EQ(server.over_io_uring(), agreed);
    }
  }
}

TEST_F(FuseServerTest, InitFromANewerMajorAnswersOurMajorOnly) {
  fuse_init_in init{};
  init.major = 8;
  ASSERT_EQ(call(FUSE_INIT, init), 0);
  EXPECT_EQ(body_.size(), 8u);
  EXPECT_EQ(body<std::uint32_t>(), 7u);
}

TEST_F(FuseServerTest, AnOldProtocolIsRefused) {
  fuse_init_in init{};
  init.major = 7;
  init.minor = 12;
  EXPECT_EQ(call(FUSE_INIT, init), -EPROTO);
}

TEST_F(FuseServerTest, TheRootIsAPrivateFileOfTheDeviceSize) {
  fuse_getattr_in ga{};
  ASSERT_EQ(call(FUSE_GETATTR, ga), 0);
  const auto attr = body<fuse_attr_out>().attr;
  EXPECT_EQ(attr.size, kSize);
  EXPECT_EQ(attr.mode, static_cast<std::uint32_t>(S_IFREG | 0600));
  EXPECT_EQ(attr.blksize, kPageSize);
  fuse_open_in open{};
  ASSERT_EQ(call(FUSE_OPEN, open), 0);
  EXPECT_EQ(body<fuse_open_out>().open_flags & FOPEN_DIRECT_IO, FOPEN_DIRECT_IO);
  EXPECT_EQ(body<fuse_open_out>().open_flags & FOPEN_PARALLEL_DIRECT_WRITES,
            FOPEN_PARALLEL_DIRECT_WRITES);
  fuse_entry_out none{};
  EXPECT_EQ(call(FUSE_LOOKUP, none), -ENOTDIR);
}

TEST_F(FuseServerTest, WrittenPagesReadBack) {
  const auto data = pages(8, 10);
  ASSERT_EQ(write_pages(4 * kPageSize, data), 0);
  EXPECT_EQ(body<fuse_write_out>().size, data.size());
  ASSERT_EQ(read_pages(4 * kPageSize, 8 * kPageSize), 0);
  EXPECT_EQ(body_, data);
  // Unwritten pages read as zeros.
  ASSERT_EQ(read_pages(0, kPageSize), 0);
  EXPECT_EQ(body_, std::vector<std::byte>(kPageSize));
  EXPECT_EQ(server_.stats().written_pages, 8u);
  EXPECT_EQ(server_.stats().read_pages, 9u);
}

TEST_F(FuseServerTest, UnalignedRequestsFailWithEinvalAndStoreNothing) {
  const auto data = pages(2, 1);
  EXPECT_EQ(write_pages(100, data), -EINVAL);
  EXPECT_EQ(write_pages(0, std::span(data).first(kPageSize + 1)), -EINVAL);
  EXPECT_EQ(read_pages(512, kPageSize), -EINVAL);
  EXPECT_EQ(read_pages(0, 1000), -EINVAL);
  EXPECT_EQ(store_.stats().stored_pages, 0u);
  EXPECT_EQ(server_.stats().bad_requests, 4u);
}

TEST_F(FuseServerTest, OutOfRangeWritesFailAndReadsPastTheEndAreShort) {
  const auto data = pages(2, 1);
  EXPECT_EQ(write_pages(kSize - kPageSize, data), -EFBIG);
  EXPECT_EQ(write_pages(kSize, std::span(data).first(kPageSize)), -EFBIG);
  EXPECT_EQ(store_.stats().stored_pages, 0u);
  ASSERT_EQ(read_pages(kSize - kPageSize, 2 * kPageSize), 0);
  EXPECT_EQ(body_.size(), kPageSize);
  ASSERT_EQ(read_pages(kSize, kPageSize), 0);
  EXPECT_TRUE(body_.empty());
}

TEST_F(FuseServerTest, RequestsLargerThanMaxWriteAreRefused) {
  EXPECT_EQ(read_pages(0, 32 * kPageSize), -EINVAL);
}

TEST_F(FuseServerTest, PunchHoleDiscardsWholePages) {
  ASSERT_EQ(write_pages(0, pages(8, 3)), 0);
  fuse_fallocate_in fa{};
  fa.offset = 2 * kPageSize;
  fa.length = 3 * kPageSize;
  fa.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  ASSERT_EQ(call(FUSE_FALLOCATE, fa), 0);
  EXPECT_EQ(server_.stats().discarded_pages, 3u);
  EXPECT_EQ(store_.stats().stored_pages, 5u);
  ASSERT_EQ(read_pages(2 * kPageSize, kPageSize), 0);
  EXPECT_EQ(body_, std::vector<std::byte>(kPageSize));
  // Zero range forgets too; preallocation is a no-op.
  fa.mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
  fa.offset = 0;
  fa.length = kPageSize;
  ASSERT_EQ(call(FUSE_FALLOCATE, fa), 0);
  EXPECT_EQ(store_.stats().stored_pages, 4u);
  fa.mode = 0;
  EXPECT_EQ(call(FUSE_FALLOCATE, fa), 0);
  EXPECT_EQ(store_.stats().stored_pages, 4u);
}

TEST_F(FuseServerTest, BadFallocateRequestsChangeNothing) {
  ASSERT_EQ(write_pages(0, pages(4, 3)), 0);
  fuse_fallocate_in fa{};
  fa.offset = 100;
  fa.length = kPageSize;
  fa.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  EXPECT_EQ(call(FUSE_FALLOCATE, fa), -EINVAL);
  fa.offset = 0;
  fa.mode = FALLOC_FL_PUNCH_HOLE;  // without KEEP_SIZE: not allowed by Linux either
  EXPECT_EQ(call(FUSE_FALLOCATE, fa), -EOPNOTSUPP);
  fa.mode = FALLOC_FL_COLLAPSE_RANGE;
  EXPECT_EQ(call(FUSE_FALLOCATE, fa), -EOPNOTSUPP);
  fa.mode = 0;
  fa.length = 2 * kSize;
  EXPECT_EQ(call(FUSE_FALLOCATE, fa), -EFBIG);
  EXPECT_EQ(store_.stats().stored_pages, 4u);
}

TEST_F(FuseServerTest, MalformedRequestsGetEinval) {
  // Length in the header disagrees with what was read.
  std::vector<std::byte> req(sizeof(fuse_in_header) + sizeof(fuse_read_in));
  fuse_in_header in{};
  in.len = 9999;
  in.opcode = FUSE_READ;
  in.unique = ++unique_;
  std::memcpy(req.data(), &in, sizeof(in));
  EXPECT_EQ(send(req), -EINVAL);
  // Arguments cut short.
  in.len = sizeof(in) + 4;
  req.resize(in.len);
  std::memcpy(req.data(), &in, sizeof(in));
  EXPECT_EQ(send(req), -EINVAL);
  // Write whose data is shorter than it says.
  fuse_write_in wr{};
  wr.size = 2 * kPageSize;
  const auto data = pages(1, 1);
  EXPECT_EQ(call(FUSE_WRITE, wr, data), -EINVAL);
  // Too short to carry a header: nothing to answer.
  EXPECT_EQ(server_.handle(std::span(req).first(10), reply_), 0u);
  EXPECT_EQ(store_.stats().stored_pages, 0u);
}

TEST_F(FuseServerTest, ForgetTakesNoReplyAndUnknownOpcodesGetEnosys) {
  fuse_forget_in forget{};
  EXPECT_EQ(call(FUSE_FORGET, forget), 0);
  EXPECT_FALSE(replied_);
  fuse_getxattr_in gx{};
  EXPECT_EQ(call(FUSE_GETXATTR, gx), -ENOSYS);
  EXPECT_EQ(call(9999, gx), -ENOSYS);
  EXPECT_EQ(server_.stats().unsupported, 2u);
}

TEST_F(FuseServerTest, TheSizeCannotChange) {
  fuse_setattr_in set{};
  set.valid = FATTR_SIZE;
  set.size = 0;
  EXPECT_EQ(call(FUSE_SETATTR, set), -EPERM);
  set.size = kSize;
  EXPECT_EQ(call(FUSE_SETATTR, set), 0);
  set.valid = FATTR_MODE;
  EXPECT_EQ(call(FUSE_SETATTR, set), 0);
}

TEST_F(FuseServerTest, StatfsReportsPageBlocks) {
  ASSERT_EQ(write_pages(0, pages(3, 7)), 0);
  fuse_getattr_in none{};
  ASSERT_EQ(call(FUSE_STATFS, none), 0);
  const auto st = body<fuse_statfs_out>().st;
  EXPECT_EQ(st.bsize, kPageSize);
  EXPECT_EQ(st.blocks, kSize / kPageSize);
  EXPECT_EQ(st.bfree, kSize / kPageSize - 3);
}

TEST(FuseServer, AFullPoolFailsWritesWithEnospc) {
  PageStoreOptions o;
  o.slots = 1024;
  o.max_pool_bytes = 64u << 10;
  o.pool.reserve_bytes_per_node = 64u << 20;
  PageStore store(o);
  FuseConfig c;
  c.size_bytes = 1024 * kPageSize;
  c.max_write = 64 * kPageSize;
  FuseServer server(store, c);
  std::vector<std::byte> reply(FuseServer::reply_buffer_bytes(c));
  std::vector<std::byte> req(sizeof(fuse_in_header) + sizeof(fuse_write_in) + 64 * kPageSize);
  int error = 0;
  for (std::uint64_t round = 0; round < 16 && error == 0; ++round) {
    fuse_in_header in{};
    in.len = static_cast<std::uint32_t>(req.size());
    in.opcode = FUSE_WRITE;
    in.unique = round + 1;
    fuse_write_in wr{};
    wr.offset = round * 64 * kPageSize;
    wr.size = 64 * kPageSize;
    std::memcpy(req.data(), &in, sizeof(in));
    std::memcpy(req.data() + sizeof(in), &wr, sizeof(wr));
    for (int p = 0; p < 64; ++p)
      testing::make_page(testing::PageKind::random, round * 64 + p,
                         PageBuffer(req.data() + sizeof(in) + sizeof(wr) + p * kPageSize, kPageSize));
    ASSERT_GT(server.handle(req, reply), 0u);
    fuse_out_header out;
    std::memcpy(&out, reply.data(), sizeof(out));
    error = out.error;
  }
  EXPECT_EQ(error, -ENOSPC);
  EXPECT_GE(server.stats().write_errors, 1u);
}

TEST(CpuNodes, ParsesKernelCpuLists) {
  std::vector<std::int8_t> table;
  EXPECT_TRUE(add_cpu_list("0-1,4\n", 0, table));
  EXPECT_TRUE(add_cpu_list("2-3,5", 1, table));
  EXPECT_EQ(table, (std::vector<std::int8_t>{0, 0, 1, 1, 0, 1}));
  EXPECT_TRUE(add_cpu_list("", 2, table));
  EXPECT_FALSE(add_cpu_list("3-1", 2, table));
  EXPECT_FALSE(add_cpu_list("x", 2, table));
  EXPECT_FALSE(add_cpu_list("99999", 2, table));
  EXPECT_FALSE(add_cpu_list("1;2", 2, table));
}

TEST(CpuNodes, ATaskBoundToOneNodeHasThatNode) {
  const std::vector<std::int8_t> nodes{0, 0, 1, 1};
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(2, &set);
  CPU_SET(3, &set);
  EXPECT_EQ(single_node_of(set, nodes), 1);
  CPU_SET(1, &set);
  EXPECT_EQ(single_node_of(set, nodes), -1);  // spans both
  CPU_ZERO(&set);
  CPU_SET(7, &set);
  EXPECT_EQ(single_node_of(set, nodes), -1);  // a CPU of no known node
  CPU_ZERO(&set);
  EXPECT_EQ(single_node_of(set, nodes), -1);
}

// A WRITE goes to the pool of the node its requester is bound to (the loop
// device's unbound workqueue workers are bound to the node that queued the
// swap-out), not to the node of the CPU that serves it. Found in the VM
// rig: a workload under numactl --membind=1 filled node 0's pool by a third.
TEST(FuseServer, AWriteGoesToItsRequestersNode) {
  PageStoreOptions o;
  o.slots = 64;
  o.pool.nodes = 2;
  o.pool.reserve_bytes_per_node = 64u << 20;
  PageStore store(o);
  Writeback writeback(store);
  FuseConfig c;
  c.size_bytes = 64 * kPageSize;
  c.max_write = 16 * kPageSize;
  // This process's CPUs: the first on "node 0", every other on "node 1".
  cpu_set_t mine;
  ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
  int first = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &mine)) {
      first = cpu;
      break;
    }
  ASSERT_GE(first, 0);
  c.cpu_node.assign(CPU_SETSIZE, 1);
  c.cpu_node[first] = 0;
  FuseServer server(store, c);

  // A requester bound to node 1's CPUs: a thread of this process.
  cpu_set_t node1;
  CPU_ZERO(&node1);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &mine) && cpu != first) CPU_SET(cpu, &node1);
  if (CPU_COUNT(&node1) == 0) GTEST_SKIP() << "one CPU only";
  pid_t requester = 0;
  std::thread t([&] {
    ASSERT_EQ(sched_setaffinity(0, sizeof(node1), &node1), 0);
    requester = static_cast<pid_t>(syscall(SYS_gettid));
    std::vector<std::byte> req(sizeof(fuse_in_header) + sizeof(fuse_write_in) + 4 * kPageSize);
    fuse_in_header in{};
    in.len = static_cast<std::uint32_t>(req.size());
    in.opcode = FUSE_WRITE;
    in.unique = 1;
    in.nodeid = FUSE_ROOT_ID;
    in.pid = static_cast<std::uint32_t>(requester);
    fuse_write_in wr{};
    wr.offset = 8 * kPageSize;
    wr.size = 4 * kPageSize;
    std::memcpy(req.data(), &in, sizeof(in));
    std::memcpy(req.data() + sizeof(in), &wr, sizeof(wr));
    for (std::size_t i = 0; i < 4; ++i)
      testing::make_mixed_page(i + 1, std::span<std::byte, kPageSize>(
                                           req.data() + sizeof(in) + sizeof(wr) + i * kPageSize, kPageSize));
    std::vector<std::byte> reply(FuseServer::reply_buffer_bytes(c));
    // Served from the other node's CPU: the requester's node counts.
    cpu_set_t node0;
    CPU_ZERO(&node0);
    CPU_SET(first, &node0);
    std::thread serve([&] {
      ASSERT_EQ(sched_setaffinity(0, sizeof(node0), &node0), 0);
      ASSERT_GT(server.handle(req, reply), 0u);
    });
    serve.join();
  });
  t.join();
  EXPECT_EQ(writeback.node_stats(1).lru_pages + store.stats().same_filled_pages, 4u);
  EXPECT_EQ(writeback.node_stats(0).lru_pages, 0u);
}

}  // namespace
}  // namespace uzswap

namespace uzswap {
namespace {

TEST_F(FuseServerTest, ADamagedPageEndsTheReadThereAndTheGoodOnesBeforeItAreAnswered) {
  const auto data = pages(4, 500);
  ASSERT_EQ(write_pages(0, data), 0);
  store_.restart_side().state().checksums()[2] ^= 1;  // slot 2's bytes no longer match
  ASSERT_EQ(read_pages(0, 4 * kPageSize), 0);
  ASSERT_EQ(body_.size(), 2 * kPageSize) << "a short read: pages 0 and 1";
  EXPECT_EQ(0, std::memcmp(body_.data(), data.data(), 2 * kPageSize));
  // The kernel asks again from the bad page: that one fails alone.
  EXPECT_EQ(read_pages(2 * kPageSize, 2 * kPageSize), -EIO);
  ASSERT_EQ(read_pages(3 * kPageSize, kPageSize), 0);
  EXPECT_EQ(0, std::memcmp(body_.data(), data.data() + 3 * kPageSize, kPageSize));
  EXPECT_EQ(server_.stats().read_errors, 2u);
  EXPECT_EQ(store_.stats().integrity_errors, 2u);
}

}  // namespace
}  // namespace uzswap
