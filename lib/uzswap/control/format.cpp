#include "uzswap/control/format.h"

#include <cstdio>
#include <sstream>
#include <vector>

namespace uzswap {

namespace {

std::uint64_t u64(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<std::uint64_t>() : 0;
}

std::string str(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string("-");
}

std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  std::ostringstream out;
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      out << row[i];
      if (i + 1 < row.size()) out << std::string(width[i] - row[i].size() + 2, ' ');
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

std::string format_status_table(const nlohmann::json& s) {
  const nlohmann::json device = s.value("device", nlohmann::json::object());
  const nlohmann::json rejects = s.value("rejects", nlohmann::json::object());
  const std::uint64_t ram = u64(s, "pool_bytes");
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "DEVICE", "LOOP", "DISKSIZE", "STORED", "DATA", "COMPR", "POOL", "RATIO", "SAME",
       "INCOMP", "WB", "REJECTS", "ALGORITHM", "SWAP"},
      {str(s, "name"), str(device, "file"), str(device, "loop"),
       human_bytes(u64(device, "size_bytes")), std::to_string(u64(s, "stored_pages")),
       human_bytes(u64(s, "orig_bytes")), human_bytes(u64(s, "compressed_bytes")),
       human_bytes(ram), ratio(u64(s, "orig_bytes"), ram),
       std::to_string(u64(s, "same_filled_pages")), std::to_string(u64(s, "incompressible_pages")),
       std::to_string(u64(s, "written_back_pages")),
       std::to_string(u64(rejects, "pool_full") + u64(rejects, "alloc_failed")),
       str(s, "compressor"), device.value("swap_on", false) ? "on" : "off"}};
  return table(rows);
}

std::string format_cgroups_table(const nlohmann::json& s) {
  std::vector<std::vector<std::string>> rows = {
      {"PATH", "STORED", "COMPR", "WB", "WRITEBACK", "MAX"}};
  for (const auto& cg : s.value("cgroups", nlohmann::json::array())) {
    const std::uint64_t max = u64(cg, "max_bytes");
    rows.push_back({str(cg, "path"), std::to_string(u64(cg, "stored_pages")),
                    human_bytes(u64(cg, "compressed_bytes")),
                    std::to_string(u64(cg, "written_back_pages")),
                    cg.value("writeback", true) ? "on" : "off",
                    max == 0 ? std::string("max") : human_bytes(max)});
  }
  return table(rows);
}

std::string format_reclaim_table(const nlohmann::json& s) {
  const nlohmann::json reclaim = s.value("reclaim", nlohmann::json::object());
  if (!reclaim.value("enabled", false)) return {};
  std::vector<std::vector<std::string>> rows = {
      {"NODE", "POOL", "SHARE", "LOW", "HIGH", "WAKE:WMARK", "PSI", "EVENTS", "REQ", "IDLE", "RUNS",
       "SCANNED", "WRITTEN", "IDLE-WB", "QUICK:LOW", "HIGH", "GIVEUPS"}};
  for (const auto& n : reclaim.value("nodes", nlohmann::json::array())) {
    const nlohmann::json w = n.value("watermarks", nlohmann::json::object());
    const nlohmann::json wake = n.value("wakeups", nlohmann::json::object());
    const std::uint64_t share = u64(n, "share_bytes");
    rows.push_back({std::to_string(u64(n, "node")), human_bytes(u64(n, "pool_bytes")),
                    share == 0 ? std::string("-") : human_bytes(share),
                    share == 0 ? std::string("-") : human_bytes(share - u64(w, "low")),
                    share == 0 ? std::string("-") : human_bytes(share - u64(w, "high")),
                    std::to_string(u64(wake, "watermark")), std::to_string(u64(wake, "psi")),
                    std::to_string(u64(wake, "memory_events")), std::to_string(u64(wake, "request")),
                    std::to_string(u64(wake, "idle")), std::to_string(u64(n, "balance_runs")),
                    std::to_string(u64(n, "scanned")), std::to_string(u64(n, "written")),
                    std::to_string(u64(n, "idle_written")),
                    std::to_string(u64(n, "low_wmark_hit_quickly")),
                    std::to_string(u64(n, "high_wmark_hit_quickly")),
                    std::to_string(u64(n, "giveups")) + (n.value("given_up", false) ? " (now)" : "")});
  }
  return table(rows);
}

std::string format_prometheus(const nlohmann::json& s) {
  std::ostringstream out;
  const std::string name = s.value("name", std::string("uzswap"));
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
  const nlohmann::json rejects = s.value("rejects", nlohmann::json::object());
  out << "# TYPE uzswap_rejects counter\n# HELP uzswap_rejects Stores refused, by reason.\n";
  for (const char* reason : {"pool_full", "alloc_failed"})
    out << "uzswap_rejects_total{name=\"" << name << "\",reason=\"" << reason << "\"} "
        << u64(rejects, reason) << '\n';
  out << "# TYPE uzswap_cgroup_stored_pages gauge\n# HELP uzswap_cgroup_stored_pages Pages stored per cgroup.\n";
  for (const auto& cg : s.value("cgroups", nlohmann::json::array()))
    out << "uzswap_cgroup_stored_pages{name=\"" << name << "\",cgroup=\"" << str(cg, "path")
        << "\"} " << u64(cg, "stored_pages") << '\n';
  const nlohmann::json reclaim = s.value("reclaim", nlohmann::json::object());
  const nlohmann::json nodes = reclaim.value("nodes", nlohmann::json::array());
  out << "# TYPE uzswap_reclaim_wakeups counter\n# HELP uzswap_reclaim_wakeups Reclaim thread wakeups, by node and cause.\n";
  for (const auto& n : nodes) {
    const auto wakeups = n.find("wakeups");
    if (wakeups == n.end() || !wakeups->is_object()) continue;
    for (auto it = wakeups->begin(); it != wakeups->end(); ++it)
      out << "uzswap_reclaim_wakeups_total{name=\"" << name << "\",node=\"" << u64(n, "node")
          << "\",cause=\"" << it.key() << "\"} " << u64(*wakeups, it.key().c_str()) << '\n';
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
