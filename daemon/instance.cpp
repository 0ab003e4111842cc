#include "instance.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "uzswap/control/format.h"
#include "uzswap/device/swap.h"
#include "uzswap/device/swap_header.h"
#include "uzswap/reclaim/swap_type.h"

namespace uzswap {

namespace {

using nlohmann::json;

// A start-up step that failed: the message is what the user reads.
struct StartError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string describe(const std::system_error& e) { return e.what(); }

// Requests as large as the kernel allows (fs.fuse.max_pages_limit, 256 pages
// by default), up to 4 MiB per worker buffer.
std::uint32_t fuse_max_request_bytes() {
  unsigned pages = 256;
  std::ifstream limit("/proc/sys/fs/fuse/max_pages_limit");
  if (unsigned v; limit >> v && v > 0) pages = std::min(v, 1024u);
  return pages * static_cast<std::uint32_t>(kPageSize);
}

// Ring entries per FUSE queue: requests the kernel can hand over while one
// is being served.
constexpr unsigned kFuseRingDepth = 8;

json error_reply(const std::string& message) { return {{"ok", false}, {"error", message}}; }

}  // namespace

Instance::Instance(DaemonConfig config)
    : config_(std::move(config)),
      ram_bytes_(static_cast<std::uint64_t>(sysconf(_SC_PHYS_PAGES)) * kPageSize),
      started_(std::chrono::steady_clock::now()) {}

Instance::~Instance() { teardown(); }

int Instance::run() {
  try {
    start();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    sd_notifyf(0, "STATUS=failed to start: %s", e.what());
    teardown();
    return 1;
  }
  serve();
  teardown();
  spdlog::info("stopped");
  return 0;
}

void Instance::start() {
  if (auto ok = check_backing_file(config_); !ok) throw StartError(ok.error());

  std::filesystem::create_directories(config_.run_dir);
  try {
    lock_ = std::make_unique<InstanceLock>(config_.lock_file());
  } catch (const std::system_error& e) {
    if (e.code().value() == EWOULDBLOCK)
      throw StartError("an uzswapd named '" + config_.name + "' is already running (" +
                       config_.lock_file() + " is locked)");
    throw StartError(describe(e));
  }

  // Reclaim-path safety, before anything that allocates much.
  if (auto ec = lock_all_memory())
    throw StartError("mlockall failed: " + ec.message() + " (run as root, LimitMEMLOCK=infinity)");
  // Lowering the OOM score needs CAP_SYS_RESOURCE; systemd's OOMScoreAdjust
  // does it for us in the unit.
  if (auto ec = set_oom_score_adj(-1000))
    spdlog::warn("cannot set oom_score_adj to -1000 ({}): the OOM killer may pick uzswapd; "
                 "run it with CAP_SYS_RESOURCE or OOMScoreAdjust=-1000",
                 ec.message());

  PageStoreOptions options;
  options.slots = config_.size_bytes / kPageSize;
  options.codec = config_.codec;
  options.level = config_.level;
  options.max_pool_bytes = ram_bytes_ * config_.max_pool_percent / 100;
  options.accept_threshold_percent = config_.accept_threshold_percent;
  options.pool.nodes = online_numa_nodes();
  options.pool.bind_nodes = options.pool.nodes > 1;
  options.pool.lock_memory = true;
  store_ = std::make_unique<PageStore>(options);
  if (!config_.backing_file.empty()) {
    try {
      backing_ = std::make_unique<BackingFile>(config_.backing_file, config_.size_bytes);
    } catch (const std::system_error& e) {
      throw StartError(std::string("--backing-file: ") + e.what());
    }
    store_->attach_backing(backing_.get());
    shrinker_ = std::make_unique<ShrinkWorker>(*store_, ShrinkWorkerOptions{});
    store_->set_pool_full_hook([worker = shrinker_.get()] { worker->wake(); });
    start_reclaim();
  }

  // The swap signature is stored directly: the daemon never does I/O on its
  // own mount.
  {
    std::array<std::byte, kPageSize> header;
    make_swap_header(header, options.slots, random_uuid(), config_.name);
    if (!store_->store(0, header)) throw StartError("cannot store the swap header");
  }

  // The instance directory; a mount left by a daemon that died goes first.
  const std::string dir = config_.instance_dir();
  if (!std::filesystem::exists(dir)) {
    std::filesystem::create_directory(dir);
    created_dir_ = true;
  }
  chmod(dir.c_str(), 0755);
  umount2(config_.swap_file().c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
  const int placeholder = open(config_.swap_file().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (placeholder < 0)
    throw StartError("cannot create " + config_.swap_file() + ": " + std::strerror(errno));
  close(placeholder);

  FuseConfig fuse;
  fuse.size_bytes = config_.size_bytes;
  fuse.max_write = fuse_max_request_bytes();
  if (config_.fuse_io_uring == "on" && !FuseUring::kernel_enabled())
    throw StartError("--fuse-io-uring on: the kernel's FUSE io_uring support is off "
                     "(echo Y > /sys/module/fuse/parameters/enable_uring, Linux 6.14+)");
  fuse.over_io_uring = config_.fuse_io_uring != "off" && FuseUring::kernel_enabled();
  try {
    mount_ = std::make_unique<FuseMount>(config_.swap_file(), fuse);
  } catch (const std::system_error& e) {
    throw StartError(describe(e) + " (is the fuse module loaded and /dev/fuse present?)");
  }
  server_ = std::make_unique<FuseServer>(*store_, fuse);

  const unsigned workers =
      config_.workers != 0 ? config_.workers : std::max(2u, std::thread::hardware_concurrency());
  // PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE: say once if it is refused.
  auto flusher_warned = std::make_shared<std::once_flag>();
  const auto worker_init = [this, flusher_warned] {
    store_->prepare_thread_with_backing();
    if (auto ec = set_io_flusher())
      std::call_once(*flusher_warned, [&] {
        spdlog::warn("PR_SET_IO_FLUSHER refused ({}): worker allocations may enter I/O reclaim",
                     ec.message());
      });
  };
  workers_ = std::make_unique<FuseWorkers>(mount_->fd(), *server_, workers, worker_init);
  if (fuse.over_io_uring) {
    // The kernel sends INIT at mount; once it agreed on io_uring, requests
    // wait until every queue has an entry.
    for (int i = 0; i < 500 && !server_->stats().initialized; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (server_->over_io_uring()) {
      try {
        uring_ = std::make_unique<FuseUring>(mount_->fd(), *server_, workers, kFuseRingDepth, worker_init);
      } catch (const std::system_error& e) {
        throw StartError(std::string("FUSE over io_uring: ") + e.what() + " (try --fuse-io-uring off)");
      }
      spdlog::info("FUSE over io_uring: {} queue(s), {} thread(s), {} entries per queue", uring_->queues(),
                   uring_->threads(), kFuseRingDepth);
    } else if (config_.fuse_io_uring == "on") {
      throw StartError("--fuse-io-uring on: the kernel did not offer io_uring at FUSE INIT");
    }
  }

  file_fd_ = open(config_.swap_file().c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (file_fd_ < 0)
    throw StartError("cannot open " + config_.swap_file() + ": " + std::strerror(errno));
  try {
    loop_ = LoopDevice::attach(file_fd_, "uzswap:" + config_.name, kPageSize);
  } catch (const std::system_error& e) {
    throw StartError(describe(e) + " (is the loop module loaded?)");
  }
  if (!loop_.direct_io())
    throw StartError(loop_.path() +
                     " fell back to buffered I/O (loop/dio is 0): refusing to put the page cache "
                     "in the swap path");
  std::filesystem::remove(config_.device_link());
  std::filesystem::create_symlink(loop_.path(), config_.device_link());

  std::optional<gid_t> readers;
  if (!config_.stats_group.empty()) {
    const group* g = getgrnam(config_.stats_group.c_str());
    if (g == nullptr) throw StartError("--stats-group: no group named '" + config_.stats_group + "'");
    readers = g->gr_gid;
  }
  control_ = std::make_unique<ControlServer>(
      config_.control_socket(), readers,
      [this](std::string_view request, Access access) { return handle_control(request, access); });

  if (config_.swapon) {
    if (auto ec = swap_on(loop_.path(), config_.swap_priority))
      throw StartError("swapon " + loop_.path() + " failed: " + ec.message());
    swap_on_ = true;
    // Attribution reads swap entries from pagemap: find which type is ours.
    swap_type_probe();
  }
  spdlog::info("serving {} ({} of swap, {} workers) on {}{}", config_.swap_file(),
               human_bytes(config_.size_bytes), workers, loop_.path(),
               swap_on_ ? ", swap on" : ", swap not enabled (--no-swapon)");
  sd_notifyf(0, "READY=1\nSTATUS=%s", summary().c_str());
}

void Instance::swap_type_probe() {
  auto type = probe_swap_type([this](std::uint64_t offset, PageView page) {
    std::array<std::byte, kPageSize> stored;
    return offset < store_->slots() && store_->load(offset, stored).has_value() &&
           std::memcmp(stored.data(), page.data(), kPageSize) == 0;
  });
  if (type) {
    swap_type_ = static_cast<int>(*type);
    spdlog::info("the kernel knows this device as swap type {}", *type);
    start_attribution();
  } else {
    spdlog::warn("could not tell this device's swap type: {}", type.error());
  }
}

void Instance::start_reclaim() {
  ReclaimOptions options;
  options.kswapd.watermark_scale_factor = config_.watermark_scale_factor;
  options.kswapd.idle_seconds = config_.idle_writeback_seconds;
  options.pressure.stall_us = std::uint64_t{config_.psi_stall_ms} * 1000;
  options.pressure.window_us = std::uint64_t{config_.psi_window_ms} * 1000;
  options.pressure.cgroup_psi = config_.psi_reclaim_pages > 0;
  if (config_.psi_reclaim_pages == 0) options.pressure.system_psi.clear();
  options.psi_reclaim_pages = config_.psi_reclaim_pages;
  options.events_reclaim_pages = config_.events_reclaim_pages;
  try {
    reclaimer_ = std::make_unique<Reclaimer>(*store_, options, [this] {
      // Pressure: the pages now going out should be attributed soon.
      attribution_kick_.store(true);
      attribution_wakeup_.notify_all();
    });
  } catch (const std::system_error& e) {
    throw StartError(std::string("reclaim threads: ") + e.what());
  }
  const auto psi = reclaimer_->pressure_status();
  if (psi && psi->system_trigger && psi->fell_back)
    spdlog::warn("PSI: without CAP_SYS_RESOURCE the kernel takes only 2 s windows: watching "
                 "some {} ms in {} ms instead of {} ms in {} ms",
                 psi->stall_us / 1000, psi->window_us / 1000, config_.psi_stall_ms, config_.psi_window_ms);
  else if (psi && !psi->system_trigger && config_.psi_reclaim_pages > 0)
    spdlog::warn("PSI: no memory pressure trigger ({}): reclaim runs on watermarks and "
                 "memory.events only", psi->system_error);
  spdlog::info("reclaim: {} node thread(s), watermark scale factor {}, idle writeback {}",
               store_->nodes(), config_.watermark_scale_factor,
               config_.idle_writeback_seconds == 0 ? std::string("off")
                                                   : std::to_string(config_.idle_writeback_seconds) + " s");
}

void Instance::update_root_hold() {
  if (!reclaimer_) return;
  bool hold = false;
  for (const CgroupId id : store_->cgroups())
    if (id != kRootCgroup && !store_->cgroup_policy(id).writeback) hold = true;
  if (hold != reclaimer_->hold_root())
    spdlog::info(hold ? "a cgroup has writeback off: pages not yet attributed are written back on request only"
                      : "no cgroup has writeback off: pressure reclaim takes unattributed pages too");
  reclaimer_->set_hold_root(hold);
}

void Instance::start_attribution() {
  if (config_.attribution_interval == 0) return;
  AttributionOptions options;
  options.cgroup_root = config_.cgroup_root.empty() ? Attribution::default_root() : config_.cgroup_root;
  options.swap_type = static_cast<unsigned>(swap_type_);
  options.max_pages_per_pass = config_.attribution_budget;
  if (!std::filesystem::exists(options.cgroup_root + "/cgroup.procs")) {
    spdlog::warn("no cgroup v2 tree at {}: every page stays the root cgroup's", options.cgroup_root);
    return;
  }
  attribution_ = std::make_unique<Attribution>(*store_, options);
  spdlog::info("attributing pages to the cgroups under {} every {} s", options.cgroup_root,
               config_.attribution_interval);
  attribution_thread_ = Thread("uzswap-attrib", [this] {
    // Passes come every interval, and after pressure events, but never
    // closer than 2 s apart (the CPU budget applies to each).
    constexpr auto kMinGap = std::chrono::seconds(2);
    std::unique_lock guard(attribution_lock_);
    while (!attribution_stop_) {
      last_pass_ = attribution_->scan();
      if (reclaimer_) reclaimer_->track(attribution_->directories());
      update_root_hold();
      const auto next = std::chrono::steady_clock::now() + std::chrono::seconds(config_.attribution_interval);
      attribution_wakeup_.wait_for(guard, kMinGap, [this] { return attribution_stop_; });
      attribution_wakeup_.wait_until(guard, next, [this] {
        return attribution_stop_ || attribution_kick_.load();
      });
      attribution_kick_.store(false);
    }
  });
}

void Instance::stop_attribution() noexcept {
  {
    std::lock_guard guard(attribution_lock_);
    attribution_stop_ = true;
  }
  attribution_wakeup_.notify_all();
  attribution_thread_.join();
}

json Instance::attribute_now() {
  if (!attribution_) return error_reply("attribute: cgroup attribution is off or has no v2 tree");
  std::lock_guard guard(attribution_lock_);
  last_pass_ = attribution_->scan();
  return {{"ok", true},
          {"result", {{"cgroups", last_pass_.cgroups},
                      {"processes", last_pass_.processes},
                      {"pages_scanned", last_pass_.pages_scanned},
                      {"attributed", last_pass_.attributed},
                      {"complete", last_pass_.complete}}}};
}

std::optional<CgroupId> Instance::find_cgroup(const std::string& path) const {
  if (path == "/") return kRootCgroup;
  if (!attribution_) return std::nullopt;
  std::lock_guard guard(attribution_lock_);
  return attribution_->id_of(path);
}

std::string Instance::cgroup_path(CgroupId id) const {
  if (id == kRootCgroup) return "/";
  if (attribution_) {
    std::lock_guard guard(attribution_lock_);
    if (auto path = attribution_->path_of(id)) return *path;
  }
  return "#" + std::to_string(id);
}

void Instance::serve() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  const int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
  std::uint64_t watchdog_usec = 0;
  const bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
  const int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
  itimerspec tick{};
  const std::uint64_t tick_usec =
      watchdog ? std::min<std::uint64_t>(watchdog_usec / 2, 1000000) : 1000000;
  tick.it_interval.tv_sec = static_cast<time_t>(tick_usec / 1000000);
  tick.it_interval.tv_nsec = static_cast<long>(tick_usec % 1000000) * 1000;
  tick.it_value = tick.it_interval;
  timerfd_settime(tfd, 0, &tick, nullptr);

  for (;;) {
    pollfd fds[2] = {{sfd, POLLIN, 0}, {tfd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents & POLLIN) {
      std::uint64_t expirations;
      (void)!read(tfd, &expirations, sizeof(expirations));
      sd_notifyf(0, "%sSTATUS=%s", watchdog ? "WATCHDOG=1\n" : "", summary().c_str());
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info;
      (void)!read(sfd, &info, sizeof(info));
      spdlog::info("signal {}: stopping", strsignal(static_cast<int>(info.ssi_signo)));
      if (try_stop()) break;
    }
  }
  close(sfd);
  close(tfd);
}

bool Instance::try_stop() {
  sd_notify(0, "STOPPING=1\nSTATUS=swapoff: bringing pages back into RAM");
  if (swap_on_) {
    if (auto ec = swap_off(loop_.path())) {
      // Every page stays served; the operator can free memory and try again.
      spdlog::error("swapoff {} failed: {}; still serving, send SIGTERM again to retry",
                    loop_.path(), ec.message());
      sd_notifyf(0, "READY=1\nSTATUS=swapoff failed (%s), still serving", ec.message().c_str());
      return false;
    }
    swap_on_ = false;
  }
  return true;
}

void Instance::teardown() noexcept {
  control_.reset();
  stop_attribution();
  if (swap_on_) {
    // Only on an error path after swapon: try once; if it fails the device
    // must stay served, so keep everything up and let the caller exit later.
    if (!swap_off(loop_.path())) swap_on_ = false;
  }
  if (swap_on_) {
    spdlog::critical("swap is still on {}: not detaching it", loop_.path());
    return;
  }
  loop_.detach();
  if (file_fd_ >= 0) {
    close(file_fd_);
    file_fd_ = -1;
  }
  if (mount_) {
    // The loop device lets go of the file on its last close, which may lag
    // the detach a little.
    std::error_code ec;
    for (int attempt = 0; attempt < 50; ++attempt) {
      ec = mount_->unmount();
      if (ec != std::errc::device_or_resource_busy) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (ec) spdlog::warn("unmount {}: {}; detaching lazily", config_.swap_file(), ec.message());
  }
  mount_.reset();  // lazy detach if still mounted; ends the connection when unused
  uring_.reset();
  workers_.reset();
  server_.reset();
  reclaimer_.reset();
  shrinker_.reset();
  if (lock_) {
    // Only the instance holding the lock owns these paths: a second start
    // that was refused must not touch the running instance's files.
    std::error_code ignored;
    std::filesystem::remove(config_.device_link(), ignored);
    std::filesystem::remove(config_.swap_file(), ignored);
    if (created_dir_) std::filesystem::remove(config_.instance_dir(), ignored);
  }
  store_.reset();
  backing_.reset();
  lock_.reset();
}

std::string Instance::summary() const {
  if (!store_) return "starting";
  const PageStoreStats s = store_->stats();
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%llu pages stored, %.1f MiB data in %.1f MiB pool%s",
                static_cast<unsigned long long>(s.stored_pages), double(s.orig_bytes) / (1 << 20),
                double(s.pool_bytes) / (1 << 20), store_->pool_full() ? ", pool full" : "");
  return buf;
}

json Instance::status() const {
  const PageStoreStats s = store_->stats();
  const FuseStats f = server_->stats();
  json j;
  j["name"] = config_.name;
  j["version"] = "0.1.0";
  j["pid"] = getpid();
  j["uptime_seconds"] = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::steady_clock::now() - started_)
                            .count();
  j["device"] = {{"file", config_.swap_file()},
                 {"loop", loop_.path()},
                 {"size_bytes", config_.size_bytes},
                 {"slots", store_->slots()},
                 {"swap_on", swap_on_},
                 {"swap_type", swap_type_},
                 {"priority", config_.swap_priority},
                 {"direct_io", true},
                 {"workers", workers_ ? workers_->count() : 0},
                 {"fuse_io_uring", uring_ != nullptr},
                 {"ring_threads", uring_ ? uring_->threads() : 0}};
  j["compressor"] = std::string(codec_name(store_->codec()));
  j["level"] = store_->level();
  j["max_pool_percent"] = config_.max_pool_percent;
  j["accept_threshold_percent"] = store_->accept_threshold_percent();
  j["max_pool_bytes"] = store_->max_pool_bytes();
  j["pool_full"] = store_->pool_full();
  j["stored_pages"] = s.stored_pages;
  j["same_filled_pages"] = s.same_filled_pages;
  j["incompressible_pages"] = s.incompressible_pages;
  j["orig_bytes"] = s.orig_bytes;
  j["compressed_bytes"] = s.compressed_bytes;
  j["pool_bytes"] = s.pool_bytes;
  j["table_bytes"] = s.table_bytes;
  j["written_back_pages"] = s.written_back_pages;
  j["backing_file"] = config_.backing_file;
  const CgroupPolicy root_policy = store_->cgroup_policy(kRootCgroup);
  json wb = {{"backing_file", config_.backing_file},
             {"enabled", backing_ != nullptr && root_policy.writeback},
             {"writebacks", s.writebacks},
             {"failures", s.writeback_failures},
             {"raced", s.writeback_raced},
             {"direct_writes", s.direct_writes},
             {"backing_reads", s.backing_reads},
             {"backing_read_errors", s.backing_read_errors}};
  if (shrinker_) {
    const ShrinkWorkerStats w = shrinker_->stats();
    wb["worker"] = {{"wakeups", w.wakeups}, {"runs", w.runs}, {"written", w.written},
                    {"backoffs", w.backoffs}, {"over_max_runs", w.over_max_runs}};
  }
  j["writeback"] = wb;
  json nodes = json::array();
  for (unsigned node = 0; node < store_->nodes(); ++node) {
    const PageStore::NodeStats n = store_->node_stats(node);
    nodes.push_back({{"node", node}, {"lru_pages", n.lru_pages}, {"writebacks", n.writebacks}});
  }
  j["nodes"] = nodes;
  j["reclaim"] = reclaim_status();
  j["stores"] = s.stores;
  j["loads"] = s.loads;
  j["empty_loads"] = s.empty_loads;
  j["invalidations"] = s.invalidations;
  j["discarded_pages"] = f.discarded_pages;
  j["discard_requests"] = f.discard_requests;
  j["read_pages"] = f.read_pages;
  j["written_pages"] = f.written_pages;
  j["write_errors"] = f.write_errors;
  j["bad_requests"] = f.bad_requests;
  j["load_errors"] = s.load_errors;
  j["pool_limit_hits"] = s.pool_limit_hits;
  j["rejects"] = {{"pool_full", s.reject_pool_full}, {"alloc_failed", s.reject_alloc_failed}};
  j["compactions"] = s.compactions;
  // Attribution to cgroups arrives with the reclaim engine: until then every
  // page is the root cgroup's.
  json cgroups = json::array();
  for (const CgroupId id : store_->cgroups()) {
    const CgroupStats c = store_->cgroup_stats(id);
    const CgroupPolicy p = store_->cgroup_policy(id);
    cgroups.push_back({{"path", escape_name(cgroup_path(id))},
                       {"stored_pages", c.stored_pages},
                       {"compressed_bytes", c.compressed_bytes},
                       {"written_back_pages", c.written_back_pages},
                       {"writeback", backing_ != nullptr && p.writeback},
                       {"max_bytes", p.max_bytes}});
  }
  j["cgroups"] = cgroups;
  return j;
}

json Instance::reclaim_status() const {
  if (!reclaimer_) return {{"enabled", false}};
  json nodes = json::array();
  for (const KswapdStats& k : reclaimer_->node_stats()) {
    json wakeups = json::object();
    for (unsigned c = 0; c < kWakeCauses; ++c)
      wakeups[wake_cause_name(static_cast<WakeCause>(c))] = k.wakeups[c];
    nodes.push_back({{"node", k.node},
                     {"pool_bytes", k.pool_bytes},
                     {"share_bytes", k.watermarks.share},
                     {"watermarks", {{"min", k.watermarks.min}, {"low", k.watermarks.low},
                                     {"high", k.watermarks.high}}},
                     {"wakeups", wakeups},
                     {"balance_runs", k.balance_runs},
                     {"scanned", k.scanned},
                     {"written", k.written},
                     {"idle_written", k.idle_written},
                     {"min_wmark_hits", k.min_wmark_hits},
                     {"low_wmark_hit_quickly", k.low_wmark_hit_quickly},
                     {"high_wmark_hit_quickly", k.high_wmark_hit_quickly},
                     {"compactions", k.compactions},
                     {"giveups", k.giveups},
                     {"given_up", k.given_up}});
  }
  json j = {{"enabled", true},
            {"watermark_scale_factor", reclaimer_->watermark_scale_factor()},
            {"idle_writeback_seconds", reclaimer_->idle_seconds()},
            {"hold_unattributed", reclaimer_->hold_root()},
            {"nodes", nodes}};
  if (const auto p = reclaimer_->pressure_status())
    j["pressure"] = {{"system_trigger", p->system_trigger},
                     {"system_error", p->system_error},
                     {"fell_back_to_2s", p->fell_back},
                     {"stall_us", p->stall_us},
                     {"window_us", p->window_us},
                     {"cgroup_triggers", p->cgroup_triggers},
                     {"memory_events_files", p->events_files},
                     {"psi_events", p->psi_events},
                     {"cgroup_psi_events", p->cgroup_psi_events},
                     {"memory_events", p->memory_events}};
  return j;
}

json Instance::set_setting(const std::string& key, const std::string& value) {
  const auto number = [&](unsigned lo, unsigned hi) -> std::optional<unsigned> {
    if (value.empty() || value.size() > 6 || value.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    const unsigned v = static_cast<unsigned>(std::stoul(value));
    if (v < lo || v > hi) return std::nullopt;
    return v;
  };
  if (key == "compressor") {
    const auto codec = parse_codec(value);
    if (!codec) return error_reply("compressor: '" + value + "' is not one of lz4, zstd");
    store_->set_codec(*codec, default_level(*codec));
  } else if (key == "level") {
    const auto v = number(1, 65537);
    if (!v || !valid_level(store_->codec(), static_cast<int>(*v)))
      return error_reply("level: '" + value + "' is not a valid " +
                         std::string(codec_name(store_->codec())) + " level");
    store_->set_codec(store_->codec(), static_cast<int>(*v));
  } else if (key == "max-pool-percent") {
    const auto v = number(1, 90);
    if (!v) return error_reply("max-pool-percent: '" + value + "' is not in 1..90");
    config_.max_pool_percent = *v;
    store_->set_max_pool_bytes(ram_bytes_ * *v / 100);
  } else if (key == "accept-threshold-percent") {
    const auto v = number(1, 100);
    if (!v) return error_reply("accept-threshold-percent: '" + value + "' is not in 1..100");
    store_->set_accept_threshold_percent(*v);
  } else if (key == "writeback") {
    if (value != "on" && value != "off") return error_reply("writeback: '" + value + "' is not on or off");
    if (!backing_) return error_reply("writeback: needs a backing file (--backing-file)");
    CgroupPolicy policy = store_->cgroup_policy(kRootCgroup);
    policy.writeback = value == "on";
    store_->set_cgroup_policy(kRootCgroup, policy);
  } else if (key == "cgroup-writeback" || key == "cgroup-max") {
    // VALUE is PATH=SETTING: the userspace memory.zswap.writeback / memory.zswap.max.
    const auto eq = value.rfind('=');
    const auto cgroup = eq == std::string::npos ? std::nullopt : find_cgroup(value.substr(0, eq));
    if (!cgroup) return error_reply(key + ": '" + value + "' is not PATH=SETTING for a known cgroup");
    CgroupPolicy policy = store_->cgroup_policy(*cgroup);
    const std::string setting = value.substr(eq + 1);
    if (key == "cgroup-writeback") {
      if (setting != "on" && setting != "off") return error_reply(key + ": '" + setting + "' is not on or off");
      policy.writeback = setting == "on";
    } else {
      const auto bytes = setting == "max" ? std::optional<std::uint64_t>(0) : parse_size(setting);
      if (!bytes) return error_reply(key + ": '" + setting + "' is not a size or max");
      policy.max_bytes = *bytes;
    }
    store_->set_cgroup_policy(*cgroup, policy);
    update_root_hold();
    if (shrinker_) shrinker_->wake();
  } else if (key == "watermark-scale-factor" || key == "idle-writeback-seconds") {
    const bool factor = key == "watermark-scale-factor";
    const auto v = factor ? number(1, 3000) : number(0, 86400);
    if (!v) return error_reply(key + ": '" + value + "' is not in " + (factor ? "1..3000" : "0..86400"));
    if (!reclaimer_) return error_reply(key + ": needs a backing file (--backing-file)");
    if (factor) {
      config_.watermark_scale_factor = *v;
      reclaimer_->set_watermark_scale_factor(*v);
    } else {
      config_.idle_writeback_seconds = *v;
      reclaimer_->set_idle_seconds(*v);
    }
  } else if (key == "log-level") {
    const auto level = spdlog::level::from_str(value);
    if (level == spdlog::level::off && value != "off")
      return error_reply("log-level: '" + value + "' is not one of trace, debug, info, warn, error");
    spdlog::set_level(level);
  } else {
    return error_reply("unknown setting '" + key +
                       "' (settable: compressor, level, max-pool-percent, "
                       "accept-threshold-percent, writeback, cgroup-writeback, cgroup-max, "
                       "watermark-scale-factor, idle-writeback-seconds, log-level)");
  }
  spdlog::info("set {} = {}", key, value);
  return {{"ok", true}, {"result", {{key, value}}}};
}

json Instance::writeback(const json& request) {
  if (!reclaimer_) return error_reply("writeback: needs a backing file (--backing-file)");
  if (!request.contains("pages") || !request["pages"].is_number_unsigned() || request["pages"] == 0)
    return error_reply("malformed request: writeback needs a positive \"pages\"");
  std::optional<CgroupId> cgroup;
  if (request.contains("cgroup")) {
    if (!request["cgroup"].is_string()) return error_reply("malformed request: \"cgroup\" must be a path");
    cgroup = find_cgroup(request["cgroup"]);
    if (!cgroup) return error_reply("writeback: unknown cgroup " + request["cgroup"].get<std::string>());
  }
  if (!store_->cgroup_policy(kRootCgroup).writeback)
    return error_reply("writeback: turned off (uzswapctl set writeback on)");
  const WritebackResult r = reclaimer_->writeback(request["pages"].get<std::uint64_t>(), cgroup);
  spdlog::info("writeback on request: {} pages written, {} failed, {} raced", r.written, r.failed, r.raced);
  return {{"ok", true},
          {"result", {{"written", r.written}, {"failed", r.failed}, {"raced", r.raced}}}};
}

std::string Instance::handle_control(std::string_view request, Access access) {
  json req;
  try {
    req = json::parse(request);
  } catch (const json::exception&) {
    return error_reply("malformed request: not JSON").dump();
  }
  if (!req.is_object() || !req.contains("cmd") || !req["cmd"].is_string())
    return error_reply("malformed request: expected {\"cmd\": ...}").dump();
  const std::string cmd = req["cmd"];
  if (cmd == "status" || cmd == "cgroups" || cmd == "stats")
    return json{{"ok", true}, {"result", status()}}.dump();
  if (cmd == "set" || cmd == "writeback" || cmd == "attribute") {
    if (access != Access::admin) return error_reply("permission denied: '" + cmd + "' needs root").dump();
    if (cmd == "writeback") return writeback(req).dump();
    if (cmd == "attribute") return attribute_now().dump();
    if (!req.contains("key") || !req["key"].is_string() || !req.contains("value") ||
        !req["value"].is_string())
      return error_reply("malformed request: set needs string \"key\" and \"value\"").dump();
    return set_setting(req["key"], req["value"]).dump();
  }
  return error_reply("unknown command '" + cmd + "'").dump();
}

}  // namespace uzswap
