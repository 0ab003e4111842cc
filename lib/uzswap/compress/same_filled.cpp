#include "uzswap/compress/same_filled.h"

#include <cstring>

namespace uzswap {

namespace {
constexpr std::size_t kWords = kPageSize / sizeof(std::uint64_t);
}

std::optional<std::uint64_t> same_filled_word(PageView page) noexcept {
  std::uint64_t words[kWords];
  std::memcpy(words, page.data(), kPageSize);
  const std::uint64_t first = words[0];
  // Most pages differ early: check the last word first, then scan in blocks
  // the compiler can vectorise.
  if (words[kWords - 1] != first) return std::nullopt;
  for (std::size_t i = 0; i < kWords; i += 8) {
    std::uint64_t diff = 0;
    for (std::size_t j = 0; j < 8; ++j) diff |= words[i + j] ^ first;
    if (diff != 0) return std::nullopt;
  }
  return first;
}

void fill_page(PageBuffer out, std::uint64_t word) noexcept {
  std::uint64_t words[kWords];
  for (auto& w : words) w = word;
  std::memcpy(out.data(), words, kPageSize);
}

}  // namespace uzswap
