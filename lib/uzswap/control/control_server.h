// The control socket: a unix stream socket carrying one request per line and
// one reply per line (the protocol is in protocol.h).
//
// Every client is hostile until it proves otherwise, and none can wedge the
// server or delay root:
//  - Who may do what is decided from the peer's credentials before a byte is
//    read: root may do everything, members of the stats group may read (the
//    peer's groups come from SO_PEERGROUPS, taken by the kernel at connect,
//    not from /proc/PID/status, which a recycled PID could answer for), anyone
//    else gets one error line and is disconnected.
//  - One thread multiplexes every connection with epoll and never blocks on
//    one: a request must arrive within request_timeout of its first byte and
//    fit in max_request_bytes, a reply must be taken within reply_timeout, an
//    idle connection is closed after idle_timeout, and each uid may hold only
//    so many connections (root has its own budget, which no other uid can
//    use up).
//  - A client has one request in flight at a time; requests run on three
//    handler threads, so that a slow request or a crowd of readers never
//    delays root: one for root's quick requests (status, set, ...), one for
//    root's slow ones (writeback, attribute: protocol.h is_slow()), one for
//    everyone else's.
//
// THE HANDLER IS CALLED FROM SEVERAL THREADS AT ONCE (at most one call per
// handler thread): it must be thread-safe. It is never called after the
// ControlServer's destructor returns.
//
// The server is never on the swap request path.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "uzswap/common/result.h"

namespace uzswap {

enum class Access { none, reader, admin };

// Maps a request line to a reply line (both without the newline). May throw:
// the client then gets {"ok":false,"error":"internal error"}.
using ControlHandler = std::function<std::string(std::string_view request, Access access)>;

struct ControlServerOptions {
  std::optional<gid_t> reader_group;  // may read stats; none = root only
  std::size_t max_request_bytes = 16u << 10;
  unsigned max_connections_per_uid = 16;  // each non-root uid
  unsigned max_other_connections = 128;   // all non-root uids together
  unsigned max_root_connections = 128;
  std::chrono::milliseconds request_timeout{5000};  // first byte of a request to its newline
  std::chrono::milliseconds reply_timeout{5000};    // a reply, from ready to fully taken
  std::chrono::milliseconds idle_timeout{60000};    // connected with nothing asked
};

// What the server has seen, for tests and status.
struct ControlServerStats {
  std::uint64_t accepted = 0;
  std::uint64_t refused_access = 0;       // no access: told why, disconnected
  std::uint64_t refused_connections = 0;  // over a connection cap
  std::uint64_t requests = 0;
  std::uint64_t oversized = 0;            // request over max_request_bytes
  std::uint64_t timed_out = 0;            // request, reply or idle deadline passed
  unsigned open = 0;                      // connections now
};

class ControlServer {
 public:
  // Binds `path` (replacing a stale socket) and starts serving.
  // Throws std::system_error (ENAMETOOLONG for a path sockaddr_un cannot hold).
  ControlServer(std::string path, std::optional<gid_t> reader_group, ControlHandler handler);
  ControlServer(std::string path, const ControlServerOptions& options, ControlHandler handler);
  ~ControlServer();  // stops, waits for handlers in progress, unlinks the socket
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const std::string& path() const noexcept;
  ControlServerStats stats() const;

  // Access of a peer with these credentials (`groups`: its supplementary
  // groups, as SO_PEERGROUPS gives them).
  static Access access_for(uid_t uid, gid_t gid, std::span<const gid_t> groups,
                           std::optional<gid_t> reader_group) noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Why the client got no reply, besides a system error (EACCES on the socket,
// ECONNRESET, ...).
enum class ControlClientError {
  not_running = 1,    // nothing listens on the socket (or there is no socket)
  not_accepting,      // no connection accepted before the deadline
  request_not_taken,  // connected, but the request was not taken before the deadline
  no_reply,           // no reply before the deadline
  closed,             // the daemon closed the connection without a reply
};
const std::error_category& control_client_category() noexcept;
std::error_code make_error_code(ControlClientError error) noexcept;

// The client side: connect, send a line, read a line, each within a deadline.
class ControlClient {
 public:
  static Result<ControlClient> connect(const std::string& path, std::chrono::milliseconds timeout);
  ~ControlClient();
  ControlClient(ControlClient&& other) noexcept;
  ControlClient& operator=(ControlClient&& other) noexcept;

  // Sends one request line; returns the reply line.
  Result<std::string> request(std::string_view line, std::chrono::milliseconds timeout);

  // An error of connect() or request() on `path` as one line for the user.
  static std::string describe(std::error_code error, const std::string& path, std::chrono::milliseconds timeout);
  // The daemon is there but did not answer in time (stopped, stuck or
  // overloaded): not_accepting, request_not_taken or no_reply.
  static bool not_answering(std::error_code error) noexcept;

 private:
  explicit ControlClient(int fd) : fd_(fd) {}
  int fd_ = -1;
  std::string pending_;
};

}  // namespace uzswap

template <>
struct std::is_error_code_enum<uzswap::ControlClientError> : std::true_type {};
