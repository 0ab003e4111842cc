// FUSE-over-io_uring (Linux 6.14+, fs/fuse/dev_uring.c): the transport in
// which requests arrive on ring entries instead of read(2) on /dev/fuse.
//
// The kernel keeps one queue per possible CPU and puts a request on the
// queue of the CPU that issued it. Each queue needs at least one entry
// before any request flows. An entry is a header buffer (struct
// fuse_uring_req_header: the fuse_in_header, the opcode's first argument,
// and the payload size and commit id) and a payload buffer, handed over
// with an IORING_OP_URING_CMD of FUSE_IO_URING_CMD_REGISTER on /dev/fuse
// (128-byte SQEs; the command area holds struct fuse_uring_cmd_req). The
// command completes when a request is in the entry; the answer goes back
// with FUSE_IO_URING_CMD_COMMIT_AND_FETCH, which also waits for the next
// request: one submission per request, no read or write system calls.
//
// Each thread owns one io_uring and serves the queues q with q % threads
// == its index; with one thread per queue it is pinned to that CPU, so a
// request is answered where it was issued. Requests go through the same
// FuseServer::handle() as on /dev/fuse: the entry's buffers are laid out
// so the request and the reply are contiguous where handle() expects them
// (see fuse_uring.cpp), with no copy of page data.
//
// The threads end when the connection does (each entry's command completes
// with ENOTCONN after the unmount), and only then: an interrupted wait
// (EINTR: SIGSTOP/SIGCONT, a cgroup freeze, a ptrace stop) is waited again,
// an entry whose command failed otherwise is registered again, a command
// that finds no free SQE is submitted on the next turn. A ring thread that
// ended while the connection lives took its queues' entries with it (the
// kernel fails what those queues held): health() counts it, and the daemon
// hands over to a new serving process.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "uzswap/common/thread.h"
#include "uzswap/fuse/fuse_server.h"

namespace uzswap {

class FuseUring {
 public:
  // The kernel's queue count: possible CPUs.
  static unsigned kernel_queues();
  // Whether the fuse module lets connections use io_uring
  // (/sys/module/fuse/parameters/enable_uring).
  static bool kernel_enabled();

  // Starts `threads` threads (at most one per queue) registering `depth`
  // entries on each queue. Needs a connection whose INIT agreed on
  // io_uring (FuseServer::over_io_uring()). Throws std::system_error.
  FuseUring(int fuse_fd, FuseServer& server, unsigned threads, unsigned depth,
            std::function<void()> thread_init);
  ~FuseUring();  // joins: call after the connection has ended
  FuseUring(const FuseUring&) = delete;
  FuseUring& operator=(const FuseUring&) = delete;

  unsigned threads() const noexcept { return static_cast<unsigned>(threads_.size()); }
  unsigned queues() const noexcept { return queues_; }
  // RAM in the entries' header and payload buffers, populated at start.
  std::size_t buffer_bytes() const noexcept { return buffer_bytes_; }
  // Ring threads that ended: every entry of theirs is gone (the connection
  // ended) or their ring failed.
  unsigned exited() const noexcept { return exited_.load(); }

  // The ring threads' decisions, pure so they can be tested.
  // On io_uring_submit_and_wait()'s result (liburing's -errno, never errno):
  enum class WaitOutcome {
    reap,    // completions may be there; an interrupted or refused wait is not an error
    broken,  // the ring itself failed: nothing more can arrive
  };
  static WaitOutcome classify_wait(int rc) noexcept;
  // On an entry's completion (cqe->res):
  enum class EntryOutcome {
    request,         // a request is in the entry: serve it, commit and fetch
    register_again,  // the kernel no longer holds the entry: register it anew
    gone,            // the connection is going away: the entry ends
  };
  static EntryOutcome classify_completion(int res) noexcept;

 private:
  struct Entry;
  struct Worker;
  void run(Worker& worker) noexcept;
  void serve_entry(Worker& worker, Entry& entry) noexcept;

  int fd_;
  FuseServer& server_;
  std::function<void()> thread_init_;
  unsigned queues_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<unsigned> exited_{0};
  std::size_t buffer_bytes_ = 0;
  std::vector<Thread> threads_;
};

}  // namespace uzswap
