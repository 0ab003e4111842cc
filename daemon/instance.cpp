#include "instance.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "uzswap/backing/backing_cipher.h"
#include "uzswap/control/format.h"
#include "uzswap/device/swap.h"
#include "uzswap/device/swap_header.h"
#include "uzswap/reclaim/swap_type.h"
#include "handover.h"
#include "reclaim_safety.h"
#include "uzswap/control/protocol.h"
#include "uzswap/version.h"

namespace uzswap {

namespace {

using nlohmann::json;



// Ring entries per FUSE queue: requests the kernel can hand over while one
// is being served.
constexpr unsigned kFuseRingDepth = 8;

// One FUSE request served for this long means a stuck worker, not a slow one.
constexpr std::chrono::seconds kStuckRequest{60};

json error_reply(const std::string& message) { return {{"ok", false}, {"error", message}}; }

}  // namespace

Instance::Instance(DaemonConfig config, ServeFds fds)
    : config_(std::move(config)),
      fds_(std::move(fds)),
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

  std::optional<gid_t> readers;
  if (!config_.stats_group.empty()) {
    const group* g = getgrnam(config_.stats_group.c_str());
    if (g == nullptr) throw StartError("--stats-group: no group named '" + config_.stats_group + "'");
    readers = g->gr_gid;
  }

  // Reclaim-path safety, before anything that allocates much.
  enter_reclaim_path();

  // The state the supervisor holds: fresh, or left by a process that died.
  auto adopted = SharedState::attach({fds_.meta_shm, {}});
  if (!adopted) throw StartError(adopted.error());
  state_ = std::make_unique<SharedState>(std::move(*adopted));
  StateHeader& header = state_->header();
  const bool fresh = state_->fresh();
  const std::uint64_t slots = header.slots;
  if (auto mismatch = backing_cipher_mismatch(*state_, config_.backing_encryption)) {
    if (fresh) throw StartError(*mismatch);
    spdlog::warn("{}; it keeps that until it is stopped and started anew", *mismatch);
  }
  if (slots * kPageSize != config_.size_bytes)
    spdlog::warn("serving the swap area's own size {} (the configuration says {})", human_bytes(slots * kPageSize),
                 human_bytes(config_.size_bytes));
  if (header.settings_valid) {
    // What uzswapctl set in an earlier process wins over the configuration.
    if (const auto codec = static_cast<Codec>(header.codec); valid_level(codec, header.level)) {
      config_.codec = codec;
      config_.level = header.level;
    }
    config_.max_pool_percent = header.max_pool_percent;
    config_.accept_threshold_percent = header.accept_threshold_percent;
    config_.watermark_scale_factor = header.watermark_scale_factor;
    config_.idle_writeback_seconds = header.idle_writeback_seconds;
  }

  PageStoreOptions options;
  options.slots = slots;
  options.codec = config_.codec;
  options.level = config_.level;
  options.max_pool_bytes = pool_limit_bytes(ram_bytes_, config_.max_pool_percent);
  // The pool cannot outgrow the address space the state reserved for it.
  if (const std::uint64_t reserved = ZPool::pool_limit_for_region(header.pool_region_bytes);
      options.max_pool_bytes > reserved) {
    config_.max_pool_percent = std::max(1u, max_pool_percent_within(ram_bytes_, reserved));
    options.max_pool_bytes = std::min(reserved, pool_limit_bytes(ram_bytes_, config_.max_pool_percent));
    spdlog::warn("max-pool-percent: this swap area reserved address space for a pool of {} at most: using {}%",
                 human_bytes(reserved), config_.max_pool_percent);
  }
  options.accept_threshold_percent = config_.accept_threshold_percent;
  options.pool.nodes = header.pool_nodes;
  options.pool.bind_nodes = options.pool.nodes > 1 && options.pool.nodes <= online_numa_nodes();
  options.pool.lock_memory = true;
  // The request path never asks the kernel for memory: a store that finds
  // the reserve empty goes to the backing file or is refused, and the
  // refill thread grows the pool (ZPoolOptions::grow_on_miss). A reserve of
  // 4 MiB per node rides out the bursts between its wake-ups.
  options.pool.grow_on_miss = false;
  options.pool.empty_span_cache_bytes = 4u << 20;
  // Fault injection for tests of a real shortage (docs/operations.md).
  if (const char* every = std::getenv("UZSWAP_FAULT_POOL_GROWTH")) {
    options.pool.fail_growth_every = static_cast<unsigned>(std::strtoul(every, nullptr, 10));
    if (options.pool.fail_growth_every != 0)
      spdlog::warn("UZSWAP_FAULT_POOL_GROWTH: every {}th growth of the pool fails (fault injection)",
                   options.pool.fail_growth_every);
  }
  store_ = std::make_unique<PageStore>(options, *state_);
  writeback_ = std::make_unique<Writeback>(*store_);
  start_reserve_refill();
  save_settings();
  publish_cgroup_paths();
  if (const AdoptionReport& a = store_->adoption(); a.adopted) {
    spdlog::info("adopted the swap area in {:.3f} s (serving process #{}): {} pages in the pool, {} in the "
                 "backing file, {} half-done changes rolled back, {} writebacks back in RAM, {} cgroups{}",
                 a.seconds, header.adoptions + 1, a.pool_objects, a.written_back, a.rolled_back, a.writebacks_reset,
                 a.cgroups, a.lost ? fmt::format(", {} DAMAGED entries (their reads fail)", a.lost) : "");
  }
  if (config_.has_backing()) {
    if (!config_.backing_file.empty()) {
      try {
        // Its unwritten blocks are written once now: tell systemd it takes a while.
        auto file = std::make_unique<BackingFile>(config_.backing_file, slots * kPageSize, [](auto done, auto all) {
          sd_notifyf(0, "EXTEND_TIMEOUT_USEC=30000000\nWATCHDOG=1\nSTATUS=writing the backing file's unwritten blocks once: %s of %s",
                     human_bytes(done).c_str(), human_bytes(all).c_str());
        });
        if (const BackingFileSetup& s = file->setup(); !s.mapped)
          spdlog::warn("{}: no FIEMAP ({}): unwritten blocks cannot be found and written ahead", config_.backing_file,
                       s.map_error.message());
        else if (s.written_bytes > 0)
          spdlog::info("{}: wrote {} of unwritten blocks once in {:.1f} s", config_.backing_file,
                       human_bytes(s.written_bytes), s.seconds);
        backing_ = std::move(file);
      } catch (const std::system_error& e) {
        throw StartError(std::string("--backing-file: ") + e.what());
      }
    } else {
      try {
        auto remote = std::make_unique<BackingNbd>(config_.backing_nbd, slots * kPageSize);
        backing_nbd_ = remote.get();
        remote_up_ = true;
        const BackingNbdStatus r = remote->status();
        spdlog::info("remote tier: {} ({} of export, {} connection(s))", config_.backing_nbd,
                     human_bytes(r.export_bytes), r.connections);
        backing_ = std::move(remote);
      } catch (const std::exception& e) {
        throw StartError(std::string("--backing-nbd: ") + e.what());
      }
    }
    if (state_->cipher() != BackingCipher::none)
      backing_ = std::make_unique<EncryptedBacking>(std::move(backing_), *state_);
    store_->attach_backing(backing_.get());
    if (store_->adoption().stale_file_writes > 0) {
      // Writes the dead process started may still land; those slots are not
      // written again until they have.
      stale_writes_thread_ = Thread("uzswap-stale", [this] {
        if (!backing_->wait_for_other_writers(std::chrono::seconds(60)))
          spdlog::warn("could not tell whether the dead process's writes to {} landed; going on",
                       backing_name());
        spdlog::info("{} slots written by the dead process are writable again", store_->release_stale_file_writes());
      });
    }
    start_wipe();
    shrinker_ = std::make_unique<ShrinkWorker>(*writeback_, ShrinkWorkerOptions{});
    store_->set_pool_full_hook([worker = shrinker_.get()] { worker->wake(); });
    start_reclaim();
  }

