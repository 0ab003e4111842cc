#include "uzswap/device/swap_header.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace uzswap {

namespace {

// Offsets in the kernel's union swap_header (include/linux/swap.h).
constexpr std::size_t kVersionOffset = 1024;
constexpr std::size_t kLastPageOffset = 1028;
constexpr std::size_t kBadPagesOffset = 1032;
constexpr std::size_t kUuidOffset = 1036;
constexpr std::size_t kLabelOffset = 1052;
constexpr std::size_t kLabelBytes = 16;
constexpr std::string_view kMagic = "SWAPSPACE2";

void put32(std::byte* p, std::uint32_t v) { std::memcpy(p, &v, 4); }
std::uint32_t get32(const std::byte* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

Result<Uuid> random_uuid() noexcept {
  Uuid u;
  std::size_t got = 0;
  while (got < u.size()) {
    const ssize_t n = getrandom(u.data() + got, u.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return failure(errno_error());
    }
    got += static_cast<std::size_t>(n);
  }
  u[6] = static_cast<std::uint8_t>((u[6] & 0x0f) | 0x40);  // version 4
  u[8] = static_cast<std::uint8_t>((u[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return u;
}

std::string format_uuid(const Uuid& u) {
  char s[37];
  std::snprintf(s, sizeof(s),
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                u[14], u[15]);
  return s;
}

void make_swap_header(PageBuffer out, std::uint64_t pages, const Uuid& uuid,
                      std::string_view label) noexcept {
  std::memset(out.data(), 0, kPageSize);
  put32(out.data() + kVersionOffset, 1);
  put32(out.data() + kLastPageOffset,
        static_cast<std::uint32_t>(std::min<std::uint64_t>(pages - 1, UINT32_MAX)));
  put32(out.data() + kBadPagesOffset, 0);
  std::memcpy(out.data() + kUuidOffset, uuid.data(), uuid.size());
  std::memcpy(out.data() + kLabelOffset, label.data(), std::min(label.size(), kLabelBytes));
  std::memcpy(out.data() + kPageSize - kMagic.size(), kMagic.data(), kMagic.size());
}

std::optional<SwapHeaderInfo> parse_swap_header(PageView page) noexcept {
  if (std::memcmp(page.data() + kPageSize - kMagic.size(), kMagic.data(), kMagic.size()) != 0)
    return std::nullopt;
  SwapHeaderInfo info;
  info.version = get32(page.data() + kVersionOffset);
  info.last_page = get32(page.data() + kLastPageOffset);
  info.nr_badpages = get32(page.data() + kBadPagesOffset);
  std::memcpy(info.uuid.data(), page.data() + kUuidOffset, info.uuid.size());
  const char* label = reinterpret_cast<const char*>(page.data() + kLabelOffset);
  info.label.assign(label, strnlen(label, kLabelBytes));
  return info;
}

}  // namespace uzswap
