#include "uzswap/device/swap.h"

#include <sys/swap.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <optional>
#include <sstream>

#include "uzswap/common/text_file.h"

#ifndef SWAP_FLAG_DISCARD_PAGES
#define SWAP_FLAG_DISCARD_PAGES 0x40000
#endif

namespace uzswap {

namespace {

// /proc/swaps escapes space, tab, newline and backslash as \ooo.
bool octal(char c) { return c >= '0' && c <= '7'; }

std::string unescape(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && octal(s[i + 1]) && octal(s[i + 2]) &&
        octal(s[i + 3])) {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

std::vector<SwapArea> parse_proc_swaps(std::string_view text) {
  std::vector<SwapArea> areas;
  std::istringstream in{std::string(text)};
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {  // "Filename Type Size Used Priority"
      header = false;
      if (line.rfind("Filename", 0) == 0) continue;
    }
    std::istringstream fields(line);
    SwapArea a;
    std::string name;
    if (!(fields >> name >> a.type >> a.size_kib >> a.used_kib >> a.priority)) continue;
    a.filename = unescape(name);
    areas.push_back(std::move(a));
  }
  return areas;
}

Result<> swap_on(const std::string& path, int priority) noexcept {
  int flags = SWAP_FLAG_DISCARD | SWAP_FLAG_DISCARD_PAGES;
  if (priority >= 0)
    flags |= SWAP_FLAG_PREFER | ((priority << SWAP_FLAG_PRIO_SHIFT) & SWAP_FLAG_PRIO_MASK);
  if (swapon(path.c_str(), flags) != 0) return failure(errno_error());
  return {};
}

Result<> swap_off(const std::string& path) noexcept {
  if (swapoff(path.c_str()) != 0) return failure(errno_error());
  return {};
}

namespace {

std::string wbt_file(const std::string& device, const std::string& sysfs) {
  return sysfs + "/" + std::filesystem::path(device).filename().string() + "/queue/wbt_lat_usec";
}

// The latency target in microseconds; nullopt for a kernel without WBT.
Result<std::optional<std::uint64_t>> read_wbt(const std::string& file) noexcept {
  const auto text = read_text_file(file);
  if (!text) {
    if (text.error() == std::errc::no_such_file_or_directory) return std::nullopt;
    return failure(text.error());
  }
  std::uint64_t target = 0;
  const char* end = text->data() + text->size();
  if (std::from_chars(text->data(), end, target).ec != std::errc{}) return failure(errno_error(EINVAL));
  return target;
}

}  // namespace

Result<std::uint64_t> disable_writeback_throttling(const std::string& device, const std::string& sysfs) noexcept {
  const std::string file = wbt_file(device, sysfs);
  const auto target = read_wbt(file);
  if (!target) return failure(target.error());
  if (!*target || **target == 0) return std::uint64_t{0};
  if (auto off = write_text_file(file, "0"); !off) return failure(off.error());
  return **target;
}

Result<bool> default_writeback_throttling(const std::string& device, const std::string& sysfs) noexcept {
  const std::string file = wbt_file(device, sysfs);
  const auto target = read_wbt(file);
  if (!target) return failure(target.error());
  if (!*target || **target != 0) return false;
  // -1: the kernel's default target for this queue.
  if (auto on = write_text_file(file, "-1"); !on) return failure(on.error());
  return true;
}

}  // namespace uzswap
