// The NBD front end: the page store served as one NBD export, over any
// connected stream socket (unix, TCP on loopback, or the socketpair a kernel
// NBD client is given).
//
// NbdServer::serve() runs one connection from the greeting to its end on the
// calling thread, with blocking I/O on the socket and one caller-owned
// buffer: it never allocates and never throws. What reaches the store goes
// through SlotIo, the path the FUSE front end uses too. A client that breaks
// the protocol (bad magic, a write longer than the advertised maximum) loses
// its connection; a request it may send but the server cannot serve
// (unaligned, out of range, unknown command) gets the protocol's error and
// changes nothing. A client that stops reading is dropped once a send has
// waited kSendTimeout; one that says nothing during the handshake, after
// kHandshakeTimeout. An idle connection in transmission is fine.
//
// NbdListener runs a fixed number of connection threads, each with its own
// buffer, made at start-up, and one thread that accepts: a client beyond the
// limit is closed at once (and counted), never queued without an answer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "uzswap/common/mutex.h"
#include "uzswap/common/thread.h"
#include "uzswap/frontend/slot_io.h"
#include "uzswap/nbd/nbd_protocol.h"

namespace uzswap {

struct NbdConfig {
  std::uint64_t size_bytes = 0;
  std::string export_name = "uzswap";
  std::string description = "uzswap compressed page store";
  std::uint32_t max_block = 32u << 20;   // the largest request advertised
  std::uint32_t chunk_bytes = 1u << 20;  // the connection buffer's data part
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds send_timeout{30000};
};

struct NbdStats {
  std::uint64_t connections_total = 0;    // accepted and served
  std::uint64_t connections_active = 0;
  std::uint64_t connections_refused = 0;  // beyond the limit, closed at once
  std::uint64_t handshakes = 0;           // reached transmission
  std::uint64_t handshake_failures = 0;   // closed during the handshake
  std::uint64_t options_refused = 0;      // options answered with an error
  std::uint64_t protocol_errors = 0;      // connections closed for breaking the protocol
  std::uint64_t timeouts = 0;             // connections dropped for not reading or not talking
  std::uint64_t requests = 0;
  std::uint64_t error_replies = 0;        // requests answered with an error
  std::uint64_t structured_connections = 0;
  SlotIoStats io;
};

// Why serve() returned.
enum class NbdEnd : std::uint8_t { aborted, disconnected, eof, protocol_error, timeout, io_error };
const char* to_string(NbdEnd end) noexcept;

class NbdServer {
 public:
  // Throws std::system_error (EINVAL: an export name or description too long).
  NbdServer(PageStore& store, const NbdConfig& config);

  // The buffer serve() needs.
  std::size_t buffer_bytes() const noexcept;

  // Serves one connection until it ends; `fd` stays open (the caller closes).
  NbdEnd serve(int fd, std::span<std::byte> buffer) noexcept;
  // The same from the transmission phase, with simple replies: for the
  // kernel's NBD client, which has no handshake (nbd_kernel.h). A reply
  // waits for the kernel as long as it takes: the kernel always drains its
  // end, and a connection given up on would leave its requests unanswered.
  NbdEnd serve_transmission(int fd, std::span<std::byte> buffer) noexcept;

  NbdStats stats() const noexcept;
  const nbd::ExportInfo& export_info() const noexcept { return info_; }
  const NbdConfig& config() const noexcept { return config_; }

  // The listener's counters live here so stats() tells everything.
  void count_connection(int delta) noexcept;
  void count_refused() noexcept { refused_.fetch_add(1, std::memory_order_relaxed); }

 private:
  // nullopt: the client asked for transmission.
  std::optional<NbdEnd> handshake(int fd, std::span<std::byte> buffer, nbd::HandshakeState& state) noexcept;
  NbdEnd transmission(int fd, std::span<std::byte> buffer, bool structured) noexcept;
  // These return nullopt while the connection goes on.
  std::optional<NbdEnd> serve_read(int fd, std::span<std::byte> buffer, const nbd::Request& r,
                                   bool structured) noexcept;
  std::optional<NbdEnd> reply(int fd, const nbd::Request& r, std::uint32_t error, bool structured) noexcept;

  NbdConfig config_;
  nbd::ExportInfo info_;
  SlotIo io_;
  std::atomic<std::uint64_t> total_{0}, active_{0}, refused_{0}, handshakes_{0}, handshake_failures_{0},
      options_refused_{0}, protocol_errors_{0}, timeouts_{0}, requests_{0}, error_replies_{0}, structured_{0};
};

class NbdListener {
 public:
  // Serves `listen_fd` (a listening stream socket, not owned) with
  // `connections` threads; `thread_init` runs first on each of them.
  // Throws std::system_error.
  NbdListener(NbdServer& server, int listen_fd, unsigned connections, std::function<void()> thread_init);
  ~NbdListener();  // stops accepting, ends every connection, joins
  NbdListener(const NbdListener&) = delete;
  NbdListener& operator=(const NbdListener&) = delete;

  unsigned connections() const noexcept { return count_; }

 private:
  struct Slot {
    // -1: idle, waiting for a connection; -2: told to stop; else the
    // connection's fd. Changed under `lock` except by the acceptor's
    // claim of an idle slot (a compare-exchange).
    std::atomic<int> fd{-1};
    Mutex lock;
    std::unique_ptr<std::byte[]> buffer;
    Thread thread;
  };
  void stop() noexcept;
  void accept_loop() noexcept;
  void connection_loop(Slot& slot) noexcept;

  NbdServer& server_;
  int listen_fd_;
  int stop_fd_ = -1;  // eventfd: wakes the acceptor
  unsigned count_;
  std::size_t buffer_bytes_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<Slot[]> slots_;
  Thread acceptor_;
};

}  // namespace uzswap
