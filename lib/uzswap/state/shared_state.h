// SharedState: the System V shared memory segments that hold the state which
// outlives a serving process (see layout.h for what lies in them and why),
// attached to this one.
//
// create() makes new, zeroed, SHM_LOCKed segments; attach() maps segments
// made by create() in this or another process and checks that they hold a
// state of this layout. A named state lives under keys derived from its name
// until destroy(), so even a supervisor restarted by systemd finds it again;
// an unnamed one is gone once the last process that attached it is.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <vector>

#include "uzswap/common/result.h"
#include "uzswap/state/layout.h"

namespace uzswap {

struct StateGeometry {
  std::uint64_t slots = 0;
  unsigned pool_nodes = 1;
  std::uint64_t pool_region_bytes = 0;  // see ZPool::region_bytes_for()
  BackingCipher cipher = BackingCipher::none;  // with a cipher: a key and a seal region
};

// Shared memory ids: the meta segment's and the pool arenas'.
struct StateIds {
  int meta = -1;
  std::vector<int> pools;
};

class SharedState {
 public:
  // New segments, all zero but the header (and, with a cipher, a random
  // key in it). Throws std::system_error.
  static SharedState create(const StateGeometry& geometry, const std::string& name = "");
  // Attaches segments made by create() in this or another process. A
  // one-line error when they do not hold a state this build can use (wrong
  // size, magic, layout version or cipher).
  static Parsed<SharedState> attach(const StateIds& ids);
  // The segments of a named state that is still there (its supervisor died).
  static std::optional<StateIds> find(const std::string& name);
  // Marks the segments for removal: they go once nothing has them attached.
  static void destroy(const StateIds& ids) noexcept;

  SharedState(SharedState&& other) noexcept;
  SharedState& operator=(SharedState&& other) noexcept;
  SharedState(const SharedState&) = delete;
  SharedState& operator=(const SharedState&) = delete;
  ~SharedState();  // detaches; the segments stay

  StateHeader& header() const noexcept { return *reinterpret_cast<StateHeader*>(base_); }
  JournalRecord* journal() const noexcept;
  CgroupRecord* cgroups() const noexcept;
  SlotEntry* slots() const noexcept;
  std::uint32_t* checksums() const noexcept;  // one per slot, after the slot table
  // One per slot, after the checksums; nullptr in a state made without a cipher.
  CipherSeal* seals() const noexcept;
  BackingCipher cipher() const noexcept { return static_cast<BackingCipher>(header().backing_cipher); }
  // Overwrites the key with zeros: for the last process of a state that is
  // being destroyed (the pages it encrypted are dead). Nothing can be read
  // from the backing store with this state afterwards.
  void forget_key() noexcept;
  StateGeometry geometry() const noexcept;
  StateIds ids() const;
  // No serving process has initialised it yet.
  bool fresh() const noexcept { return header().serving == 0; }

  // The pool arena of a node, attached here: 8 * pool_region_bytes.
  std::byte* pool_base(unsigned node) const noexcept { return pools_[node]; }
  std::uint64_t pool_bytes() const noexcept { return geometry().pool_region_bytes * 8; }
  // Bytes of the meta segment (address space; RAM only where touched).
  std::uint64_t meta_bytes() const noexcept { return meta_bytes_; }

  static std::uint64_t meta_bytes_for(std::uint64_t slots, BackingCipher cipher = BackingCipher::none) noexcept;

 private:
  SharedState() = default;
  void release() noexcept;

  int meta_id_ = -1;
  std::byte* base_ = nullptr;
  std::uint64_t meta_bytes_ = 0;
  std::vector<std::byte*> pools_;
};

}  // namespace uzswap
