#include "uzswap/pool/size_classes.h"

#include <gtest/gtest.h>

namespace uzswap {
namespace {

TEST(SizeClasses, EveryLengthFitsItsClass) {
  SizeClasses classes;
  for (std::size_t len = 1; len <= kPageSize; ++len) {
    const SizeClass& c = classes[classes.index_for(len)];
    ASSERT_GE(c.size, len);
    // Never more than one size step plus merging slack above the length.
    ASSERT_LT(c.size - len, 1024u) << len;
  }
}

TEST(SizeClasses, ClassesAscendAndHaveDistinctGeometry) {
  SizeClasses classes;
  for (unsigned i = 1; i < classes.count(); ++i) {
    EXPECT_LT(classes[i - 1].size, classes[i].size);
    EXPECT_FALSE(classes[i - 1].objs_per_span == classes[i].objs_per_span &&
                 classes[i - 1].pages_per_span == classes[i].pages_per_span)
        << "classes " << i - 1 << " and " << i << " should have been merged";
  }
}

TEST(SizeClasses, ObjectsFitTheirSpans) {
  SizeClasses classes;
  for (unsigned i = 0; i < classes.count(); ++i) {
    const SizeClass& c = classes[i];
    EXPECT_GE(c.pages_per_span, 1u);
    EXPECT_LE(c.pages_per_span, SizeClasses::kMaxPagesPerSpan);
    EXPECT_GE(c.objs_per_span, 1u);
    EXPECT_LE(std::size_t{c.objs_per_span} * c.size, std::size_t{c.pages_per_span} * kPageSize);
  }
}

TEST(SizeClasses, SpanTailsWasteLittle) {
  // With up to eight pages a span, every class of objects up to the
  // incompressible threshold uses at least 90% of its span.
  SizeClasses classes;
  for (unsigned i = 0; i < classes.count(); ++i) {
    const SizeClass& c = classes[i];
    if (c.size > classes.largest_saving_size()) continue;
    const double used = double(c.objs_per_span) * c.size / (c.pages_per_span * double(kPageSize));
    EXPECT_GE(used, 0.90) << "class of " << c.size << " bytes";
  }
}

TEST(SizeClasses, WholePageClassHoldsOnePagePerSpan) {
  SizeClasses classes;
  const SizeClass& c = classes[classes.index_for(kPageSize)];
  EXPECT_EQ(c.size, kPageSize);
  EXPECT_EQ(c.objs_per_span, 1u);
  EXPECT_EQ(c.pages_per_span, 1u);
}

TEST(SizeClasses, LargestSavingSizeStillSavesMemory) {
  SizeClasses classes;
  const std::uint32_t largest = classes.largest_saving_size();
  EXPECT_GT(largest, kPageSize / 2);
  EXPECT_LT(largest, kPageSize);
  const SizeClass& c = classes[classes.index_for(largest)];
  EXPECT_GT(c.objs_per_span, c.pages_per_span);
  const SizeClass& above = classes[classes.index_for(largest + 1)];
  EXPECT_LE(above.objs_per_span, above.pages_per_span);
}

}  // namespace
}  // namespace uzswap
