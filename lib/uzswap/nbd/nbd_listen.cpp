#include "uzswap/nbd/nbd_listen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace uzswap {

namespace {

constexpr int kBacklog = 64;

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

bool numeric_host(const std::string& host) {
  in_addr v4;
  in6_addr v6;
  return host == "localhost" || inet_pton(AF_INET, host.c_str(), &v4) == 1 ||
         inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

}  // namespace

std::string ListenAddress::to_string() const {
  if (kind == Kind::unix_socket) return "unix:" + path;
  return "tcp:" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::expected<ListenAddress, std::string> parse_listen_address(std::string_view text) {
  ListenAddress a;
  if (text.starts_with("unix:")) {
    a.path = std::string(text.substr(5));
    if (a.path.empty() || a.path.front() != '/') return std::unexpected("unix:PATH needs an absolute path");
    if (a.path.size() >= sizeof(sockaddr_un{}.sun_path))
      return std::unexpected("unix socket path longer than " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1));
    if (a.path.find('\0') != std::string::npos) return std::unexpected("unix socket path with a NUL byte");
    return a;
  }
  if (!text.starts_with("tcp:")) return std::unexpected("'" + std::string(text) + "' is not unix:PATH or tcp:ADDR:PORT");
  std::string_view rest = text.substr(4);
  a.kind = ListenAddress::Kind::tcp;
  std::string_view port;
  if (rest.starts_with("[")) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
      return std::unexpected("tcp:[IPv6]:PORT expected");
    a.host = std::string(rest.substr(1, close - 1));
    port = rest.substr(close + 2);
  } else {
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return std::unexpected("tcp:ADDR:PORT needs a port");
    a.host = std::string(rest.substr(0, colon));
    port = rest.substr(colon + 1);
  }
  if (!numeric_host(a.host)) return std::unexpected("'" + a.host + "' is not a numeric address or localhost");
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
    return std::unexpected("'" + std::string(port) + "' is not a port (1-65535)");
  a.port = static_cast<std::uint16_t>(value);
  return a;
}

bool is_loopback(const ListenAddress& a) noexcept {
  if (a.kind == ListenAddress::Kind::unix_socket) return true;
  if (a.host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, a.host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (inet_pton(AF_INET6, a.host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

std::expected<int, std::string> open_listener(const ListenAddress& a, bool allow_remote) {
  if (!is_loopback(a) && !allow_remote)
    return std::unexpected(a.to_string() + " is not a loopback address; NBD has no authentication: pass "
                           "--nbd-allow-remote to listen there anyway");
  if (a.kind == ListenAddress::Kind::unix_socket) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, a.path.c_str(), a.path.size() + 1);
    struct stat st {};
    if (lstat(a.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return std::unexpected(a.path + " exists and is not a socket");
      // A socket a dead daemon left, or one somebody serves?
      const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const bool answered = probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
      if (probe >= 0) close(probe);
      if (answered) return std::unexpected(a.path + " is in use by another server");
      unlink(a.path.c_str());
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(errno_text("socket"));
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || chmod(a.path.c_str(), 0600) != 0 ||
        listen(fd, kBacklog) != 0) {
      const std::string message = errno_text("listen on " + a.path);
      close(fd);
      return std::unexpected(message);
    }
    return fd;
  }
  sockaddr_storage storage{};
  socklen_t length;
  int family;
  const std::string host = a.host == "localhost" ? "127.0.0.1" : a.host;
  if (in_addr v4; inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&storage);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(a.port);
    sin->sin_addr = v4;
    length = sizeof(sockaddr_in);
    family = AF_INET;
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&storage);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(a.port);
    inet_pton(AF_INET6, host.c_str(), &sin6->sin6_addr);
    length = sizeof(sockaddr_in6);
    family = AF_INET6;
  }
  const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(errno_text("socket"));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 || listen(fd, kBacklog) != 0) {
    const std::string message = errno_text("listen on " + a.to_string());
    close(fd);
    return std::unexpected(message);
  }
  return fd;
}

void remove_listener_path(const ListenAddress& a) noexcept {
  if (a.kind == ListenAddress::Kind::unix_socket && !a.path.empty()) unlink(a.path.c_str());
}

}  // namespace uzswap
