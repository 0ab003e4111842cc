// Pages with the content of real anonymous memory, for tests and benchmarks:
// zero pages, same-filled pages, text, heap-like binary structures, and random
// (incompressible) bytes. Every page is a pure function of (kind, seed), so a
// test can regenerate the bytes it expects instead of keeping a copy.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "uzswap/common/page.h"

namespace uzswap::testing {

enum class PageKind : std::uint8_t { zero, same_filled, text, binary, random, half_random };
inline constexpr std::size_t kPageKinds = 6;

std::string_view kind_name(PageKind kind) noexcept;

// Share of each kind in the realistic mix, in percent (sums to 100).
inline constexpr std::array<unsigned, kPageKinds> kRealisticMix = {15, 5, 30, 35, 10, 5};

// The kind a seed draws from the realistic mix.
PageKind kind_for_seed(std::uint64_t seed) noexcept;

void make_page(PageKind kind, std::uint64_t seed, PageBuffer out) noexcept;

// make_page(kind_for_seed(seed), seed, out).
void make_mixed_page(std::uint64_t seed, PageBuffer out) noexcept;

// A fast deterministic generator (splitmix64).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }

 private:
  std::uint64_t state_;
};

}  // namespace uzswap::testing
