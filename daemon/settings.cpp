// `uzswapctl set`: parse_setting checks a request against the running
// daemon, Instance::apply_setting applies it, save_settings keeps it in the
// shared state for the next serving process.
#include "settings.h"

#include <spdlog/fmt/fmt.h>

#include "instance.h"
#include "uzswap/control/format.h"
#include "uzswap/pool/zpool.h"

namespace uzswap {

namespace {

using Kind = SettingChange::Kind;

constexpr const char* kNeedsBacking = "needs a backing file or a remote tier (--backing-file or --backing-nbd)";

}  // namespace

std::expected<SettingChange, std::string> parse_setting(const std::string& key, const std::string& value,
                                                        const SettingContext& context) {
  const auto number = [&](unsigned lo, unsigned hi) -> std::optional<unsigned> {
    if (value.empty() || value.size() > 6 || value.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    const unsigned v = static_cast<unsigned>(std::stoul(value));
    if (v < lo || v > hi) return std::nullopt;
    return v;
  };
  const auto refuse = [](std::string message) { return std::unexpected(std::move(message)); };
  SettingChange change;
  if (key == "compressor") {
    const auto codec = parse_codec(value);
    if (!codec) return refuse("compressor: '" + value + "' is not one of lz4, zstd");
    change.kind = Kind::compressor;
    change.codec = *codec;
  } else if (key == "level") {
    const auto v = number(1, 65537);
    if (!v || !valid_level(context.codec, static_cast<int>(*v)))
      return refuse("level: '" + value + "' is not a valid " + std::string(codec_name(context.codec)) + " level");
    change.kind = Kind::level;
    change.number = *v;
  } else if (key == "max-pool-percent") {
    const auto v = number(1, 90);
    if (!v) return refuse("max-pool-percent: '" + value + "' is not in 1..90");
    if (const std::uint64_t reserved = ZPool::pool_limit_for_region(context.pool_region_bytes);
        pool_limit_bytes(context.ram_bytes, *v) > reserved)
      return refuse(fmt::format(
          "max-pool-percent: {}% ({}) is more than the {} this swap area reserved address space for (at most "
          "{}%); a larger limit needs max-pool-percent in the configuration and a fresh start (systemctl restart)",
          *v, human_bytes(pool_limit_bytes(context.ram_bytes, *v)), human_bytes(reserved),
          max_pool_percent_within(context.ram_bytes, reserved)));
    change.kind = Kind::max_pool_percent;
    change.number = *v;
  } else if (key == "accept-threshold-percent") {
    const auto v = number(1, 100);
    if (!v) return refuse("accept-threshold-percent: '" + value + "' is not in 1..100");
    change.kind = Kind::accept_threshold_percent;
    change.number = *v;
  } else if (key == "writeback") {
    if (value != "on" && value != "off") return refuse("writeback: '" + value + "' is not on or off");
    if (!context.has_backing) return refuse(std::string("writeback: ") + kNeedsBacking);
    change.kind = Kind::writeback;
    change.on = value == "on";
  } else if (key == "cgroup-writeback" || key == "cgroup-max") {
    // VALUE is PATH=SETTING: the userspace memory.zswap.writeback / memory.zswap.max.
    const auto eq = value.rfind('=');
    const auto cgroup = eq == std::string::npos ? std::nullopt : context.find_cgroup(value.substr(0, eq));
    if (!cgroup) return refuse(key + ": '" + value + "' is not PATH=SETTING for a known cgroup");
    change.cgroup = *cgroup;
    const std::string setting = value.substr(eq + 1);
    if (key == "cgroup-writeback") {
      if (setting != "on" && setting != "off") return refuse(key + ": '" + setting + "' is not on or off");
      change.kind = Kind::cgroup_writeback;
      change.on = setting == "on";
    } else {
      const auto bytes = setting == "max" ? std::optional<std::uint64_t>(0) : parse_size(setting);
      if (!bytes) return refuse(key + ": '" + setting + "' is not a size or max");
      change.kind = Kind::cgroup_max;
      change.max_bytes = *bytes;
    }
  } else if (key == "watermark-scale-factor" || key == "idle-writeback-seconds") {
    const bool factor = key == "watermark-scale-factor";
    const auto v = factor ? number(1, 3000) : number(0, 86400);
    if (!v) return refuse(key + ": '" + value + "' is not in " + (factor ? "1..3000" : "0..86400"));
    if (!context.has_reclaim) return refuse(key + ": " + kNeedsBacking);
    change.kind = factor ? Kind::watermark_scale_factor : Kind::idle_writeback_seconds;
    change.number = *v;
  } else if (key == "log-level") {
    const auto level = spdlog::level::from_str(value);
    if (level == spdlog::level::off && value != "off")
      return refuse("log-level: '" + value + "' is not one of trace, debug, info, warn, error");
    change.kind = Kind::log_level;
    change.log_level = level;
  } else {
    return refuse("unknown setting '" + key +
                  "' (settable: compressor, level, max-pool-percent, "
                  "accept-threshold-percent, writeback, cgroup-writeback, cgroup-max, "
                  "watermark-scale-factor, idle-writeback-seconds, log-level)");
  }
  return change;
}

void restore_settings(const StateHeader& header, DaemonConfig& config) {
  if (!header.settings_valid) return;
  if (const auto codec = static_cast<Codec>(header.codec); valid_level(codec, header.level)) {
    config.codec = codec;
    config.level = header.level;
  }
  config.max_pool_percent = header.max_pool_percent;
  config.accept_threshold_percent = header.accept_threshold_percent;
  config.watermark_scale_factor = header.watermark_scale_factor;
  config.idle_writeback_seconds = header.idle_writeback_seconds;
}

std::expected<void, std::string> Instance::set_setting(const std::string& key, const std::string& value) {
  MutexLock settings(settings_lock_);
  SettingContext context;
  context.codec = store_->settings().codec();
  context.has_backing = backing_ != nullptr;
  context.has_reclaim = reclaimer_ != nullptr;
  context.ram_bytes = ram_bytes_;
  context.pool_region_bytes = state_->geometry().pool_region_bytes;
  context.find_cgroup = [this](const std::string& path) { return find_cgroup(path); };
  const auto change = parse_setting(key, value, context);
  if (!change) return std::unexpected(change.error());
  apply_setting(*change);
  save_settings();
  spdlog::info("set {} = {}", key, value);
  return {};
}

void Instance::apply_setting(const SettingChange& change) {
  switch (change.kind) {
    case Kind::compressor:
      store_->settings().set_codec(change.codec, default_level(change.codec));
      break;
    case Kind::level:
      store_->settings().set_codec(store_->settings().codec(), static_cast<int>(change.number));
      break;
    case Kind::max_pool_percent:
      config_.max_pool_percent = change.number;
      store_->settings().set_max_pool_bytes(pool_limit_bytes(ram_bytes_, change.number));
      break;
    case Kind::accept_threshold_percent:
      store_->settings().set_accept_threshold_percent(change.number);
      break;
    case Kind::writeback: {
      CgroupPolicy policy = store_->memcg().policy(kRootCgroup);
      policy.writeback = change.on;
      store_->memcg().set_policy(kRootCgroup, policy);
      break;
    }
    case Kind::cgroup_writeback:
    case Kind::cgroup_max: {
      CgroupPolicy policy = store_->memcg().policy(change.cgroup);
      if (change.kind == Kind::cgroup_writeback) policy.writeback = change.on;
      else policy.max_bytes = change.max_bytes;
      store_->memcg().set_policy(change.cgroup, policy);
      update_root_hold();
      if (shrinker_) shrinker_->wake();
      break;
    }
    case Kind::watermark_scale_factor:
      config_.watermark_scale_factor = change.number;
      reclaimer_->set_watermark_scale_factor(change.number);
      break;
    case Kind::idle_writeback_seconds:
      config_.idle_writeback_seconds = change.number;
      reclaimer_->set_idle_seconds(change.number);
      break;
    case Kind::log_level:
      spdlog::set_level(change.log_level);
      break;
  }
}

void Instance::save_settings() noexcept {
  StateHeader& h = state_->header();
  h.codec = static_cast<std::uint32_t>(store_->settings().codec());
  h.level = store_->settings().level();
  h.max_pool_percent = config_.max_pool_percent;
  h.accept_threshold_percent = store_->settings().accept_threshold_percent();
  h.watermark_scale_factor = config_.watermark_scale_factor;
  h.idle_writeback_seconds = config_.idle_writeback_seconds;
  h.settings_valid = 1;
}

}  // namespace uzswap
