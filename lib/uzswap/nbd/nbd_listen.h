// Where the NBD front end listens: `unix:PATH` or `tcp:ADDR:PORT` (ADDR a
// numeric IPv4 address, [IPv6] or localhost). Parsing is pure; opening
// binds and listens. An address off the loopback is refused unless the
// caller allows it: NBD has no authentication, and anyone who reaches the
// export reads and writes every swapped page.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace uzswap {

struct ListenAddress {
  enum class Kind : std::uint8_t { unix_socket, tcp };
  Kind kind = Kind::unix_socket;
  std::string path;  // unix
  std::string host;  // tcp, without brackets
  std::uint16_t port = 0;

  std::string to_string() const;
};

std::expected<ListenAddress, std::string> parse_listen_address(std::string_view text);

// True for unix sockets and for TCP on 127.0.0.0/8, ::1 or localhost.
bool is_loopback(const ListenAddress& address) noexcept;

// Binds and listens (close-on-exec). A unix socket path that exists is
// replaced only if nothing answers on it. Returns the fd, or a message.
std::expected<int, std::string> open_listener(const ListenAddress& address, bool allow_remote);

// Removes a unix socket path open_listener made (nothing for TCP).
void remove_listener_path(const ListenAddress& address) noexcept;

}  // namespace uzswap
