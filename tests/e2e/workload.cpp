// A workload that must swap: allocates SIZE of pages from the realistic mix
// (or, with --files, from real files on the machine), writes them, touches
// them again in random order and verifies every byte. Run it in a
// memory-limited cgroup. Prints timings of both phases as JSON on stdout;
// exits 1 on the first wrong byte.
//
//   uzswap-workload SIZE_MIB [--seed N] [--pause-file PATH] [--rounds N] [--skew HOT:TOUCHES] [--files DIR...]
//
// --pause-file: after the fill, print "filled ADDRESS" (of the pages) and
// wait until PATH exists before re-touching (a test acts on the swapped-out
// pages meanwhile).
// --rounds N: N more passes after the first check, each in a new random
// order, checking every page and writing it anew (pages go out and come back
// again and again, dirty each time); prints "round K" as each one ends.
// --until PATH: like --rounds, but round after round until PATH exists
// (checked as each round ends; at least one round), so a test that acts on
// the daemon meanwhile never runs out of workload.
// --io-errors-ok: a page whose swap-in fails (SIGBUS: the daemon refused to
// return damaged data) is counted and skipped, not fatal; prints the page
// numbers as "io_error_page N" (first pass only; with --rounds, such a page
// is mapped anew and written again).
// --skew HOT:TOUCHES (percent, e.g. 20:90): a hot set. Every pass (the check
// and each of --rounds) is as many touches as there are pages, TOUCHES% of
// them on a random page of the hot set (HOT% of the pages, scattered), the
// rest on a random page of the others; each touch checks the page (its own
// version of it) and, in --rounds, writes it anew. Prints the major faults
// of the re-touch ("retouch_major_faults"), in both modes.
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/page_mix.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kPage = uzswap::kPageSize;

// Pages of real data: the files under the directories, read in page-sized
// pieces, up to `limit` pages, an equal share from each directory.
std::vector<std::byte> real_pages(const std::vector<std::string>& dirs, std::size_t limit) {
  std::vector<std::byte> pages;
  for (std::size_t d = 0; d < dirs.size(); ++d) {
    const std::string& dir = dirs[d];
    const std::size_t quota = limit * (d + 1) / dirs.size();
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(
             dir, std::filesystem::directory_options::skip_permission_denied, ec);
         it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (!it->is_regular_file(ec) || it->file_size(ec) < kPage) continue;
      std::ifstream f(it->path(), std::ios::binary);
      std::vector<char> buf(kPage);
      while (f.read(buf.data(), kPage)) {
        const auto* b = reinterpret_cast<const std::byte*>(buf.data());
        pages.insert(pages.end(), b, b + kPage);
        if (pages.size() / kPage >= quota) break;
      }
      if (pages.size() / kPage >= quota) break;
    }
  }
  return pages;
}

sigjmp_buf g_sigbus_jump;

void on_sigbus(int, siginfo_t*, void*) { siglongjmp(g_sigbus_jump, 1); }

// Compares the page at `page` with `want`; false if its swap-in failed
// (SIGBUS), with *differs untouched.
bool compare_page(std::byte* page, const std::byte* want, bool* differs) {
  if (sigsetjmp(g_sigbus_jump, 1) != 0) return false;
  *differs = std::memcmp(page, want, kPage) != 0;
  return true;
}

