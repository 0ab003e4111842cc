// Presenting the daemon's status JSON: the zramctl-like table of
// `uzswapctl status`, the cgroups table, OpenMetrics text for
// `uzswapctl stats --prometheus`, byte sizes for people, and names from
// outside (cgroup paths) made safe to print.
//
// The formatters take whatever JSON they are given: a missing or mistyped
// field shows as "-" or 0, never an exception.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace uzswap {

// Names that come from outside (cgroup paths: any user may create cgroups in
// a delegated subtree) are data: any bytes but NUL and '/'. escape_name()
// turns one into a printable form that is valid UTF-8 and holds no control
// character: printable UTF-8 is kept as it is; \n, \t and \r are written
// so; other control bytes and bytes that are not valid UTF-8 become \xNN;
// invisible or direction-changing code points (C1 controls, zero-width
// characters, bidi overrides, line separators) become \u{XXXX}.
//
// A backslash stays a backslash, so that systemd's own escapes
// ("dev-disk-by\x2duuid-...") read as they do in systemctl, and so that
// escaping twice changes nothing: escape_name(escape_name(s)) ==
// escape_name(s). The daemon puts this form in its JSON; tables and labels
// apply it again safely. The price: a name spelled with a literal "\xff"
// prints like one holding the byte 0xff.
std::string escape_name(std::string_view raw);
bool valid_utf8(std::string_view text) noexcept;
// A label value for the Prometheus / OpenMetrics text format: escape_name(),
// then the format's own escapes (backslash, double quote, newline).
std::string prometheus_label(std::string_view raw);

// "0B", "4K", "1.5M", "12G": binary multiples, like zramctl.
std::string human_bytes(std::uint64_t bytes);

std::string format_status_table(const nlohmann::json& status);
std::string format_cgroups_table(const nlohmann::json& status);
// One row per node's reclaim thread; empty when reclaim is off.
std::string format_reclaim_table(const nlohmann::json& status);
// The NBD front end (listen address, connections, refusals) and the remote
// tier (--backing-nbd: state, connections); "" for a FUSE daemon without one.
std::string format_nbd_table(const nlohmann::json& status);
std::string format_prometheus(const nlohmann::json& status);

}  // namespace uzswap
