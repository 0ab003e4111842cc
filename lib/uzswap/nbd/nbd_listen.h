// Where the NBD front end listens: `unix:PATH` or `tcp:ADDR:PORT` (ADDR a
// numeric IPv4 address, [IPv6] or localhost). Parsing is pure; opening
// binds and listens. An address off the loopback is refused unless the
// caller allows it: NBD has no authentication, and anyone who reaches the
// export reads and writes every swapped page.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "uzswap/common/result.h"

namespace uzswap {

// What is wrong with a listen address (besides a system error from socket,
// bind or listen).
enum class ListenError {
  not_unix_or_tcp = 1,
  relative_path,     // unix:PATH needs an absolute path
  path_too_long,     // longer than sockaddr_un can hold
  path_with_nul,
  bad_ipv6_form,     // tcp:[IPv6]:PORT expected
  no_port,
  host_not_numeric,  // a numeric address or localhost
  bad_port,          // 1-65535
  not_loopback,      // refused unless the caller allows it
  not_a_socket,      // the unix socket path exists and is something else
  in_use,            // a server answers on the unix socket path
};
const std::error_category& listen_category() noexcept;
std::error_code make_error_code(ListenError error) noexcept;

struct ListenAddress {
  enum class Kind : std::uint8_t { unix_socket, tcp };
  Kind kind = Kind::unix_socket;
  std::string path;  // unix
  std::string host;  // tcp, without brackets
  std::uint16_t port = 0;

  std::string to_string() const;
};

Result<ListenAddress> parse_listen_address(std::string_view text);

// True for unix sockets and for TCP on 127.0.0.0/8, ::1 or localhost.
bool is_loopback(const ListenAddress& address) noexcept;

// Binds and listens (close-on-exec). A unix socket path that exists is
// replaced only if nothing answers on it. Returns the fd.
Result<int> open_listener(const ListenAddress& address, bool allow_remote);

// The sentence for a person (what --nbd-listen reports) about an error of
// parse_listen_address(text), and of open_listener(address).
std::string listen_address_message(std::string_view text, std::error_code error);
std::string listener_message(const ListenAddress& address, std::error_code error);

// Removes a unix socket path open_listener made (nothing for TCP).
void remove_listener_path(const ListenAddress& address) noexcept;

}  // namespace uzswap

template <>
struct std::is_error_code_enum<uzswap::ListenError> : std::true_type {};
