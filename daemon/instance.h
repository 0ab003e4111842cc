// One running uzswapd: the page store served as a FUSE file, attached to a
// loop device (or as an NBD export), swapped on, and controlled through its
// socket. It only wires the pieces in lib/ together: made in order by
// start(), taken down in reverse by its destructor. Its parts, one file each:
//   instance.cpp          start-up and the teardown
//   serve.cpp             the main loop: signals, the watchdog tick, handover
//   control_commands.cpp  the control socket's commands
//   settings.cpp          `uzswapctl set`: the live settings, checked and applied
//   status.cpp            the status JSON and the one-line summary
//   cgroups.cpp           cgroup attribution and the cgroup paths it publishes
#pragma once

#include <atomic>
#include <chrono>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "uzswap/backing/backing_nbd.h"
#include "uzswap/backing/backing_store.h"
#include "uzswap/common/liveness.h"
#include "uzswap/common/mutex.h"
#include "uzswap/common/periodic_worker.h"
#include "uzswap/common/thread.h"
#include "uzswap/control/control_server.h"
#include "uzswap/daemon/config.h"
#include "uzswap/daemon/safety.h"
#include "uzswap/device/loop_device.h"
#include "uzswap/fuse/fuse_server.h"
#include "uzswap/fuse/fuse_session.h"
#include "uzswap/fuse/fuse_uring.h"
#include "uzswap/nbd/nbd_kernel.h"
#include "uzswap/nbd/nbd_server.h"
#include "uzswap/reclaim/attribution.h"
#include "uzswap/reclaim/reclaimer.h"
#include "uzswap/state/shared_state.h"
#include "uzswap/store/page_store.h"
#include "uzswap/writeback/shrink_memcg.h"
#include "uzswap/writeback/shrink_worker.h"
#include "handover.h"
#include "settings.h"

namespace uzswap {

// A step of the teardown that is no object's destructor, run where it is
// declared among the owners (see Instance).
class TeardownStep {
 public:
  explicit TeardownStep(std::function<void()> step) : step_(std::move(step)) {}
  ~TeardownStep() { step_(); }
  TeardownStep(const TeardownStep&) = delete;
  TeardownStep& operator=(const TeardownStep&) = delete;

 private:
  std::function<void()> step_;
};

class Instance {
 public:
  // Serves the swap area on the fds its supervisor handed over: starts
  // everything, serves until SIGTERM/SIGINT and a successful swapoff (or
  // hands over to a new serving process), then takes everything down.
  // Returns the process exit code (handover.h).
  static int run(DaemonConfig config, ServeFds fds);

 private:
  Instance(DaemonConfig config, ServeFds fds);
  ~Instance() = default;  // the teardown: the owners below, in reverse
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  // instance.cpp: start-up, in this order.
  void start();
  std::optional<gid_t> stats_readers() const;
  void adopt_state();
  void open_store();
  void start_reserve_refill();
  void start_writeback();
  void open_backing();
  void start_stale_writes();
  void start_wipe();
  void start_reclaim();
  void write_swap_header();
  void start_frontend();
  void start_nbd(const std::function<void()>& worker_init);
  void start_fuse(unsigned workers, const std::function<void()>& worker_init);
  void start_control(std::optional<gid_t> readers);
  void swap_type_probe();
  // instance.cpp: the teardown steps.
  void leave_swap() noexcept;
  void release_loop_device() noexcept;
  void unmount_swap_file() noexcept;
  void remove_device_link() noexcept;

  // serve.cpp
  void serve();
  bool try_stop();
  // One liveness check (a watchdog tick): logs what changed, hands over to a
  // new serving process when a thread is gone or stuck for good. True while
  // a thread is stuck.
  bool check_threads();
  void log_integrity_errors();
  // Why the next binary cannot take over ("" = it can).
  std::string handover();
  [[noreturn]] void leave_for_new_process();

  // control_commands.cpp: called from several control threads at once.
  std::string handle_control(std::string_view request, Access access);
  nlohmann::json writeback(std::uint64_t pages, const std::optional<std::string>& cgroup);
  nlohmann::json attribute_now();

  // settings.cpp: applies `uzswapctl set key value`, or says why not.
  std::expected<void, std::string> set_setting(const std::string& key, const std::string& value);
  void apply_setting(const SettingChange& change);
  // Keeps what uzswapctl set in the shared state, for the next process.
  void save_settings() noexcept;

  // status.cpp
  nlohmann::json status() const;
  nlohmann::json reclaim_status() const;
  nlohmann::json threads_status() const;
  std::string summary() const;
  std::string backing_name() const;
  // What is swapped on: the loop device, or /dev/nbdN.
  std::string swap_device() const;

