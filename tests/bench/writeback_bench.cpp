// Writeback throughput: fills a page store with compressible pages, then
// drains the whole pool to a backing store through shrink_memcg (as the
// shrink worker does), and prints pages/s and MB/s of page data written, as
// JSON, once per repetition; then loads every page back from it (as faults
// on written-back pages do) and prints that rate too, one page a call and
// then in READs of 8 pages (swap readahead's cluster, vm.page-cluster = 3)
// through load_many, which reads a request's pages in one submission.
//
//   writeback_bench DIR [MIB] [REPETITIONS]         a backing file in DIR
//   writeback_bench nbd-local [MIB] [REPETITIONS]   the remote tier, to an NBD
//                                                   server in this process (a
//                                                   page store, like a memory
//                                                   server) on a unix socket
//   writeback_bench nbd+unix:///...|nbd://... [MIB] [REPETITIONS]
//                                                   the remote tier, to that export
//
// --encrypt (anywhere): the same through EncryptedBacking (--backing-encryption on).
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "uzswap/backing/backing_cipher.h"
#include "uzswap/backing/backing_nbd.h"
#include "uzswap/backing/backing_store.h"
#include "uzswap/nbd/nbd_listen.h"
#include "uzswap/nbd/nbd_server.h"
#include "uzswap/store/page_store.h"
#include "uzswap/writeback/shrink_memcg.h"
#include "support/page_mix.h"

using namespace uzswap;

int main(int argc, char** argv) {
  bool encrypt = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) != "--encrypt") continue;
    encrypt = true;
    for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
    --argc;
    break;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [MIB] [REPETITIONS]\n", argv[0]);
    return 2;
  }
  const std::string target = argv[1];
  const std::uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  const std::uint64_t pages = mib << 20 >> 12;

  // The in-process memory server, for nbd-local.
  std::unique_ptr<PageStore> remote_store;
  std::unique_ptr<NbdServer> server;
  std::unique_ptr<NbdListener> listener;
  ListenAddress address;
  int listen_fd = -1;
  std::unique_ptr<BackingStore> backing;
  if (target == "nbd-local") {
    PageStoreOptions o;
    o.slots = pages;
    o.pool.reserve_bytes_per_node = 4ull << 30;
    remote_store = std::make_unique<PageStore>(o);
    NbdConfig c;
    c.size_bytes = pages * kPageSize;
    c.export_name = "bench";
    server = std::make_unique<NbdServer>(*remote_store, c);
    address = *parse_listen_address("unix:/tmp/uzswap-wb-bench-" + std::to_string(getpid()) + ".sock");
    const auto fd = open_listener(address, false);
    if (!fd) {
      std::fprintf(stderr, "%s\n", listener_message(address, fd.error()).c_str());
      return 1;
    }
    listen_fd = *fd;
    listener = std::make_unique<NbdListener>(*server, listen_fd, BackingNbd::kConnections + 1,
                                             [] { PageStore::prepare_thread(); });
    backing = std::make_unique<BackingNbd>("nbd+unix:///?socket=" + address.path, pages * kPageSize);
  } else if (target.starts_with("nbd://") || target.starts_with("nbd+unix://")) {
    backing = std::make_unique<BackingNbd>(target, pages * kPageSize);
  } else {
    const std::string path = target + "/uzswap-wb-bench-" + std::to_string(getpid());
    backing = std::make_unique<BackingFile>(path, pages * kPageSize);
    std::filesystem::remove(path);  // the open file outlives its name
  }
  BackingStore& file = *backing;
  for (int rep = 0; rep < reps; ++rep) {
    PageStoreOptions o;
    o.slots = pages;
    o.pool.reserve_bytes_per_node = 4ull << 30;
    SharedState state = SharedState::create(
        {o.slots, o.pool.nodes, ZPool::region_bytes_for(o.pool.reserve_bytes_per_node),
         encrypt ? BackingCipher::xchacha20_poly1305 : BackingCipher::none});
    PageStore store(o, state);
    Writeback writeback(store);
    std::unique_ptr<EncryptedBacking> cipher;
    if (encrypt) cipher = std::make_unique<EncryptedBacking>(file, state);
    BackingStore& target_store = cipher ? static_cast<BackingStore&>(*cipher) : file;
    store.attach_backing(&target_store);
    PageStore::prepare_thread();
    target_store.prepare_thread();
    std::array<std::byte, kPageSize> page;
    for (Slot s = 0; s < pages; ++s) {
      // Text and heap-like pages only: same-filled pages are never written back.
      testing::make_page(s % 2 ? testing::PageKind::text : testing::PageKind::binary,
                         s + rep * pages, page);
      (void)store.store(s, page);
    }
    const auto start = std::chrono::steady_clock::now();
    std::uint64_t written = 0;
    while (written < pages) {
      const auto r = writeback.shrink_memcg(kRootCgroup, 256);
      written += r.written;
      if (r.written == 0 && r.rotated == 0) break;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Faults on written-back pages: one synchronous read each.
    const auto read_start = std::chrono::steady_clock::now();
    std::uint64_t loaded = 0;
    for (Slot s = 0; s < pages; ++s)
      if (store.load(s, page)) ++loaded;
    const double read_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - read_start).count();
    // The same pages again (still in the file), eight to a request.
    constexpr std::size_t kCluster = 8;
    alignas(kPageSize) static std::array<std::byte, kCluster * kPageSize> cluster;
    const auto many_start = std::chrono::steady_clock::now();
    std::uint64_t loaded_many = 0;
    for (Slot s = 0; s + kCluster <= pages; s += kCluster) loaded_many += store.load_many(s, cluster);
    const double many_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - many_start).count();
    std::printf("{\"encrypted\": %s, \"pages\": %llu, \"seconds\": %.4f, \"pages_per_second\": %.0f, \"mb_per_second\": %.1f, "
                "\"loaded\": %llu, \"load_seconds\": %.4f, \"loads_per_second\": %.0f, "
                "\"loaded_8\": %llu, \"load_8_seconds\": %.4f, \"loads_8_per_second\": %.0f}\n",
                encrypt ? "true" : "false", static_cast<unsigned long long>(written), seconds,
                double(written) / seconds,
                double(written) * kPageSize / seconds / 1e6, static_cast<unsigned long long>(loaded), read_seconds,
                double(loaded) / read_seconds, static_cast<unsigned long long>(loaded_many), many_seconds,
                double(loaded_many) / many_seconds);
    std::fflush(stdout);
  }
  backing.reset();
  listener.reset();
  if (listen_fd >= 0) {
    close(listen_fd);
    remove_listener_path(address);
  }
  return 0;
}
