#include "uzswap/compress/same_filled.h"

#include <cstring>

namespace uzswap {

namespace {

constexpr std::size_t kWords = kPageSize / sizeof(std::uint64_t);

std::uint64_t word_at(const std::byte* p, std::size_t i) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p + i * sizeof(w), sizeof(w));
  return w;
}

}  // namespace

std::optional<std::uint64_t> same_filled_word(PageView page) noexcept {
  const std::byte* p = page.data();
  const std::uint64_t first = word_at(p, 0);
  // Most pages differ early: check the last and a middle word first, then
  // scan in blocks the compiler can vectorise.
  if (word_at(p, kWords - 1) != first || word_at(p, kWords / 2) != first) return std::nullopt;
  for (std::size_t i = 0; i < kWords; i += 8) {
    std::uint64_t diff = 0;
    for (std::size_t j = 0; j < 8; ++j) diff |= word_at(p, i + j) ^ first;
    if (diff != 0) return std::nullopt;
  }
  return first;
}

void fill_page(PageBuffer out, std::uint64_t word) noexcept {
  for (std::size_t i = 0; i < kWords; ++i)
    std::memcpy(out.data() + i * sizeof(word), &word, sizeof(word));
}

}  // namespace uzswap
