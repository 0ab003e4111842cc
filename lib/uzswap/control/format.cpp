#include "uzswap/control/format.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <vector>

namespace uzswap {

namespace {

using nlohmann::json;

// Accessors that take any JSON: the reply of a daemon of another version,
// or of no daemon at all, must not throw out of a formatter.
const json& field(const json& j, const char* key) {
  static const json null;
  if (!j.is_object()) return null;
  const auto it = j.find(key);
  return it != j.end() ? *it : null;
}

std::uint64_t number(const json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer()) return v.get<std::int64_t>() < 0 ? 0 : v.get<std::uint64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    return d > 0 && d < 1.8e19 ? static_cast<std::uint64_t>(d) : 0;
  }
  return 0;
}

std::uint64_t u64(const json& j, const char* key) { return number(field(j, key)); }

bool flag(const json& j, const char* key, bool otherwise) {
  const json& v = field(j, key);
  return v.is_boolean() ? v.get<bool>() : otherwise;
}

const json& object(const json& j, const char* key) {
  static const json empty = json::object();
  const json& v = field(j, key);
  return v.is_object() ? v : empty;
}

const json& array(const json& j, const char* key) {
  static const json empty = json::array();
  const json& v = field(j, key);
  return v.is_array() ? v : empty;
}

// A string field, printable: whatever the daemon sent, a table cell holds no
// newline, terminal escape or invalid UTF-8.
std::string str(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_string() ? escape_name(v.get_ref<const std::string&>()) : std::string("-");
}

// The display width of a cell: code points, not bytes (escape_name() left
// only printable UTF-8).
std::size_t width_of(const std::string& s) {
  std::size_t n = 0;
  for (const char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], width_of(row[i]));
    }
  std::ostringstream out;
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      out << row[i];
      if (i + 1 < row.size()) out << std::string(width[i] - width_of(row[i]) + 2, ' ');
    }
    out << '\n';
  }
  return out.str();
}

std::string ratio(std::uint64_t orig, std::uint64_t ram) {
  if (ram == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", double(orig) / double(ram));
  return buf;
}

}  // namespace

namespace {

// The length of the well-formed UTF-8 sequence at the start of `s` (Unicode
// table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF), or 0.
std::size_t utf8_sequence(std::string_view s, char32_t& code) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto tail = [&](std::size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return i < s.size() && byte(i) >= lo && byte(i) <= hi;
  };
  const unsigned b0 = byte(0);
  if (b0 < 0x80) {
    code = b0;
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF && tail(1)) {
    code = (b0 & 0x1F) << 6 | (byte(1) & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    const unsigned lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    if (!tail(1, lo, hi) || !tail(2)) return 0;
    code = (b0 & 0x0F) << 12 | (byte(1) & 0x3F) << 6 | (byte(2) & 0x3F);
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    const unsigned lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    if (!tail(1, lo, hi) || !tail(2) || !tail(3)) return 0;
    code = (b0 & 0x07) << 18 | (byte(1) & 0x3F) << 12 | (byte(2) & 0x3F) << 6 | (byte(3) & 0x3F);
    return 4;
  }
  return 0;
}

// Code points a terminal shows as nothing, or that reorder or break what
// follows them: a name must not hide or disguise itself with them.
bool invisible(char32_t c) noexcept {
  return (c >= 0x80 && c <= 0x9F) || c == 0xAD || (c >= 0x200B && c <= 0x200F) ||
         (c >= 0x2028 && c <= 0x202E) || (c >= 0x2060 && c <= 0x2069) || c == 0xFEFF ||
         (c >= 0xFFF9 && c <= 0xFFFB);
}

}  // namespace

bool valid_utf8(std::string_view text) noexcept {
  char32_t code;
  while (!text.empty()) {
    const std::size_t n = utf8_sequence(text, code);
    if (n == 0) return false;
    text.remove_prefix(n);
  }
  return true;
}