long major_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_majflt;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SIZE_MIB [--seed N] [--files DIR...]\n", argv[0]);
    return 2;
  }
  const std::size_t pages = std::strtoull(argv[1], nullptr, 10) * (1u << 20) / kPage;
  std::uint64_t seed = 1;
  unsigned rounds = 0;
  std::string pause_file;
  bool io_errors_ok = false;
  std::string until_file;
  std::vector<std::string> dirs;
  unsigned hot_percent = 0, hot_touch_percent = 0;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (std::strcmp(argv[i], "--pause-file") == 0 && i + 1 < argc) pause_file = argv[++i];
    else if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    else if (std::strcmp(argv[i], "--io-errors-ok") == 0) io_errors_ok = true;
    else if (std::strcmp(argv[i], "--until") == 0 && i + 1 < argc) until_file = argv[++i];
    else if (std::strcmp(argv[i], "--skew") == 0 && i + 1 < argc &&
             std::sscanf(argv[++i], "%u:%u", &hot_percent, &hot_touch_percent) == 2) {
      if (hot_percent == 0 || hot_percent >= 100 || hot_touch_percent > 100) {
        std::fprintf(stderr, "--skew HOT:TOUCHES: percentages, 0 < HOT < 100\n");
        return 2;
      }
    } else if (std::strcmp(argv[i], "--files") == 0)
      while (i + 1 < argc && argv[i + 1][0] != '-') dirs.emplace_back(argv[++i]);
  }
  // A source of real data, at most 4096 pages: page i of the workload is
  // source page (i * 7) % n, XOR'd with nothing, so content is real and each
  // page can be regenerated for checking.
  const std::vector<std::byte> source = dirs.empty() ? std::vector<std::byte>{} : real_pages(dirs, 4096);
  const std::size_t source_pages = source.size() / kPage;

  unsigned version = 0;  // which round's content the pages hold
  auto expected_version = [&](std::size_t i, std::byte* out, unsigned ver) {
    if (source_pages > 0) {
      std::memcpy(out, source.data() + ((i * 7 + ver) % source_pages) * kPage, kPage);
      std::memcpy(out, &i, sizeof(i));  // make every page distinct
      std::memcpy(out + sizeof(i), &ver, sizeof(ver));
    } else {
      uzswap::testing::make_mixed_page(seed * 1000003 + i + std::uint64_t{ver} * 7919 * 1000003,
                                       std::span<std::byte, kPage>(out, kPage));
    }
  };
  auto expected = [&](std::size_t i, std::byte* out) { expected_version(i, out, version); };

  auto* mem = static_cast<std::byte*>(mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 2;
  }
  const auto t0 = Clock::now();
  for (std::size_t i = 0; i < pages; ++i) expected(i, mem + i * kPage);
  const auto filled = Clock::now();
  if (!pause_file.empty()) {
    std::printf("filled %p\n", static_cast<void*>(mem));  // where the pages are, for tests
    std::fflush(stdout);
    while (!std::filesystem::exists(pause_file)) usleep(50000);
  }

  std::vector<std::size_t> order(pages);
  for (std::size_t i = 0; i < pages; ++i) order[i] = i;
  uzswap::testing::Rng rng(seed);
  for (std::size_t i = pages; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  std::vector<std::byte> want(kPage);
  const auto t1 = Clock::now();
  const long faults_before = major_faults();
  std::size_t wrong = 0, io_errors = 0;
  if (hot_percent != 0) {
    // The hot set: the first HOT% of a random order of the pages.
    const std::size_t hot = std::max<std::size_t>(1, pages * hot_percent / 100);
    std::vector<unsigned> versions(pages, 0);
    for (unsigned pass = 0; pass <= rounds; ++pass) {
      for (std::size_t touch = 0; touch < pages; ++touch) {
        const bool in_hot = rng.below(100) < hot_touch_percent || hot == pages;
        const std::size_t i = in_hot ? order[rng.below(hot)] : order[hot + rng.below(pages - hot)];
        expected_version(i, want.data(), versions[i]);
        if (std::memcmp(mem + i * kPage, want.data(), kPage) != 0) {
          if (wrong++ < 5) std::fprintf(stderr, "pass %u: page %zu differs\n", pass, i);
        }
        if (pass == 0) continue;
        expected_version(i, mem + i * kPage, ++versions[i]);
      }
      if (pass > 0) std::printf("round %u\n", pass);
      std::fflush(stdout);
    }
    const double fill = std::chrono::duration<double>(filled - t0).count();
    const double retouch = std::chrono::duration<double>(Clock::now() - t1).count();
    std::printf("{\"pages\": %zu, \"source_pages\": %zu, \"fill_seconds\": %.3f, \"retouch_seconds\": %.3f, "
                "\"retouch_major_faults\": %ld, \"wrong_pages\": %zu, \"io_error_pages\": 0}\n",
                pages, source_pages, fill, retouch, major_faults() - faults_before, wrong);
    return wrong == 0 ? 0 : 1;
  }
  if (io_errors_ok) {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGBUS, &sa, nullptr);
  }
  for (std::size_t i : order) {
    expected(i, want.data());
    bool differs = false;
    if (io_errors_ok && !compare_page(mem + i * kPage, want.data(), &differs)) {
      ++io_errors;
      std::printf("io_error_page %zu\n", i);
      // Drop the page whose swap-in fails, so later passes can write it anew.
      mmap(mem + i * kPage, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      expected(i, mem + i * kPage);
      continue;
    }
    if (!io_errors_ok) differs = std::memcmp(mem + i * kPage, want.data(), kPage) != 0;
    if (differs) {
      if (wrong++ < 5) std::fprintf(stderr, "page %zu differs\n", i);
    }
  }
  std::fflush(stdout);
  const auto more_rounds = [&](unsigned round) {
    if (!until_file.empty()) return round == 1 || !std::filesystem::exists(until_file);
    return round <= rounds;
  };
  for (unsigned round = 1; more_rounds(round); ++round) {
    for (std::size_t i = pages; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    for (std::size_t i : order) {
      expected(i, want.data());
      if (std::memcmp(mem + i * kPage, want.data(), kPage) != 0) {
        if (wrong++ < 5) std::fprintf(stderr, "round %u: page %zu differs\n", round, i);
      }
      ++version;
      expected(i, mem + i * kPage);
      --version;
    }
    ++version;
    std::printf("round %u\n", round);
    std::fflush(stdout);
  }
  const auto t2 = Clock::now();
  const long retouch_faults = major_faults() - faults_before;
  const double fill = std::chrono::duration<double>(filled - t0).count();
  const double retouch = std::chrono::duration<double>(t2 - t1).count();
  std::printf("{\"pages\": %zu, \"source_pages\": %zu, \"fill_seconds\": %.3f, \"retouch_seconds\": %.3f, "
              "\"retouch_major_faults\": %ld, \"wrong_pages\": %zu, \"io_error_pages\": %zu}\n",
              pages, source_pages, fill, retouch, retouch_faults, wrong, io_errors);
  return wrong == 0 ? 0 : 1;
}
