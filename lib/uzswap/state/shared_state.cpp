#include "uzswap/state/shared_state.h"

#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/shm.h>

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
constexpr unsigned kMaxPoolSegments = sizeof(StateHeader::pool_shm_ids) / sizeof(std::int32_t);

std::uint64_t round_up_page(std::uint64_t n) { return (n + kPageSize - 1) / kPageSize * kPageSize; }

// The seal region starts on the page after the checksums.
std::uint64_t seals_offset(std::uint64_t slots) {
  return round_up_page(kSlotsOffset + slots * (sizeof(SlotEntry) + sizeof(std::uint32_t)));
}

bool known_cipher(std::uint32_t cipher) {
  return cipher == static_cast<std::uint32_t>(BackingCipher::none) ||
         cipher == static_cast<std::uint32_t>(BackingCipher::xchacha20_poly1305);
}

// The kernel's CSPRNG, as libsodium's randombytes_buf() uses on Linux.
void random_bytes(std::uint8_t* out, std::size_t n) {
  while (n > 0) {
    const ssize_t got = getrandom(out, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom (the backing encryption key)");
    }
    out += got;
    n -= static_cast<std::size_t>(got);
  }
}

// The meta segment's key for a named state: FNV-1a of the name, never
// IPC_PRIVATE. The header it leads to is checked before anything is trusted.
key_t key_for(const std::string& name) {
  std::uint32_t h = 2166136261u;
  for (const char c : "uzswap-state:" + name) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  h &= 0x7fffffff;
  return static_cast<key_t>(h == 0 ? 1 : h);
}

// A new segment whose pages never leave RAM (SHM_LOCK holds for the
// segment, not for a process).
int new_segment(key_t key, std::uint64_t bytes, bool must_lock) {
  const int id = shmget(key, bytes, IPC_CREAT | IPC_EXCL | SHM_NORESERVE | 0600);
  if (id < 0) {
    if (errno == EEXIST)
      throw std::system_error(EEXIST, std::generic_category(),
                              "shared memory of an earlier uzswapd of this name still exists");
    throw std::system_error(errno, std::generic_category(), "shmget");
  }
  if (shmctl(id, SHM_LOCK, nullptr) != 0 && must_lock) {
    const int err = errno;
    shmctl(id, IPC_RMID, nullptr);
    throw std::system_error(err, std::generic_category(), "SHM_LOCK (needs CAP_IPC_LOCK)");
  }
  return id;
}

std::byte* attach_segment(int id) {
  void* p = shmat(id, nullptr, 0);
  if (p == reinterpret_cast<void*>(-1)) return nullptr;
  // Users' swapped memory never goes into a core dump.
  shmid_ds ds{};
  if (shmctl(id, IPC_STAT, &ds) == 0) madvise(p, ds.shm_segsz, MADV_DONTDUMP);
  return static_cast<std::byte*>(p);
}

std::uint64_t segment_bytes(int id) {
  shmid_ds ds{};
  if (shmctl(id, IPC_STAT, &ds) != 0) return 0;
  return ds.shm_segsz;
}

}  // namespace

