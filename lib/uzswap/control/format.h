// Presenting the daemon's status JSON: the zramctl-like table of
// `uzswapctl status`, the cgroups table, OpenMetrics text for
// `uzswapctl stats --prometheus`, and byte sizes for people.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace uzswap {

// "0B", "4K", "1.5M", "12G": binary multiples, like zramctl.
std::string human_bytes(std::uint64_t bytes);

std::string format_status_table(const nlohmann::json& status);
std::string format_cgroups_table(const nlohmann::json& status);
// One row per node's reclaim thread; empty when reclaim is off.
std::string format_reclaim_table(const nlohmann::json& status);
std::string format_prometheus(const nlohmann::json& status);

}  // namespace uzswap
