// The state that outlives a serving process, as it lies in shared memory.
//
// Everything a new serving process needs to go on serving the same swap area
// lives in System V shared memory segments locked with SHM_LOCK: their pages
// never go to swap, whether or not any process has them mapped (an mlock ends
// with the process that made it, and a page of the state swapped out to the
// very device it describes while no process serves it could never come
// back). One "meta" segment laid out as below, and one pool arena segment per
// NUMA node (ZPool). Everything else (span headers and free lists, LRU lists,
// counters, threads, rings, sockets) is derived from it and rebuilt by one
// scan when a process adopts it.
//
// The meta segment, page-aligned parts in this order:
//
//   StateHeader                      one page
//   JournalRecord[kJournalRecords]   one per slot-table lock stripe
//   CgroupRecord[kCgroupRecords]     the cgroup registry, by id
//   SlotEntry[slots]                 the slot table
//   std::uint32_t[slots]             each slot's page checksum (common/checksum.h)
//   CipherSeal[slots]                each slot's seal, only in a state made with
//                                    backing encryption (backing/backing_cipher.h)
//
// The commit point of every change is the slot entry. A change of an entry is
// journaled (SlotTable::publishLocked): the old entry and checksum are
// recorded in its stripe's record, the record is armed, the entry and
// checksum written, the record disarmed. A process that dies between arming and disarming leaves an armed
// record, and the next process puts the old entry back: the request that was
// changing it was never answered, and the kernel sends it again. Pool objects
// are freed only after the entry that referred to them has been replaced, so
// an old entry put back always points at intact bytes.
//
// A seal is not journaled: it changes only once its block is written, and
// always before the entry that refers to the new block is published. An
// entry put back may then refer to a block that was written over since: that
// block either fails to authenticate or decrypts to another page than the
// entry's checksum, and its read fails (never wrong bytes).
//
// Changing anything here changes kStateLayoutVersion: a serving process
// refuses to adopt a state of another version (and the old one keeps serving).
#pragma once

#include <cstddef>
#include <cstdint>

namespace uzswap {

inline constexpr std::uint32_t kStateLayoutVersion = 3;  // 2: page checksums; 3: backing encryption
// Layout 2 is layout 3 without encryption: its header ends before the cipher
// fields, which a fresh segment holds as zeros (BackingCipher::none), and it
// has no seal region. So a state of layout 2 is adopted as it is (and keeps
// its version, so the binary that made it can take it back).
inline constexpr std::uint32_t kOldestAdoptableLayout = 2;
inline constexpr char kStateMagic[8] = {'u', 'z', 's', 'w', 'a', 'p', 's', '1'};

enum class SlotState : std::uint8_t {
  empty = 0,           // never written, or discarded
  same_filled = 1,     // value holds the repeated 8-byte word
  compressed = 2,      // value holds a pool handle to `length` compressed bytes
  incompressible = 3,  // value holds a pool handle to the raw page
  written_back = 4,    // the page lives in the backing file at the slot's offset
                       // (with file_write set, a newer page of the slot is being
                       // written over it: the old one is dead, reads fail)
  writeback = 5,       // being written back; still served from the pool handle
  lost = 6,            // found damaged when a process adopted the state: reads fail (EIO)
};

struct SlotEntry {
  std::uint64_t value;             // pool handle or fill word, by state
  std::uint64_t state : 3;         // SlotState
  std::uint64_t codec : 2;         // Codec of a compressed page
  std::uint64_t length : 13;       // compressed length (bytes in the pool object)
  std::uint64_t node : 6;          // NUMA node of the pool object, and of its LRU list
  std::uint64_t cgroup : 16;       // owning cgroup id (0 = root), and of its LRU list
  std::uint64_t file_write : 1;    // a write of this slot to the backing file is in flight
  std::uint64_t version : 23;      // bumped on every store and invalidate, for writeback's re-check

