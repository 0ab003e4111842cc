// uzswapctl: inspect and tune a running uzswapd through its control socket.
//
// Exit status: 0 done; 1 the daemon refused the request (its error is
// printed); 2 bad usage; 3 no daemon runs under this name; 4 the daemon did
// not answer within --timeout (stopped, stuck or overloaded).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "uzswap/control/control_server.h"
#include "uzswap/control/format.h"
#include "uzswap/control/paths.h"
#include "uzswap/control/protocol.h"
#include "uzswap/version.h"

namespace {

using nlohmann::json;
using uzswap::ControlClient;
using uzswap::ControlClientError;
using uzswap::control::Command;
using uzswap::control::Request;

enum Exit { kDone = 0, kRefused = 1, kUsage = 2, kNotRunning = 3, kNotAnswering = 4 };

int exit_for(std::error_code error) {
  if (error == ControlClientError::not_running) return kNotRunning;
  if (ControlClient::not_answering(error)) return kNotAnswering;
  return kRefused;
}

// One request on a fresh connection.
uzswap::Result<std::string> ask(const std::string& socket, const Request& request,
                                std::chrono::milliseconds timeout) {
  auto client = ControlClient::connect(socket, timeout);
  if (!client) return uzswap::failure(client.error());
  return client->request(uzswap::control::request_line(request), timeout);
}

struct Session {
  std::string socket;
  std::chrono::milliseconds timeout;
  int exit_code = kDone;

