// Same-filled page detection (zswap_is_page_same_filled / zram's
// page_same_filled): a page whose every 8-byte word is equal is stored as that
// word alone. Zero pages are the common case.
#pragma once

#include <cstdint>
#include <optional>

#include "uzswap/common/page.h"

namespace uzswap {

// Returns the repeated word if every 8-byte word of `page` is equal.
std::optional<std::uint64_t> same_filled_word(PageView page) noexcept;

// Writes `word` into every 8-byte word of `out`.
void fill_page(PageBuffer out, std::uint64_t word) noexcept;

}  // namespace uzswap
