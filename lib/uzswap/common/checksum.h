// The integrity check of a stored page: 32 bits of XXH3 (libxxhash) over the
// page's 4096 bytes as the kernel wrote them, taken once at store time and
// checked on every load, whatever the page went through in between
// (compression, the pool, compaction, writeback to the backing file, the
// file itself). A mismatch is an error for that page, never wrong bytes.
//
// XXH3 is not a cryptographic hash: it catches damage (a flipped bit, a torn
// or misdirected write, a compressor bug), not a forger who knows the page.
#pragma once

#include <cstdint>

#include "uzswap/common/page.h"

namespace uzswap {

std::uint32_t page_checksum(PageView page) noexcept;

}  // namespace uzswap
