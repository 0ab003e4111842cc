#include "uzswap/pool/size_classes.h"

#include <algorithm>

namespace uzswap {

namespace {

SizeClass best_geometry(std::uint32_t size) {
  SizeClass best{size, 0, 0};
  std::size_t best_used = 0;  // bytes used per span, scaled by 1/pages
  for (unsigned pages = 1; pages <= SizeClasses::kMaxPagesPerSpan; ++pages) {
    const std::size_t span = pages * kPageSize;
    const std::size_t objs = span / size;
    // Compare used fractions objs*size/span without floating point.
    const std::size_t used = objs * size * SizeClasses::kMaxPagesPerSpan / pages;
    if (used > best_used) {
      best_used = used;
      best.objs_per_span = static_cast<std::uint16_t>(objs);
      best.pages_per_span = static_cast<std::uint8_t>(pages);
    }
  }
  return best;
}

}  // namespace

SizeClasses::SizeClasses() {
  const std::size_t steps = (kPageSize - kMinSize) / kDelta + 1;
  step_to_class_.assign(steps, 0);
  // Walk from the largest size down, merging a size into the class above it
  // when both have the same span geometry (as zsmalloc does).
  std::vector<SizeClass> descending;
  std::vector<std::uint16_t> step_to_desc(steps);
  for (std::size_t step = steps; step-- > 0;) {
    const SizeClass geometry = best_geometry(static_cast<std::uint32_t>(kMinSize + step * kDelta));
    if (!descending.empty() && descending.back().objs_per_span == geometry.objs_per_span &&
        descending.back().pages_per_span == geometry.pages_per_span) {
      step_to_desc[step] = static_cast<std::uint16_t>(descending.size() - 1);
      continue;
    }
    descending.push_back(geometry);
    step_to_desc[step] = static_cast<std::uint16_t>(descending.size() - 1);
  }
  classes_.assign(descending.rbegin(), descending.rend());
  const auto last = static_cast<std::uint16_t>(classes_.size() - 1);
  for (std::size_t step = 0; step < steps; ++step)
    step_to_class_[step] = static_cast<std::uint16_t>(last - step_to_desc[step]);

  for (const SizeClass& c : classes_)
    if (c.objs_per_span > c.pages_per_span)
      largest_saving_size_ = std::max(largest_saving_size_, c.size);
}

}  // namespace uzswap
