// The supervisor: the process `uzswapd` starts as. It holds what must outlive
// a serving process (the instance lock, the FUSE connection, the shared state
// memfds, the loop device) and runs the serving process (Instance, the same
// binary with kServeEnv set), starting a new one whenever it dies or asks to
// be replaced. While no serving process runs, the kernel's requests wait in
// the FUSE connection; the next process adopts the state and asks for the
// unanswered ones again. Under systemd the same fds also go to the service's
// file descriptor store, so a restart of the whole unit finds them.
//
// It is small on purpose: it allocates only at start-up, touches no pool
// memory, and does no I/O on the swap path.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "handover.h"
#include "uzswap/daemon/config.h"
#include "uzswap/daemon/safety.h"
#include "uzswap/device/loop_device.h"
#include "uzswap/fuse/fuse_session.h"
#include "uzswap/nbd/nbd_listen.h"
#include "uzswap/state/shared_state.h"

namespace uzswap {

class Supervisor {
 public:
  Supervisor(DaemonConfig config, std::vector<std::string> argv);
  ~Supervisor();

  // Sets everything up, runs serving processes until one stops cleanly, and
  // returns the exit code.
  int run();

 private:
  void start();
  void clean_dead_area();
  void adopt_or_create_state();
  void mount_fuse();
  void listen_nbd();
  void store_fds_with_systemd();
  pid_t spawn();
  // What to do after the serving process ended with `status`: true = go on
  // (a new one was or will be started).
  bool on_exit(int status);
  void hold_loop_device();

  DaemonConfig config_;
  std::vector<std::string> argv_;
  std::string binary_;
  std::unique_ptr<InstanceLock> lock_;
  std::unique_ptr<SharedState> state_;
  std::unique_ptr<FuseMount> mount_;
  int fuse_fd_ = -1;          // adopted from systemd, when there is no mount_
  int nbd_listen_fd_ = -1;    // --frontend nbd: the listening socket, handed to each serving process
  ListenAddress nbd_address_;
  LoopDevice loop_;           // held so the device outlives a serving process
  pid_t child_ = -1;
  bool stopping_ = false;     // SIGTERM: the next clean exit ends the supervisor
  unsigned quick_deaths_ = 0; // serving processes that died soon after starting
};

}  // namespace uzswap
