// Start-up and teardown of a serving process. start() makes the owners
// instance.h declares; the destructor takes them down in reverse order of
// declaration, with the teardown steps (TeardownStep) where they are declared.
#include "instance.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/mount.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
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
#include "reclaim_safety.h"
#include "uzswap/version.h"

namespace uzswap {

namespace {

// Ring entries per FUSE queue: requests the kernel can hand over while one
// is being served.
constexpr unsigned kFuseRingDepth = 8;

// The kernel's NBD client as swap gets one connection (nbd_kernel.h says why).
constexpr unsigned kKernelNbdConnections = 1;

// The block layer's writeback throttling: the loop device keeps the
// kernel's default, the brake on reclaim's writes that a memory cgroup at
// its limit needs (docs/design.md, start-up step 7); /dev/nbdN has it off
// before swapon, as it was seen holding reclaim there for good
// (device/swap.h).
void default_throttling(const std::string& device) {
  const auto was_off = default_writeback_throttling(device);
  if (!was_off) spdlog::warn("{}: writeback throttling may be off: {}", device, was_off.error().message());
  else if (*was_off) spdlog::info("{}: writeback throttling was off (an earlier user's setting): back to the kernel's default", device);
}

void no_writeback_throttling(const std::string& device) {
  const auto was = disable_writeback_throttling(device);
  if (!was) spdlog::warn("{}: writeback throttling left on: {}", device, was.error().message());
  else if (*was != 0) spdlog::info("{}: writeback throttling off (its target was {} us)", device, *was);
}

}  // namespace

int Instance::run(DaemonConfig config, ServeFds fds) {
  bool started = false;
  {
    Instance instance(std::move(config), std::move(fds));
    try {
      instance.start();
      started = true;
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
      sd_notifyf(0, "STATUS=failed to start: %s", e.what());
    }
    if (started) instance.serve();
  }  // the teardown
  if (!started) return kExitStartFailed;
  spdlog::info("stopped");
  return kExitStopped;
}

Instance::Instance(DaemonConfig config, ServeFds fds)
    : config_(std::move(config)),
      fds_(std::move(fds)),
      ram_bytes_(static_cast<std::uint64_t>(sysconf(_SC_PHYS_PAGES)) * kPageSize),
      started_(std::chrono::steady_clock::now()) {}

void Instance::start() {
  if (auto ok = check_backing_file(config_); !ok) throw StartError(ok.error());
  const std::optional<gid_t> readers = stats_readers();

  // Reclaim-path safety, before anything that allocates much.
  enter_reclaim_path();
  adopt_state();
  const bool fresh = state_->fresh();
  open_store();
  if (config_.has_backing()) start_writeback();
  if (fresh) write_swap_header();
  start_frontend();

  // Last: once the control socket answers, status is complete.
  start_control(readers);

  sd_notifyf(0, "READY=1\nSTATUS=%s", summary().c_str());
}

std::optional<gid_t> Instance::stats_readers() const {
  if (config_.stats_group.empty()) return std::nullopt;
  const group* g = getgrnam(config_.stats_group.c_str());
  if (g == nullptr) throw StartError("--stats-group: no group named '" + config_.stats_group + "'");
  return g->gr_gid;
}

void Instance::adopt_state() {
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
  // What uzswapctl set in an earlier process wins over the configuration.
  restore_settings(header, config_);
}

void Instance::open_store() {
  const StateHeader& header = state_->header();
  const std::uint64_t slots = header.slots;
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
  if (const AdoptionReport& a = store_->restart_side().report(); a.adopted) {
    spdlog::info("adopted the swap area in {:.3f} s (serving process #{}): {} pages in the pool, {} in the "
                 "backing file, {} half-done changes rolled back, {} writebacks back in RAM, {} cgroups{}",
                 a.seconds, header.adoptions + 1, a.pool_objects, a.written_back, a.rolled_back, a.writebacks_reset,
                 a.cgroups, a.lost ? fmt::format(", {} DAMAGED entries (their reads fail)", a.lost) : "");
  }
}

void Instance::start_writeback() {
  open_backing();
  store_->attach_backing(backing_.get());
  if (store_->restart_side().report().stale_file_writes > 0) start_stale_writes();
  start_wipe();
  shrinker_ = std::make_unique<ShrinkWorker>(*writeback_, ShrinkWorkerOptions{});
  store_->hooks().pool_full = [worker = shrinker_.get()] { worker->wake(); };
  start_reclaim();
}

void Instance::open_backing() {
  const std::uint64_t slots = state_->header().slots;
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
}

void Instance::start_stale_writes() {
  // Writes the dead process started may still land; those slots are not
  // written again until they have.
  stale_writes_thread_ = Thread("uzswap-stale", [this] {
    if (!backing_->wait_for_other_writers(std::chrono::seconds(60)))
      spdlog::warn("could not tell whether the dead process's writes to {} landed; going on",
                   backing_name());
    spdlog::info("{} slots written by the dead process are writable again",
                 store_->restart_side().release_stale_file_writes());
  });
}

void Instance::write_swap_header() {
  // The swap signature is stored directly: the daemon never does I/O on
  // its own mount.
  const std::uint64_t slots = state_->header().slots;
  std::array<std::byte, kPageSize> swap_header;
  const auto uuid = random_uuid();
  if (!uuid) throw StartError("getrandom: " + uuid.error().message());
  make_swap_header(swap_header, slots, *uuid, config_.name);
  if (!store_->store(0, swap_header)) throw StartError("cannot store the swap header");
}

void Instance::start_frontend() {
  const unsigned workers = config_.workers != 0
                               ? config_.workers
                               : default_workers(std::thread::hardware_concurrency(), config_.has_backing());
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
  if (config_.nbd_frontend()) start_nbd(worker_init);
  else start_fuse(workers, worker_init);
}

void Instance::start_control(std::optional<gid_t> readers) {
  control_ = std::make_unique<ControlServer>(
      config_.control_socket(), readers,
      [this](std::string_view request, Access access) { return handle_control(request, access); });
}

void Instance::start_nbd(const std::function<void()>& worker_init) {
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
      kernel_nbd_ = std::make_unique<KernelNbd>(*nbd_server_, kKernelNbdConnections, worker_init);
    } catch (const std::exception& e) {
      throw StartError(std::string("connecting the kernel's NBD client: ") + e.what());
    }
    std::filesystem::remove(config_.device_link());
    std::filesystem::create_symlink(kernel_nbd_->path(), config_.device_link());
    no_writeback_throttling(kernel_nbd_->path());
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


