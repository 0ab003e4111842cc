// BackingNbd: the remote tier. Written-back pages go to an NBD export
// (nbdkit and its plugins, qemu-nbd, another uzswapd serving NBD) through
// libnbd, slot N at offset N * 4096 as in the backing file.
//
// A few connections (kConnections, or one if the export does not promise
// that all connections see one another's writes), each with its own lock.
// A writeback batch takes one connection for itself from begin_write() to
// end_write() and sends all its runs of adjacent slots at once (pipelined
// requests), with FUA where offered, so a completed write is visible to a
// read on any connection. Reads take whichever connection is free.
//
// Losing the remote loses nothing stored: a failed write leaves the page in
// RAM (PageStore puts it back on its list). A connection that fails or
// stops answering within kCommandTimeout is closed, and a reconnect thread
// brings it back with backoff (100 ms doubling to 5 s). While no connection
// is up, writes fail at once (writeback stops, and status says why), and
// a read of a written-back page waits for the remote to come back, up to
// kReadPatience, before it reports an error.
//
// Request-path caveat: libnbd allocates a small command structure for each
// request (from the heap, which mlockall keeps resident). Reads of
// written-back pages and direct writes on a full pool go through it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "uzswap/backing/backing_store.h"
#include "uzswap/common/mutex.h"
#include "uzswap/common/thread.h"

struct nbd_handle;

namespace uzswap {

struct BackingNbdStatus {
  std::string uri;
  bool up = false;              // at least one connection is up
  unsigned connections = 0;     // in use
  unsigned connections_up = 0;
  std::uint64_t export_bytes = 0;
  std::uint64_t connects = 0;   // successful (re)connections
  std::uint64_t disconnects = 0;
  std::uint64_t failed_connects = 0;
  std::uint64_t write_requests = 0;
  std::uint64_t read_requests = 0;
  std::uint64_t refused_writes = 0;  // pages refused because the remote was down
  std::string last_error;
};

class BackingNbd final : public BackingStore {
 public:
  static constexpr unsigned kBatchPages = 64;
  static constexpr unsigned kConnections = 4;
  static constexpr std::chrono::seconds kCommandTimeout{10};
  static constexpr std::chrono::seconds kReadPatience{300};

  // Connects to `uri` (an nbd:// or nbd+unix:// URI), whose export must
  // hold at least `bytes`. Throws std::runtime_error when the first
  // connection fails: a remote tier that never was is a start-up error.
  BackingNbd(std::string uri, std::uint64_t bytes);
  ~BackingNbd() override;

  void write(std::span<PageWrite> pages) noexcept override;
  void begin_write(std::span<PageWrite> pages) noexcept override;
  void end_write() noexcept override;
  std::error_code read(Slot slot, PageBuffer out) noexcept override;
  std::size_t max_batch() const noexcept override { return kBatchPages; }
  void prepare_thread() override;

  bool up() const noexcept { return up_count_.load(std::memory_order_relaxed) > 0; }
  BackingNbdStatus status() const;

 private:
  struct Connection {
    Mutex lock;  // held for a command (or a whole write batch)
    nbd_handle* handle GUARDED_BY(lock) = nullptr;  // null while down
    bool fua GUARDED_BY(lock) = false;
  };
  // A new connection, checked (size, writable); null (and last_error_) on
  // failure. Takes no connection lock.
  nbd_handle* open_connection();
  void installLocked(unsigned i, nbd_handle* h) noexcept REQUIRES(conns_[i].lock);
  void dropLocked(unsigned i, const char* why) noexcept REQUIRES(conns_[i].lock);
  // Locks a connection that is up, preferring `hint`, and sets `i` to it;
  // false when none is.
  bool lock_up(unsigned hint, unsigned& i) noexcept TRY_ACQUIRE(true, conns_[i].lock);
  // A write batch holds its connection's lock from begin_write() to
  // end_write(), across calls, which the analysis cannot follow: these two
  // only tell it so (the lock stays held in between).
  void keep_for_end_write(unsigned i) noexcept RELEASE(conns_[i].lock);
  void held_since_begin_write(unsigned i) noexcept ACQUIRE(conns_[i].lock);
  // Waits until every command in `cookies` completed; false on an error or timeout.
  bool wait_all(nbd_handle* h, const std::int64_t* cookies, std::size_t n, int* error) noexcept;
  void reconnect_loop() noexcept;
  void set_error(const std::string& message) noexcept;

  std::string uri_;
  std::uint64_t bytes_;
  std::atomic<std::uint64_t> export_bytes_{0};
  unsigned count_ = kConnections;
  std::unique_ptr<Connection[]> conns_;
  std::atomic<unsigned> up_count_{0};
  std::atomic<unsigned> next_{0};
  std::atomic<std::uint64_t> connects_{0}, disconnects_{0}, failed_connects_{0}, writes_{0}, reads_{0},
      refused_{0};
  mutable Mutex error_lock_;
  std::string last_error_ GUARDED_BY(error_lock_);
  Mutex wake_lock_;
  CondVar wake_;
  bool stop_ GUARDED_BY(wake_lock_) = false;
  Thread reconnector_;
  std::uint64_t id_;
};

}  // namespace uzswap