  if (fresh) {
    // The swap signature is stored directly: the daemon never does I/O on
    // its own mount.
    std::array<std::byte, kPageSize> swap_header;
    const auto uuid = random_uuid();
    if (!uuid) throw StartError("getrandom: " + uuid.error().message());
    make_swap_header(swap_header, slots, *uuid, config_.name);
    if (!store_->store(0, swap_header)) throw StartError("cannot store the swap header");
  }

  const unsigned workers =
      config_.workers != 0 ? config_.workers : std::max(2u, std::thread::hardware_concurrency());
  // PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE: say once if it is refused.
  auto flusher_warned = std::make_shared<std::once_flag>();
  const std::function<void()> worker_init = [this, flusher_warned] {
    store_->prepare_thread_with_backing();
    if (auto flusher = set_io_flusher(); !flusher)
      std::call_once(*flusher_warned, [&] {
        spdlog::warn("PR_SET_IO_FLUSHER refused ({}): worker allocations may enter I/O reclaim",
                     flusher.error().message());
      });
  };
  if (config_.nbd_frontend()) start_nbd(workers, worker_init);
  else start_fuse(workers, worker_init);

  // Last: once the control socket answers, status is complete.
  control_ = std::make_unique<ControlServer>(
      config_.control_socket(), readers,
      [this](std::string_view request, Access access) { return handle_control(request, access); });

  sd_notifyf(0, "READY=1\nSTATUS=%s", summary().c_str());
}

void Instance::start_nbd(unsigned workers, const std::function<void()>& worker_init) {
  const std::uint64_t slots = state_->header().slots;
  NbdConfig nbd;
  nbd.size_bytes = slots * kPageSize;
  nbd.export_name = config_.name;
  nbd_server_ = std::make_unique<NbdServer>(*store_, nbd);
  try {
    // The supervisor made the listening socket; it outlives this process,
    // and clients reconnect to the next one.
    nbd_listener_ = std::make_unique<NbdListener>(*nbd_server_, fds_.fuse, config_.nbd_connections, worker_init);
  } catch (const std::system_error& e) {
    throw StartError(std::string("NBD connection threads: ") + e.what());
  }
  if (config_.swapon) {
    // As swap, the kernel's NBD client is a client over socketpairs, one
    // per queue (nbd_kernel.h); the listener serves other clients beside it.
    if (!KernelNbd::available())
      throw StartError("--frontend nbd as swap needs the kernel's NBD client: this kernel has no nbd module "
                       "(modprobe nbd), or use --no-swapon to serve the export only");
    try {
      kernel_nbd_ = std::make_unique<KernelNbd>(*nbd_server_, workers, worker_init);
    } catch (const std::exception& e) {
      throw StartError(std::string("connecting the kernel's NBD client: ") + e.what());
    }
    std::filesystem::remove(config_.device_link());
    std::filesystem::create_symlink(kernel_nbd_->path(), config_.device_link());
    if (auto on = swap_on(kernel_nbd_->path(), config_.swap_priority); !on)
      throw StartError("swapon " + kernel_nbd_->path() + " failed: " + on.error().message());
    swap_on_ = true;
    // Not recorded in the shared state: a serving process that dies takes
    // the kernel's connections with it (nbd_kernel.h), there is nothing for
    // a next one to adopt on this device.
    swap_type_probe();
  }
  spdlog::info("serving {} of swap as NBD export '{}' on {} ({} connections at most){}", human_bytes(slots * kPageSize),
               config_.name, config_.nbd_listen_address(), nbd_listener_->connections(),
               swap_on_ ? ", swap on" : ", swap not enabled (--no-swapon)");
}

