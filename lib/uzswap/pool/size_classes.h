// Size classes of the compressed-object pool (zsmalloc's size_class table).
//
// Object sizes are rounded up to a multiple of 16 bytes, from 32 to a whole
// page. Each class packs its objects into spans of 1..8 contiguous pages,
// choosing the span length that wastes the least of the span's tail. Adjacent
// sizes whose spans hold the same number of objects in the same number of pages
// are merged into the larger one: they use the same RAM, and fewer classes means
// fewer partly-filled spans.
#pragma once

#include <cstdint>
#include <vector>

#include "uzswap/common/page.h"

namespace uzswap {

struct SizeClass {
  std::uint32_t size;            // bytes per object slot
  std::uint16_t objs_per_span;
  std::uint8_t pages_per_span;   // 1..kMaxPagesPerSpan
};

class SizeClasses {
 public:
  static constexpr std::uint32_t kMinSize = 32;
  static constexpr std::uint32_t kDelta = 16;
  static constexpr unsigned kMaxPagesPerSpan = 8;

  SizeClasses();

  // The class that holds an object of `len` bytes (1..kPageSize).
  unsigned index_for(std::size_t len) const noexcept {
    const std::size_t rounded = len <= kMinSize ? kMinSize : len;
    return step_to_class_[(rounded - kMinSize + kDelta - 1) / kDelta];
  }
  const SizeClass& operator[](unsigned index) const noexcept { return classes_[index]; }
  unsigned count() const noexcept { return static_cast<unsigned>(classes_.size()); }

  // The largest object size whose class still stores objects in less than a
  // page each: bigger compressed pages save nothing and are kept raw.
  std::uint32_t largest_saving_size() const noexcept { return largest_saving_size_; }

 private:
  std::vector<SizeClass> classes_;
  std::vector<std::uint16_t> step_to_class_;
  std::uint32_t largest_saving_size_ = 0;
};

}  // namespace uzswap
