#include "uzswap/compress/compressor.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include "support/page_mix.h"

namespace uzswap {
namespace {

using testing::PageKind;

class CompressorTest : public ::testing::TestWithParam<Codec> {
 protected:
  std::unique_ptr<Compressor> compressor = make_compressor(GetParam());
  alignas(64) std::array<std::byte, kPageSize> page{};
  alignas(64) std::array<std::byte, kPageSize> back{};
  std::array<std::byte, 2 * kPageSize> out{};
};

TEST_P(CompressorTest, EveryKindOfPageRoundTrips) {
  for (std::size_t k = 0; k < testing::kPageKinds; ++k) {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
      testing::make_page(static_cast<PageKind>(k), seed, page);
      const std::size_t n = compressor->compress(page, out, default_level(GetParam()));
      ASSERT_GT(n, 0u) << testing::kind_name(static_cast<PageKind>(k));
      back.fill(std::byte{0xAA});
      ASSERT_TRUE(compressor->decompress(std::span(out.data(), n), back));
      ASSERT_EQ(page, back) << testing::kind_name(static_cast<PageKind>(k)) << " seed " << seed;
    }
  }
}

TEST_P(CompressorTest, TextAndBinaryPagesShrink) {
  for (PageKind kind : {PageKind::text, PageKind::binary}) {
    testing::make_page(kind, 7, page);
    const std::size_t n = compressor->compress(page, out, default_level(GetParam()));
    EXPECT_GT(n, 0u);
    EXPECT_LT(n, kPageSize * 3 / 4) << testing::kind_name(kind);
  }
}

TEST_P(CompressorTest, OutputThatDoesNotFitReturnsZero) {
  testing::make_page(PageKind::random, 3, page);
  EXPECT_EQ(compressor->compress(page, std::span(out.data(), 2048), default_level(GetParam())), 0u);
}

TEST_P(CompressorTest, CorruptInputIsRejectedNotOverrun) {
  testing::make_page(PageKind::text, 5, page);
  const std::size_t n = compressor->compress(page, out, default_level(GetParam()));
  ASSERT_GT(n, 8u);
  // Truncated input.
  EXPECT_EQ(compressor->decompress(std::span(out.data(), n / 2), back).error(), CompressError::corrupt);
  // Garbage.
  std::vector<std::byte> garbage(n, std::byte{0xFF});
  EXPECT_FALSE(compressor->decompress(garbage, back));
}

TEST_P(CompressorTest, EveryValidLevelRoundTrips) {
  testing::make_page(PageKind::binary, 11, page);
  for (int level : {1, 2, 5, 9}) {
    ASSERT_TRUE(valid_level(GetParam(), level));
    const std::size_t n = compressor->compress(page, out, level);
    ASSERT_GT(n, 0u);
    ASSERT_TRUE(compressor->decompress(std::span(out.data(), n), back));
    EXPECT_EQ(page, back);
  }
}

INSTANTIATE_TEST_SUITE_P(Codecs, CompressorTest, ::testing::Values(Codec::lz4, Codec::zstd),
                         [](const auto& param_info) { return std::string(codec_name(param_info.param)); });

TEST(Codec, NamesParseBack) {
  EXPECT_EQ(parse_codec("lz4"), Codec::lz4);
  EXPECT_EQ(parse_codec("zstd"), Codec::zstd);
  EXPECT_EQ(parse_codec(codec_name(Codec::zstd)), Codec::zstd);
  EXPECT_FALSE(parse_codec("LZ4").has_value());
  EXPECT_FALSE(parse_codec("").has_value());
  EXPECT_FALSE(parse_codec("deflate").has_value());
}

TEST(Codec, LevelsOutsideTheRangeAreInvalid) {
  EXPECT_FALSE(valid_level(Codec::zstd, 0));
  EXPECT_FALSE(valid_level(Codec::zstd, 23));
  EXPECT_FALSE(valid_level(Codec::lz4, 0));
  EXPECT_TRUE(valid_level(Codec::zstd, kDefaultZstdLevel));
  EXPECT_TRUE(valid_level(Codec::lz4, kDefaultLz4Acceleration));
}

TEST(CompressorSet, HoldsOneCompressorPerCodec) {
  CompressorSet set;
  EXPECT_EQ(set.get(Codec::lz4).codec(), Codec::lz4);
  EXPECT_EQ(set.get(Codec::zstd).codec(), Codec::zstd);
}

}  // namespace
}  // namespace uzswap
