#include "uzswap/reclaim/kernel_files.h"

#include <charconv>
#include <sstream>

namespace uzswap {

namespace {

std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

template <typename T>
bool to_number(std::string_view s, T& out, int base = 10) {
  if (s.empty()) return false;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc{} && ptr == s.data() + s.size();
}

}  // namespace

PagemapEntry decode_pagemap(std::uint64_t word) noexcept {
  PagemapEntry e;
  e.present = word & (std::uint64_t{1} << 63);
  e.swapped = word & (std::uint64_t{1} << 62);
  if (e.swapped && !e.present) {
    e.swap_type = static_cast<unsigned>(word & 0x1f);
    e.swap_offset = (word >> 5) & ((std::uint64_t{1} << 50) - 1);
  }
  return e;
}

namespace {

// One maps line: 7f0000000000-7f0000021000 rw-p 00000000 00:00 0      [heap]
std::optional<MappedRange> parse_maps_line(std::string_view line) {
  const auto dash = line.find('-');
  const auto space = line.find(' ');
  if (dash == std::string_view::npos || space == std::string_view::npos || dash > space) return std::nullopt;
  MappedRange r;
  if (!to_number(line.substr(0, dash), r.start, 16) ||
      !to_number(line.substr(dash + 1, space - dash - 1), r.end, 16) || r.end <= r.start)
    return std::nullopt;
  const std::string_view perms = line.substr(space + 1, 4);
  if (perms.size() < 4) return std::nullopt;
  r.readable = perms[0] == 'r';
  r.shared = perms[3] == 's';
  // The path is the sixth field, and may contain spaces.
  std::size_t pos = space + 1;
  for (int field = 0; field < 4 && pos != std::string_view::npos; ++field) {
    pos = line.find(' ', pos);
    if (pos != std::string_view::npos) pos = line.find_first_not_of(' ', pos);
  }
  if (pos != std::string_view::npos) r.path = std::string(line.substr(pos));
  return r;
}

}  // namespace

std::vector<MappedRange> parse_maps(std::string_view text) {
  std::vector<MappedRange> ranges;
  for (std::string_view line : lines(text))
    if (auto r = parse_maps_line(line)) ranges.push_back(std::move(*r));
  return ranges;
}

std::vector<MappedRange> parse_smaps(std::string_view text) {
  std::vector<MappedRange> ranges;
  for (std::string_view line : lines(text)) {
    if (line.rfind("Swap:", 0) == 0) {
      // "Swap:                 12 kB"
      if (ranges.empty()) continue;
      std::string_view v = line.substr(5);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      const auto end = v.find(' ');
      std::uint64_t kb;
      if (to_number(v.substr(0, end), kb)) ranges.back().swap_kb = kb;
      continue;
    }
    // Field lines ("Size: ...", "VmFlags: ...") never parse as a range.
    if (auto r = parse_maps_line(line)) ranges.push_back(std::move(*r));
  }
  return ranges;
}


std::map<std::string, std::uint64_t> parse_memory_events(std::string_view text) {
  std::map<std::string, std::uint64_t> events;
  for (std::string_view line : lines(text)) {
    const auto space = line.find(' ');
    if (space == std::string_view::npos || space == 0) continue;
    std::uint64_t value;
    if (to_number(line.substr(space + 1), value)) events[std::string(line.substr(0, space))] = value;
  }
  return events;
}

Psi parse_psi(std::string_view text) {
  Psi psi;
  for (std::string_view line : lines(text)) {
    // some avg10=0.00 avg60=0.00 avg300=0.00 total=0
    const bool some = line.rfind("some ", 0) == 0;
    const bool full = line.rfind("full ", 0) == 0;
    if (!some && !full) continue;
    PsiLine p;
    int found = 0;
    std::istringstream fields{std::string(line.substr(5))};
    std::string field;
    while (fields >> field) {
      const auto eq = field.find('=');
      if (eq == std::string::npos) continue;
      const std::string key = field.substr(0, eq), value = field.substr(eq + 1);
      try {
        if (key == "avg10") p.avg10 = std::stod(value), ++found;
        else if (key == "avg60") p.avg60 = std::stod(value), ++found;
        else if (key == "avg300") p.avg300 = std::stod(value), ++found;
        else if (key == "total") p.total_us = std::stoull(value), ++found;
      } catch (const std::exception&) {
        found = -100;
      }
    }
    if (found < 4) continue;
    (some ? psi.some : psi.full) = p;
  }
  return psi;
}

std::optional<MemInfo> parse_meminfo(std::string_view text) {
  // "MemTotal:       24567890 kB"
  std::optional<std::uint64_t> total, available;
  for (std::string_view line : lines(text)) {
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view key = line.substr(0, colon);
    if (key != "MemTotal" && key != "MemAvailable") continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (value.ends_with(" kB")) value.remove_suffix(3);
    std::uint64_t kb;
    if (!to_number(value, kb)) continue;
    (key == "MemTotal" ? total : available) = kb;
  }
  if (!total || !available) return std::nullopt;
  return MemInfo{*total, *available};
}

std::vector<int> parse_cgroup_procs(std::string_view text) {
  std::vector<int> pids;
  for (std::string_view line : lines(text)) {
    int pid;
    if (to_number(line, pid) && pid > 0) pids.push_back(pid);
  }
  return pids;
}

}  // namespace uzswap
