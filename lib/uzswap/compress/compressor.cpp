#include "uzswap/compress/compressor.h"

#include <lz4.h>
#define ZSTD_STATIC_LINKING_ONLY  // static contexts
#include <zstd.h>

#include <algorithm>
#include <new>

namespace uzswap {

namespace {

const char* describe(CompressError error) noexcept {
  switch (error) {
    case CompressError::corrupt: return "compressed data does not decode to one page";
  }
  return "unknown compressor error";
}

}  // namespace

const std::error_category& compress_category() noexcept {
  static const ErrorCategory<CompressError> category("uzswap.compress", describe);
  return category;
}

std::error_code make_error_code(CompressError error) noexcept { return {static_cast<int>(error), compress_category()}; }

std::string_view codec_name(Codec codec) noexcept {
  switch (codec) {
    case Codec::lz4: return "lz4";
    case Codec::zstd: return "zstd";
  }
  return "unknown";
}

std::optional<Codec> parse_codec(std::string_view name) noexcept {
  if (name == "lz4") return Codec::lz4;
  if (name == "zstd") return Codec::zstd;
  return std::nullopt;
}

int default_level(Codec codec) noexcept {
  return codec == Codec::zstd ? kDefaultZstdLevel : kDefaultLz4Acceleration;
}

bool valid_level(Codec codec, int level) noexcept {
  switch (codec) {
    case Codec::lz4: return level >= 1 && level <= 65537;  // LZ4_ACCELERATION_MAX
    case Codec::zstd: return level >= 1 && level <= ZSTD_maxCLevel();
  }
  return false;
}

namespace {

class Lz4Compressor final : public Compressor {
 public:
  Lz4Compressor() : state_(new std::byte[LZ4_sizeofState()]) {}

  Codec codec() const noexcept override { return Codec::lz4; }

  std::size_t compress(PageView src, std::span<std::byte> dst, int level) noexcept override {
    const int n = LZ4_compress_fast_extState(
        state_.get(), reinterpret_cast<const char*>(src.data()),
        reinterpret_cast<char*>(dst.data()), static_cast<int>(src.size()),
        static_cast<int>(dst.size()), level);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }

  Result<> decompress(std::span<const std::byte> src, PageBuffer dst) noexcept override {
    const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(src.data()),
                                      reinterpret_cast<char*>(dst.data()),
                                      static_cast<int>(src.size()),
                                      static_cast<int>(dst.size()));
    if (n != static_cast<int>(kPageSize)) return failure(CompressError::corrupt);
    return {};
  }

 private:
  std::unique_ptr<std::byte[]> state_;
};

// zstd runs on static contexts: their workspace is sized once, for the most
// demanding level on a page-sized input, so no level ever makes zstd allocate
// (a plain context grows and shrinks its workspace as parameters change).
class ZstdCompressor final : public Compressor {
 public:
  ZstdCompressor() {
    std::size_t cctx_bytes = 0;
    for (int level = 1; level <= ZSTD_maxCLevel(); ++level)
      cctx_bytes = std::max(cctx_bytes, ZSTD_estimateCCtxSize_usingCParams(
                                            ZSTD_getCParams(level, kPageSize, 0)));
    cctx_bytes = (cctx_bytes + 63) / 64 * 64;  // the DCtx after it must be aligned
    const std::size_t dctx_bytes = ZSTD_estimateDCtxSize();
    workspace_ = std::make_unique<std::byte[]>(cctx_bytes + dctx_bytes);
    cctx_ = ZSTD_initStaticCCtx(workspace_.get(), cctx_bytes);
    dctx_ = ZSTD_initStaticDCtx(workspace_.get() + cctx_bytes, dctx_bytes);
    if (cctx_ == nullptr || dctx_ == nullptr) throw std::bad_alloc();
  }

  Codec codec() const noexcept override { return Codec::zstd; }

  std::size_t compress(PageView src, std::span<std::byte> dst, int level) noexcept override {
    const std::size_t n =
        ZSTD_compressCCtx(cctx_, dst.data(), dst.size(), src.data(), src.size(), level);
    return ZSTD_isError(n) ? 0 : n;
  }

  Result<> decompress(std::span<const std::byte> src, PageBuffer dst) noexcept override {
    const std::size_t n =
        ZSTD_decompressDCtx(dctx_, dst.data(), dst.size(), src.data(), src.size());
    if (ZSTD_isError(n) || n != kPageSize) return failure(CompressError::corrupt);
    return {};
  }

 private:
  std::unique_ptr<std::byte[]> workspace_;
  ZSTD_CCtx* cctx_ = nullptr;  // both live inside workspace_
  ZSTD_DCtx* dctx_ = nullptr;
};

}  // namespace

std::unique_ptr<Compressor> make_compressor(Codec codec) {
  switch (codec) {
    case Codec::lz4: return std::make_unique<Lz4Compressor>();
    case Codec::zstd: return std::make_unique<ZstdCompressor>();
  }
  return nullptr;
}

CompressorSet::CompressorSet() {
  for (std::size_t i = 0; i < kCodecCount; ++i)
    compressors_[i] = make_compressor(static_cast<Codec>(i));
}

}  // namespace uzswap