  // One request on a fresh connection (a connection left idle is closed by
  // the daemon). Prints a one-line error, sets exit_code and returns nullopt
  // on failure.
  std::optional<json> call(const Request& request) {
    const auto line = ask(socket, request, timeout);
    if (!line) {
      std::fprintf(stderr, "uzswapctl: %s\n", ControlClient::describe(line.error(), socket, timeout).c_str());
      exit_code = exit_for(line.error());
      return std::nullopt;
    }
    const json reply = json::parse(*line, nullptr, /*allow_exceptions=*/false);
    if (!reply.is_object()) {
      std::fprintf(stderr, "uzswapctl: the daemon sent a reply that is not a JSON object\n");
      exit_code = kRefused;
      return std::nullopt;
    }
    const auto ok = reply.find("ok");
    if (ok == reply.end() || !ok->is_boolean() || !ok->get<bool>()) {
      const auto message = reply.find("error");
      std::fprintf(stderr, "uzswapctl: %s\n",
                   message != reply.end() && message->is_string()
                       ? uzswap::escape_name(message->get_ref<const std::string&>()).c_str()
                       : "the daemon refused the request");
      exit_code = kRefused;
      return std::nullopt;
    }
    const auto result = reply.find("result");
    return result != reply.end() ? *result : json::object();
  }
};

std::uint64_t number(const json& j, const char* key) {
  const auto it = j.is_object() ? j.find(key) : j.end();
  return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"uzswapctl: inspect and tune uzswapd", "uzswapctl"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("uzswapctl ") + uzswap::kVersion);
  std::string name(uzswap::paths::kDefaultName);
  std::string run_dir(uzswap::paths::kRunDir);
  double timeout_s = 5.0;
  app.add_option("--name", name, "Instance name")->capture_default_str();
  app.add_option("--run-dir", run_dir, "Runtime directory")->capture_default_str();
  auto* timeout_opt =
      app.add_option("--timeout", timeout_s,
                     "Seconds to wait for the daemon to accept and answer (default 5; 60 for "
                     "writeback and attribute, which wait for the work)")
          ->check(CLI::Range(0.001, 86400.0));

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
    const int code = app.exit(e);
    return code == 0 ? kDone : kUsage;
  }
  if (!uzswap::control::valid_instance_name(name)) {
    std::fprintf(stderr, "uzswapctl: --name: must be 1-32 of [A-Za-z0-9_-]\n");
    return kUsage;
  }
  const bool slow = writeback->parsed() || attribute->parsed();
  if (timeout_opt->count() == 0 && slow) timeout_s = 60.0;
  Session session{uzswap::control::socket_path(run_dir, name),
                  std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000.0))};

  const auto simple = [](Command command) {
    Request r;
    r.command = command;
    return r;
  };
  if (status->parsed()) {
    const auto s = session.call(simple(Command::status));
    if (!s) return session.exit_code;
    if (json_out) {
      std::cout << s->dump(2) << "\n";
    } else {
      std::cout << uzswap::format_status_table(*s);
      if (const std::string n = uzswap::format_nbd_table(*s); !n.empty()) std::cout << "\n" << n;
      if (const std::string r = uzswap::format_reclaim_table(*s); !r.empty()) std::cout << "\n" << r;
    }
  } else if (cgroups->parsed()) {
    const auto s = session.call(simple(Command::cgroups));
    if (!s) return session.exit_code;
    const auto list = s->is_object() ? s->find("cgroups") : s->end();
    std::cout << (json_out ? (list != s->end() ? *list : json::array()).dump(2) + "\n"
                           : uzswap::format_cgroups_table(*s));
  } else if (set->parsed()) {
    Request r = simple(Command::set);
    r.key = key;
    r.value = value;
    if (!session.call(r)) return session.exit_code;
    std::cout << uzswap::escape_name(key) << " = " << uzswap::escape_name(value) << "\n";
  } else if (writeback->parsed()) {
    Request r = simple(Command::writeback);
    r.pages = pages;
    if (!cgroup.empty()) r.cgroup = cgroup;
    const auto result = session.call(r);
    if (!result) return session.exit_code;
    std::cout << number(*result, "written") << " pages written back";
    if (const auto failed = number(*result, "failed")) std::cout << ", " << failed << " failed (kept in RAM)";
    std::cout << "\n";
  } else if (restart->parsed()) {
    const auto r = session.call(simple(Command::restart));
    if (!r) return session.exit_code;
    const std::uint64_t old_pid = number(*r, "old_pid");
    // The new process answers once it has adopted the state.
    Session probe{session.socket, std::chrono::milliseconds(500)};
    for (int i = 0; i < 300; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const auto line = ask(probe.socket, simple(Command::status), probe.timeout);
      if (!line) continue;
      const json reply = json::parse(*line, nullptr, /*allow_exceptions=*/false);
      const auto result = reply.is_object() ? reply.find("result") : reply.end();
      if (result == reply.end()) continue;
      const std::uint64_t pid = number(*result, "pid");
      if (pid != 0 && pid != old_pid) {
        std::cout << "serving process " << old_pid << " handed over to " << pid << "\n";
        return kDone;
      }
    }
    std::fprintf(stderr, "uzswapctl: serving process %llu handed over, but no new one answered within 30 s\n",
                 static_cast<unsigned long long>(old_pid));
    return kNotAnswering;
  } else if (attribute->parsed()) {
    const auto result = session.call(simple(Command::attribute));
    if (!result) return session.exit_code;
    std::cout << number(*result, "attributed") << " pages attributed, "
              << number(*result, "pages_scanned") << " pagemap entries read in "
              << number(*result, "processes") << " processes of " << number(*result, "cgroups")
              << " cgroups\n";
  } else if (stats->parsed()) {
    const auto s = session.call(simple(Command::stats));
    if (!s) return session.exit_code;
    std::cout << uzswap::format_prometheus(*s);
  } else if (top->parsed()) {
    std::uint64_t last_stores = 0, last_loads = 0;
    for (unsigned i = 0; iterations == 0 || i < iterations; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(interval));
      const auto s = session.call(simple(Command::status));
      if (!s) return session.exit_code;
      const std::uint64_t stores = number(*s, "stores");
      const std::uint64_t loads = number(*s, "loads");
      if (isatty(STDOUT_FILENO)) std::cout << "\033[H\033[2J";
      std::cout << uzswap::format_status_table(*s) << "\n";
      if (i > 0) {
        const auto full = s->is_object() ? s->find("pool_full") : s->end();
        std::printf("stores/s %.0f   loads/s %.0f   pool %s of %s%s\n\n",
                    double(stores - last_stores) / interval, double(loads - last_loads) / interval,
                    uzswap::human_bytes(number(*s, "pool_bytes")).c_str(),
                    uzswap::human_bytes(number(*s, "max_pool_bytes")).c_str(),
                    full != s->end() && *full == true ? " (full)" : "");
      }
      std::cout << uzswap::format_cgroups_table(*s);
      if (const std::string r = uzswap::format_reclaim_table(*s); !r.empty()) std::cout << "\n" << r;
      std::cout << std::flush;
      last_stores = stores;
      last_loads = loads;
    }
  }
  return kDone;
}
