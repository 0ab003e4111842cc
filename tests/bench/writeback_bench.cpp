// Writeback throughput: fills a page store with compressible pages, then
// drains the whole pool to a backing file in DIR through shrink_memcg (as the
// shrink worker does), and prints pages/s and MB/s of page data written, as
// JSON, once per repetition.
//
//   writeback_bench DIR [MIB] [REPETITIONS]
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "uzswap/backing/backing_store.h"
#include "uzswap/store/page_store.h"
#include "uzswap/testing/page_mix.h"

using namespace uzswap;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [MIB] [REPETITIONS]\n", argv[0]);
    return 2;
  }
  const std::string path = std::string(argv[1]) + "/uzswap-wb-bench-" + std::to_string(getpid());
  const std::uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  const std::uint64_t pages = mib << 20 >> 12;

  BackingFile file(path, pages * kPageSize);
  std::filesystem::remove(path);  // the open file outlives its name
  for (int rep = 0; rep < reps; ++rep) {
    PageStoreOptions o;
    o.slots = pages;
    o.pool.reserve_bytes_per_node = 4ull << 30;
    PageStore store(o);
    store.attach_backing(&file);
    PageStore::prepare_thread();
    file.prepare_thread();
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
      const auto r = store.shrink_memcg(kRootCgroup, 256);
      written += r.written;
      if (r.written == 0 && r.rotated == 0) break;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("{\"pages\": %llu, \"seconds\": %.4f, \"pages_per_second\": %.0f, \"mb_per_second\": %.1f}\n",
                static_cast<unsigned long long>(written), seconds, double(written) / seconds,
                double(written) * kPageSize / seconds / 1e6);
    std::fflush(stdout);
  }
  return 0;
}
