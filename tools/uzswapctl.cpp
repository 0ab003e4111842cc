// uzswapctl: inspect and tune a running uzswapd through its control socket.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "uzswap/control/control_server.h"
#include "uzswap/control/format.h"
#include "uzswap/daemon/config.h"
#include "uzswap/version.h"

namespace {

using nlohmann::json;

struct Session {
  std::string socket;
  std::optional<uzswap::ControlClient> client;

  // Sends one request; prints a one-line error and returns nullopt on failure.
  std::optional<json> call(const json& request) {
    std::string error;
    if (!client) client = uzswap::ControlClient::connect(socket, error);
    if (!client) {
      std::fprintf(stderr, "uzswapctl: %s\n", error.c_str());
      return std::nullopt;
    }
    const auto line = client->request(request.dump(), error);
    if (!line) {
      std::fprintf(stderr, "uzswapctl: %s\n", error.c_str());
      return std::nullopt;
    }
    json reply;
    try {
      reply = json::parse(*line);
    } catch (const json::exception&) {
      std::fprintf(stderr, "uzswapctl: the daemon sent a reply that is not JSON\n");
      return std::nullopt;
    }
    if (!reply.value("ok", false)) {
      std::fprintf(stderr, "uzswapctl: %s\n", reply.value("error", std::string("error")).c_str());
      return std::nullopt;
    }
    return reply.value("result", json::object());
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"uzswapctl: inspect and tune uzswapd", "uzswapctl"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("uzswapctl ") + uzswap::kVersion);
  std::string name = "uzswap";
  std::string run_dir = uzswap::kDefaultRunDir;
  app.add_option("--name", name, "Instance name")->default_val("uzswap");
  app.add_option("--run-dir", run_dir, "Runtime directory")->default_val(uzswap::kDefaultRunDir);

  bool json_out = false;
  auto* status = app.add_subcommand("status", "Show what is stored and how much RAM it takes");
  status->add_flag("--json", json_out, "One JSON object");

  auto* cgroups = app.add_subcommand("cgroups", "Per-cgroup statistics");
  cgroups->add_flag("--json", json_out, "One JSON array");

  std::string key, value;
  auto* set = app.add_subcommand("set", "Change a live setting");
  set->add_option("key", key,
                  "compressor, level, max-pool-percent, accept-threshold-percent, writeback, "
                  "cgroup-writeback (PATH=on|off), cgroup-max (PATH=SIZE|max), "
                  "watermark-scale-factor, idle-writeback-seconds, log-level")
      ->required();
  set->add_option("value", value)->required();

  std::uint64_t pages = 0;
  std::string cgroup;
  auto* writeback = app.add_subcommand("writeback", "Write pages back to the backing file now");
  writeback->add_option("--pages", pages, "How many pages")->required();
  writeback->add_option("--cgroup", cgroup, "Only this cgroup's pages");

  auto* attribute = app.add_subcommand("attribute", "Run a cgroup attribution pass now");
  auto* restart = app.add_subcommand(
      "restart", "Hand the swap area to a new serving process running the installed uzswapd (live upgrade)");

  bool prometheus = false;
  auto* stats = app.add_subcommand("stats", "Statistics for monitoring");
  stats->add_flag("--prometheus", prometheus, "OpenMetrics text (the default)");

  double interval = 1.0;
  unsigned iterations = 0;
  auto* top = app.add_subcommand("top", "A refreshing view of the daemon");
  top->add_option("--interval", interval, "Seconds between refreshes")->check(CLI::Range(0.1, 3600.0));
  top->add_option("--iterations", iterations, "Stop after N refreshes (0 = until interrupted)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a usage error exits 2, as uzswapd's do
    // (CLI11's own codes, 105-114, would say nothing to a script).
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!uzswap::valid_instance_name(name)) {
    std::fprintf(stderr, "uzswapctl: --name: must be 1-32 of [A-Za-z0-9_-]\n");
    return 2;
  }
  Session session{run_dir + "/" + name + "/control", std::nullopt};

