// One running uzswapd: the page store served as a FUSE file, attached to a
// loop device, swapped on, and controlled through its socket. This file only
// wires the pieces in lib/ together, in order, and takes them down in reverse.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "uzswap/common/liveness.h"
#include "uzswap/control/control_server.h"
#include "uzswap/daemon/config.h"
#include "uzswap/daemon/safety.h"
#include "uzswap/device/loop_device.h"
#include "uzswap/fuse/fuse_server.h"
#include "uzswap/fuse/fuse_session.h"
#include "uzswap/backing/backing_nbd.h"
#include "uzswap/backing/backing_store.h"
#include "uzswap/store/page_store.h"
#include "uzswap/fuse/fuse_uring.h"
#include "uzswap/nbd/nbd_kernel.h"
#include "uzswap/nbd/nbd_server.h"
#include "uzswap/reclaim/attribution.h"
#include "uzswap/reclaim/reclaimer.h"
#include "uzswap/writeback/shrink_memcg.h"
#include "uzswap/writeback/shrink_worker.h"
#include "uzswap/state/shared_state.h"
#include "handover.h"

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>

namespace uzswap {

class Instance {
 public:
  // A serving process on the fds its supervisor handed over.
  Instance(DaemonConfig config, ServeFds fds);
  ~Instance();

  // Starts everything, serves until SIGTERM/SIGINT and a successful swapoff,
  // then takes everything down. Returns the process exit code.
  int run();

 private:
  void start();
  void start_fuse(unsigned workers, const std::function<void()>& worker_init);
  void start_nbd(unsigned workers, const std::function<void()>& worker_init);
  void serve();
  bool try_stop();
  // One liveness check (a watchdog tick): logs what changed, hands over to a
  // new serving process when a thread is gone or stuck for good. True while
  // a thread is stuck.
  bool check_threads();
  nlohmann::json threads_status() const;
  void swap_type_probe();
  void start_reclaim();
  void update_root_hold();
  nlohmann::json reclaim_status() const;
  void start_attribution();
  void stop_attribution() noexcept;
  nlohmann::json attribute_now();
  std::string cgroup_path(CgroupId id) const;
  std::optional<CgroupId> find_cgroup(const std::string& path) const;
  void teardown() noexcept;
  // Keeps what uzswapctl set in the shared state, for the next process.
  void save_settings() noexcept;
  // Why the next binary cannot take over ("" = it can).
  std::string handover();
  [[noreturn]] void leave_for_new_process();

  std::string handle_control(std::string_view request, Access access);
  nlohmann::json status() const;
  nlohmann::json set_setting(const std::string& key, const std::string& value);
  nlohmann::json writeback(std::uint64_t pages, const std::optional<std::string>& cgroup);
  // The attribution's id -> path map, copied after each pass for status and
  // the control commands, which must never wait on a pass.
  void publish_cgroup_paths();
  std::string summary() const;
  std::string backing_name() const;
  // What is swapped on: the loop device, or /dev/nbdN.
  std::string swap_device() const;

  DaemonConfig config_;
  ServeFds fds_;
  std::unique_ptr<SharedState> state_;  // outlives the store made on it
  std::atomic<bool> restart_requested_{false};
  std::uint64_t integrity_logged_ = 0;  // IntegrityLog entries logged so far
  void log_integrity_errors();
  void start_wipe();
  void stop_wipe() noexcept;
  Thread wipe_thread_;  // PageStore::wipe_freed, with a backing file
  std::mutex wipe_lock_;
  std::condition_variable wipe_wakeup_;
  bool wipe_stop_ = false;  // guarded by wipe_lock_
  LivenessMonitor liveness_{60};  // its limit is set from the tick in serve()
  mutable std::mutex paths_lock_;
  std::map<CgroupId, std::string> cgroup_paths_;  // guarded by paths_lock_
  // The attribution's id use, as of its last pass; guarded by paths_lock_.
  struct CgroupIds {
    std::uint64_t live = 0, free = 0;
    UntrackedCgroups untracked;
  } cgroup_ids_;
  // set_setting writes config_'s live settings, status reads them.
  mutable std::mutex settings_lock_;
  Thread stale_writes_thread_;
  std::uint64_t ram_bytes_;
  std::chrono::steady_clock::time_point started_;
  std::unique_ptr<BackingStore> backing_;  // outlives the store that writes to it
  BackingNbd* backing_nbd_ = nullptr;      // backing_, when it is the remote tier
  bool remote_up_ = false;                 // as last logged
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<Writeback> writeback_;  // over store_
  std::unique_ptr<ShrinkWorker> shrinker_;
  // Tops up the pool's reserve of populated spans ahead of the stores.
  void start_reserve_refill();
  void stop_reserve_refill() noexcept;
  Thread reserve_thread_;
  std::atomic<bool> reserve_stop_{false};
  std::unique_ptr<Reclaimer> reclaimer_;
  std::unique_ptr<FuseServer> server_;
  std::unique_ptr<FuseWorkers> workers_;
  std::unique_ptr<FuseUring> uring_;  // FUSE-over-io_uring, when INIT agreed on it
  std::unique_ptr<NbdServer> nbd_server_;      // --frontend nbd
  std::unique_ptr<NbdListener> nbd_listener_;
  std::unique_ptr<KernelNbd> kernel_nbd_;      // --frontend nbd as swap: /dev/nbdN
  LoopDevice loop_;
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<Attribution> attribution_;
  mutable std::mutex attribution_lock_;  // one pass at a time; guards attribution_'s maps
  std::condition_variable attribution_wakeup_;
  bool attribution_stop_ = false;
  std::atomic<bool> attribution_kick_{false};  // a pressure event asks for a pass
  AttributionPass last_pass_;
  Thread attribution_thread_;
  bool swap_on_ = false;
  int swap_type_ = -1;  // the kernel's index for our device; -1 = unknown
};

}  // namespace uzswap