std::string escape_name(std::string_view raw) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size());
  while (!raw.empty()) {
    char32_t code = 0;
    const std::size_t n = utf8_sequence(raw, code);
    if (n == 0 || code < 0x20 || code == 0x7F) {
      const auto b = static_cast<unsigned char>(raw.front());
      if (b == '\n') out += "\\n";
      else if (b == '\t') out += "\\t";
      else if (b == '\r') out += "\\r";
      else out += {'\\', 'x', hex[b >> 4], hex[b & 0xF]};
      raw.remove_prefix(1);
      continue;
    }
    if (invisible(code)) {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "\\u{%04x}", static_cast<unsigned>(code));
      out += buf;
    } else {
      out.append(raw.substr(0, n));
    }
    raw.remove_prefix(n);
  }
  return out;
}

std::string prometheus_label(std::string_view raw) {
  std::string out;
  for (const char c : escape_name(raw)) {
    // escape_name() left no newline; the format escapes these two.
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out;
}

std::string human_bytes(std::uint64_t bytes) {
  static const char* units[] = {"B", "K", "M", "G", "T", "P"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0 || v >= 100 || v == double(static_cast<std::uint64_t>(v)))
    std::snprintf(buf, sizeof(buf), "%.0f%s", v, units[u]);
  else
    std::snprintf(buf, sizeof(buf), "%.1f%s", v, units[u]);
  return buf;
}

std::string format_status_table(const json& s) {
  const json& device = object(s, "device");
  const json& rejects = object(s, "rejects");
  const std::uint64_t ram = u64(s, "pool_bytes");
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "DEVICE", "LOOP", "DISKSIZE", "STORED", "DATA", "COMPR", "POOL", "RATIO", "SAME",
       "INCOMP", "WB", "REJECTS", "ALGORITHM", "SWAP"},
      {str(s, "name"),
       (str(device, "file").empty() || str(device, "file") == "-") && str(object(s, "frontend"), "type") == "nbd"
           ? "nbd " + str(object(s, "frontend"), "listen")
           : str(device, "file"),
       str(device, "loop"),
       human_bytes(u64(device, "size_bytes")), std::to_string(u64(s, "stored_pages")),
       human_bytes(u64(s, "orig_bytes")), human_bytes(u64(s, "compressed_bytes")),
       human_bytes(ram), ratio(u64(s, "orig_bytes"), ram),
       std::to_string(u64(s, "same_filled_pages")), std::to_string(u64(s, "incompressible_pages")),
       std::to_string(u64(s, "written_back_pages")),
       std::to_string(u64(rejects, "pool_full") + u64(rejects, "alloc_failed")),
       str(s, "compressor"), flag(device, "swap_on", false) ? "on" : "off"}};
  return table(rows);
}

std::string format_nbd_table(const json& s) {
  std::string out;
  const json& fe = object(s, "frontend");
  if (str(fe, "type") == "nbd") {
    const json& c = object(fe, "connections");
    out += table({{"FRONTEND", "LISTEN", "EXPORT", "CONNS", "MAX", "TOTAL", "REFUSED", "REQUESTS", "ERRORS",
                   "PROTO-ERR", "HS-FAIL", "TIMEOUTS"},
                  {"nbd", str(fe, "listen"), str(fe, "export"), std::to_string(u64(c, "active")),
                   std::to_string(u64(c, "max")), std::to_string(u64(c, "total")), std::to_string(u64(c, "refused")),
                   std::to_string(u64(fe, "requests")), std::to_string(u64(fe, "error_replies")),
                   std::to_string(u64(fe, "protocol_errors")), std::to_string(u64(fe, "handshake_failures")),
                   std::to_string(u64(fe, "timeouts"))}});
  }
  const json& tier = object(object(s, "writeback"), "backing_nbd");
  if (field(tier, "uri").is_string()) {
    if (!out.empty()) out += "\n";
    out += table({{"REMOTE-TIER", "STATE", "CONNS", "UP", "EXPORT", "WRITES", "READS", "REFUSED", "DROPS",
                   "LAST-ERROR"},
                  {str(tier, "uri"), str(tier, "state"), std::to_string(u64(tier, "connections")),
                   std::to_string(u64(tier, "connections_up")), human_bytes(u64(tier, "export_bytes")),
                   std::to_string(u64(tier, "write_requests")), std::to_string(u64(tier, "read_requests")),
                   std::to_string(u64(tier, "refused_pages")), std::to_string(u64(tier, "disconnects")),
                   str(tier, "last_error").empty() ? std::string("-") : str(tier, "last_error")}});
    // (str() gives "-" for a missing field, and an empty string stays empty.)
  }
  return out;
}

