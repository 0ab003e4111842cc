// The control protocol of /run/uzswap/<name>/control: one JSON object per
// line each way, a request {"cmd": ...} and a reply {"ok": true, "result": ...}
// or {"ok": false, "error": "<one line>"}.
//
// What daemon and client share lives here: where the socket is (the names
// are paths.h's), the command names, and the request as a plain struct. parse_request() is a pure
// function of the line (fuzzed by tests/fuzz/control_request_fuzz.cpp); the
// daemon acts on the Request it returns, the client writes one with
// request_line().
#pragma once

#include <array>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

#include "uzswap/common/result.h"

namespace uzswap::control {

// <run_dir>/<name>/control (paths.h); names are 1-32 of [A-Za-z0-9_-].
bool valid_instance_name(std::string_view name) noexcept;
std::string socket_path(std::string_view run_dir, std::string_view name);

enum class Command { status, cgroups, stats, set, writeback, attribute, restart };
inline constexpr std::array<std::string_view, 7> kCommandNames = {
    "status", "cgroups", "stats", "set", "writeback", "attribute", "restart"};
std::string_view command_name(Command command) noexcept;
std::optional<Command> command_from_name(std::string_view name) noexcept;
// set, writeback, attribute and restart change the daemon: root only.
bool needs_admin(Command command) noexcept;
// writeback and attribute wait for I/O or a pagemap scan: the control
// server runs them on their own thread, so that they never delay a status.
bool is_slow(Command command) noexcept;

struct Request {
  Command command = Command::status;
  std::string key;                    // set: the setting
  std::string value;                  // set: its new value
  std::uint64_t pages = 0;            // writeback: how many, > 0
  std::optional<std::string> cgroup;  // writeback: only this cgroup's pages
  bool operator==(const Request&) const = default;
};

// A request line (without its newline). On anything malformed, the one-line
// error the daemon sends back (text for the client, not an error code: the
// exception docs/design.md, "Errors", names):
//   malformed request: not JSON
//   malformed request: expected {"cmd": ...}
//   unknown command '<cmd>'
//   malformed request: writeback needs a positive "pages"
//   malformed request: "cgroup" must be a path
//   malformed request: set needs string "key" and "value"
// Never throws.
Parsed<Request> parse_request(std::string_view line) noexcept;

// The line that parse_request() reads back as `request`. Strings that are not
// valid UTF-8 (JSON cannot carry them) are sent in escape_name() form.
std::string request_line(const Request& request);

// Reply lines: {"ok":false,"error":MESSAGE} and the refusal of a command a
// non-root peer may not run ("permission denied: 'set' needs root").
std::string error_line(std::string_view message);
std::string permission_denied(Command command);

}  // namespace uzswap::control
