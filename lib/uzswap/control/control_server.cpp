#include "uzswap/control/control_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

namespace uzswap {

namespace {

constexpr int kClientTimeoutMs = 5000;

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path))
    throw std::system_error(ENAMETOOLONG, std::generic_category(), "socket path " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Supplementary groups of a process, from /proc/PID/status.
bool process_in_group(pid_t pid, gid_t group) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream groups(line.substr(7));
    gid_t g;
    while (groups >> g)
      if (g == group) return true;
  }
  return false;
}

}  // namespace

Access ControlServer::access_for(uid_t uid, gid_t gid, pid_t pid,
                                 std::optional<gid_t> reader_group) {
  if (uid == 0) return Access::admin;
  if (reader_group && (gid == *reader_group || process_in_group(pid, *reader_group)))
    return Access::reader;
  return Access::none;
}

ControlServer::ControlServer(std::string path, std::optional<gid_t> reader_group,
                             ControlHandler handler)
    : path_(std::move(path)), reader_group_(reader_group), handler_(std::move(handler)) {
  const sockaddr_un addr = socket_address(path_);
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::system_error(errno, std::generic_category(), "socket");
  unlink(path_.c_str());  // a stale socket of a daemon that died; we hold the instance lock
  if (bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 16) != 0) {
    const int err = errno;
    close(listen_fd_);
    throw std::system_error(err, std::generic_category(), "bind " + path_);
  }
  // Anyone may connect, so that a refused peer gets a reason, not EACCES;
  // access is decided from the peer's credentials.
  chmod(path_.c_str(), 0666);
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) {
    const int err = errno;
    close(listen_fd_);
    unlink(path_.c_str());
    throw std::system_error(err, std::generic_category(), "eventfd");
  }
  thread_ = Thread("uzswap-control", [this] { run(); });
}

ControlServer::~ControlServer() {
  const std::uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(stop_fd_);
  close(listen_fd_);
  unlink(path_.c_str());
}

void ControlServer::run() noexcept {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    serve_client(client);
    close(client);
  }
}

void ControlServer::serve_client(int fd) noexcept {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return;
  const Access access = access_for(cred.uid, cred.gid, cred.pid, reader_group_);
  if (access == Access::none) {
    write_all(fd, "{\"ok\":false,\"error\":\"permission denied: uid " + std::to_string(cred.uid) +
                      " is not root" + (reader_group_ ? " and not in the stats group" : "") +
                      "\"}\n");
    return;
  }
  std::string buffer;
  char chunk[4096];
  for (;;) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int ready = poll(fds, 2, kClientTimeoutMs);
    if (ready <= 0 || fds[1].revents) return;  // idle client or shutting down
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return;
    buffer.append(chunk, static_cast<std::size_t>(n));
    std::size_t newline;
    while ((newline = buffer.find('\n')) != std::string::npos) {
      std::string reply;
      try {
        reply = handler_(std::string_view(buffer).substr(0, newline), access);
      } catch (const std::exception& e) {
        reply = std::string("{\"ok\":false,\"error\":\"internal error\"}");
      }
      buffer.erase(0, newline + 1);
      if (!write_all(fd, reply + "\n")) return;
    }
    if (buffer.size() > kMaxLine) {
      write_all(fd, "{\"ok\":false,\"error\":\"request line longer than 64 KiB\"}\n");
      return;
    }
  }
}

std::optional<ControlClient> ControlClient::connect(const std::string& path, std::string& error) {
  sockaddr_un addr;
  try {
    addr = socket_address(path);
  } catch (const std::system_error& e) {
    error = e.what();
    return std::nullopt;
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return std::nullopt;
  }
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    if (err == ENOENT || err == ECONNREFUSED)
      error = "uzswapd is not running (nothing listens on " + path + ")";
    else if (err == EACCES)
      error = "permission denied on " + path + " (run as root)";
    else
      error = "cannot connect to " + path + ": " + std::strerror(err);
    return std::nullopt;
  }
  return ControlClient(fd);
}

ControlClient::~ControlClient() {
  if (fd_ >= 0) close(fd_);
}

ControlClient::ControlClient(ControlClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), pending_(std::move(other.pending_)) {}

ControlClient& ControlClient::operator=(ControlClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    pending_ = std::move(other.pending_);
  }
  return *this;
}

std::optional<std::string> ControlClient::request(std::string_view line, std::string& error) {
  std::string out(line);
  out.push_back('\n');
  // A peer the daemon refuses is sent its reason and disconnected before
  // its request is read: if sending fails, the reason may still be waiting.
  const bool sent = write_all(fd_, out);
  const int send_errno = errno;
  char chunk[4096];
  for (;;) {
    const std::size_t newline = pending_.find('\n');
    if (newline != std::string::npos) {
      std::string reply = pending_.substr(0, newline);
      pending_.erase(0, newline + 1);
      return reply;
    }
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = sent ? std::string("uzswapd closed the connection")
                   : std::string("sending the request failed: ") + std::strerror(send_errno);
      return std::nullopt;
    }
    pending_.append(chunk, static_cast<std::size_t>(n));
  }
}

}  // namespace uzswap
