#include "uzswap/daemon/config.h"

#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>
#include <regex>

#include "uzswap/common/page.h"
#include "uzswap/control/protocol.h"
#include "uzswap/nbd/nbd_listen.h"
#include "uzswap/store/slot_table.h"
#include "uzswap/version.h"

namespace uzswap {

namespace {

constexpr std::uint64_t kMinSize = 1u << 20;

}  // namespace

std::optional<std::uint64_t> parse_size(const std::string& text) {
  static const std::regex pattern("([0-9]{1,15})([KkMmGgTt](i?B)?)?");
  std::smatch m;
  if (!std::regex_match(text, m, pattern)) return std::nullopt;
  std::uint64_t bytes = std::stoull(m[1].str());
  if (m[2].matched) {
    const std::size_t shift = 10 * (1 + std::string("KMGT").find(static_cast<char>(std::toupper(m[2].str()[0]))));
    if (bytes > (UINT64_MAX >> shift)) return std::nullopt;
    bytes <<= shift;
  }
  return bytes;
}

unsigned default_workers(unsigned cpus, bool backing) noexcept { return std::max(backing ? 8u : 2u, cpus); }

std::uint64_t pool_limit_bytes(std::uint64_t ram_bytes, unsigned max_pool_percent) noexcept {
  return ram_bytes / 100 * max_pool_percent + ram_bytes % 100 * max_pool_percent / 100;
}

unsigned max_pool_percent_within(std::uint64_t ram_bytes, std::uint64_t limit_bytes) noexcept {
  unsigned percent = 90;
  while (percent > 0 && pool_limit_bytes(ram_bytes, percent) > limit_bytes) --percent;
  return percent;
}

// One rule for the daemon and uzswapctl: the control library's.
bool valid_instance_name(const std::string& name) { return control::valid_instance_name(name); }

Parsed<ParsedArgs> parse_daemon_args(const std::vector<std::string>& args) {
  ParsedArgs parsed;
  DaemonConfig& c = parsed.config;
  CLI::App app{"uzswapd: userspace compressed swap daemon", "uzswapd"};
  app.set_version_flag("--version", std::string("uzswapd ") + kVersion);
  app.set_config("--config", kDefaultConfigFile, "Configuration file (INI or TOML)");
  app.allow_config_extras(CLI::config_extras_mode::error);  // a typo is an error, not ignored

  std::string compressor = "lz4";
  std::string size;
  std::string encryption = "off";
  app.add_option("--name", c.name, "Instance name")
      ->check([](const std::string& v) {
        return valid_instance_name(v) ? std::string{} : "must be 1-32 of [A-Za-z0-9_-]";
      });
  app.add_option("--size", size, "Device size (bytes, or with K/M/G/T suffix); default half of RAM");
  app.add_option("--backing-file", c.backing_file, "Swap file on disk for writeback");
  app.add_option("--backing-nbd", c.backing_nbd,
                 "NBD export for writeback instead of a file (nbd://HOST:PORT/EXPORT or "
                 "nbd+unix:///EXPORT?socket=PATH)");
  app.add_option("--backing-encryption", encryption,
                 "Encrypt and authenticate the pages in the backing file or remote tier (XChaCha20-Poly1305, "
                 "a key only in locked RAM): on or off")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--frontend", c.frontend, "How the device is served: fuse (a FUSE file on a loop device) or nbd "
                 "(an NBD server)")
      ->check(CLI::IsMember({"fuse", "nbd"}));
  app.add_option("--nbd-listen", c.nbd_listen,
                 "Where the NBD front end listens: unix:PATH or tcp:ADDR:PORT (default unix:RUN_DIR/NAME/nbd)");
  app.add_flag("--nbd-allow-remote", c.nbd_allow_remote,
               "Let --nbd-listen use a TCP address off the loopback (NBD has no authentication)");
  app.add_option("--nbd-connections", c.nbd_connections, "NBD connections served at once (more are refused)")
      ->check(CLI::Range(1, 64));
  app.add_option("--compressor", compressor, "Compressor for new pages")
      ->check(CLI::IsMember({"lz4", "zstd"}));
  app.add_option("--level", c.level, "Compression level (zstd 1-19, lz4 acceleration); 0 = default")
      ->check(CLI::Range(0, 65537));
  app.add_option("--max-pool-percent", c.max_pool_percent, "Pool limit, percent of RAM")
      ->check(CLI::Range(1, 90));
  app.add_option("--accept-threshold-percent", c.accept_threshold_percent,
                 "Accept new pages again below this percent of the pool limit")
      ->check(CLI::Range(1, 100));
  app.add_option("--swap-priority", c.swap_priority, "swapon priority (-1 = kernel default)")
      ->check(CLI::Range(-1, 32767));
  app.add_option("--fuse-io-uring", c.fuse_io_uring,
                 "FUSE over io_uring: off (the default; /dev/fuse, the transport a new serving process can "
                 "take over), on (faster, but a death of the serving process is not survived), auto (= off)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_flag("--no-swapon{false}", c.swapon, "Serve the device but do not swapon it");
  app.add_option("--workers", c.workers, "FUSE worker threads (0 = one per CPU, at least 2; at least 8 with a backing file or NBD tier)")
      ->check(CLI::Range(0, 256));
  app.add_option("--stats-group", c.stats_group, "Group allowed to read stats");
  app.add_option("--log-level", c.log_level, "Log level")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--run-dir", c.run_dir, "Runtime directory");
  app.add_option("--cgroup-root", c.cgroup_root, "The cgroup v2 tree (default: found at start)");
  app.add_option("--attribution-interval", c.attribution_interval,
                 "Seconds between cgroup attribution passes (0 = off)")
      ->check(CLI::Range(0, 86400));
  app.add_option("--attribution-budget", c.attribution_budget,
                 "Pagemap entries one attribution pass may read (its CPU budget)")
      ->check(CLI::Range(std::uint64_t{1024}, std::uint64_t{1} << 40));
  app.add_option("--watermark-scale-factor", c.watermark_scale_factor,
                 "Distance between a node's min, low and high reclaim marks, per 10,000 of its "
                 "share of the pool limit")
      ->check(CLI::Range(1, 3000));
  app.add_option("--idle-writeback-seconds", c.idle_writeback_seconds,
                 "Write back pages untouched for this long (0 = off)")
      ->check(CLI::Range(0, 86400));
  app.add_option("--psi-stall-ms", c.psi_stall_ms, "PSI trigger: memory stall that counts as pressure")
      ->check(CLI::Range(1, 10000));
  app.add_option("--psi-window-ms", c.psi_window_ms, "PSI trigger: window the stall is measured in")
      ->check(CLI::Range(500, 10000));
  app.add_option("--psi-reclaim-pages", c.psi_reclaim_pages,
                 "Pages written back per memory pressure event (0 = ignore PSI)")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 30));
  app.add_option("--events-reclaim-pages", c.events_reclaim_pages,
                 "Pages written back per high/max event in a cgroup's memory.events")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 30));

  std::vector<std::string> reversed(args.rbegin(), args.rend() - 1);
  try {
    app.parse(std::move(reversed));
  } catch (const CLI::CallForHelp&) {
    parsed.exit_now = true;
    parsed.output = app.help();
    return parsed;
  } catch (const CLI::CallForVersion&) {
    parsed.exit_now = true;
    parsed.output = std::string("uzswapd ") + kVersion + "\n";
    return parsed;
  } catch (const CLI::ParseError& e) {
    return std::unexpected(std::string(e.what()));
  }

  c.codec = *parse_codec(compressor);
  if (c.level == 0) c.level = default_level(c.codec);
  if (!valid_level(c.codec, c.level))
    return std::unexpected("--level: " + std::to_string(c.level) + " is not a valid " +
                           compressor + " level");
  if (!size.empty()) {
    const auto bytes = parse_size(size);
    if (!bytes) return std::unexpected("--size: '" + size + "' is not a size (examples: 4G, 512M, 1GiB)");
    c.size_bytes = *bytes;
  } else {
    c.size_bytes = static_cast<std::uint64_t>(sysconf(_SC_PHYS_PAGES)) / 2 * kPageSize;
  }
  if (c.size_bytes % kPageSize != 0 || c.size_bytes < kMinSize)
    return std::unexpected("--size: must be a multiple of 4096 bytes and at least 1M");
  if (c.psi_stall_ms >= c.psi_window_ms)
    return std::unexpected("--psi-stall-ms: must be less than --psi-window-ms (" +
                           std::to_string(c.psi_window_ms) + ")");
  if (c.size_bytes / kPageSize > kMaxSlots)
    return std::unexpected("--size: at most 8T");
  if (!c.backing_file.empty() && c.backing_file.front() != '/')
    return std::unexpected("--backing-file: must be an absolute path");
  if (!c.backing_file.empty() && !c.backing_nbd.empty())
    return std::unexpected("--backing-nbd: give either --backing-file or --backing-nbd, not both");
  if (!c.backing_nbd.empty() && !c.backing_nbd.starts_with("nbd://") && !c.backing_nbd.starts_with("nbd+unix://"))
    return std::unexpected("--backing-nbd: '" + c.backing_nbd + "' is not an nbd:// or nbd+unix:// URI");
  c.backing_encryption = encryption == "on";
  if (c.backing_encryption && !c.has_backing())
    return std::unexpected("--backing-encryption: needs --backing-file or --backing-nbd");
  if (!c.nbd_listen.empty() && c.frontend != "nbd")
    return std::unexpected("--nbd-listen: needs --frontend nbd");
  if (c.frontend == "nbd") {
    const auto address = parse_listen_address(c.nbd_listen_address());
    if (!address) return std::unexpected("--nbd-listen: " + listen_address_message(c.nbd_listen_address(), address.error()));
    if (!c.nbd_allow_remote && !is_loopback(*address))
      return std::unexpected("--nbd-listen: " + address->to_string() +
                             " is not a loopback address; NBD has no authentication (--nbd-allow-remote to allow it)");
  }
  return parsed;
}

