#include "uzswap/nbd/nbd_listen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace uzswap {

namespace {

constexpr int kBacklog = 64;

const char* describe(ListenError error) noexcept {
  switch (error) {
    case ListenError::not_unix_or_tcp: return "not unix:PATH or tcp:ADDR:PORT";
    case ListenError::relative_path: return "unix:PATH needs an absolute path";
    case ListenError::path_too_long: return "unix socket path longer than 107 bytes";
    case ListenError::path_with_nul: return "unix socket path with a NUL byte";
    case ListenError::bad_ipv6_form: return "tcp:[IPv6]:PORT expected";
    case ListenError::no_port: return "tcp:ADDR:PORT needs a port";
    case ListenError::host_not_numeric: return "not a numeric address or localhost";
    case ListenError::bad_port: return "not a port (1-65535)";
    case ListenError::not_loopback:
      return "not a loopback address; NBD has no authentication (--nbd-allow-remote to listen there anyway)";
    case ListenError::not_a_socket: return "the path exists and is not a socket";
    case ListenError::in_use: return "in use by another server";
  }
  return "unknown listen address error";
}
static_assert(sizeof(sockaddr_un{}.sun_path) == 108, "describe(path_too_long) says 107");

bool numeric_host(const std::string& host) {
  in_addr v4;
  in6_addr v6;
  return host == "localhost" || inet_pton(AF_INET, host.c_str(), &v4) == 1 ||
         inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

}  // namespace

const std::error_category& listen_category() noexcept {
  static const ErrorCategory<ListenError> category("uzswap.nbd_listen", describe);
  return category;
}

std::error_code make_error_code(ListenError error) noexcept { return {static_cast<int>(error), listen_category()}; }

std::string ListenAddress::to_string() const {
  if (kind == Kind::unix_socket) return "unix:" + path;
  return "tcp:" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Result<ListenAddress> parse_listen_address(std::string_view text) {
  ListenAddress a;
  if (text.starts_with("unix:")) {
    a.path = std::string(text.substr(5));
    if (a.path.empty() || a.path.front() != '/') return failure(ListenError::relative_path);
    if (a.path.size() >= sizeof(sockaddr_un{}.sun_path)) return failure(ListenError::path_too_long);
    if (a.path.find('\0') != std::string::npos) return failure(ListenError::path_with_nul);
    return a;
  }
  if (!text.starts_with("tcp:")) return failure(ListenError::not_unix_or_tcp);
  std::string_view rest = text.substr(4);
  a.kind = ListenAddress::Kind::tcp;
  std::string_view port;
  if (rest.starts_with("[")) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
      return failure(ListenError::bad_ipv6_form);
    a.host = std::string(rest.substr(1, close - 1));
    port = rest.substr(close + 2);
  } else {
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return failure(ListenError::no_port);
    a.host = std::string(rest.substr(0, colon));
    port = rest.substr(colon + 1);
  }
  if (!numeric_host(a.host)) return failure(ListenError::host_not_numeric);
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
    return failure(ListenError::bad_port);
  a.port = static_cast<std::uint16_t>(value);
  return a;
}

std::string listen_address_message(std::string_view text, std::error_code error) {
  // The host or the port part of a tcp: address, as parse_listen_address cut it.
  const auto part = [text](bool want_port) {
    std::string_view rest = text.substr(std::min<std::size_t>(4, text.size()));
    std::size_t split = rest.rfind(':');
    if (rest.starts_with("[")) {
      const auto close = rest.find(']');
      if (close != std::string_view::npos) return std::string(want_port ? rest.substr(close + 2) : rest.substr(1, close - 1));
    }
    if (split == std::string_view::npos) split = rest.size();
    return std::string(want_port ? rest.substr(std::min(split + 1, rest.size())) : rest.substr(0, split));
  };
  if (error == ListenError::not_unix_or_tcp) return "'" + std::string(text) + "' is not unix:PATH or tcp:ADDR:PORT";
  if (error == ListenError::path_too_long)
    return "unix socket path longer than " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1);
  if (error == ListenError::host_not_numeric) return "'" + part(false) + "' is not a numeric address or localhost";
  if (error == ListenError::bad_port) return "'" + part(true) + "' is not a port (1-65535)";
  return error.message();
}

std::string listener_message(const ListenAddress& a, std::error_code error) {
  if (error == ListenError::not_loopback)
    return a.to_string() + " is not a loopback address; NBD has no authentication: pass "
                           "--nbd-allow-remote to listen there anyway";
  if (error == ListenError::not_a_socket) return a.path + " exists and is not a socket";
  if (error == ListenError::in_use) return a.path + " is in use by another server";
  if (error.category() == listen_category()) return error.message();
  return "listen on " + (a.kind == ListenAddress::Kind::unix_socket ? a.path : a.to_string()) + ": " + error.message();
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

Result<int> open_listener(const ListenAddress& a, bool allow_remote) {
  if (!is_loopback(a) && !allow_remote) return failure(ListenError::not_loopback);
  if (a.kind == ListenAddress::Kind::unix_socket) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, a.path.c_str(), a.path.size() + 1);
    struct stat st {};
    if (lstat(a.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return failure(ListenError::not_a_socket);
      // A socket a dead daemon left, or one somebody serves?
      const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const bool answered = probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
      if (probe >= 0) close(probe);
      if (answered) return failure(ListenError::in_use);
      unlink(a.path.c_str());
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return failure(errno_error());
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || chmod(a.path.c_str(), 0600) != 0 ||
        listen(fd, kBacklog) != 0) {
      const std::error_code error = errno_error();
      close(fd);
      return failure(error);
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
  if (fd < 0) return failure(errno_error());
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 || listen(fd, kBacklog) != 0) {
    const std::error_code error = errno_error();
    close(fd);
    return failure(error);
  }
  return fd;
}

void remove_listener_path(const ListenAddress& a) noexcept {
  if (a.kind == ListenAddress::Kind::unix_socket && !a.path.empty()) unlink(a.path.c_str());
}

}  // namespace uzswap
