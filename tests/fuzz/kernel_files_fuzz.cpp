// Every parser of a file the kernel writes (or a process fakes: smaps and
// maps carry file names any user picks), each on the same bytes:
// /proc/PID/maps and smaps, memory.events, PSI files, cgroup.procs,
// /proc/swaps, the online NUMA node list, pagemap words, and the swap
// header page. Beyond "no crash": what they return keeps their promises.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "uzswap/daemon/safety.h"
#include "uzswap/device/swap.h"
#include "uzswap/device/swap_header.h"
#include "uzswap/reclaim/kernel_files.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace uzswap;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  for (const MappedRange& r : parse_maps(text)) check(r.end > r.start);
  for (const MappedRange& r : parse_smaps(text)) check(r.end > r.start);
  for (const auto& [key, value] : parse_memory_events(text)) check(!key.empty());
  (void)parse_psi(text);
  for (const int pid : parse_cgroup_procs(text)) check(pid > 0);
  (void)parse_proc_swaps(text);
  check(parse_node_list_count(std::string(text)) <= 4097);

  for (std::size_t at = 0; at + 8 <= size; at += 8) {
    std::uint64_t word;
    std::memcpy(&word, data + at, sizeof(word));
    const PagemapEntry e = decode_pagemap(word);
    check(e.swap_type < 32 && e.swap_offset < (std::uint64_t{1} << 50));
    check(!(e.swapped && e.present) || (e.swap_type == 0 && e.swap_offset == 0));
  }

  alignas(8) std::array<std::byte, kPageSize> page{};
  std::memcpy(page.data(), data, std::min(size, page.size()));
  if (const auto header = parse_swap_header(page)) check(header->label.size() <= 16);
  return 0;
}
