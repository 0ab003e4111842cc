#include "support/page_mix.h"

#include <cstring>

#include "uzswap/compress/same_filled.h"

namespace uzswap::testing {

namespace {

constexpr std::string_view kWords[] = {
    "the",     "of",       "and",     "to",      "in",       "is",      "that",    "for",
    "it",      "as",       "with",    "was",     "on",       "be",      "by",      "this",
    "memory",  "page",     "swap",    "kernel",  "process",  "thread",  "cgroup",  "device",
    "return",  "struct",   "const",   "static",  "unsigned", "void",    "int",     "char",
    "error",   "value",    "buffer",  "request", "between",  "through", "however", "because",
    "system",  "function", "compile", "library", "pressure", "reclaim", "cluster", "offset",
    "{",       "}",        "(",       ");",      "=",        "->",      "//",      "\n",
    "0",       "1",        "42",      "4096",    "NULL",     "true",    "false",   "if",
};
constexpr std::size_t kWordCount = sizeof(kWords) / sizeof(kWords[0]);

void make_text(Rng& rng, PageBuffer out) {
  std::size_t pos = 0;
  while (pos < kPageSize) {
    // Zipf-like: low indices far more often.
    const std::uint64_t r = rng.below(kWordCount * kWordCount);
    const std::string_view word = kWords[r / (r % kWordCount + 1) % kWordCount];
    for (std::size_t i = 0; i < word.size() && pos < kPageSize; ++i)
      out[pos++] = static_cast<std::byte>(word[i]);
    if (pos < kPageSize) out[pos++] = std::byte{' '};
  }
}

// Heap-like data: 64-byte records of pointers into a few mappings, small
// counters, flags, doubles and padding, as a C++ heap looks in a core dump.
void make_binary(Rng& rng, PageBuffer out) {
  const std::uint64_t heap_base = 0x000055d4a0000000ull + (rng.below(16) << 24);
  const std::uint64_t stack_base = 0x00007ffc00000000ull;
  std::uint64_t words[kPageSize / 8];
  for (std::size_t i = 0; i < kPageSize / 8; i += 8) {
    words[i + 0] = heap_base + (rng.below(1 << 16) << 4);       // next pointer
    words[i + 1] = heap_base + (rng.below(1 << 16) << 4);       // prev pointer
    words[i + 2] = rng.below(256);                              // small counter
    words[i + 3] = rng.below(4) == 0 ? stack_base + rng.below(1 << 20) : 0;
    words[i + 4] = 0x3ff0000000000000ull | (rng.below(1 << 12) << 40);  // double
    words[i + 5] = rng.below(2) ? 0 : rng.next() & 0xffffffffull;       // id
    words[i + 6] = 0;                                                   // padding
    words[i + 7] = 0x0000000100000001ull * rng.below(8);               // flags
  }
  std::memcpy(out.data(), words, kPageSize);
}

void make_random(Rng& rng, std::byte* out, std::size_t len) {
  for (std::size_t i = 0; i < len; i += 8) {
    const std::uint64_t w = rng.next();
    std::memcpy(out + i, &w, 8);
  }
}

}  // namespace

std::string_view kind_name(PageKind kind) noexcept {
  switch (kind) {
    case PageKind::zero: return "zero";
    case PageKind::same_filled: return "same_filled";
    case PageKind::text: return "text";
    case PageKind::binary: return "binary";
    case PageKind::random: return "random";
    case PageKind::half_random: return "half_random";
  }
  return "unknown";
}

PageKind kind_for_seed(std::uint64_t seed) noexcept {
  unsigned pick = static_cast<unsigned>(Rng(seed ^ 0x5eedull).next() % 100);
  for (std::size_t k = 0; k < kPageKinds; ++k) {
    if (pick < kRealisticMix[k]) return static_cast<PageKind>(k);
    pick -= kRealisticMix[k];
  }
  return PageKind::binary;
}

void make_page(PageKind kind, std::uint64_t seed, PageBuffer out) noexcept {
  Rng rng(seed);
  switch (kind) {
    case PageKind::zero: fill_page(out, 0); return;
    case PageKind::same_filled: fill_page(out, rng.next() | 1); return;
    case PageKind::text: make_text(rng, out); return;
    case PageKind::binary: make_binary(rng, out); return;
    case PageKind::random: make_random(rng, out.data(), kPageSize); return;
    case PageKind::half_random:
      std::memset(out.data(), 0, kPageSize / 2);
      make_random(rng, out.data() + kPageSize / 2, kPageSize / 2);
      return;
  }
}

void make_mixed_page(std::uint64_t seed, PageBuffer out) noexcept {
  make_page(kind_for_seed(seed), seed, out);
}

}  // namespace uzswap::testing
