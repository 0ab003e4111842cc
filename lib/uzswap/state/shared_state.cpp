#include "uzswap/state/shared_state.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

#include "uzswap/common/page.h"

namespace uzswap {

namespace {

constexpr std::uint64_t kHeaderBytes = kPageSize;
constexpr std::uint64_t kJournalOffset = kHeaderBytes;
constexpr std::uint64_t kCgroupsOffset = kJournalOffset + kJournalRecords * sizeof(JournalRecord);
constexpr std::uint64_t kSlotsOffset = kCgroupsOffset + kCgroupRecords * sizeof(CgroupRecord);
static_assert(kCgroupsOffset % kPageSize == 0 && kSlotsOffset % kPageSize == 0);

std::uint64_t round_up_page(std::uint64_t n) { return (n + kPageSize - 1) / kPageSize * kPageSize; }

std::byte* map_meta(int fd, std::uint64_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap state memfd");
  return static_cast<std::byte*>(p);
}

}  // namespace

std::uint64_t SharedState::meta_bytes_for(std::uint64_t slots) noexcept {
  return round_up_page(kSlotsOffset + slots * sizeof(SlotEntry));
}

JournalRecord* SharedState::journal() const noexcept {
  return reinterpret_cast<JournalRecord*>(base_ + kJournalOffset);
}
CgroupRecord* SharedState::cgroups() const noexcept {
  return reinterpret_cast<CgroupRecord*>(base_ + kCgroupsOffset);
}
SlotEntry* SharedState::slots() const noexcept {
  return reinterpret_cast<SlotEntry*>(base_ + kSlotsOffset);
}

StateGeometry SharedState::geometry() const noexcept {
  const StateHeader& h = header();
  return {h.slots, h.pool_nodes, h.pool_region_bytes};
}

SharedState SharedState::create(const StateGeometry& g) {
  if (g.slots == 0 || g.pool_nodes == 0 || g.pool_region_bytes == 0)
    throw std::system_error(EINVAL, std::generic_category(), "state geometry");
  const std::uint64_t bytes = meta_bytes_for(g.slots);
  const int meta = memfd_create("uzswap-state", MFD_CLOEXEC);
  if (meta < 0) throw std::system_error(errno, std::generic_category(), "memfd_create state");
  std::vector<int> pools;
  const auto fail = [&](const char* what) {
    const int err = errno;
    close(meta);
    for (int fd : pools) close(fd);
    throw std::system_error(err, std::generic_category(), what);
  };
  if (ftruncate(meta, static_cast<off_t>(bytes)) != 0) fail("ftruncate state memfd");
  for (unsigned node = 0; node < g.pool_nodes; ++node) {
    const std::string name = "uzswap-pool-node" + std::to_string(node);
    const int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
    if (fd < 0) fail("memfd_create pool");
    pools.push_back(fd);
    // Eight regions, one per span length (ZPool).
    if (ftruncate(fd, static_cast<off_t>(g.pool_region_bytes * 8)) != 0) fail("ftruncate pool memfd");
  }
  std::byte* base;
  try {
    base = map_meta(meta, bytes);
  } catch (...) {
    close(meta);
    for (int fd : pools) close(fd);
    throw;
  }
  SharedState state(meta, std::move(pools), base, bytes);
  StateHeader& h = state.header();
  std::memcpy(h.magic, kStateMagic, sizeof(h.magic));
  h.layout_version = kStateLayoutVersion;
  h.page_size = kPageSize;
  h.slots = g.slots;
  h.pool_region_bytes = g.pool_region_bytes;
  h.pool_nodes = g.pool_nodes;
  h.swap_type = -1;
  h.next_cgroup_id = 1;
  // The root cgroup always exists.
  CgroupRecord& root = state.cgroups()[0];
  root.used = 1;
  root.live = 1;
  root.writeback = 1;
  std::memcpy(root.path, "/", 2);
  return state;
}

std::expected<SharedState, std::string> SharedState::adopt(int meta_fd, std::vector<int> pool_fds) {
  const auto refuse = [&](std::string why) {
    close(meta_fd);
    for (int fd : pool_fds) close(fd);
    return std::unexpected("cannot adopt the shared state: " + why);
  };
  struct stat st {};
  if (fstat(meta_fd, &st) != 0) return refuse(std::string("fstat: ") + std::strerror(errno));
  if (static_cast<std::uint64_t>(st.st_size) < kSlotsOffset) return refuse("the state memfd is too small");
  StateHeader h;
  if (pread(meta_fd, &h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h)))
    return refuse("cannot read its header");
  if (std::memcmp(h.magic, kStateMagic, sizeof(h.magic)) != 0) return refuse("not an uzswap state");
  if (h.layout_version != kStateLayoutVersion)
    return refuse("it has layout version " + std::to_string(h.layout_version) + ", this uzswapd uses " +
                  std::to_string(kStateLayoutVersion));
  if (h.page_size != kPageSize) return refuse("page size " + std::to_string(h.page_size));
  const std::uint64_t bytes = meta_bytes_for(h.slots);
  if (static_cast<std::uint64_t>(st.st_size) != bytes) return refuse("its size does not match its slot count");
  if (h.pool_nodes != pool_fds.size())
    return refuse(std::to_string(pool_fds.size()) + " pool memfds for " + std::to_string(h.pool_nodes) +
                  " nodes");
  for (int fd : pool_fds) {
    struct stat ps {};
    if (fstat(fd, &ps) != 0 || static_cast<std::uint64_t>(ps.st_size) != h.pool_region_bytes * 8)
      return refuse("a pool memfd does not match the header");
  }
  std::byte* base;
  try {
    base = map_meta(meta_fd, bytes);
  } catch (const std::system_error& e) {
    return refuse(e.what());
  }
  return SharedState(meta_fd, std::move(pool_fds), base, bytes);
}

void SharedState::lock_memory() const {
  if (mlock2(base_, meta_bytes_, MLOCK_ONFAULT) != 0)
    throw std::system_error(errno, std::generic_category(), "mlock2 state");
}

SharedState::SharedState(SharedState&& other) noexcept
    : meta_fd_(std::exchange(other.meta_fd_, -1)),
      pool_fds_(std::move(other.pool_fds_)),
      base_(std::exchange(other.base_, nullptr)),
      meta_bytes_(std::exchange(other.meta_bytes_, 0)) {
  other.pool_fds_.clear();
}

SharedState& SharedState::operator=(SharedState&& other) noexcept {
  if (this != &other) {
    release();
    meta_fd_ = std::exchange(other.meta_fd_, -1);
    pool_fds_ = std::move(other.pool_fds_);
    other.pool_fds_.clear();
    base_ = std::exchange(other.base_, nullptr);
    meta_bytes_ = std::exchange(other.meta_bytes_, 0);
  }
  return *this;
}

SharedState::~SharedState() { release(); }

void SharedState::release() noexcept {
  if (base_ != nullptr) munmap(base_, meta_bytes_);
  if (meta_fd_ >= 0) close(meta_fd_);
  for (int fd : pool_fds_) close(fd);
  base_ = nullptr;
  meta_fd_ = -1;
  pool_fds_.clear();
}

}  // namespace uzswap
