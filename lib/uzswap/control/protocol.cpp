#include "uzswap/control/protocol.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "uzswap/control/format.h"
#include "uzswap/control/paths.h"

namespace uzswap::control {

namespace {

using nlohmann::json;

// Never throws: text that is not valid UTF-8 goes out escaped.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string json_safe(const std::string& text) {
  return valid_utf8(text) ? text : escape_name(text);
}

}  // namespace

bool valid_instance_name(std::string_view name) noexcept {
  return !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::string socket_path(std::string_view run_dir, std::string_view name) {
  return std::string(run_dir) + "/" + std::string(name) + "/" + paths::kControlSocket;
}

std::string_view command_name(Command command) noexcept {
  return kCommandNames[static_cast<std::size_t>(command)];
}

std::optional<Command> command_from_name(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kCommandNames.size(); ++i)
    if (kCommandNames[i] == name) return static_cast<Command>(i);
  return std::nullopt;
}

bool needs_admin(Command command) noexcept {
  return command == Command::set || command == Command::writeback || command == Command::attribute ||
         command == Command::restart;
}

bool is_slow(Command command) noexcept {
  return command == Command::writeback || command == Command::attribute;
}

Parsed<Request> parse_request(std::string_view line) noexcept {
  try {
    // Without exceptions: a parse error is an ordinary answer here.
    const json req = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (req.is_discarded()) return std::unexpected("malformed request: not JSON");
    const auto cmd = req.is_object() ? req.find("cmd") : req.end();
    if (!req.is_object() || cmd == req.end() || !cmd->is_string())
      return std::unexpected("malformed request: expected {\"cmd\": ...}");
    const std::string& name = cmd->get_ref<const std::string&>();
    const auto command = command_from_name(name);
    if (!command) return std::unexpected("unknown command '" + name + "'");

    Request r;
    r.command = *command;
    if (r.command == Command::writeback) {
      const auto pages = req.find("pages");
      if (pages == req.end() || !pages->is_number_unsigned() || *pages == 0)
        return std::unexpected("malformed request: writeback needs a positive \"pages\"");
      r.pages = pages->get<std::uint64_t>();
      if (const auto cgroup = req.find("cgroup"); cgroup != req.end()) {
        if (!cgroup->is_string()) return std::unexpected("malformed request: \"cgroup\" must be a path");
        r.cgroup = cgroup->get<std::string>();
      }
    } else if (r.command == Command::set) {
      const auto key = req.find("key");
      const auto value = req.find("value");
      if (key == req.end() || !key->is_string() || value == req.end() || !value->is_string())
        return std::unexpected("malformed request: set needs string \"key\" and \"value\"");
      r.key = key->get<std::string>();
      r.value = value->get<std::string>();
    }
    return r;
  } catch (const std::exception&) {
    // Only allocation can fail past the parse; answer rather than crash.
    return std::unexpected("malformed request: not JSON");
  }
}

std::string request_line(const Request& request) {
  json j = {{"cmd", std::string(command_name(request.command))}};
  if (request.command == Command::set) {
    j["key"] = json_safe(request.key);
    j["value"] = json_safe(request.value);
  } else if (request.command == Command::writeback) {
    j["pages"] = request.pages;
    if (request.cgroup) j["cgroup"] = json_safe(*request.cgroup);
  }
  return dump(j);
}

std::string error_line(std::string_view message) {
  return dump(json{{"ok", false}, {"error", std::string(message)}});
}

std::string permission_denied(Command command) {
  return "permission denied: '" + std::string(command_name(command)) + "' needs root";
}

}  // namespace uzswap::control