std::string format_cgroups_table(const json& s) {
  std::vector<std::vector<std::string>> rows = {
      {"PATH", "STORED", "COMPR", "WB", "WRITEBACK", "MAX"}};
  for (const auto& cg : array(s, "cgroups")) {
    const std::uint64_t max = u64(cg, "max_bytes");
    rows.push_back({str(cg, "path"), std::to_string(u64(cg, "stored_pages")),
                    human_bytes(u64(cg, "compressed_bytes")),
                    std::to_string(u64(cg, "written_back_pages")),
                    flag(cg, "writeback", true) ? "on" : "off",
                    max == 0 ? std::string("max") : human_bytes(max)});
  }
  return table(rows);
}

std::string format_reclaim_table(const json& s) {
  const json& reclaim = object(s, "reclaim");
  if (!flag(reclaim, "enabled", false)) return {};
  std::vector<std::vector<std::string>> rows = {
      {"NODE", "POOL", "SHARE", "LOW", "HIGH", "WAKE:WMARK", "PSI", "EVENTS", "REQ", "IDLE", "RUNS",
       "SCANNED", "WRITTEN", "IDLE-WB", "QUICK:LOW", "HIGH", "GIVEUPS"}};
  for (const auto& n : array(reclaim, "nodes")) {
    const json& w = object(n, "watermarks");
    const json& wake = object(n, "wakeups");
    const std::uint64_t share = u64(n, "share_bytes");
    const auto below_share = [&](const char* mark) {
      return share == 0 ? std::string("-") : human_bytes(share - std::min(share, u64(w, mark)));
    };
    rows.push_back({std::to_string(u64(n, "node")), human_bytes(u64(n, "pool_bytes")),
                    share == 0 ? std::string("-") : human_bytes(share), below_share("low"),
                    below_share("high"), std::to_string(u64(wake, "watermark")),
                    std::to_string(u64(wake, "psi")), std::to_string(u64(wake, "memory_events")),
                    std::to_string(u64(wake, "request")), std::to_string(u64(wake, "idle")),
                    std::to_string(u64(n, "balance_runs")), std::to_string(u64(n, "scanned")),
                    std::to_string(u64(n, "written")), std::to_string(u64(n, "idle_written")),
                    std::to_string(u64(n, "low_wmark_hit_quickly")),
                    std::to_string(u64(n, "high_wmark_hit_quickly")),
                    std::to_string(u64(n, "giveups")) + (flag(n, "given_up", false) ? " (now)" : "")});
  }
  return table(rows);
}

