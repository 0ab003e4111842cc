#include "uzswap/fuse/fuse_session.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

#include "uzswap/common/liveness.h"

namespace uzswap {

FuseMount::FuseMount(std::string target, const FuseConfig& config) : target_(std::move(target)) {
  fd_ = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "open /dev/fuse");
  // rootmode 0100000: the root inode is a regular file. No allow_other: only
  // root can open it, and default_permissions lets the kernel check the mode.
  const std::string options = "fd=" + std::to_string(fd_) +
                              ",rootmode=100000,user_id=" + std::to_string(config.uid) +
                              ",group_id=" + std::to_string(config.gid) +
                              ",default_permissions,max_read=" + std::to_string(config.max_write);
  if (mount("uzswap", target_.c_str(), "fuse.uzswap", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            options.c_str()) != 0) {
    const int err = errno;
    close(fd_);
    fd_ = -1;
    throw std::system_error(err, std::generic_category(), "mount FUSE file on " + target_);
  }
  mounted_ = true;
}

FuseMount::~FuseMount() {
  if (mounted_) {
    // Last resort (an error path at start-up): detach lazily; the kernel
    // ends the connection when the last user lets go.
    umount2(target_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
  }
  if (fd_ >= 0) close(fd_);
}

std::error_code FuseMount::unmount() noexcept {
  if (!mounted_) return {};
  if (umount2(target_.c_str(), UMOUNT_NOFOLLOW) != 0)
    return std::error_code(errno, std::generic_category());
  mounted_ = false;
  return {};
}

std::error_code fuse_notify_resend(int fd) noexcept {
  constexpr int kFuseNotifyResend = 7;  // <linux/fuse.h> 7.40; Debian 12's header predates it
  fuse_out_header notify{};
  notify.len = sizeof(notify);
  notify.error = kFuseNotifyResend;
  notify.unique = 0;
  if (write(fd, &notify, sizeof(notify)) != static_cast<ssize_t>(sizeof(notify)))
    return std::error_code(errno, std::generic_category());
  return {};
}

FuseWorkers::FuseWorkers(int fd, FuseServer& server, unsigned count,
                         std::function<void()> thread_init)
    : fd_(fd),
      server_(server),
      thread_init_(std::move(thread_init)),
      request_bytes_(FuseServer::request_buffer_bytes(server.config())),
      reply_bytes_(FuseServer::reply_buffer_bytes(server.config())) {
  busy_since_ = std::make_unique<std::atomic<std::int64_t>[]>(count);
  exited_ = std::make_unique<std::atomic<bool>[]>(count);
  for (unsigned i = 0; i < count; ++i) {
    request_buffers_.push_back(std::make_unique<std::byte[]>(request_bytes_));
    reply_buffers_.push_back(std::make_unique<std::byte[]>(reply_bytes_));
  }
  for (unsigned i = 0; i < count; ++i)
    threads_.emplace_back("uzswap-fuse" + std::to_string(i), [this, i] { run(i); });
}

void FuseWorkers::request_stop() noexcept { stop_.store(true); }

FuseWorkers::~FuseWorkers() {
  for (Thread& t : threads_) t.join();
}

void FuseWorkers::run(unsigned index) noexcept {
  if (thread_init_) {
    try {
      thread_init_();
    } catch (const std::exception& e) {
      liveness::error(std::string("thread set-up: ") + e.what());  // serve anyway
    }
  }
  std::byte* request = request_buffers_[index].get();
  std::byte* reply = reply_buffers_[index].get();
  unsigned failures = 0;  // read errors in a row: backs off
  while (!stop_.load(std::memory_order_relaxed)) {
    liveness::waiting();
    const ssize_t n = read(fd_, request, request_bytes_);
    if (n <= 0) {
      const int err = n == 0 ? EIO : errno;
      // ENOENT: the request was interrupted before we read it.
      if (err == EINTR || err == EAGAIN || err == ENOENT) continue;
      if (err == ENODEV) break;  // unmounted and released: the connection is over
      // Anything else is an error no worker should meet, but ending would
      // leave the connection one worker short (or with none: every swap
      // request then hangs). Count it, say it, back off, read again.
      read_errors_.fetch_add(1, std::memory_order_relaxed);
      liveness::error(std::string("read /dev/fuse: ") + std::strerror(err));
      failures = std::min(failures + 1, 10u);
      std::this_thread::sleep_for(std::chrono::milliseconds(1u << failures));
      continue;
    }
    failures = 0;
    liveness::working();
    busy_since_[index].store(std::chrono::steady_clock::now().time_since_epoch().count(),
                             std::memory_order_relaxed);
    const std::size_t len = server_.handle(std::span(request, static_cast<std::size_t>(n)),
                                           std::span(reply, reply_bytes_));
    if (len > 0) send_reply(std::span(request, static_cast<std::size_t>(n)), std::span(reply, len));
    busy_since_[index].store(0, std::memory_order_relaxed);
    liveness::progressed();
  }
  exited_[index].store(true);
}

void FuseWorkers::send_reply(std::span<const std::byte> request, std::span<const std::byte> reply) noexcept {
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (write(fd_, reply.data(), reply.size()) == static_cast<ssize_t>(reply.size())) return;
    // ENOENT: the kernel gave up on the request (interrupted, aborted): harmless.
    if (errno == ENOENT || errno == ENODEV) return;
    if (errno != EINTR && errno != EAGAIN && errno != ENOMEM) break;
  }
  const int err = errno;
  reply_errors_.fetch_add(1, std::memory_order_relaxed);
  liveness::error(std::string("reply to /dev/fuse: ") + std::strerror(err));
  // The kernel still waits for an answer to this request, and the process
  // that asked would wait in D state forever: answer EIO instead.
  if (request.size() < sizeof(fuse_in_header)) return;
  fuse_in_header in;
  std::memcpy(&in, request.data(), sizeof(in));
  fuse_out_header out{};
  out.len = sizeof(out);
  out.error = -EIO;
  out.unique = in.unique;
  (void)!write(fd_, &out, sizeof(out));
}

FuseWorkers::Health FuseWorkers::health() const noexcept {
  Health h;
  h.read_errors = read_errors_.load(std::memory_order_relaxed);
  h.reply_errors = reply_errors_.load(std::memory_order_relaxed);
  const std::int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  for (unsigned i = 0; i < count(); ++i) {
    if (exited_[i].load()) ++h.exited;
    const std::int64_t since = busy_since_[i].load(std::memory_order_relaxed);
    if (since != 0 && now > since) h.longest_busy = std::max(h.longest_busy, std::chrono::nanoseconds(now - since));
  }
  return h;
}

}  // namespace uzswap
