// The swap area signature (mkswap's job): page 0 of a swap device, the
// kernel's union swap_header, version 1, with "SWAPSPACE2" in its last bytes.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "uzswap/common/page.h"
#include "uzswap/common/result.h"

namespace uzswap {

using Uuid = std::array<std::uint8_t, 16>;

struct SwapHeaderInfo {
  std::uint32_t version = 0;
  std::uint32_t last_page = 0;
  std::uint32_t nr_badpages = 0;
  Uuid uuid{};
  std::string label;
};

// A random (version 4) UUID; an error only if getrandom(2) fails.
Result<Uuid> random_uuid() noexcept;
std::string format_uuid(const Uuid& uuid);

// Writes a version-1 swap header for a device of `pages` pages (the first of
// which is the header). The label is cut to 16 bytes.
void make_swap_header(PageBuffer out, std::uint64_t pages, const Uuid& uuid,
                      std::string_view label) noexcept;

// nullopt unless `page` carries the SWAPSPACE2 signature.
std::optional<SwapHeaderInfo> parse_swap_header(PageView page) noexcept;

}  // namespace uzswap