std::uint64_t SharedState::meta_bytes_for(std::uint64_t slots, BackingCipher cipher) noexcept {
  if (cipher == BackingCipher::none) return seals_offset(slots);
  return seals_offset(slots) + round_up_page(slots * sizeof(CipherSeal));
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
std::uint32_t* SharedState::checksums() const noexcept {
  return reinterpret_cast<std::uint32_t*>(base_ + kSlotsOffset + header().slots * sizeof(SlotEntry));
}

CipherSeal* SharedState::seals() const noexcept {
  if (cipher() == BackingCipher::none) return nullptr;
  return reinterpret_cast<CipherSeal*>(base_ + seals_offset(header().slots));
}

void SharedState::forget_key() noexcept {
  explicit_bzero(header().cipher_key, sizeof(header().cipher_key));
}

StateGeometry SharedState::geometry() const noexcept {
  const StateHeader& h = header();
  return {h.slots, h.pool_nodes, h.pool_region_bytes, cipher()};
}

StateIds SharedState::ids() const {
  StateIds ids;
  ids.meta = meta_id_;
  for (unsigned n = 0; n < header().pool_nodes; ++n) ids.pools.push_back(header().pool_shm_ids[n]);
  return ids;
}

SharedState SharedState::create(const StateGeometry& g, const std::string& name) {
  if (g.slots == 0 || g.pool_nodes == 0 || g.pool_nodes > kMaxPoolSegments || g.pool_region_bytes == 0 ||
      !known_cipher(static_cast<std::uint32_t>(g.cipher)))
    throw std::system_error(EINVAL, std::generic_category(), "state geometry");
  const bool named = !name.empty();
  StateIds ids;
  const auto undo = [&] { destroy(ids); };
  try {
    // A private state (tests, tools) needs no lock: no process outlives it.
    ids.meta = new_segment(named ? key_for(name) : IPC_PRIVATE, meta_bytes_for(g.slots, g.cipher), named);
    for (unsigned node = 0; node < g.pool_nodes; ++node)
      ids.pools.push_back(new_segment(IPC_PRIVATE, g.pool_region_bytes * 8, named));
  } catch (...) {
    undo();
    throw;
  }
  SharedState state;
  state.meta_id_ = ids.meta;
  state.meta_bytes_ = meta_bytes_for(g.slots, g.cipher);
  state.base_ = attach_segment(ids.meta);
  if (state.base_ == nullptr) {
    const int err = errno;
    undo();
    throw std::system_error(err, std::generic_category(), "shmat state");
  }
  StateHeader& h = state.header();
  std::memcpy(h.magic, kStateMagic, sizeof(h.magic));
  h.layout_version = kStateLayoutVersion;
  h.page_size = kPageSize;
  h.slots = g.slots;
  h.pool_region_bytes = g.pool_region_bytes;
  h.pool_nodes = g.pool_nodes;
  for (unsigned n = 0; n < g.pool_nodes; ++n) h.pool_shm_ids[n] = ids.pools[n];
  h.swap_type = -1;
  h.next_cgroup_id = 1;
  h.backing_cipher = static_cast<std::uint32_t>(g.cipher);
  if (g.cipher != BackingCipher::none) {
    try {
      random_bytes(h.cipher_key, sizeof(h.cipher_key));
    } catch (...) {
      undo();
      throw;
    }
  }
  // The root cgroup always exists.
  CgroupRecord& root = state.cgroups()[0];
  root.used = 1;
  root.live = 1;
  root.writeback = 1;
  std::memcpy(root.path, "/", 2);
  for (const int id : ids.pools) {
    std::byte* base = attach_segment(id);
    if (base == nullptr) {
      const int err = errno;
      undo();
      throw std::system_error(err, std::generic_category(), "shmat pool");
    }
    state.pools_.push_back(base);
  }
  // Unnamed: gone with the last process that has it attached (Linux lets a
  // process attach a segment marked for removal by id meanwhile).
  if (!named) destroy(ids);
  return state;
}

Parsed<SharedState> SharedState::attach(const StateIds& ids) {
  const auto refuse = [](std::string why) { return std::unexpected("cannot adopt the shared state: " + why); };
  const std::uint64_t bytes = segment_bytes(ids.meta);
  if (bytes < kSlotsOffset) return refuse("no state segment " + std::to_string(ids.meta) + " of the right size");
  SharedState state;
  state.meta_id_ = ids.meta;
  state.base_ = attach_segment(ids.meta);
  if (state.base_ == nullptr) return refuse(std::string("shmat: ") + std::strerror(errno));
  state.meta_bytes_ = bytes;
  const StateHeader& h = state.header();
  if (std::memcmp(h.magic, kStateMagic, sizeof(h.magic)) != 0) return refuse("not an uzswap state");
  if (h.layout_version < kOldestAdoptableLayout || h.layout_version > kStateLayoutVersion)
    return refuse("it has layout version " + std::to_string(h.layout_version) + ", this uzswapd adopts " +
                  std::to_string(kOldestAdoptableLayout) + " to " + std::to_string(kStateLayoutVersion));
  if (h.layout_version < 3 && h.backing_cipher != static_cast<std::uint32_t>(BackingCipher::none))
    return refuse("a layout " + std::to_string(h.layout_version) + " state cannot be encrypted");
  if (h.page_size != kPageSize) return refuse("page size " + std::to_string(h.page_size));
  if (!known_cipher(h.backing_cipher)) return refuse("unknown backing cipher " + std::to_string(h.backing_cipher));
  if (bytes != meta_bytes_for(h.slots, static_cast<BackingCipher>(h.backing_cipher)))
    return refuse("its size does not match its slot count");
  if (h.pool_nodes == 0 || h.pool_nodes > kMaxPoolSegments) return refuse("bad pool node count");
  for (unsigned n = 0; n < h.pool_nodes; ++n) {
    const int id = h.pool_shm_ids[n];
    if (n < ids.pools.size() && ids.pools[n] != id) return refuse("pool segments do not match the header");
    if (segment_bytes(id) != h.pool_region_bytes * 8) return refuse("a pool segment does not match the header");
    std::byte* base = attach_segment(id);
    if (base == nullptr) return refuse(std::string("shmat pool: ") + std::strerror(errno));
    state.pools_.push_back(base);
  }
  return state;
}

std::optional<StateIds> SharedState::find(const std::string& name) {
  const int id = shmget(key_for(name), 0, 0);
  if (id < 0) return std::nullopt;
  auto state = attach({id, {}});
  if (!state) return StateIds{id, {}};  // something of ours, but unusable: the caller removes it
  return state->ids();
}

void SharedState::destroy(const StateIds& ids) noexcept {
  if (ids.meta >= 0) shmctl(ids.meta, IPC_RMID, nullptr);
  for (int id : ids.pools)
    if (id >= 0) shmctl(id, IPC_RMID, nullptr);
}

SharedState::SharedState(SharedState&& other) noexcept
    : meta_id_(std::exchange(other.meta_id_, -1)),
      base_(std::exchange(other.base_, nullptr)),
      meta_bytes_(std::exchange(other.meta_bytes_, 0)),
      pools_(std::move(other.pools_)) {
  other.pools_.clear();
}

SharedState& SharedState::operator=(SharedState&& other) noexcept {
  if (this != &other) {
    release();
    meta_id_ = std::exchange(other.meta_id_, -1);
    base_ = std::exchange(other.base_, nullptr);
    meta_bytes_ = std::exchange(other.meta_bytes_, 0);
    pools_ = std::move(other.pools_);
    other.pools_.clear();
  }
  return *this;
}

SharedState::~SharedState() { release(); }

void SharedState::release() noexcept {
  for (std::byte* p : pools_) shmdt(p);
  if (base_ != nullptr) shmdt(base_);
  pools_.clear();
  base_ = nullptr;
}

}  // namespace uzswap
