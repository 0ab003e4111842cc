// Micro-benchmarks of the page store (Google Benchmark).
//
// Store and load throughput per thread on the realistic page mix, next to the
// raw compressor on the same pages, and pool density after a fill, after
// random frees and after compaction. tests/bench/micro runs this binary and
// turns its JSON into the tables of docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <array>
#include <vector>

#include "uzswap/common/checksum.h"
#include "uzswap/store/page_store.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

constexpr std::size_t kPages = 16384;  // 64 MiB of input

using Page = std::array<std::byte, kPageSize>;

const std::vector<Page>& pages() {
  static const std::vector<Page> all = [] {
    std::vector<Page> v(kPages);
    for (std::size_t i = 0; i < kPages; ++i) testing::make_mixed_page(i * 2654435761u, v[i]);
    return v;
  }();
  return all;
}

PageStoreOptions options(Codec codec, std::uint64_t slots) {
  PageStoreOptions o;
  o.slots = slots;
  o.codec = codec;
  o.level = default_level(codec);
  o.pool.reserve_bytes_per_node = 4ull << 30;
  return o;
}

void set_bytes(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kPageSize);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// The compressor alone, as PageStore would call it (same-filled pages included,
// so the comparison is over the same input).
void BM_RawCompress(benchmark::State& state) {
  const Codec codec = static_cast<Codec>(state.range(0));
  auto compressor = make_compressor(codec);
  std::array<std::byte, 2 * kPageSize> out;
  const auto& input = pages();
  std::size_t i = state.thread_index() * 4099;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        compressor->compress(input[i++ % kPages], out, default_level(codec)));
  }
  set_bytes(state);
}

void BM_RawDecompress(benchmark::State& state) {
  const Codec codec = static_cast<Codec>(state.range(0));
  auto compressor = make_compressor(codec);
  std::vector<std::vector<std::byte>> compressed(kPages);
  std::array<std::byte, 2 * kPageSize> buf;
  for (std::size_t i = 0; i < kPages; ++i) {
    const std::size_t n = compressor->compress(pages()[i], buf, default_level(codec));
    compressed[i].assign(buf.begin(), buf.begin() + n);
  }
  Page out;
  std::size_t i = state.thread_index() * 4099;
  for (auto _ : state) {
    const auto& c = compressed[i++ % kPages];
    benchmark::DoNotOptimize(compressor->decompress(c, out));
  }
  set_bytes(state);
}

// One store shared by the threads of a run; each thread stores into its own
// range of slots, replacing what it stored there a lap before.
PageStore* g_store = nullptr;

void BM_Store(benchmark::State& state) {
  const Codec codec = static_cast<Codec>(state.range(0));
  if (state.thread_index() == 0) g_store = new PageStore(options(codec, kPages * state.threads()));
  PageStore::prepare_thread();
  // Google Benchmark starts the timed loop of every thread together.
  const auto& input = pages();
  const Slot base = static_cast<Slot>(state.thread_index()) * kPages;
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t n = i++ % kPages;
    benchmark::DoNotOptimize(g_store->store(base + n, input[n]));
  }
  set_bytes(state);
  if (state.thread_index() == 0) {
    const PageStoreStats s = g_store->stats();
    state.counters["ratio"] = double(s.orig_bytes) / double(std::max<std::uint64_t>(s.pool_bytes, 1));
  }
}

void BM_Load(benchmark::State& state) {
  const Codec codec = static_cast<Codec>(state.range(0));
  PageStore store(options(codec, kPages));
  PageStore::prepare_thread();
  for (std::size_t n = 0; n < kPages; ++n) (void)store.store(n, pages()[n]);
  Page out;
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(store.load(i++ % kPages, out));
  set_bytes(state);
}

// The integrity checksum alone (XXH3 of a page), which every store and every
// load of bytes pays once: its share of BM_Store and BM_Load is its cost.
void BM_PageChecksum(benchmark::State& state) {
  const auto& input = pages();
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(page_checksum(input[i++ % kPages]));
  set_bytes(state);
}

// Pool density: pool_bytes / compressed_bytes after a fill, after freeing two
// pages in three at random, and after compaction. Not a timing.
void BM_PoolDensity(benchmark::State& state) {
  const Codec codec = static_cast<Codec>(state.range(0));
  double fill = 0, freed = 0, compacted = 0, moved = 0;
  for (auto _ : state) {
    PageStore store(options(codec, kPages * 4));
    for (std::size_t n = 0; n < kPages * 4; ++n) {
      Page p;
      testing::make_mixed_page(n * 7919 + 1, p);
      (void)store.store(n, p);
    }
    auto density = [&] {
      const PageStoreStats s = store.stats();
      return double(s.pool_bytes) / double(s.compressed_bytes);
    };
    fill = density();
    testing::Rng rng(3);
    for (std::size_t n = 0; n < kPages * 4; ++n)
      if (rng.below(3) != 0) (void)store.invalidate(n, 1);
    freed = density();
    moved = double(store.housekeeping().compact().objects_to_move);
    compacted = density();
  }
  state.counters["after_fill"] = fill;
  state.counters["after_frees"] = freed;
  state.counters["after_compaction"] = compacted;
  state.counters["objects_moved"] = moved;
}

void codecs(benchmark::internal::Benchmark* b) {
  b->ArgName("codec")->Arg(static_cast<int>(Codec::lz4))->Arg(static_cast<int>(Codec::zstd));
}

BENCHMARK(BM_RawCompress)->Apply(codecs)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Store)->Apply(codecs)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RawDecompress)->Apply(codecs)->Threads(1)->UseRealTime();
BENCHMARK(BM_Load)->Apply(codecs)->Threads(1)->UseRealTime();
BENCHMARK(BM_PageChecksum)->Threads(1)->UseRealTime();
BENCHMARK(BM_PoolDensity)->Apply(codecs)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace uzswap

BENCHMARK_MAIN();
