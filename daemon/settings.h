// The live settings: what `uzswapctl set KEY VALUE` may change while the
// daemon runs. parse_setting() checks a request and says what it changes,
// or why not (the reply's error); the instance applies it
// (Instance::apply_setting, settings.cpp) and keeps the settings in the
// shared state, where the next serving process finds them
// (restore_settings).
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <string>

#include "uzswap/compress/compressor.h"
#include "uzswap/daemon/config.h"
#include "uzswap/lru/list_lru.h"
#include "uzswap/state/layout.h"

namespace uzswap {

// One checked change.
struct SettingChange {
  enum class Kind {
    compressor,                // codec, at its default level
    level,                     // number, for the codec in use
    max_pool_percent,          // number
    accept_threshold_percent,  // number
    writeback,                 // on: the root cgroup's writeback
    cgroup_writeback,          // cgroup, on
    cgroup_max,                // cgroup, max_bytes (0 = no maximum)
    watermark_scale_factor,    // number
    idle_writeback_seconds,    // number
    log_level,                 // log_level
  };
  Kind kind = Kind::compressor;
  Codec codec = Codec::lz4;
  unsigned number = 0;
  bool on = false;
  CgroupId cgroup = kRootCgroup;
  std::uint64_t max_bytes = 0;
  spdlog::level::level_enum log_level = spdlog::level::info;
};

// What a change is checked against: the running daemon as it is now.
struct SettingContext {
  Codec codec = Codec::lz4;  // the compressor in use: which levels are valid
  bool has_backing = false;  // a backing file or a remote tier
  bool has_reclaim = false;  // the reclaim engine runs
  // max-pool-percent: the machine's RAM, and the pool address space this
  // swap area reserved (no larger limit is taken).
  std::uint64_t ram_bytes = 0;
  std::uint64_t pool_region_bytes = 0;
  // A cgroup's id from its path as uzswapctl shows it; nullopt if unknown.
  std::function<std::optional<CgroupId>(const std::string& path)> find_cgroup;
};

// The change `uzswapctl set key value` asks for, or the one-line error that
// refuses it. Changes nothing.
std::expected<SettingChange, std::string> parse_setting(const std::string& key, const std::string& value,
                                                        const SettingContext& context);

// What uzswapctl set in an earlier serving process (kept in the shared
// state's header) wins over the configuration.
void restore_settings(const StateHeader& header, DaemonConfig& config);

}  // namespace uzswap