  default_throttling(loop_.path());
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
      attribution_worker_.wake();
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

void Instance::start_reserve_refill() {
  // The store path takes new pool spans from a reserve already backed by
  // RAM and never asks for memory (zswap's __GFP_NORETRY); this worker
  // populates the reserve again, woken when a store leaves it below half
  // or finds it empty.
  store_->reserve().refill();  // before the first request
  auto refill_failures_seen = std::make_shared<std::uint64_t>(0);
  PeriodicWorker::Options events;
  events.pass_at_start = false;
  events.on_start = [this, refill_failures_seen] {
    // It asks the kernel for memory: let that reclaim not wait on our own I/O.
    if (auto flusher = set_io_flusher(); !flusher)
      spdlog::debug("uzswap-reserve: PR_SET_IO_FLUSHER: {}", flusher.error().message());
    *refill_failures_seen = store_->reserve().refill_failures();
  };
  events.wait = [this] { store_->reserve().wait_for_use(); };
  events.unblock = [this] {
    reserve_stop_.store(true, std::memory_order_relaxed);
    store_->reserve().wake_refiller();
  };
  reserve_refill_.start("uzswap-reserve", std::move(events), [this, refill_failures_seen] {
    // Again while a pass makes progress: a pass stops at a failed growth
    // in each span length, and stores find the reserve empty until it is
    // full again.
    std::size_t refilled = 0, pass;
    do {
      pass = store_->reserve().refill();
      refilled += pass;
      liveness::progressed();
    } while (pass > 0 && !reserve_stop_.load(std::memory_order_relaxed));
    // Nothing populated and a growth refused: no memory is to be had; do
    // not spin on it (stores meanwhile go to the next tier). A reserve
    // that was simply full waits for the next wake-up instead: a store
    // waiting for a span must not find this thread asleep.
    const std::uint64_t failures = store_->reserve().refill_failures();
    if (refilled == 0 && failures != *refill_failures_seen)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    *refill_failures_seen = failures;
  });
}

void Instance::start_wipe() {
  // Freed pages do not stay in the backing file: a block whose page the
  // kernel discarded (or stored anew) is overwritten with zeros, in the
  // background, a second at most after it was freed. A write that hangs is
  // a stuck thread.
  PeriodicWorker::Options every_second;
  every_second.period = std::chrono::seconds(1);
  wipe_.start("uzswap-wipe", std::move(every_second), [this] { store_->housekeeping().wipe_freed(16384); });
}

// The teardown steps, in the order they run (instance.h).

void Instance::leave_swap() noexcept {
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
}

void Instance::release_loop_device() noexcept {
  loop_.detach();
  if (state_) {
    state_->header().loop_device[0] = '\0';
    state_->header().swap_on = 0;
  }
}

void Instance::unmount_swap_file() noexcept {
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
}

void Instance::remove_device_link() noexcept {
  std::error_code ignored;
  std::filesystem::remove(config_.device_link(), ignored);
}

}  // namespace uzswap