  // cgroups.cpp
  void start_attribution();
  void stop_attribution() noexcept;
  void update_root_hold();
  // The attribution's id -> path map, copied after each pass for status and
  // the control commands, which must never wait on a pass.
  void publish_cgroup_paths();
  std::string cgroup_path(CgroupId id) const;
  std::optional<CgroupId> find_cgroup(const std::string& path) const;

  // What the owners below use: plain values and the locks of the state the
  // control threads share.
  DaemonConfig config_;
  ServeFds fds_;
  const std::uint64_t ram_bytes_;
  const std::chrono::steady_clock::time_point started_;
  // set_setting writes config_'s live settings, status reads them.
  mutable Mutex settings_lock_;
  mutable Mutex paths_lock_;
  std::map<CgroupId, std::string> cgroup_paths_ GUARDED_BY(paths_lock_);
  // The attribution's id use, as of its last pass.
  struct CgroupIds {
    std::uint64_t live = 0, free = 0;
    UntrackedCgroups untracked;
  } cgroup_ids_ GUARDED_BY(paths_lock_);
  mutable Mutex attribution_lock_;  // held by a pass; guards attribution_'s maps
  // The attribution's passes: stopped by stop_attribution_ below, but
  // declared before the reclaimer, whose pressure hook wakes it, so that a
  // hook late in the reclaimer's teardown finds it there (wake() after
  // stop() is harmless).
  PeriodicWorker attribution_worker_;
  AttributionPass last_pass_ GUARDED_BY(attribution_lock_);
  std::atomic<bool> reserve_stop_{false};       // ends the reserve refill's passes early
  LivenessMonitor liveness_{60};                // its limit is set from the tick in serve()
  std::atomic<bool> restart_requested_{false};
  std::uint64_t integrity_logged_ = 0;  // IntegrityLog entries logged so far
  BackingNbd* backing_nbd_ = nullptr;   // backing_, when it is the remote tier
  bool remote_up_ = false;              // as last logged
  bool nbd_loss_told_ = false;         // a lost kernel NBD connection was logged
  std::atomic<bool> swap_on_{false};  // written by start and stop, read by status
  int swap_type_ = -1;  // the kernel's index for our device; -1 = unknown

  // The owners. The destructor takes them down in reverse order of
  // declaration, which is the teardown's order (the last one first):
  //   the control socket; the attribution thread; swap left on for the next
  //   process (or, NBD, turned off); the NBD front end; the loop device
  //   detached; the FUSE file unmounted; the FUSE front end; the reclaim
  //   engine and the shrink worker; the wipe, reserve-refill and stale-writes
  //   threads; the device link; writeback, the store, the backing store; the
  //   attribution's maps; the shared state.
  // Each thread is stopped before what it calls into goes. start() makes
  // them in about this order; three are out of it, and never used after
  // the objects below them go: attribution_ (made once swap is on, from the
  // store), backing_ (made after the store, which it must outlive) and the
  // device link (made with the device, removed late).
  std::unique_ptr<SharedState> state_;  // outlives the store made on it
  std::unique_ptr<Attribution> attribution_;
  std::unique_ptr<BackingStore> backing_;  // outlives the store that writes to it
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<Writeback> writeback_;  // over store_
  TeardownStep remove_link_{[this] { remove_device_link(); }};
  Thread stale_writes_thread_;     // waits out the dead process's writes to backing_
  PeriodicWorker reserve_refill_;  // tops up the pool's reserve of populated spans
  PeriodicWorker wipe_;            // Housekeeping::wipe_freed, with a backing store
  std::unique_ptr<ShrinkWorker> shrinker_;
  std::unique_ptr<Reclaimer> reclaimer_;
  // The front end: FUSE on a loop device ...
  std::unique_ptr<FuseServer> server_;
  std::unique_ptr<FuseWorkers> workers_;
  std::unique_ptr<FuseUring> uring_;  // FUSE-over-io_uring, when INIT agreed on it
  TeardownStep unmount_{[this] { unmount_swap_file(); }};
  LoopDevice loop_;
  TeardownStep release_loop_{[this] { release_loop_device(); }};
  // ... or NBD (--frontend nbd).
  std::unique_ptr<NbdServer> nbd_server_;
  std::unique_ptr<NbdListener> nbd_listener_;
  std::unique_ptr<KernelNbd> kernel_nbd_;  // as swap: /dev/nbdN
  TeardownStep leave_swap_{[this] { leave_swap(); }};
  // Calls into the reclaimer, the store and the attribution: stopped before
  // any of them goes.
  TeardownStep stop_attribution_{[this] { stop_attribution(); }};
  std::unique_ptr<ControlServer> control_;
};

}  // namespace uzswap
