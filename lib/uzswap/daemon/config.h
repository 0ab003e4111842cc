// uzswapd's configuration: /etc/uzswap/uzswapd.conf (INI or TOML, read by
// CLI11), every key also a flag of the same name; flags win.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <vector>

#include "uzswap/common/result.h"
#include "uzswap/compress/compressor.h"
#include "uzswap/control/paths.h"

namespace uzswap {

inline constexpr const char* kDefaultConfigFile = paths::kConfigFile;
inline constexpr const char* kDefaultRunDir = paths::kRunDir;

struct DaemonConfig {
  std::string name = paths::kDefaultName;
  std::uint64_t size_bytes = 0;        // 0 = half of physical RAM
  std::string backing_file;            // empty = none
  bool backing_encryption = false;     // encrypt what goes to the backing file or remote tier
  Codec codec = Codec::lz4;
  int level = 0;                       // 0 = the codec's default
  unsigned max_pool_percent = 20;
  unsigned accept_threshold_percent = 90;
  int swap_priority = 100;             // above disk swap's negative default
  std::string frontend = "fuse";       // fuse (a FUSE file on a loop device) or nbd (an NBD server)
  std::string nbd_listen;              // unix:PATH or tcp:ADDR:PORT; empty = unix:<instance_dir>/nbd
  bool nbd_allow_remote = false;       // listen on a TCP address off the loopback
  unsigned nbd_connections = 8;        // NBD connections served at once
  std::string backing_nbd;             // NBD URI of the remote tier; empty = none
  std::string fuse_io_uring = "off";   // off (/dev/fuse, restartable), on (io_uring), auto (= off)
  bool swapon = true;
  unsigned workers = 0;                // 0 = default_workers()
  std::string stats_group;             // group that may read stats; empty = root only
  std::string log_level = "info";
  std::string run_dir = kDefaultRunDir;
  std::string cgroup_root;                // empty = this machine's v2 tree
  unsigned attribution_interval = 10;     // seconds between passes; 0 = off
  std::uint64_t attribution_budget = 1u << 20;  // pagemap entries per pass
  unsigned watermark_scale_factor = 500;  // per 10,000 of a node's share of the pool limit
  unsigned idle_writeback_seconds = 0;    // 0 = off
  unsigned psi_stall_ms = 100;            // PSI trigger: "some <stall> <window>"
  unsigned psi_window_ms = 1000;
  std::uint64_t psi_reclaim_pages = 2048;     // written back per machine PSI event
  std::uint64_t events_reclaim_pages = 128;   // per memory.events high/max increment

  // Paths under run_dir for this instance (control/paths.h).
  std::string instance_dir() const { return run_dir + "/" + name; }
  std::string swap_file() const { return instance_dir() + "/" + paths::kSwapFile; }
  std::string control_socket() const { return instance_dir() + "/" + paths::kControlSocket; }
  std::string device_link() const { return instance_dir() + "/" + paths::kDeviceLink; }
  std::string lock_file() const { return run_dir + "/" + name + paths::kLockSuffix; }
  std::string nbd_socket() const { return instance_dir() + "/" + paths::kNbdSocket; }
  // Where the NBD front end listens, the default filled in.
  std::string nbd_listen_address() const { return nbd_listen.empty() ? "unix:" + nbd_socket() : nbd_listen; }
  bool nbd_frontend() const { return frontend == "nbd"; }
  bool has_backing() const { return !backing_file.empty() || !backing_nbd.empty(); }
};

// What parsing decided: run with a configuration, or exit now (after --help
// or --version, with the text to print).
struct ParsedArgs {
  DaemonConfig config;
  bool exit_now = false;
  std::string output;
};

// Parses the command line (argv[0] first) and the config file it names (or
// the default one, if present). Returns a one-line error naming the key on a
// bad value. Checks only what needs no system access.
Parsed<ParsedArgs> parse_daemon_args(const std::vector<std::string>& args);

// Checks what needs the system: the backing file's directory and filesystem.
Parsed<> check_backing_file(const DaemonConfig& config);
// What is wrong with a filesystem (statfs f_type) for a backing file:
// RAM, FUSE, copy-on-write, network and overlay filesystems; nullopt if
// it is fine.
std::optional<std::string> refused_backing_filesystem(unsigned long magic);

// The pool limit max-pool-percent gives on a machine with `ram_bytes` of RAM.
std::uint64_t pool_limit_bytes(std::uint64_t ram_bytes, unsigned max_pool_percent) noexcept;
// The largest max-pool-percent (1..90) whose limit is at most `limit_bytes`,
// 0 if even 1 percent is more.
unsigned max_pool_percent_within(std::uint64_t ram_bytes, std::uint64_t limit_bytes) noexcept;

// The FUSE workers `--workers 0` gives on a machine of `cpus` CPUs: one per
// CPU, at least 2; with a backing tier at least 8, since a worker then waits
// for the disk inside a request (a load from the file, a store that goes
// to it) and the pool's answers must not queue behind those waits
// (docs/benchmarks.md, "Workers that wait for the disk").
unsigned default_workers(unsigned cpus, bool backing) noexcept;

// "4096", "512M", "4G", "1GiB": bytes, with binary multiples.
std::optional<std::uint64_t> parse_size(const std::string& text);

// A valid instance name: 1-32 of [A-Za-z0-9_-].
bool valid_instance_name(const std::string& name);

}  // namespace uzswap
