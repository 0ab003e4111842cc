// SharedState: the memfds that hold the state which outlives a serving
// process (see layout.h for what lies in them and why), mapped into this one.
//
// create() makes new, zeroed memfds (the supervisor does this once per swap
// area); adopt() maps memfds handed over by another process and checks that
// they hold a state of this layout. The object owns its fds and mappings; the
// memory itself lives as long as any process holds one of the fds.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <vector>

#include "uzswap/state/layout.h"

namespace uzswap {

struct StateGeometry {
  std::uint64_t slots = 0;
  unsigned pool_nodes = 1;
  std::uint64_t pool_region_bytes = 0;  // see ZPool::region_bytes_for()
};

class SharedState {
 public:
  // New memfds, all zero but the header. Throws std::system_error.
  static SharedState create(const StateGeometry& geometry);
  // Maps memfds made by create() in this or another process; takes ownership
  // of the fds. A one-line error when they do not hold a state this build can
  // use (wrong size, magic or layout version).
  static std::expected<SharedState, std::string> adopt(int meta_fd, std::vector<int> pool_fds);

  SharedState(SharedState&& other) noexcept;
  SharedState& operator=(SharedState&& other) noexcept;
  SharedState(const SharedState&) = delete;
  SharedState& operator=(const SharedState&) = delete;
  ~SharedState();

  StateHeader& header() const noexcept { return *reinterpret_cast<StateHeader*>(base_); }
  JournalRecord* journal() const noexcept;
  CgroupRecord* cgroups() const noexcept;
  SlotEntry* slots() const noexcept;
  StateGeometry geometry() const noexcept;
  // No serving process has initialised it yet.
  bool fresh() const noexcept { return header().serving == 0; }

  int meta_fd() const noexcept { return meta_fd_; }
  const std::vector<int>& pool_fds() const noexcept { return pool_fds_; }
  // mlock2(MLOCK_ONFAULT) the meta mapping: entries never go to swap.
  void lock_memory() const;
  // Bytes of the meta memfd (address space; RAM only where touched).
  std::uint64_t meta_bytes() const noexcept { return meta_bytes_; }

  static std::uint64_t meta_bytes_for(std::uint64_t slots) noexcept;

 private:
  SharedState(int meta_fd, std::vector<int> pool_fds, std::byte* base, std::uint64_t bytes) noexcept
      : meta_fd_(meta_fd), pool_fds_(std::move(pool_fds)), base_(base), meta_bytes_(bytes) {}
  void release() noexcept;

  int meta_fd_ = -1;
  std::vector<int> pool_fds_;
  std::byte* base_ = nullptr;
  std::uint64_t meta_bytes_ = 0;
};

}  // namespace uzswap
