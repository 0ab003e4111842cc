// StoreSettings: the page store's live settings (PageStore::settings()), the
// ones uzswapctl's `set` changes while the store serves (daemon/settings.cpp).
// Each is an atomic read relaxed by every store: a change applies to pages
// stored from then on, and a store that races it uses the old value or the
// new one.
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "uzswap/compress/compressor.h"

namespace uzswap {

class StoreSettings {
 public:
  // Throws on a level `codec` does not have or an accept threshold outside
  // 1..100 percent (PageStoreOptions).
  StoreSettings(Codec codec, int level, std::uint64_t max_pool_bytes, unsigned accept_threshold_percent)
      : codec_(codec), level_(level), max_pool_bytes_(max_pool_bytes),
        accept_threshold_percent_(accept_threshold_percent) {
    if (accept_threshold_percent == 0 || accept_threshold_percent > 100)
      throw std::invalid_argument("accept threshold must be 1..100 percent");
    if (!valid_level(codec, level))
      throw std::invalid_argument("invalid " + std::string(codec_name(codec)) + " level " +
                                  std::to_string(level));
  }
  StoreSettings(const StoreSettings&) = delete;
  StoreSettings& operator=(const StoreSettings&) = delete;

  void set_codec(Codec codec, int level) noexcept {
    // Two stores: a page stored in between may pair the new codec with the
    // old level, which is harmless (any level decodes the same way).
    codec_.store(codec, std::memory_order_relaxed);
    level_.store(level, std::memory_order_relaxed);
  }
  Codec codec() const noexcept { return codec_.load(std::memory_order_relaxed); }
  int level() const noexcept { return level_.load(std::memory_order_relaxed); }

  // PageStoreOptions::max_pool_bytes (0 = no limit) and
  // accept_threshold_percent.
  void set_max_pool_bytes(std::uint64_t bytes) noexcept { max_pool_bytes_.store(bytes, std::memory_order_relaxed); }
  std::uint64_t max_pool_bytes() const noexcept { return max_pool_bytes_.load(std::memory_order_relaxed); }
  void set_accept_threshold_percent(unsigned percent) noexcept {
    accept_threshold_percent_.store(percent, std::memory_order_relaxed);
  }
  unsigned accept_threshold_percent() const noexcept {
    return accept_threshold_percent_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<Codec> codec_;
  std::atomic<int> level_;
  std::atomic<std::uint64_t> max_pool_bytes_;
  std::atomic<unsigned> accept_threshold_percent_;
};

}  // namespace uzswap
