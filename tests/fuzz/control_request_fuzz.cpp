// The control protocol from the daemon's side, and names from outside:
//  - parse_request() on any line never throws; what it accepts, written back
//    with request_line(), parses to the same request;
//  - its errors, sent with error_line(), are one valid JSON line;
//  - escape_name() gives valid UTF-8 without control characters, and
//    escaping again changes nothing; a Prometheus label holds no newline;
//  - when the input is JSON, the status formatters take it without throwing,
//    and the Prometheus text has no line that is not a comment or a metric.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "uzswap/control/format.h"
#include "uzswap/control/protocol.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool printable(std::string_view s) {
  for (const char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace uzswap;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const auto request = control::parse_request(text);
  if (request) {
    const std::string line = control::request_line(*request);
    check(line.find('\n') == std::string::npos);
    check(control::parse_request(line) == request);
  } else {
    check(!request.error().empty());
    const std::string line = control::error_line(request.error());
    check(line.find('\n') == std::string::npos);
    const auto back = nlohmann::json::parse(line, nullptr, false);
    check(back.is_object() && back["error"] == request.error());
  }

  const std::string escaped = escape_name(text);
  check(valid_utf8(escaped) && printable(escaped));
  check(escape_name(escaped) == escaped);
  check(prometheus_label(text).find('\n') == std::string::npos);

  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (!json.is_discarded()) {
    (void)format_status_table(json);
    (void)format_cgroups_table(json);
    (void)format_reclaim_table(json);
    const std::string metrics = format_prometheus(json);
    std::size_t line_start = 0;
    while (line_start < metrics.size()) {
      check(metrics[line_start] == '#' || metrics.compare(line_start, 7, "uzswap_") == 0);
      line_start = metrics.find('\n', line_start);
      if (line_start == std::string::npos) break;
      ++line_start;
    }
  }
  return 0;
}