  SlotState slot_state() const noexcept { return static_cast<SlotState>(state); }
  // The entry holds a pool object (a writeback in flight still does).
  bool in_pool() const noexcept {
    const SlotState s = slot_state();
    return s == SlotState::compressed || s == SlotState::incompressible ||
           s == SlotState::writeback;
  }
};
static_assert(sizeof(SlotEntry) == 16, "slot entries must stay at 16 bytes");

// How the pages in the backing store are encrypted; fixed when the state is
// made (a state never changes it: its seals and key would not match).
enum class BackingCipher : std::uint32_t {
  none = 0,
  xchacha20_poly1305 = 1,  // XChaCha20-Poly1305 (IETF), libsodium
};

// What authenticates the block of one slot in the backing store: the nonce
// counter it was encrypted with and its Poly1305 tag. counter 0 = never
// written. Read and written word by word (std::atomic_ref): a read racing a
// write of the same slot sees a mixture that fails to authenticate, and the
// store's re-check then discards the read.
struct CipherSeal {
  std::uint64_t counter;
  std::uint64_t tag[2];
};
static_assert(sizeof(CipherSeal) == 24);

inline constexpr std::size_t kCipherKeyBytes = 32;

// One per lock stripe of the slot table: the entry being changed under that
// stripe's lock, as it was before.
struct JournalRecord {
  std::uint64_t armed_slot;  // slot + 1 while a change is under way; 0 = none
  std::uint32_t old_checksum;
  std::uint32_t reserved;
  SlotEntry old;
};
static_assert(sizeof(JournalRecord) == 32);

// A cgroup known to the page store. Ids are handed out by the attribution and
// never reused while the state lives (entries may still carry a removed id,
// which resolves to its nearest live ancestor).
struct CgroupRecord {
  std::uint8_t used;          // the id was handed out
  std::uint8_t live;          // not removed
  std::uint8_t writeback;     // memory.zswap.writeback
  std::uint8_t reserved0;
  std::uint16_t parent;
  std::uint16_t reserved1;
  std::uint32_t reserved2;
  std::uint64_t inode;        // of the cgroup directory (0 for the root)
  std::uint64_t max_bytes;    // memory.zswap.max; 0 = none
  char path[224];             // relative to the v2 root, NUL-terminated ("/" for the root)
};
static_assert(sizeof(CgroupRecord) == 256);

inline constexpr std::size_t kJournalRecords = 4096;  // = SlotTable::kStripes
inline constexpr std::size_t kCgroupRecords = 65536;  // = kMaxCgroups

// What the serving processes agreed with the kernel and each other. Written
// by the serving process; read by the next one and by the supervisor.
struct StateHeader {
  char magic[8];
  std::uint32_t layout_version;
  std::uint32_t page_size;
  std::uint64_t slots;
  std::uint64_t pool_region_bytes;  // ZPool: bytes per span-length region per node
  std::uint32_t pool_nodes;
  std::uint32_t serving;            // 1 once a serving process has initialised the state
  std::uint64_t adoptions;          // serving processes that took the state over
  std::uint64_t next_cgroup_id;

  // The FUSE connection (FuseServer): INIT happens once per connection.
  std::uint32_t fuse_initialized;
  std::uint32_t fuse_over_io_uring;
  std::uint32_t fuse_max_write;
  std::uint32_t fuse_minor;

  // The device, as set up by the first serving process.
  char loop_device[64];             // "" until attached
  std::uint32_t swap_on;
  std::int32_t swap_type;           // -1 = unknown

  // Live settings (uzswapctl set), so that a new process keeps them.
  std::uint32_t settings_valid;
  std::uint32_t codec;
  std::int32_t level;
  std::uint32_t max_pool_percent;
  std::uint32_t accept_threshold_percent;
  std::uint32_t watermark_scale_factor;
  std::uint32_t idle_writeback_seconds;
  std::uint32_t reserved;

  // The pool arena segments, by node.
  std::int32_t pool_shm_ids[64];

  // Backing encryption (backing/backing_cipher.h), set by create().
  std::uint32_t backing_cipher;     // BackingCipher; none = no seal region, no key
  std::uint32_t reserved2;
  std::uint64_t cipher_counter;     // nonce counters handed out so far (atomic); never reused
  std::uint8_t cipher_key[kCipherKeyBytes];  // random, made by create(); only ever in this segment
};
static_assert(sizeof(StateHeader) <= 4096);
static_assert(offsetof(StateHeader, cipher_counter) % 8 == 0, "an atomic word");

}  // namespace uzswap
