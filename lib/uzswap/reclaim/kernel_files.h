// Parsers of the kernel files that cgroup attribution and pressure-driven
// reclaim read. Each is a pure function of the text (or word) read, tested on
// captured samples; the code that opens the files stays thin. An empty or
// malformed read means "gone or unknown", never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace uzswap {

// One 64-bit word of /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst).
struct PagemapEntry {
  bool present = false;
  bool swapped = false;
  unsigned swap_type = 0;       // bits 0-4 when swapped
  std::uint64_t swap_offset = 0;  // bits 5-54 when swapped
};
PagemapEntry decode_pagemap(std::uint64_t word) noexcept;

// One line of /proc/PID/maps.
struct MappedRange {
  std::uint64_t start = 0;
  std::uint64_t end = 0;
  bool readable = false;
  bool shared = false;  // 's' rather than 'p'
  std::string path;     // may be empty, or [heap], [stack], ...
  std::uint64_t swap_kb = 0;  // from smaps only: how much of it is swapped out
};
std::vector<MappedRange> parse_maps(std::string_view text);
// /proc/PID/smaps: the maps lines, each with its "Swap:" size.
std::vector<MappedRange> parse_smaps(std::string_view text);

// memory.events (and memory.events.local): "key value" lines, read by name.
std::map<std::string, std::uint64_t> parse_memory_events(std::string_view text);

// A PSI file (/proc/pressure/memory, <cgroup>/memory.pressure).
struct PsiLine {
  double avg10 = 0, avg60 = 0, avg300 = 0;
  std::uint64_t total_us = 0;
};
struct Psi {
  std::optional<PsiLine> some;
  std::optional<PsiLine> full;
};
Psi parse_psi(std::string_view text);

// /proc/meminfo: MemTotal and MemAvailable, in kB; nullopt unless both are there.
struct MemInfo {
  std::uint64_t total_kb = 0;
  std::uint64_t available_kb = 0;
};
std::optional<MemInfo> parse_meminfo(std::string_view text);

// cgroup.procs: one pid per line.
std::vector<int> parse_cgroup_procs(std::string_view text);

}  // namespace uzswap
