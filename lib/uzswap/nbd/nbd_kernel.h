// The kernel's NBD client as the swap device: /dev/nbdN connected to this
// daemon over socketpairs through the nbd generic-netlink interface
// (NBD_CMD_CONNECT with the kernel's ends of the pairs), so the kernel
// speaks the transmission phase (no handshake, simple replies) to an
// NbdServer on the daemon's ends, one thread and buffer per pair, made
// here. The daemon asks for one pair: with two, Linux 6.1 in the VM rig
// once stopped reading the replies on one of them, and the daemon's thread,
// blocked sending a reply, left the kernel's senders blocked behind it. The kernel marks an nbd socket for memory reserves when the device
// is swap; the daemon's side never waits for memory (NbdServer allocates
// nothing per request).
//
// A serving process that dies takes its socket ends with it and the kernel
// fails the device's I/O: unlike FUSE, this front end does not yet survive
// the serving process (NBD_CMD_RECONFIGURE with new sockets from the next
// process, within a dead-connection timeout, would).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "uzswap/common/thread.h"
#include "uzswap/nbd/nbd_server.h"

namespace uzswap {

class KernelNbd {
 public:
  // True when the kernel has the nbd netlink family (the module is loaded
  // or loads on demand).
  static bool available() noexcept;

  // Connects a free /dev/nbdN to `server` over `queues` socketpairs, with
  // 4096-byte blocks and the server's size. Throws std::system_error (ENOENT:
  // the kernel has no nbd netlink family; else the kernel's reason).
  KernelNbd(NbdServer& server, unsigned queues, std::function<void()> thread_init);
  ~KernelNbd();  // NBD_CMD_DISCONNECT, then joins the threads
  KernelNbd(const KernelNbd&) = delete;
  KernelNbd& operator=(const KernelNbd&) = delete;

  const std::string& path() const noexcept { return path_; }
  unsigned index() const noexcept { return index_; }

  // A connection whose serving loop ended before disconnect() was asked
  // for, and why: the kernel's requests on it wait unanswered (the daemon
  // says so loudly). nullopt while every connection is served.
  struct Lost {
    unsigned queue;
    NbdEnd end;
  };
  std::optional<Lost> lost() const noexcept;

 private:
  struct Queue {
    int fd = -1;  // the daemon's end
    std::unique_ptr<std::byte[]> buffer;
    Thread thread;
    std::atomic<bool> ended{false};  // its loop returned
    std::atomic<NbdEnd> end{NbdEnd::aborted};
  };
  void disconnect() noexcept;

  NbdServer& server_;
  unsigned index_ = 0;
  std::string path_;
  std::vector<std::unique_ptr<Queue>> queues_;
  bool connected_ = false;
  std::atomic<bool> disconnecting_{false};
};

}  // namespace uzswap
