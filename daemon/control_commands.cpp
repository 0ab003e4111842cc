// The control socket's commands (control/protocol.h): each request line
// parsed, checked against the peer's access, and answered with one JSON line.
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "instance.h"
#include "uzswap/control/format.h"
#include "uzswap/control/protocol.h"

namespace uzswap {

namespace {

using nlohmann::json;

json error_reply(const std::string& message) { return {{"ok", false}, {"error", message}}; }

}  // namespace

std::string Instance::handle_control(std::string_view line, Access access) {
  // Called from several control threads at once: status reads what
  // set_setting writes under settings_lock_, and cgroup paths from the
  // snapshot the attribution publishes, never waiting on a pass.
  using control::Command;
  const auto request = control::parse_request(line);
  if (!request) return control::error_line(request.error());
  if (control::needs_admin(request->command) && access != Access::admin)
    return control::error_line(control::permission_denied(request->command));
  switch (request->command) {
    case Command::status:
    case Command::cgroups:
    case Command::stats:
      return json{{"ok", true}, {"result", status()}}.dump(-1, ' ', false, json::error_handler_t::replace);
    case Command::set: {
      if (const auto set = set_setting(request->key, request->value); !set) return error_reply(set.error()).dump();
      return json{{"ok", true}, {"result", {{request->key, request->value}}}}.dump();
    }
    case Command::writeback:
      return writeback(request->pages, request->cgroup).dump();
    case Command::attribute:
      return attribute_now().dump();
    case Command::restart: {
      if (const std::string refused = handover(); !refused.empty()) return error_reply("restart: " + refused).dump();
      // Answer first, then leave: the client sees the old pid confirmed.
      restart_requested_.store(true);
      return json{{"ok", true}, {"result", {{"old_pid", getpid()}}}}.dump();
    }
  }
  return control::error_line("unknown command");
}

json Instance::writeback(std::uint64_t pages, const std::optional<std::string>& cgroup_path) {
  if (!reclaimer_) return error_reply("writeback: needs a backing file or a remote tier (--backing-file or --backing-nbd)");
  std::optional<CgroupId> cgroup;
  if (cgroup_path) {
    cgroup = find_cgroup(*cgroup_path);
    if (!cgroup) return error_reply("writeback: unknown cgroup " + escape_name(*cgroup_path));
  }
  if (!store_->memcg().policy(kRootCgroup).writeback)
    return error_reply("writeback: turned off (uzswapctl set writeback on)");
  const WritebackResult r = reclaimer_->writeback(pages, cgroup);
  spdlog::info("writeback on request: {} pages written, {} failed, {} raced", r.written, r.failed, r.raced);
  return {{"ok", true},
          {"result", {{"written", r.written}, {"failed", r.failed}, {"raced", r.raced}}}};
}

json Instance::attribute_now() {
  if (!attribution_) return error_reply("attribute: cgroup attribution is off or has no v2 tree");
  MutexLock guard(attribution_lock_);
  last_pass_ = attribution_->scan();
  publish_cgroup_paths();
  return {{"ok", true},
          {"result", {{"cgroups", last_pass_.cgroups},
                      {"processes", last_pass_.processes},
                      {"pages_scanned", last_pass_.pages_scanned},
                      {"attributed", last_pass_.attributed},
                      {"complete", last_pass_.complete}}}};
}

}  // namespace uzswap