std::optional<std::string> refused_backing_filesystem(unsigned long magic) {
  // Not in RAM, not through FUSE, and writes in the swap-out path must not
  // need the filesystem to allocate:
  // a copy-on-write filesystem allocates on every overwrite, a network one
  // needs the network (and memory) to write at all.
  struct Refused {
    unsigned long magic;
    const char* what;
  };
  static constexpr Refused kRefused[] = {
      {0x01021994ul, "tmpfs (it lives in RAM)"},
      {0x858458f6ul, "ramfs (it lives in RAM)"},
      {0x65735546ul, "a FUSE filesystem (writeback there could deadlock reclaim)"},
      {0x9123683eul, "btrfs (copy-on-write: every overwrite allocates)"},
      {0xca451a4eul, "bcachefs (copy-on-write: every overwrite allocates)"},
      {0x2fc12fc1ul, "zfs (copy-on-write: every overwrite allocates)"},
      {0x794c7630ul, "overlayfs (its writes land in an upper layer that may live in RAM)"},
      {0x6969ul, "NFS (a network filesystem: writeback would need the network and memory)"},
      {0xff534d42ul, "CIFS (a network filesystem: writeback would need the network and memory)"},
      {0xfe534d42ul, "SMB2 (a network filesystem: writeback would need the network and memory)"},
      {0x00c36400ul, "ceph (a network filesystem: writeback would need the network and memory)"},
      {0x01021997ul, "9p (a network filesystem: writeback would need the network and memory)"},
  };
  for (const Refused& r : kRefused)
    if (magic == r.magic) return std::string(r.what);
  return std::nullopt;
}

Parsed<> check_backing_file(const DaemonConfig& config) {
  if (config.backing_file.empty()) return {};
  const std::filesystem::path file(config.backing_file);
  const std::filesystem::path dir = file.parent_path();
  struct statfs fs {};
  if (statfs(dir.c_str(), &fs) != 0)
    return std::unexpected("--backing-file: cannot use directory " + dir.string() + ": " +
                           std::strerror(errno));
  if (const auto why = refused_backing_filesystem(static_cast<unsigned long>(fs.f_type)))
    return std::unexpected("--backing-file: " + config.backing_file + " is on " + *why + "; put it on ext4 or xfs");
  const std::string own = config.run_dir;
  const std::string abs = std::filesystem::weakly_canonical(file).string();
  if (abs.rfind(own + "/", 0) == 0)
    return std::unexpected("--backing-file: " + config.backing_file +
                           " is inside uzswap's own run directory");
  return {};
}

}  // namespace uzswap