std::string format_prometheus(const json& s) {
  std::ostringstream out;
  const json& name_field = field(s, "name");
  const std::string name =
      prometheus_label(name_field.is_string() ? name_field.get_ref<const std::string&>() : "uzswap");
  const std::string label = "{name=\"" + name + "\"}";
  auto metric = [&](const char* key, const char* type, const char* help, std::uint64_t value) {
    const std::string m = std::string("uzswap_") + key;
    out << "# TYPE " << m << ' ' << type << '\n' << "# HELP " << m << ' ' << help << '\n';
    out << m << (std::string(type) == "counter" ? "_total" : "") << label << ' ' << value << '\n';
  };
  metric("stored_pages", "gauge", "Pages stored.", u64(s, "stored_pages"));
  metric("same_filled_pages", "gauge", "Pages stored as one repeated word.", u64(s, "same_filled_pages"));
  metric("incompressible_pages", "gauge", "Pages stored raw.", u64(s, "incompressible_pages"));
  metric("orig_bytes", "gauge", "Uncompressed size of the stored pages.", u64(s, "orig_bytes"));
  metric("compressed_bytes", "gauge", "Compressed size of the stored pages.", u64(s, "compressed_bytes"));
  metric("pool_bytes", "gauge", "RAM held by the compressed pool.", u64(s, "pool_bytes"));
  metric("table_bytes", "gauge", "RAM held by the slot table.", u64(s, "table_bytes"));
  metric("max_pool_bytes", "gauge", "Pool limit.", u64(s, "max_pool_bytes"));
  metric("written_back_pages", "gauge", "Pages in the backing file.", u64(s, "written_back_pages"));
  metric("stores", "counter", "Pages stored since start.", u64(s, "stores"));
  metric("loads", "counter", "Pages loaded since start.", u64(s, "loads"));
  metric("discarded_pages", "counter", "Pages discarded by the kernel.", u64(s, "discarded_pages"));
  metric("pool_limit_hits", "counter", "Times the pool reached its limit.", u64(s, "pool_limit_hits"));
  metric("integrity_errors", "counter", "Loads refused because the page's bytes failed their checksum.",
         u64(s, "integrity_errors"));
  metric("read_errors", "counter", "Read requests that stopped at a page that could not be served.",
         u64(s, "read_errors"));
  const json& rejects = object(s, "rejects");
  out << "# TYPE uzswap_rejects counter\n# HELP uzswap_rejects Stores refused, by reason.\n";
  for (const char* reason : {"pool_full", "alloc_failed"})
    out << "uzswap_rejects_total{name=\"" << name << "\",reason=\"" << reason << "\"} "
        << u64(rejects, reason) << '\n';
  const json& reserve = object(s, "pool_reserve");
  metric("pool_reserve_bytes", "gauge", "RAM in the pool's reserve of populated spans.", u64(reserve, "bytes"));
  metric("pool_reserve_hits", "counter", "New pool spans taken from the reserve.", u64(reserve, "hits"));
  metric("pool_reserve_misses", "counter", "New pool spans a store found the reserve empty for.",
         u64(reserve, "misses"));
  metric("pool_reserve_refills", "counter", "Pool spans populated ahead of demand.", u64(reserve, "refills"));
  const json& ids = object(s, "cgroup_ids");
  metric("cgroup_ids_free", "gauge", "Cgroup ids free to hand out.", u64(ids, "free"));
  metric("cgroups_untracked", "gauge", "Cgroups that got no id (all in use): their pages count as the root's.",
         u64(ids, "untracked"));
  const json& threads = object(s, "threads");
  metric("threads_stuck", "gauge", "Serving threads on one piece of work for the stuck limit.", u64(threads, "stuck"));
  metric("threads_down", "gauge", "Serving threads that failed or died.", u64(threads, "down"));
  metric("thread_errors", "counter", "Errors the serving threads met and survived.", u64(threads, "errors"));
  out << "# TYPE uzswap_cgroup_stored_pages gauge\n# HELP uzswap_cgroup_stored_pages Pages stored per cgroup.\n";
  for (const auto& cg : array(s, "cgroups")) {
    const json& path = field(cg, "path");
    out << "uzswap_cgroup_stored_pages{name=\"" << name << "\",cgroup=\""
        << prometheus_label(path.is_string() ? path.get_ref<const std::string&>() : "-") << "\"} "
        << u64(cg, "stored_pages") << '\n';
  }
  const json& nodes = array(object(s, "reclaim"), "nodes");
  out << "# TYPE uzswap_reclaim_wakeups counter\n# HELP uzswap_reclaim_wakeups Reclaim thread wakeups, by node and cause.\n";
  for (const auto& n : nodes) {
    const json& wakeups = object(n, "wakeups");
    for (auto it = wakeups.begin(); it != wakeups.end(); ++it)
      out << "uzswap_reclaim_wakeups_total{name=\"" << name << "\",node=\"" << u64(n, "node")
          << "\",cause=\"" << prometheus_label(it.key()) << "\"} " << number(it.value())
          << '\n';
  }
  for (const char* key : {"scanned", "written", "idle_written", "balance_runs"}) {
    out << "# TYPE uzswap_reclaim_" << key << " counter\n# HELP uzswap_reclaim_" << key
        << " Per-node reclaim thread counter.\n";
    for (const auto& n : nodes)
      out << "uzswap_reclaim_" << key << "_total{name=\"" << name << "\",node=\"" << u64(n, "node")
          << "\"} " << u64(n, key) << '\n';
  }
  out << "# EOF\n";
  return out.str();
}

}  // namespace uzswap
