// The FUSE protocol handler: one file whose bytes are the swap device.
//
// uzswap speaks the FUSE wire protocol (<linux/fuse.h>) itself rather than
// through libfuse: libfuse allocates a request struct per request and cannot
// run over the kernel's FUSE-over-io_uring transport in Debian 12's version,
// and the request path here must never allocate. The mount's root inode *is*
// the swap file (rootmode S_IFREG), so there is no directory to serve.
//
// handle() is a pure function of the request bytes and the page store: it
// parses one request read from /dev/fuse and writes the reply into a caller's
// buffer. It never throws, never allocates, and answers a malformed, unaligned
// or out-of-range request with an errno, changing nothing.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "uzswap/frontend/slot_io.h"
#include "uzswap/store/page_store.h"

namespace uzswap {

struct FuseConfig {
  std::uint64_t size_bytes = 0;          // device size, a multiple of the page size
  std::uint32_t max_write = 1u << 20;    // bytes per READ/WRITE request
  std::uint16_t max_background = 512;    // async direct I/O requests in flight
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  // Offer FUSE-over-io_uring in the INIT reply when the kernel offers it.
  bool over_io_uring = false;
  // NUMA node of each CPU (index = CPU number, -1 = unknown), from
  // cpu_nodes_from_sysfs(). With two or more nodes, a WRITE goes to the
  // pool of the node its requester may run on (see requester_node()); empty
  // or one node: the node of the CPU serving it, as before.
  std::vector<std::int8_t> cpu_node;
};

// The node of every CPU, read from /sys/devices/system/node/node*/cpulist
// at start-up (never on the request path); empty when there is no such tree.
std::vector<std::int8_t> cpu_nodes_from_sysfs();
// Parses a kernel cpu list ("0-3,8") into a node table: each listed CPU of
// `table` (grown as needed, up to 4096 CPUs) gets `node`. False for text that
// does not parse.
bool add_cpu_list(const std::string& text, std::int8_t node, std::vector<std::int8_t>& table);

// Which node's pool a page written by task `pid` belongs in: the node all
// CPUs it may run on belong to, or -1 when they span nodes (or are unknown).
// The kernel's loop device writes swap from its unbound workqueue, whose
// workers are bound to the node that queued the work: the node of the task
// that reclaimed the page (zswap stores on the page's own node). The FUSE
// worker that reads the request may run on any node (/dev/fuse hands a
// request to whichever reader waits), so its own CPU says nothing.
// `allowed` is the task's affinity (sched_getaffinity); pure otherwise.
int single_node_of(const cpu_set_t& allowed, std::span<const std::int8_t> cpu_node) noexcept;

// FUSE_OVER_IO_URING (1 << 41), in the INIT reply's flags2 (Linux 6.14's
// <linux/fuse.h>; Debian 12's header predates it).
inline constexpr std::uint32_t kFuseOverIoUringFlags2 = 1u << (41 - 32);

struct FuseStats {
  std::uint64_t requests = 0;
  std::uint64_t read_pages = 0;
  std::uint64_t written_pages = 0;
  std::uint64_t discarded_pages = 0;   // slots freed by PUNCH_HOLE / ZERO_RANGE
  std::uint64_t discard_requests = 0;
  std::uint64_t write_errors = 0;      // writes refused (pool full, no memory)
  std::uint64_t read_errors = 0;       // reads that stopped at a page that failed (EIO)
  std::uint64_t bad_requests = 0;      // malformed, unaligned, out of range
  std::uint64_t unsupported = 0;       // opcodes answered with ENOSYS
  bool initialized = false;            // INIT handshake done
};

class FuseServer {
 public:
  // The buffer a reader must pass to read(2) on /dev/fuse, and the reply
  // buffer handle() needs, for this configuration.
  static std::size_t request_buffer_bytes(const FuseConfig& config) noexcept;
  static std::size_t reply_buffer_bytes(const FuseConfig& config) noexcept;

  FuseServer(PageStore& store, const FuseConfig& config);

  // Handles one request; returns the reply length in `reply`, or 0 when the
  // request takes no reply (FORGET, INTERRUPT).
  std::size_t handle(std::span<const std::byte> request, std::span<std::byte> reply) noexcept;

  FuseStats stats() const noexcept;
  const FuseConfig& config() const noexcept { return config_; }
  // INIT agreed on FUSE-over-io_uring: requests arrive on ring entries
  // (FuseUring) once every queue has one.
  bool over_io_uring() const noexcept { return uring_.load(std::memory_order_acquire); }

  // A server taking over a connection another process initialised: INIT
  // will not come again, so what it agreed is told here.
  void resume_connection(bool over_io_uring) noexcept {
    uring_.store(over_io_uring, std::memory_order_release);
    initialized_.store(true, std::memory_order_release);
  }

 private:
  PageStore& store_;
  SlotIo io_;  // the store-facing path, shared with the NBD front end
  FuseConfig config_;
  std::atomic<std::uint64_t> requests_{0}, bad_requests_{0}, unsupported_{0};
  std::atomic<bool> initialized_{false};
  std::atomic<bool> uring_{false};
  bool numa_ = false;  // config_.cpu_node names two or more nodes

  // The pool node for a WRITE from `pid`, or -1: the serving CPU's node.
  int requester_node(std::uint32_t pid) const noexcept;

  // handle() dispatches on the opcode to one of these, each returning the
  // reply's length like handle().
  struct Request;
  std::size_t init(const Request& r) noexcept;
  std::size_t getattr(const Request& r) const noexcept;
  std::size_t setattr(const Request& r) noexcept;
  std::size_t open(const Request& r) noexcept;
  std::size_t statfs(const Request& r) const noexcept;
  std::size_t read(const Request& r) noexcept;
  std::size_t write(const Request& r) noexcept;
  std::size_t fallocate(const Request& r) noexcept;  // preallocation, and discard
  // The reply to a request that is malformed, unaligned or out of range (EINVAL).
  std::size_t malformed(const Request& r) noexcept;
  // The root's attributes: the reply to GETATTR and SETATTR.
  std::size_t attr(const Request& r) const noexcept;
};

}  // namespace uzswap
