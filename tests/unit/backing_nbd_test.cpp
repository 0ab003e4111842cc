// BackingNbd, the remote tier, against an NBD server in this process (a
// page store behind NbdServer on a unix socket, what a memory server is):
// batches land at their slots and read back; a server that goes away makes
// writes fail at once (the caller keeps its pages) and reads wait; a server
// that comes back is reconnected to by itself. In the concurrency suite:
// the reconnect thread, the writers and the readers run under TSan.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "uzswap/backing/backing_nbd.h"
#include "uzswap/nbd/nbd_listen.h"
#include "uzswap/nbd/nbd_server.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

constexpr std::uint64_t kSlots = 1024;

class Remote {
 public:
  Remote() : path_("/tmp/uzswap-backing-nbd-test-" + std::to_string(getpid()) + ".sock") {
    PageStoreOptions o;
    o.slots = kSlots;
    o.pool.reserve_bytes_per_node = 32u << 20;
    store_ = std::make_unique<PageStore>(o);
    NbdConfig c;
    c.size_bytes = kSlots * kPageSize;
    server_ = std::make_unique<NbdServer>(*store_, c);
    start();
  }
  ~Remote() { stop(); }
  void start() {
    address_ = *parse_listen_address("unix:" + path_);
    const auto fd = open_listener(address_, false);
    ASSERT_TRUE(fd) << fd.error().message();
    fd_ = *fd;
    listener_ = std::make_unique<NbdListener>(*server_, fd_, 8, nullptr);
  }
  void stop() {
    listener_.reset();  // every connection ends
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    remove_listener_path(address_);
  }
  std::string uri() const { return "nbd+unix:///?socket=" + path_; }
  PageStore& store() { return *store_; }

 private:
  std::string path_;
  ListenAddress address_;
  int fd_ = -1;
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<NbdServer> server_;
  std::unique_ptr<NbdListener> listener_;
};

std::vector<std::byte> page_of(std::uint64_t seed) {
  std::vector<std::byte> p(kPageSize);
  testing::make_page(testing::PageKind::text, seed, PageBuffer(p.data(), kPageSize));
  return p;
}

bool wait_for(const std::function<bool()>& ok, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!ok()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

TEST(BackingNbd, BatchesLandAtTheirSlotsAndReadBack) {
  Remote remote;
  BackingNbd nbd(remote.uri(), kSlots * kPageSize);
  EXPECT_TRUE(nbd.up());
  EXPECT_EQ(nbd.status().connections, BackingNbd::kConnections);  // uzswap offers multi-conn
  nbd.prepare_thread();
  // Two runs of adjacent slots and a lone one, out of order.
  std::vector<std::vector<std::byte>> pages;
  std::vector<PageWrite> writes;
  for (Slot s : {10u, 11u, 12u, 500u, 3u, 4u}) {
    pages.push_back(page_of(s));
    writes.push_back({s, pages.back().data(), 1});
  }
  nbd.begin_write(writes);
  nbd.end_write();
  for (const PageWrite& w : writes) EXPECT_EQ(w.result, 0) << w.slot;
  EXPECT_EQ(nbd.status().write_requests, 3u);  // one request per run
  EXPECT_EQ(remote.store().stats().stored_pages, 6u);
  std::vector<std::byte> back(kPageSize);
  for (Slot s : {3u, 4u, 10u, 11u, 12u, 500u}) {
    ASSERT_FALSE(nbd.read(s, PageBuffer(back.data(), kPageSize))) << s;
    EXPECT_EQ(back, page_of(s)) << s;
  }
}

TEST(BackingNbd, ARemoteThatGoesAwayRefusesWritesAndIsReconnected) {
  Remote remote;
  BackingNbd nbd(remote.uri(), kSlots * kPageSize);
  const auto page = page_of(7);
  PageWrite w{7, page.data(), 1};
  nbd.write(std::span(&w, 1));
  ASSERT_EQ(w.result, 0);

  remote.stop();
  // The reconnect thread notices idle connections that were closed.
  ASSERT_TRUE(wait_for([&] { return !nbd.up(); }, std::chrono::seconds(5)));
  EXPECT_FALSE(nbd.status().last_error.empty());
  PageWrite refused{8, page.data(), 0};
  nbd.write(std::span(&refused, 1));
  EXPECT_NE(refused.result, 0) << "a write while down must fail, the caller keeps the page";
  EXPECT_EQ(nbd.status().refused_writes, 1u);

  // A read while down waits for the remote to come back.
  std::thread back([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    remote.start();
  });
  std::vector<std::byte> out(kPageSize);
  EXPECT_FALSE(nbd.read(7, PageBuffer(out.data(), kPageSize)));
  EXPECT_EQ(out, page);
  back.join();
  ASSERT_TRUE(wait_for([&] { return nbd.status().connections_up == nbd.status().connections; },
                       std::chrono::seconds(10)));
  EXPECT_GE(nbd.status().disconnects, 1u);
  PageWrite again{8, page.data(), 1};
  nbd.write(std::span(&again, 1));
  EXPECT_EQ(again.result, 0);
}

TEST(BackingNbd, ConcurrentWritersAndReaders) {
  Remote remote;
  BackingNbd nbd(remote.uri(), kSlots * kPageSize);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (unsigned t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      nbd.prepare_thread();
      std::vector<std::vector<std::byte>> pages;
      std::vector<PageWrite> batch;
      for (Slot s = t * 256; s < t * 256 + 64; ++s) {
        pages.push_back(page_of(s));
        batch.push_back({s, pages.back().data(), 1});
      }
      for (int round = 0; round < 5; ++round) {
        nbd.begin_write(batch);
        nbd.end_write();
        std::vector<std::byte> back(kPageSize);
        for (const PageWrite& w : batch) {
          if (w.result != 0 || nbd.read(w.slot, PageBuffer(back.data(), kPageSize)) ||
              back != page_of(w.slot))
            ++wrong;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(BackingNbd, AnUnreachableOrTooSmallExportIsAStartError) {
  EXPECT_THROW(BackingNbd("nbd+unix:///?socket=/tmp/uzswap-no-such-socket", kPageSize), std::runtime_error);
  Remote remote;
  try {
    BackingNbd too_big(remote.uri(), 2 * kSlots * kPageSize);
    FAIL() << "an export smaller than the swap area was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("the swap area needs"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace uzswap
