// Mounting the FUSE file and serving it with a fixed pool of worker threads.
//
// FuseMount opens /dev/fuse and mounts a file system whose root is a regular
// file onto `target`, an existing regular file: the mount point *is* the
// swap file. FuseWorkers starts `count` threads, each with its own request and
// reply buffers, that read requests from the device, hand them to the
// FuseServer and write the replies. They stop when the kernel ends the
// connection (ENODEV), which happens once the file system is unmounted and
// nothing holds the file open any more, and only then: any other read error
// is counted, reported to the liveness registry and read again after a
// back-off; a reply the kernel refuses is sent again, and if it still fails,
// replaced by an EIO answer (a request left unanswered hangs its caller).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "uzswap/common/thread.h"
#include "uzswap/fuse/fuse_server.h"

namespace uzswap {

class FuseMount {
 public:
  FuseMount(std::string target, const FuseConfig& config);  // throws std::system_error
  ~FuseMount();
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;

  int fd() const noexcept { return fd_; }
  const std::string& target() const noexcept { return target_; }
  bool mounted() const noexcept { return mounted_; }

  // Unmounts; fails with EBUSY while the file is open (the loop device holds
  // it), and then changes nothing.
  std::error_code unmount() noexcept;

 private:
  std::string target_;
  int fd_ = -1;
  bool mounted_ = false;
};

// Asks the kernel to send again every request that a server of this
// connection read but never answered (FUSE_NOTIFY_RESEND, Linux 6.9): what a
// new serving process does first. Reads, writes and discards of a slot are
// idempotent, so a request served twice is harmless.
std::error_code fuse_notify_resend(int fd) noexcept;

class FuseWorkers {
 public:
  // `thread_init` runs first on each worker (compressor set-up, I/O flusher).
  FuseWorkers(int fd, FuseServer& server, unsigned count, std::function<void()> thread_init);
  ~FuseWorkers();  // joins: call after the connection has ended
  FuseWorkers(const FuseWorkers&) = delete;
  FuseWorkers& operator=(const FuseWorkers&) = delete;

  unsigned count() const noexcept { return static_cast<unsigned>(threads_.size()); }

  // Liveness, for the watchdog: workers that ended (the connection is gone,
  // or an error no worker should meet), and the longest time any worker has
  // been busy with one request (0 when all wait for the next one).
  struct Health {
    unsigned exited = 0;
    std::chrono::nanoseconds longest_busy{0};
    std::uint64_t read_errors = 0;   // reads that failed with an unexpected error
    std::uint64_t reply_errors = 0;  // replies the kernel refused (answered EIO instead)
  };
  Health health() const noexcept;

  // Tests only: workers end at their next turn (a worker blocked in read()
  // on /dev/fuse stays there until a request or the connection's end).
  void request_stop() noexcept;

 private:
  void run(unsigned index) noexcept;
  void send_reply(std::span<const std::byte> request, std::span<const std::byte> reply) noexcept;

  int fd_;
  FuseServer& server_;
  std::function<void()> thread_init_;
  std::vector<std::unique_ptr<std::byte[]>> request_buffers_;
  std::vector<std::unique_ptr<std::byte[]>> reply_buffers_;
  std::size_t request_bytes_;
  std::size_t reply_bytes_;
  std::vector<Thread> threads_;
  // Per worker: when it took its current request (steady clock, ns; 0 =
  // waiting), and whether it ended.
  std::unique_ptr<std::atomic<std::int64_t>[]> busy_since_;
  std::unique_ptr<std::atomic<bool>[]> exited_;
  std::atomic<std::uint64_t> read_errors_{0};
  std::atomic<std::uint64_t> reply_errors_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace uzswap