  if (status->parsed()) {
    const auto s = session.call({{"cmd", "status"}});
    if (!s) return 1;
    if (json_out) {
      std::cout << s->dump(2) << "\n";
    } else {
      std::cout << uzswap::format_status_table(*s);
      if (const std::string r = uzswap::format_reclaim_table(*s); !r.empty()) std::cout << "\n" << r;
    }
  } else if (cgroups->parsed()) {
    const auto s = session.call({{"cmd", "cgroups"}});
    if (!s) return 1;
    std::cout << (json_out ? s->value("cgroups", json::array()).dump(2) + "\n"
                           : uzswap::format_cgroups_table(*s));
  } else if (set->parsed()) {
    if (!session.call({{"cmd", "set"}, {"key", key}, {"value", value}})) return 1;
    std::cout << key << " = " << value << "\n";
  } else if (writeback->parsed()) {
    json request = {{"cmd", "writeback"}, {"pages", pages}};
    if (!cgroup.empty()) request["cgroup"] = cgroup;
    const auto r = session.call(request);
    if (!r) return 1;
    std::cout << r->value("written", std::uint64_t{0}) << " pages written back";
    if (const auto failed = r->value("failed", std::uint64_t{0})) std::cout << ", " << failed << " failed (kept in RAM)";
    std::cout << "\n";
  } else if (restart->parsed()) {
    const auto r = session.call({{"cmd", "restart"}});
    if (!r) return 1;
    const auto old_pid = r->value("old_pid", 0);
    // The new process answers once it has adopted the state.
    for (int i = 0; i < 300; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::string error;
      auto probe = uzswap::ControlClient::connect(session.socket, error);
      const auto reply = probe ? probe->request(json{{"cmd", "status"}}.dump(), error) : std::nullopt;
      if (!reply) continue;
      const json j = json::parse(*reply, nullptr, false);
      if (j.is_object() && j.value("ok", false) && j["result"].value("pid", 0) != old_pid) {
        std::cout << "serving process " << old_pid << " handed over to " << j["result"].value("pid", 0) << "\n";
        return 0;
      }
    }
    std::cerr << "uzswapctl: serving process " << old_pid << " handed over, but no new process answered within 30 s\n";
    return 1;
  } else if (attribute->parsed()) {
    const auto r = session.call({{"cmd", "attribute"}});
    if (!r) return 1;
    std::cout << r->value("attributed", std::uint64_t{0}) << " pages attributed, "
              << r->value("pages_scanned", std::uint64_t{0}) << " pagemap entries read in "
              << r->value("processes", std::uint64_t{0}) << " processes of "
              << r->value("cgroups", std::uint64_t{0}) << " cgroups\n";
  } else if (stats->parsed()) {
    const auto s = session.call({{"cmd", "stats"}});
    if (!s) return 1;
    std::cout << uzswap::format_prometheus(*s);
  } else if (top->parsed()) {
    std::uint64_t last_stores = 0, last_loads = 0;
    for (unsigned i = 0; iterations == 0 || i < iterations; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(interval));
      const auto s = session.call({{"cmd", "status"}});
      if (!s) return 1;
      const std::uint64_t stores = s->value("stores", std::uint64_t{0});
      const std::uint64_t loads = s->value("loads", std::uint64_t{0});
      if (isatty(STDOUT_FILENO)) std::cout << "\033[H\033[2J";
      std::cout << uzswap::format_status_table(*s) << "\n";
      if (i > 0)
        std::printf("stores/s %.0f   loads/s %.0f   pool %s of %s%s\n\n",
                    double(stores - last_stores) / interval, double(loads - last_loads) / interval,
                    uzswap::human_bytes(s->value("pool_bytes", std::uint64_t{0})).c_str(),
                    uzswap::human_bytes(s->value("max_pool_bytes", std::uint64_t{0})).c_str(),
                    s->value("pool_full", false) ? " (full)" : "");
      std::cout << uzswap::format_cgroups_table(*s);
      if (const std::string r = uzswap::format_reclaim_table(*s); !r.empty()) std::cout << "\n" << r;
      std::cout << std::flush;
      last_stores = stores;
      last_loads = loads;
    }
  }
  return 0;
}
