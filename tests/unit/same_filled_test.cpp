#include "uzswap/compress/same_filled.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>

namespace uzswap {
namespace {

struct Page {
  alignas(64) std::array<std::byte, kPageSize> bytes{};
  PageBuffer buf() { return PageBuffer(bytes); }
  PageView view() const { return PageView(bytes); }
};

TEST(SameFilled, ZeroPageIsSameFilledWithZeroWord) {
  Page p;
  auto word = same_filled_word(p.view());
  ASSERT_TRUE(word.has_value());
  EXPECT_EQ(*word, 0u);
}

TEST(SameFilled, RepeatedWordIsDetected) {
  Page p;
  fill_page(p.buf(), 0xdeadbeefcafef00dull);
  auto word = same_filled_word(p.view());
  ASSERT_TRUE(word.has_value());
  EXPECT_EQ(*word, 0xdeadbeefcafef00dull);
}

TEST(SameFilled, OneDifferentByteAnywhereIsNotSameFilled) {
  for (std::size_t pos : {std::size_t{0}, std::size_t{7}, std::size_t{8}, std::size_t{2049},
                          kPageSize - 9, kPageSize - 1}) {
    Page p;
    fill_page(p.buf(), 0x0101010101010101ull);
    p.bytes[pos] = std::byte{0x02};
    EXPECT_FALSE(same_filled_word(p.view()).has_value()) << "byte " << pos;
  }
}

TEST(SameFilled, RepeatedByteThatIsNotAWordPatternStillCountsPerWord) {
  // Words equal to each other though their bytes differ inside the word.
  Page p;
  const std::uint64_t word = 0x0102030405060708ull;
  for (std::size_t i = 0; i < kPageSize; i += 8) std::memcpy(&p.bytes[i], &word, 8);
  auto found = same_filled_word(p.view());
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(*found, word);
}

TEST(SameFilled, FillThenDetectRoundTrips) {
  Page p;
  for (std::uint64_t w : {0ull, 1ull, ~0ull, 0x8000000000000000ull}) {
    fill_page(p.buf(), w);
    EXPECT_EQ(same_filled_word(p.view()), w);
  }
}

}  // namespace
}  // namespace uzswap
