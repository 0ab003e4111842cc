#include "uzswap/common/checksum.h"

#include <xxhash.h>

namespace uzswap {

std::uint32_t page_checksum(PageView page) noexcept {
  return static_cast<std::uint32_t>(XXH3_64bits(page.data(), page.size()));
}

}  // namespace uzswap