void Instance::start_fuse(unsigned workers, const std::function<void()>& worker_init) {
  StateHeader& header = state_->header();
  const bool fresh = state_->fresh();
  const std::uint64_t slots = header.slots;
  FuseConfig fuse;
  fuse.size_bytes = slots * kPageSize;
  fuse.max_write = header.fuse_max_write != 0 ? header.fuse_max_write : 1u << 20;
  if (config_.fuse_io_uring == "on" && !FuseUring::kernel_enabled())
    throw StartError("--fuse-io-uring on: the kernel's FUSE io_uring support is off "
                     "(echo Y > /sys/module/fuse/parameters/enable_uring, Linux 6.14+)");
  // Only /dev/fuse survives a restart of the serving process (the rings of
  // a dead process cannot be handed on): io_uring only when asked for.
  fuse.over_io_uring = config_.fuse_io_uring == "on" && FuseUring::kernel_enabled();
  // A page goes to the pool of its requester's node (FuseServer).
  if (store_->nodes() > 1) fuse.cpu_node = cpu_nodes_from_sysfs();
  server_ = std::make_unique<FuseServer>(*store_, fuse);
  if (header.fuse_initialized) server_->resume_connection(header.fuse_over_io_uring != 0);

  workers_ = std::make_unique<FuseWorkers>(fds_.fuse, *server_, workers, worker_init);
  if (!fresh) {
    // Requests the dead process read but never answered: again, please.
    if (auto ec = fuse_notify_resend(fds_.fuse))
      spdlog::warn("FUSE_NOTIFY_RESEND: {} (Linux 6.9+): requests the dead process held stay unanswered",
                   ec.message());
  }
  if (!header.fuse_initialized) {
    // The kernel sent INIT at mount; the workers answer it.
    for (int i = 0; i < 1000 && !server_->stats().initialized; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!server_->stats().initialized) throw StartError("the kernel sent no FUSE INIT within 10 s");
    header.fuse_over_io_uring = server_->over_io_uring() ? 1 : 0;
    header.fuse_initialized = 1;
  }
  if (server_->over_io_uring()) {
    try {
      uring_ = std::make_unique<FuseUring>(fds_.fuse, *server_, workers, kFuseRingDepth, worker_init);
    } catch (const std::system_error& e) {
      throw StartError(std::string("FUSE over io_uring: ") + e.what() + " (try --fuse-io-uring off)");
    }
    spdlog::info("FUSE over io_uring: {} queue(s), {} thread(s), {} entries per queue, {} of buffers", uring_->queues(),
                 uring_->threads(), kFuseRingDepth, human_bytes(uring_->buffer_bytes()));
  } else if (config_.fuse_io_uring == "on") {
    throw StartError("--fuse-io-uring on: the kernel did not offer io_uring at FUSE INIT");
  }

  if (header.loop_device[0] == '\0') {
    // The loop device keeps its own reference to the file: the daemon holds
    // no fd on its own FUSE file past this point, so its exit never sends
    // FUSE_FLUSH to itself (which nobody would answer).
    const int file_fd = open(config_.swap_file().c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (file_fd < 0) throw StartError("cannot open " + config_.swap_file() + ": " + std::strerror(errno));
    try {
      loop_ = LoopDevice::attach(file_fd, "uzswap:" + config_.name, kPageSize);
    } catch (const std::system_error& e) {
      close(file_fd);
      throw StartError(std::string(e.what()) + " (is the loop module loaded?)");
    }
    close(file_fd);
    std::snprintf(header.loop_device, sizeof(header.loop_device), "%s", loop_.path().c_str());
  } else {
    auto existing = LoopDevice::open_existing(header.loop_device);
    if (!existing)
      throw StartError(std::string("the swap area's loop device: open ") + header.loop_device + ": " +
                       existing.error().message());
    loop_ = std::move(*existing);
  }
  // An unreadable loop/dio counts as buffered, as it always has.
  if (!loop_.direct_io().value_or(false))
    throw StartError(loop_.path() +
                     " fell back to buffered I/O (loop/dio is 0): refusing to put the page cache "
                     "in the swap path");
  std::filesystem::remove(config_.device_link());
  std::filesystem::create_symlink(loop_.path(), config_.device_link());


  if (header.swap_on) {
    swap_on_ = true;
    swap_type_ = header.swap_type;
    if (swap_type_ >= 0) start_attribution();
  } else if (config_.swapon) {
    if (auto on = swap_on(loop_.path(), config_.swap_priority); !on)
      throw StartError("swapon " + loop_.path() + " failed: " + on.error().message());
    swap_on_ = true;
    header.swap_on = 1;
    // Attribution reads swap entries from pagemap: find which type is ours.
    swap_type_probe();
    header.swap_type = swap_type_;
  }
  // The kernel may abort FUSE requests that take longer than a timeout
  // (Linux 6.14+): a restart or heavy thrashing beyond it would fail swap I/O.
  // (A server that asks for no timeout gets default_request_timeout.)
  if (std::ifstream f("/proc/sys/fs/fuse/default_request_timeout"); f) {
    if (unsigned seconds = 0; f >> seconds && seconds != 0)
      spdlog::warn("fs.fuse.default_request_timeout is {} s: the kernel aborts swap I/O that waits longer, such as "
                   "during a restart of the serving process under heavy load; set it to 0",
                   seconds);
  }
  spdlog::info("serving {} ({} of swap, {} workers) on {}{}", config_.swap_file(), human_bytes(slots * kPageSize),
               workers, loop_.path(), swap_on_ ? ", swap on" : ", swap not enabled (--no-swapon)");
}

std::string Instance::backing_name() const {
  return config_.backing_file.empty() ? config_.backing_nbd : config_.backing_file;
}

void Instance::save_settings() noexcept {
  StateHeader& h = state_->header();
  h.codec = static_cast<std::uint32_t>(store_->codec());
  h.level = store_->level();
  h.max_pool_percent = config_.max_pool_percent;
  h.accept_threshold_percent = store_->accept_threshold_percent();
  h.watermark_scale_factor = config_.watermark_scale_factor;
  h.idle_writeback_seconds = config_.idle_writeback_seconds;
  h.settings_valid = 1;
}

std::string Instance::handover() {
  // The binary the supervisor will run next must take this state.
  const char* next = std::getenv(kBinaryEnv);
  if (next == nullptr) return "no supervisor to hand over to";
  std::string out;
  if (FILE* p = popen((std::string("'") + next + "' --state-layouts 2>&1").c_str(), "r")) {
    char buf[128];
    while (std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
    if (pclose(p) != 0) out.clear();
  }
  // "OLDEST NEWEST": the layouts it adopts (a binary older than that
  // question answers nothing useful, and is refused).
  unsigned oldest = 0, newest = 0;
  const unsigned mine = state_->header().layout_version;
  if (std::sscanf(out.c_str(), "%u %u", &oldest, &newest) != 2 || mine < oldest || mine > newest) {
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return std::string(next) + " adopts state layouts " + (out.empty() ? "(unknown)" : out) +
           ", this swap area's is " + std::to_string(mine) + ": it cannot take over; still serving";
  }
  return "";
}

void Instance::leave_for_new_process() {
  spdlog::info("handing over to a new serving process");
  sd_notify(0, "RELOADING=1\nSTATUS=handing over to a new serving process");
  // Everything is crash-consistent: leaving is dying on purpose. Requests in
  // flight are sent again to the next process.
  std::fflush(nullptr);
  _exit(kExitHandover);
}

void Instance::swap_type_probe() {
  // The probe is this very binary, run anew (never a fork of this process).
  auto type = probe_swap_type("/proc/self/exe", [this](std::uint64_t offset, PageView page) {
    std::array<std::byte, kPageSize> stored;
    return offset < store_->slots() && store_->load(offset, stored).has_value() &&
           std::memcmp(stored.data(), page.data(), kPageSize) == 0;
  });
  if (type) {
    swap_type_ = static_cast<int>(*type);
    spdlog::info("the kernel knows this device as swap type {}", *type);
    start_attribution();
  } else {
    spdlog::warn("could not tell this device's swap type: {}", type.error().message());
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
    reclaimer_ = std::make_unique<Reclaimer>(*writeback_, options, [this] {
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
  for (const CgroupId id : store_->memcg().cgroups())
    if (id != kRootCgroup && !store_->memcg().policy(id).writeback) hold = true;
  // A cgroup that got no id keeps its pages on the root's lists: if it said
  // no writeback, the root's pages are held as well.
  if (attribution_ && attribution_->untracked().writeback_off > 0) hold = true;
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
      liveness::working();
      try {
        last_pass_ = attribution_->scan();
        publish_cgroup_paths();
        // A watch the kernel refused is tried again at the next pass.
        if (auto tracked = reclaimer_ ? reclaimer_->track(attribution_->directories()) : Result<>{}; !tracked)
          liveness::error("attribution pass: epoll_ctl: " + tracked.error().message());
        else
          update_root_hold();
      } catch (const std::exception& e) {
        // A pass that failed (allocation) is tried again at the next
        // interval; the liveness check logs it.
        liveness::error(std::string("attribution pass: ") + e.what());
      }
      liveness::progressed();
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
  publish_cgroup_paths();
  return {{"ok", true},
          {"result", {{"cgroups", last_pass_.cgroups},
                      {"processes", last_pass_.processes},
                      {"pages_scanned", last_pass_.pages_scanned},
                      {"attributed", last_pass_.attributed},
                      {"complete", last_pass_.complete}}}};
}

std::optional<CgroupId> Instance::find_cgroup(const std::string& path) const {
  if (path == "/") return kRootCgroup;
  std::lock_guard guard(paths_lock_);
  // The raw path, or the escaped form the tables show, if only one matches.
  std::optional<CgroupId> escaped;
  unsigned escaped_matches = 0;
  for (const auto& [id, raw] : cgroup_paths_) {
    if (raw == path) return id;
    if (escape_name(raw) == path) {
      escaped = id;
      ++escaped_matches;
    }
  }
  return escaped_matches == 1 ? escaped : std::nullopt;
}

void Instance::publish_cgroup_paths() {
  std::map<CgroupId, std::string> paths;
  for (const PersistedCgroup& c : store_->memcg().persisted()) paths[c.id] = c.path;
  CgroupIds ids;
  if (attribution_) {
    ids.live = attribution_->live_cgroups();
    ids.free = attribution_->free_ids();
    ids.untracked = attribution_->untracked();
  }
  std::lock_guard guard(paths_lock_);
  if (ids.untracked.count != cgroup_ids_.untracked.count) {
    if (ids.untracked.count > 0)
      spdlog::warn("cgroup ids: all {} in use: {} cgroup(s) untracked, their pages stay the root "
                   "cgroup's ({} with writeback off: unattributed pages are held back from pressure "
                   "reclaim; {} with a zswap maximum that cannot be enforced)",
                   ids.live, ids.untracked.count, ids.untracked.writeback_off, ids.untracked.with_max);
    else
      spdlog::info("cgroup ids: every cgroup is tracked again");
  }
  cgroup_paths_ = std::move(paths);
  cgroup_ids_ = ids;
}

std::string Instance::cgroup_path(CgroupId id) const {
  if (id == kRootCgroup) return "/";
  std::lock_guard guard(paths_lock_);
  if (const auto it = cgroup_paths_.find(id); it != cgroup_paths_.end()) return it->second;
  return "#" + std::to_string(id);
}

void Instance::serve() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  // The signals are blocked in every thread (main.cpp): read them from a
  // signalfd, or, if none can be made, take them with sigtimedwait() at each
  // turn, so SIGTERM always stops this process.
  const int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (sfd < 0) spdlog::warn("signalfd: {}: polling for signals instead", std::strerror(errno));
  // Addressed to the supervisor (the unit's main process), kept here.
  const std::uint64_t watchdog_usec =
      watchdog_usec_for(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), getpid(), getppid());
  const bool watchdog = watchdog_usec > 0;
  const auto tick = std::chrono::microseconds(
      watchdog ? std::min<std::uint64_t>(watchdog_usec / 2, 1000000) : 1000000);
  // Stuck = this many checks in a row on one piece of work: kStuckRequest
  // of running time (checks do not run while the process is stopped).
  liveness_.set_stuck_checks(static_cast<unsigned>(
      std::max<std::int64_t>(1, std::chrono::duration_cast<std::chrono::microseconds>(kStuckRequest) / tick)));
  auto next_tick = std::chrono::steady_clock::now() + tick;

  for (;;) {
    pollfd fds[1] = {{sfd, POLLIN, 0}};
    const int ready = poll(fds, 1, 100);
    if (ready < 0 && errno != EINTR) spdlog::warn("poll: {}", std::strerror(errno));
    if (restart_requested_.load()) {
      // uzswapctl restart was answered on the control thread; let the reply
      // leave before this process does.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      leave_for_new_process();
    }
    if (const auto now = std::chrono::steady_clock::now(); now >= next_tick) {
      // One check per tick however long the process was stopped: a pause
      // (SIGSTOP, a cgroup freeze, a debugger) is not progress lost.
      next_tick = now + tick;
      const bool stuck = check_threads();
      log_integrity_errors();
      if (backing_nbd_ != nullptr && backing_nbd_->up() != remote_up_) {
        remote_up_ = !remote_up_;
        if (remote_up_) spdlog::info("remote tier {} is back: writeback resumes", config_.backing_nbd);
        else spdlog::warn("remote tier {} is down ({}): writeback stops, pages stay in RAM; reconnecting",
                          config_.backing_nbd, backing_nbd_->status().last_error);
      }
      sd_notifyf(0, "%sSTATUS=%s", watchdog && !stuck ? "WATCHDOG=1\n" : "", summary().c_str());
    }
    int signo = 0;
    if (sfd >= 0) {
      signalfd_siginfo info;
      if ((fds[0].revents & POLLIN) && read(sfd, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info)))
        signo = static_cast<int>(info.ssi_signo);
    } else {
      const timespec zero{};
      signo = std::max(0, sigtimedwait(&signals, nullptr, &zero));
    }
    if (signo == 0) continue;
    if (signo == SIGHUP) {
      // systemctl reload: the supervisor passes it on.
      if (const std::string refused = handover(); !refused.empty()) spdlog::error("SIGHUP: {}", refused);
      else leave_for_new_process();
      continue;
    }
    spdlog::info("signal {}: stopping", strsignal(signo));
    if (try_stop()) break;
  }
  if (sfd >= 0) close(sfd);
}

bool Instance::check_threads() {
  // The liveness check (lib/uzswap/common/liveness.h): every thread of this
  // process says whether it waits for work, works, or is gone. The watchdog
  // is fed only while no thread is stuck: slow is fine (thrashing makes
  // every request slow), one piece of work for kStuckRequest is not.
  const LivenessMonitor::Changes c = liveness_.check();
  const auto seconds = [](std::chrono::nanoseconds d) {
    return std::chrono::duration_cast<std::chrono::duration<double>>(d).count();
  };
  for (const auto& t : c.new_errors)
    spdlog::warn("thread {}: {} ({} error(s) so far)", t.report.name, t.report.last_error, t.report.errors);
  for (const auto& t : c.unstuck) spdlog::info("thread {} makes progress again", t.report.name);
  for (const auto& t : c.newly_stuck)
    spdlog::critical("thread {} has been on one piece of work for {:.0f} s (no progress in {} checks): "
                     "not feeding the watchdog", t.report.name, seconds(t.report.working_for), t.stalled_checks);
  for (const auto& t : c.newly_down)
    spdlog::critical("thread {} {}: {}", t.report.name, thread_state_name(t.report.state),
                     t.report.last_error.empty() ? "no reason given" : t.report.last_error);
  // What cannot be recovered in place: a thread gone, a FUSE worker or ring
  // thread ended while the connection should be serving, a thread stuck for
  // twice the limit. A fresh serving process takes over (the supervisor
  // starts it; requests in flight are sent to it again).
  const FuseWorkers::Health health = workers_ ? workers_->health() : FuseWorkers::Health{};
  const unsigned rings_ended = uring_ ? uring_->exited() : 0;
  std::string why;
  if (c.down > 0) why = fmt::format("{} thread(s) failed or died", c.down);
  else if (health.exited > 0) why = fmt::format("{} FUSE worker(s) ended unexpectedly", health.exited);
  else if (rings_ended > 0) why = fmt::format("{} FUSE ring thread(s) ended unexpectedly", rings_ended);
  else if (c.max_stalled_checks >= 2 * liveness_.stuck_checks())
    why = fmt::format("a thread made no progress in {} checks", c.max_stalled_checks);
  if (!why.empty()) {
    spdlog::critical("{}: handing over to a new serving process", why);
    leave_for_new_process();
  }
  return c.stuck > 0;
}

json Instance::threads_status() const {
  json list = json::array();
  unsigned stuck = 0, down = 0;
  std::uint64_t errors = 0;
  const auto seconds = [](std::chrono::nanoseconds d) {
    return std::round(std::chrono::duration_cast<std::chrono::duration<double>>(d).count() * 10) / 10;
  };
  for (const LivenessMonitor::Thread& t : liveness_.threads()) {
    const ThreadReport& r = t.report;
    if (t.stuck) ++stuck;
    if (r.state == ThreadState::failed || r.state == ThreadState::dead) ++down;
    errors += r.errors;
    list.push_back({{"name", r.name},
                    {"state", thread_state_name(r.state)},
                    {"stuck", t.stuck},
                    {"progress", r.progress},
                    {"last_progress_seconds", seconds(r.since_progress)},
                    {"working_seconds", seconds(r.working_for)},
                    {"errors", r.errors},
                    {"last_error", r.last_error}});
  }
  return {{"count", list.size()},
          {"stuck", stuck},
          {"down", down},
          {"errors", errors},
          {"stuck_after_checks", liveness_.stuck_checks()},
          {"list", list}};
}

void Instance::start_reserve_refill() {
  // The store path takes new pool spans from a reserve already backed by
  // RAM and never asks for memory (zswap's __GFP_NORETRY); this thread
  // populates the reserve again, woken when a store leaves it below half
  // or finds it empty.
  store_->refill_pool_reserve();  // before the first request
  reserve_thread_ = Thread("uzswap-reserve", [this] {
    // It asks the kernel for memory: let that reclaim not wait on our own I/O.
    if (auto flusher = set_io_flusher(); !flusher)
      spdlog::debug("uzswap-reserve: PR_SET_IO_FLUSHER: {}", flusher.error().message());
    std::uint64_t refill_failures_seen = store_->pool_reserve_refill_failures();
    while (!reserve_stop_.load(std::memory_order_relaxed)) {
      liveness::waiting();
      store_->wait_for_pool_reserve_use();
      if (reserve_stop_.load(std::memory_order_relaxed)) break;
      liveness::working();
      // Again while a pass makes progress: a pass stops at a failed growth
      // in each span length, and stores find the reserve empty until it is
      // full again.
      std::size_t refilled = 0, pass;
      do {
        pass = store_->refill_pool_reserve();
        refilled += pass;
        liveness::progressed();
      } while (pass > 0 && !reserve_stop_.load(std::memory_order_relaxed));
      // Nothing populated and a growth refused: no memory is to be had; do
      // not spin on it (stores meanwhile go to the next tier). A reserve
      // that was simply full waits for the next wake-up instead: a store
      // waiting for a span must not find this thread asleep.
      const std::uint64_t failures = store_->pool_reserve_refill_failures();
      if (refilled == 0 && failures != refill_failures_seen)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      refill_failures_seen = failures;
    }
  });
}

void Instance::stop_reserve_refill() noexcept {
  if (!reserve_thread_.joinable()) return;
  reserve_stop_.store(true, std::memory_order_relaxed);
  store_->wake_pool_reserve_refiller();
  reserve_thread_.join();
}

void Instance::start_wipe() {
  // Freed pages do not stay in the backing file: a block whose page the
  // kernel discarded (or stored anew) is overwritten with zeros, in the
  // background, a second at most after it was freed.
  wipe_thread_ = Thread("uzswap-wipe", [this] {
    std::unique_lock guard(wipe_lock_);
    while (!wipe_stop_) {
      guard.unlock();
      liveness::working();  // a write that hangs is a stuck thread
      store_->wipe_freed(16384);
      liveness::progressed();
      guard.lock();
      liveness::waiting();
      wipe_wakeup_.wait_for(guard, std::chrono::seconds(1), [this] { return wipe_stop_; });
    }
  });
}

void Instance::stop_wipe() noexcept {
  if (!wipe_thread_.joinable()) return;
  {
    std::lock_guard guard(wipe_lock_);
    wipe_stop_ = true;
  }
  wipe_wakeup_.notify_all();
  wipe_thread_.join();
}

void Instance::log_integrity_errors() {
  // The request path notes damaged pages; the log line is written here.
  const IntegrityLog& log = store_->integrity_log();
  const std::uint64_t count = log.count();
  if (count == integrity_logged_) return;
  const std::uint64_t from = std::max(integrity_logged_, count - std::min<std::uint64_t>(count, IntegrityLog::kKept));
  if (from > integrity_logged_)
    spdlog::error("integrity: {} more damaged page(s) not listed", from - integrity_logged_);
  for (std::uint64_t n = from; n < count; ++n) {
    const auto [slot, from_file] = log.at(n);
    spdlog::error("integrity: the page in slot {} came back damaged from the {} (checksum mismatch): "
                  "answered with an I/O error, never with wrong bytes",
                  slot, from_file ? "backing file (offset " + std::to_string(slot * kPageSize) + ")" : "pool");
  }
  integrity_logged_ = count;
}
std::string Instance::swap_device() const { return kernel_nbd_ ? kernel_nbd_->path() : loop_.path(); }

bool Instance::try_stop() {
  sd_notify(0, "STOPPING=1\nSTATUS=swapoff: bringing pages back into RAM");
  if (swap_on_) {
    if (auto off = swap_off(swap_device()); !off) {
      // Every page stays served; the operator can free memory and try again.
      spdlog::error("swapoff {} failed: {}; still serving, send SIGTERM again to retry",
                    swap_device(), off.error().message());
      sd_notifyf(0, "READY=1\nSTATUS=swapoff failed (%s), still serving", off.error().message().c_str());
      return false;
    }
    swap_on_ = false;
  }
  return true;
}

void Instance::teardown() noexcept {
  control_.reset();
  stop_attribution();
  if (state_ && state_->header().loop_device[0] != '\0' && swap_on_) {
    // A start that failed after the device was attached (or swap is still
    // on): nothing is taken down, the supervisor starts a new process.
    spdlog::critical("swap is still on {}: leaving it to the next serving process", loop_.path());
    std::fflush(nullptr);
    _exit(kExitStartFailed);
  }
  // NBD: every connection ends; the listening socket is the supervisor's.
  if (kernel_nbd_ && swap_on_) {
    // A start that failed after swapon: the kernel's pages must come back
    // before its connections go.
    if (auto off = swap_off(kernel_nbd_->path()); !off)
      spdlog::critical("swapoff {}: {}: its pages are lost with this process", kernel_nbd_->path(),
                       off.error().message());
    swap_on_ = false;
  }
  kernel_nbd_.reset();
  nbd_listener_.reset();
  nbd_server_.reset();
  loop_.detach();
  if (state_) {
    state_->header().loop_device[0] = '\0';
    state_->header().swap_on = 0;
  }
  // The loop device lets go of the file on its last close, which may lag
  // the detach a little. Unmounting ends the FUSE connection, and with it
  // the workers' reads.
  int err = 0;
  for (int attempt = 0; attempt < 50 && !config_.nbd_frontend(); ++attempt) {
    err = umount2(config_.swap_file().c_str(), UMOUNT_NOFOLLOW) == 0 ? 0 : errno;
    if (err != EBUSY) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (err != 0 && err != EINVAL) {
    spdlog::warn("unmount {}: {}; detaching lazily", config_.swap_file(), std::strerror(err));
    umount2(config_.swap_file().c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
  }
  uring_.reset();
  workers_.reset();
  server_.reset();
  reclaimer_.reset();
  shrinker_.reset();
  stop_wipe();
  stop_reserve_refill();
  stale_writes_thread_ = Thread();
  std::error_code ignored;
  std::filesystem::remove(config_.device_link(), ignored);
  writeback_.reset();
  store_.reset();
  backing_.reset();
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
  std::lock_guard settings(settings_lock_);
  const PageStoreStats s = store_->stats();
  // The request counters of whichever front end serves.
  FuseStats f{};
  json frontend;
  if (server_) {
    f = server_->stats();
    frontend = {{"type", "fuse"}, {"requests", f.requests}, {"unsupported", f.unsupported}};
  } else if (nbd_server_) {
    const NbdStats n = nbd_server_->stats();
    f.requests = n.requests;
    f.read_pages = n.io.read_pages;
    f.written_pages = n.io.written_pages;
    f.discarded_pages = n.io.discarded_pages;
    f.discard_requests = n.io.discard_requests;
    f.write_errors = n.io.write_errors;
    f.bad_requests = n.error_replies;
    frontend = {{"type", "nbd"},
                {"listen", config_.nbd_listen_address()},
                {"export", config_.name},
                {"connections", {{"active", n.connections_active},
                                 {"total", n.connections_total},
                                 {"refused", n.connections_refused},
                                 {"max", nbd_listener_ ? nbd_listener_->connections() : 0}}},
                {"handshakes", n.handshakes},
                {"handshake_failures", n.handshake_failures},
                {"options_refused", n.options_refused},
                {"protocol_errors", n.protocol_errors},
                {"timeouts", n.timeouts},
                {"structured_connections", n.structured_connections},
                {"requests", n.requests},
                {"error_replies", n.error_replies},
                {"read_errors", n.io.read_errors}};
  }
  json j;
  j["name"] = config_.name;
  j["version"] = kVersion;
  j["pid"] = getpid();
  j["supervisor_pid"] = getppid();
  const StateHeader& sh = state_->header();
  const AdoptionReport& ar = store_->adoption();
  j["restart"] = {{"serving_process", sh.adoptions + 1},
                  {"adopted", ar.adopted},
                  {"adopt_seconds", ar.seconds},
                  {"rolled_back", ar.rolled_back},
                  {"writebacks_reset", ar.writebacks_reset},
                  {"lost_pages", ar.lost},
                  {"state_layout", kStateLayoutVersion}};
  j["uptime_seconds"] = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::steady_clock::now() - started_)
                            .count();
  j["frontend"] = frontend;
  j["device"] = {{"file", config_.nbd_frontend() ? std::string() : config_.swap_file()},
                 {"loop", swap_device()},
                 {"size_bytes", config_.size_bytes},
                 {"slots", store_->slots()},
                 {"swap_on", swap_on_},
                 {"swap_type", swap_type_},
                 {"priority", config_.swap_priority},
                 {"direct_io", true},
                 {"workers", workers_ ? workers_->count() : 0},
                 {"fuse_io_uring", uring_ != nullptr},
                 {"ring_threads", uring_ ? uring_->threads() : 0},
                 {"ring_buffer_bytes", uring_ ? uring_->buffer_bytes() : 0}};
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
  j["backing_nbd"] = config_.backing_nbd;
  j["backing_encryption"] = backing_cipher_name(state_->cipher());
  const CgroupPolicy root_policy = store_->memcg().policy(kRootCgroup);
  json wb = {{"backing_file", config_.backing_file},
             {"enabled", backing_ != nullptr && root_policy.writeback},
             {"writebacks", s.writebacks},
             {"failures", s.writeback_failures},
             {"raced", s.writeback_raced},
             {"direct_writes", s.direct_writes},
             {"spilled_pages", s.spilled_pages},
             {"backing_reads", s.backing_reads},
             {"backing_read_errors", s.backing_read_errors},
             {"wiped_pages", s.wiped_pages},
             {"wipe_pending", store_->wipe_pending()}};
  if (shrinker_) {
    const ShrinkWorkerStats w = shrinker_->stats();
    wb["worker"] = {{"wakeups", w.wakeups}, {"runs", w.runs}, {"written", w.written},
                    {"backoffs", w.backoffs}, {"over_max_runs", w.over_max_runs}};
  }
  if (backing_nbd_ != nullptr) {
    const BackingNbdStatus r = backing_nbd_->status();
    wb["enabled"] = wb["enabled"].get<bool>() && r.up;
    wb["backing_nbd"] = {{"uri", r.uri},
                         {"state", r.up ? "up" : "down"},
                         {"connections", r.connections},
                         {"connections_up", r.connections_up},
                         {"export_bytes", r.export_bytes},
                         {"connects", r.connects},
                         {"disconnects", r.disconnects},
                         {"failed_connects", r.failed_connects},
                         {"write_requests", r.write_requests},
                         {"read_requests", r.read_requests},
                         {"refused_pages", r.refused_writes},
                         {"last_error", r.last_error}};
    if (!r.up) wb["stopped"] = "the remote tier is down: writeback waits for it to come back (" + r.last_error + ")";
  }
  j["writeback"] = wb;
  json nodes = json::array();
  for (unsigned node = 0; node < store_->nodes(); ++node) {
    const Writeback::NodeStats n = writeback_->node_stats(node);
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
  j["read_errors"] = f.read_errors;
  j["bad_requests"] = f.bad_requests;
  j["load_errors"] = s.load_errors;
  j["integrity_errors"] = s.integrity_errors + s.load_errors;
  j["lost_pages"] = s.lost_pages;
  j["pool_limit_hits"] = s.pool_limit_hits;
  j["rejects"] = {{"pool_full", s.reject_pool_full}, {"alloc_failed", s.reject_alloc_failed}};
  j["compactions"] = s.compactions;
  j["pool_reserve"] = {{"bytes", s.pool.reserve_bytes},
                       {"hits", s.pool.reserve_hits},
                       {"misses", s.pool.reserve_misses},
                       {"refills", s.pool.reserve_refills},
                       {"refill_failures", s.pool.reserve_refill_failures}};
  // Attribution to cgroups arrives with the reclaim engine: until then every
  // page is the root cgroup's.
  json cgroups = json::array();
  for (const CgroupId id : store_->memcg().cgroups()) {
    const CgroupStats c = store_->memcg().stats(id);
    const CgroupPolicy p = store_->memcg().policy(id);
    cgroups.push_back({{"path", escape_name(cgroup_path(id))},
                       {"stored_pages", c.stored_pages},
                       {"compressed_bytes", c.compressed_bytes},
                       {"written_back_pages", c.written_back_pages},
                       {"writeback", backing_ != nullptr && p.writeback},
                       {"max_bytes", p.max_bytes}});
  }
  j["cgroups"] = cgroups;
  j["threads"] = threads_status();
  {
    std::lock_guard guard(paths_lock_);
    j["cgroup_ids"] = {{"live", cgroup_ids_.live},
                       {"free", cgroup_ids_.free},
                       {"untracked", cgroup_ids_.untracked.count},
                       {"untracked_writeback_off", cgroup_ids_.untracked.writeback_off},
                       {"untracked_with_max", cgroup_ids_.untracked.with_max}};
  }
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
  std::lock_guard settings(settings_lock_);
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
    if (const std::uint64_t reserved = ZPool::pool_limit_for_region(state_->geometry().pool_region_bytes);
        pool_limit_bytes(ram_bytes_, *v) > reserved)
      return error_reply(fmt::format(
          "max-pool-percent: {}% ({}) is more than the {} this swap area reserved address space for (at most "
          "{}%); a larger limit needs max-pool-percent in the configuration and a fresh start (systemctl restart)",
          *v, human_bytes(pool_limit_bytes(ram_bytes_, *v)), human_bytes(reserved),
          max_pool_percent_within(ram_bytes_, reserved)));
    config_.max_pool_percent = *v;
    store_->set_max_pool_bytes(pool_limit_bytes(ram_bytes_, *v));
  } else if (key == "accept-threshold-percent") {
    const auto v = number(1, 100);
    if (!v) return error_reply("accept-threshold-percent: '" + value + "' is not in 1..100");
    store_->set_accept_threshold_percent(*v);
  } else if (key == "writeback") {
    if (value != "on" && value != "off") return error_reply("writeback: '" + value + "' is not on or off");
    if (!backing_) return error_reply("writeback: needs a backing file or a remote tier (--backing-file or --backing-nbd)");
    CgroupPolicy policy = store_->memcg().policy(kRootCgroup);
    policy.writeback = value == "on";
    store_->memcg().set_policy(kRootCgroup, policy);
  } else if (key == "cgroup-writeback" || key == "cgroup-max") {
    // VALUE is PATH=SETTING: the userspace memory.zswap.writeback / memory.zswap.max.
    const auto eq = value.rfind('=');
    const auto cgroup = eq == std::string::npos ? std::nullopt : find_cgroup(value.substr(0, eq));
    if (!cgroup) return error_reply(key + ": '" + value + "' is not PATH=SETTING for a known cgroup");
    CgroupPolicy policy = store_->memcg().policy(*cgroup);
    const std::string setting = value.substr(eq + 1);
    if (key == "cgroup-writeback") {
      if (setting != "on" && setting != "off") return error_reply(key + ": '" + setting + "' is not on or off");
      policy.writeback = setting == "on";
    } else {
      const auto bytes = setting == "max" ? std::optional<std::uint64_t>(0) : parse_size(setting);
      if (!bytes) return error_reply(key + ": '" + setting + "' is not a size or max");
      policy.max_bytes = *bytes;
    }
    store_->memcg().set_policy(*cgroup, policy);
    update_root_hold();
    if (shrinker_) shrinker_->wake();
  } else if (key == "watermark-scale-factor" || key == "idle-writeback-seconds") {
    const bool factor = key == "watermark-scale-factor";
    const auto v = factor ? number(1, 3000) : number(0, 86400);
    if (!v) return error_reply(key + ": '" + value + "' is not in " + (factor ? "1..3000" : "0..86400"));
    if (!reclaimer_) return error_reply(key + ": needs a backing file or a remote tier (--backing-file or --backing-nbd)");
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
  save_settings();
  spdlog::info("set {} = {}", key, value);
  return {{"ok", true}, {"result", {{key, value}}}};
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
    case Command::set:
      return set_setting(request->key, request->value).dump();
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

}  // namespace uzswap
