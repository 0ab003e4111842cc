// The control socket: a unix stream socket carrying one JSON request per line
// and one JSON reply per line.
//
// Who may do what is decided from the peer's credentials (SO_PEERCRED) before
// a byte is read: root may do everything, members of the stats group may read,
// anyone else gets one error line and is disconnected. The server runs on its
// own thread and serves one client at a time; it is never on the swap
// request path.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "uzswap/common/thread.h"

namespace uzswap {

enum class Access { none, reader, admin };

// Maps a request line to a reply line (without the newline).
using ControlHandler = std::function<std::string(std::string_view request, Access access)>;

class ControlServer {
 public:
  static constexpr std::size_t kMaxLine = 64u << 10;

  // Binds `path` (replacing a stale socket) and starts serving.
  // Throws std::system_error.
  ControlServer(std::string path, std::optional<gid_t> reader_group, ControlHandler handler);
  ~ControlServer();  // stops, joins, unlinks the socket
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const std::string& path() const noexcept { return path_; }

  // Access of a peer with these credentials.
  static Access access_for(uid_t uid, gid_t gid, pid_t pid, std::optional<gid_t> reader_group);

 private:
  void run() noexcept;
  void serve_client(int fd) noexcept;

  std::string path_;
  std::optional<gid_t> reader_group_;
  ControlHandler handler_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd
  Thread thread_;
};

// The client side: connect, send a line, read a line.
class ControlClient {
 public:
  // A one-line error when the daemon is not running or the socket is not ours.
  static std::optional<ControlClient> connect(const std::string& path, std::string& error);
  ~ControlClient();
  ControlClient(ControlClient&& other) noexcept;
  ControlClient& operator=(ControlClient&& other) noexcept;

  // Sends one request line; returns the reply line, or nullopt with `error`.
  std::optional<std::string> request(std::string_view line, std::string& error);

 private:
  explicit ControlClient(int fd) : fd_(fd) {}
  int fd_ = -1;
  std::string pending_;
};

}  // namespace uzswap
