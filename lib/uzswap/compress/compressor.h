// Page compressors behind one interface.
//
// A Compressor owns its codec's working memory (lz4 state, zstd contexts) and is
// used by one thread at a time: each thread that stores or loads pages holds a
// CompressorSet of its own, created when the thread starts, so the request path
// never allocates.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "uzswap/common/page.h"
#include "uzswap/common/result.h"

namespace uzswap {

enum class CompressError {
  corrupt = 1,  // decompress: the data does not decode to exactly one page
};
const std::error_category& compress_category() noexcept;
std::error_code make_error_code(CompressError error) noexcept;

enum class Codec : std::uint8_t { lz4 = 0, zstd = 1 };
inline constexpr std::size_t kCodecCount = 2;

std::string_view codec_name(Codec codec) noexcept;
std::optional<Codec> parse_codec(std::string_view name) noexcept;

// Levels: zstd's compression level (1..19), lz4's acceleration (1 = default).
inline constexpr int kDefaultZstdLevel = 3;
inline constexpr int kDefaultLz4Acceleration = 1;
int default_level(Codec codec) noexcept;
bool valid_level(Codec codec, int level) noexcept;

class Compressor {
 public:
  virtual ~Compressor() = default;
  virtual Codec codec() const noexcept = 0;

  // Compresses one page into `dst`. Returns the compressed length, or 0 when the
  // result does not fit in `dst` (the caller treats the page as incompressible).
  virtual std::size_t compress(PageView src, std::span<std::byte> dst,
                               int level) noexcept = 0;

  // Decompresses `src` into exactly one page. CompressError::corrupt if `src`
  // is corrupt or does not decode to exactly kPageSize bytes.
  virtual Result<> decompress(std::span<const std::byte> src, PageBuffer dst) noexcept = 0;
};

// Throws std::bad_alloc if the codec cannot allocate its working memory.
std::unique_ptr<Compressor> make_compressor(Codec codec);

// One compressor per codec, for one thread.
class CompressorSet {
 public:
  CompressorSet();
  Compressor& get(Codec codec) noexcept {
    return *compressors_[static_cast<std::size_t>(codec)];
  }

 private:
  std::array<std::unique_ptr<Compressor>, kCodecCount> compressors_;
};

}  // namespace uzswap

template <>
struct std::is_error_code_enum<uzswap::CompressError> : std::true_type {};
