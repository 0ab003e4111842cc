#include "uzswap/control/control_server.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "uzswap/common/liveness.h"
#include "uzswap/common/mutex.h"
#include "uzswap/common/thread.h"
#include "uzswap/control/protocol.h"

// Threads: the loop thread owns the listening socket, the epoll set and every
// Connection; the three handler threads ("lanes") only see Jobs and hand back
// Replies. The two meet in Lane::lock (jobs) and Impl::replies_lock
// (replies, then a write to wake_fd). No lock is held while calling the
// handler or doing I/O, and none is taken while holding another (stats_lock
// included).

namespace uzswap {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kListenKey = 0;
constexpr std::uint64_t kWakeKey = ~std::uint64_t{0};
// After EMFILE/ENFILE the listening socket stays readable: stop accepting
// for a moment instead of spinning.
constexpr auto kAcceptPause = std::chrono::milliseconds(100);

Result<sockaddr_un> socket_address(const std::string& path) noexcept {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return failure(std::make_error_code(std::errc::filename_too_long));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// One best-effort line to a peer about to be dropped; its socket buffer is
// empty, so a line fits.
void tell(int fd, const std::string& line) noexcept {
  (void)!send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

// The peer's supplementary groups as the kernel recorded them at connect.
std::vector<gid_t> peer_groups(int fd) {
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    if (errno != ERANGE) break;
    groups.resize(len / sizeof(gid_t) + 1);  // ERANGE tells the size needed
  }
  return {};
}

std::string seconds(std::chrono::milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g s", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

}  // namespace

struct ControlServer::Impl {
  enum class State {
    reading,   // waiting for (the rest of) a request line, or idle
    handling,  // a request is with a handler thread; nothing is read meanwhile
    writing,   // the reply is being sent
  };
  struct Connection {
    int fd = -1;  // -1: the peer hung up while its request was handled
    uid_t uid = 0;
    Access access = Access::none;
    State state = State::reading;
    std::string in;   // bytes received and not yet dispatched
    std::string out;  // reply bytes not yet sent
    bool close_after_write = false;
    Clock::time_point deadline;  // of the current state; none while handling
  };
  struct Job {
    std::uint64_t key;
    std::string line;
    Access access;
  };
  struct Reply {
    std::uint64_t key;
    std::string line;
  };
  struct Lane {
    Mutex lock;
    CondVar ready;
    std::deque<Job> jobs GUARDED_BY(lock);
    Thread thread;
  };
  enum LaneIndex { kAdminLane, kSlowLane, kOtherLane, kLanes };

  std::string path;
  ControlServerOptions options;
  ControlHandler handler;
  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;  // eventfd: replies are ready, or stop
  std::atomic<bool> stopping{false};

  std::array<Lane, kLanes> lanes;
  Mutex replies_lock;
  std::vector<Reply> replies GUARDED_BY(replies_lock);

  // The loop thread's alone.
  std::unordered_map<std::uint64_t, Connection> connections;
  std::unordered_map<uid_t, unsigned> per_uid;
  unsigned root_connections = 0;
  unsigned other_connections = 0;
  std::uint64_t next_key = 1;
  std::optional<Clock::time_point> accept_paused_until;

  mutable Mutex stats_lock;
  ControlServerStats counters GUARDED_BY(stats_lock);

  Thread loop_thread;

  Impl(std::string p, const ControlServerOptions& o, ControlHandler h)
      : path(std::move(p)), options(o), handler(std::move(h)) {}

  template <typename F>
  void count(F change) {
    MutexLock guard(stats_lock);
    change(counters);
  }

  void start();
  void stop() noexcept;
  void loop() noexcept;
  void lane_loop(Lane& lane) noexcept;
  void accept_all() noexcept;
  void on_event(std::uint64_t key, std::uint32_t events) noexcept;
  void read_from(std::uint64_t key, Connection& c) noexcept;
  bool dispatch(std::uint64_t key, Connection& c) noexcept;
  void write_to(std::uint64_t key, Connection& c) noexcept;
  void finish_reply(std::uint64_t key, Connection& c) noexcept;
  void take_replies() noexcept;
  void expire(Clock::time_point now) noexcept;
  int next_timeout_ms(Clock::time_point now) const noexcept;
  void watch(std::uint64_t key, const Connection& c, std::uint32_t events) noexcept;
  void close_connection(std::uint64_t key) noexcept;
};

Access ControlServer::access_for(uid_t uid, gid_t gid, std::span<const gid_t> groups,
                                 std::optional<gid_t> reader_group) noexcept {
  if (uid == 0) return Access::admin;
  if (reader_group &&
      (gid == *reader_group || std::find(groups.begin(), groups.end(), *reader_group) != groups.end()))
    return Access::reader;
  return Access::none;
}

ControlServer::ControlServer(std::string path, std::optional<gid_t> reader_group,
                             ControlHandler handler)
    : ControlServer(std::move(path), ControlServerOptions{.reader_group = reader_group},
                    std::move(handler)) {}

ControlServer::ControlServer(std::string path, const ControlServerOptions& options,
                             ControlHandler handler)
    : impl_(std::make_unique<Impl>(std::move(path), options, std::move(handler))) {
  impl_->start();
}

ControlServer::~ControlServer() { impl_->stop(); }

const std::string& ControlServer::path() const noexcept { return impl_->path; }

ControlServerStats ControlServer::stats() const {
  MutexLock guard(impl_->stats_lock);
  return impl_->counters;
}

void ControlServer::Impl::start() {
  const auto addr = socket_address(path);
  if (!addr) throw std::system_error(addr.error(), "socket path " + path);
  const auto fail = [this](std::error_code error, const std::string& what) {
    if (listen_fd >= 0) close(listen_fd);
    if (epoll_fd >= 0) close(epoll_fd);
    if (wake_fd >= 0) close(wake_fd);
    throw std::system_error(error, what);
  };
  listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd < 0) fail(errno_error(), "socket");
  unlink(path.c_str());  // a stale socket of a daemon that died; we hold the instance lock
  if (bind(listen_fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0 ||
      listen(listen_fd, 128) != 0)
    fail(errno_error(), "bind " + path);
  // Anyone may connect, so that a refused peer gets a reason, not EACCES;
  // access is decided from the peer's credentials.
  chmod(path.c_str(), 0666);
  epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd < 0 || wake_fd < 0) {
    const std::error_code error = errno_error();
    unlink(path.c_str());
    fail(error, "epoll/eventfd");
  }
  epoll_event listen_event{EPOLLIN, {.u64 = kListenKey}};
  epoll_event wake_event{EPOLLIN, {.u64 = kWakeKey}};
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &listen_event);
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &wake_event);
  static constexpr const char* kLaneNames[kLanes] = {"uzswap-ctl-root", "uzswap-ctl-slow",
                                                     "uzswap-ctl-user"};
  for (int i = 0; i < kLanes; ++i)
    lanes[i].thread = Thread(kLaneNames[i], [this, i] { lane_loop(lanes[i]); });
  loop_thread = Thread("uzswap-control", [this] { loop(); });
}

void ControlServer::Impl::stop() noexcept {
  stopping = true;
  for (Lane& lane : lanes) {
    // Under the lock: a lane between its check and its wait is not missed.
    MutexLock guard(lane.lock);
    lane.ready.notify_all();
  }
  const std::uint64_t one = 1;
  (void)!write(wake_fd, &one, sizeof(one));
  loop_thread.join();
  for (Lane& lane : lanes) lane.thread.join();  // handlers in progress finish
  for (auto& [key, c] : connections)
    if (c.fd >= 0) close(c.fd);
  close(wake_fd);
  close(epoll_fd);
  close(listen_fd);
  unlink(path.c_str());
}

void ControlServer::Impl::lane_loop(Lane& lane) noexcept {
  for (;;) {
    Job job;
    liveness::waiting();
    {
      MutexLock guard(lane.lock);
      while (!stopping && lane.jobs.empty()) lane.ready.wait(lane.lock);
      if (stopping) return;
      job = std::move(lane.jobs.front());
      lane.jobs.pop_front();
    }
    Reply reply{job.key, {}};
    liveness::working();
    try {
      reply.line = handler(job.line, job.access);
    } catch (const std::exception& e) {
      reply.line = control::error_line("internal error");
      liveness::error(std::string("control request: ") + e.what());
    } catch (...) {
      reply.line = control::error_line("internal error");
      liveness::error("control request: unknown exception");
    }
    liveness::progressed();
    reply.line.push_back('\n');
    {
      MutexLock guard(replies_lock);
      replies.push_back(std::move(reply));
    }
    const std::uint64_t one = 1;
    (void)!write(wake_fd, &one, sizeof(one));
  }
}

void ControlServer::Impl::loop() noexcept {
  std::array<epoll_event, 64> events;
  for (;;) {
    liveness::waiting();
    const int n = epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()),
                             next_timeout_ms(Clock::now()));
    if (n < 0 && errno != EINTR) {
      // Cannot happen on a valid epoll fd; the control socket is dead now:
      // say so, the liveness check hands over to a new serving process.
      liveness::failed(std::string("control epoll_wait: ") + std::strerror(errno));
      return;
    }
    liveness::working();
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = events[i].data.u64;
      if (key == kWakeKey) {
        std::uint64_t ignored;
        (void)!read(wake_fd, &ignored, sizeof(ignored));
        if (stopping) return;
        take_replies();
      } else if (key == kListenKey) {
        accept_all();
      } else {
        on_event(key, events[i].events);
      }
    }
    expire(Clock::now());
    liveness::progressed();
  }
}

int ControlServer::Impl::next_timeout_ms(Clock::time_point now) const noexcept {
  std::optional<Clock::time_point> next = accept_paused_until;
  for (const auto& [key, c] : connections)
    if (c.fd >= 0 && c.state != State::handling && (!next || c.deadline < *next)) next = c.deadline;
  if (!next) return -1;
  if (*next <= now) return 0;
  return static_cast<int>(
      std::chrono::ceil<std::chrono::milliseconds>(*next - now).count());
}

void ControlServer::Impl::watch(std::uint64_t key, const Connection& c,
                                std::uint32_t events) noexcept {
  epoll_event e{events, {.u64 = key}};
  epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &e);
}

void ControlServer::Impl::accept_all() noexcept {
  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        epoll_event none{0, {.u64 = kListenKey}};
        epoll_ctl(epoll_fd, EPOLL_CTL_MOD, listen_fd, &none);
        accept_paused_until = Clock::now() + kAcceptPause;
      }
      return;  // EAGAIN: all taken
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      close(fd);
      continue;
    }
    // Groups only matter for a non-root peer when there is a stats group.
    const std::vector<gid_t> groups =
        cred.uid != 0 && options.reader_group && cred.gid != *options.reader_group ? peer_groups(fd)
                                                                                   : std::vector<gid_t>{};
    const Access access = ControlServer::access_for(cred.uid, cred.gid, groups, options.reader_group);
    if (access == Access::none) {
      // Counted before the peer hears it: whoever reads the stats after the
      // refusal sees it.
      count([](ControlServerStats& s) { ++s.refused_access; });
      tell(fd, control::error_line("permission denied: uid " + std::to_string(cred.uid) +
                                   " is not root" +
                                   (options.reader_group ? " and not in the stats group" : "")) +
                   "\n");
      close(fd);
      continue;
    }
    const bool root = cred.uid == 0;
    unsigned& mine = per_uid[cred.uid];
    const bool over = root ? root_connections >= options.max_root_connections
                           : other_connections >= options.max_other_connections ||
                                 mine >= options.max_connections_per_uid;
    if (over) {
      if (mine == 0) per_uid.erase(cred.uid);
      count([](ControlServerStats& s) { ++s.refused_connections; });  // before the peer hears it
      tell(fd, control::error_line("too many connections to uzswapd from uid " +
                                   std::to_string(cred.uid) + "; close some and retry") +
                   "\n");
      close(fd);
      continue;
    }
    ++mine;
    ++(root ? root_connections : other_connections);
    const std::uint64_t key = next_key++;
    Connection& c = connections[key];
    c.fd = fd;
    c.uid = cred.uid;
    c.access = access;
    c.deadline = Clock::now() + options.idle_timeout;
    epoll_event e{EPOLLIN, {.u64 = key}};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &e);
    count([&](ControlServerStats& s) {
      ++s.accepted;
      s.open = static_cast<unsigned>(connections.size());
    });
  }
}

void ControlServer::Impl::on_event(std::uint64_t key, std::uint32_t events) noexcept {
  const auto it = connections.find(key);
  if (it == connections.end() || it->second.fd < 0) return;
  Connection& c = it->second;
  if (c.state == State::reading && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
    read_from(key, c);  // may close
    return;
  }
  if (c.state == State::writing && (events & EPOLLOUT)) {
    write_to(key, c);
    return;
  }
  if (events & (EPOLLHUP | EPOLLERR)) {
    if (c.state == State::handling) {
      // Gone while its request runs: keep its place (and its share of the
      // caps) until the handler is done, so that hanging up cannot be used
      // to queue more work than the caps allow.
      close(c.fd);
      c.fd = -1;
    } else {
      close_connection(key);
    }
  }
}

void ControlServer::Impl::read_from(std::uint64_t key, Connection& c) noexcept {
  char chunk[4096];
  for (;;) {
    // Never hold more than a request's worth: the rest waits in the socket.
    if (c.in.size() > options.max_request_bytes) break;
    const ssize_t n = recv(c.fd, chunk, sizeof(chunk), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_connection(key);
      return;
    }
    if (n == 0) {
      // The peer is done sending: answer a last complete line, if any.
      if (c.in.find('\n') == std::string::npos) {
        close_connection(key);
        return;
      }
      c.close_after_write = true;
      break;
    }
    if (c.in.empty()) c.deadline = Clock::now() + options.request_timeout;  // a request starts
    c.in.append(chunk, static_cast<std::size_t>(n));
    if (c.in.find('\n', c.in.size() - static_cast<std::size_t>(n)) != std::string::npos) break;
  }
  dispatch(key, c);
}

// Hands the first complete line in `c.in` to a handler thread, or refuses an
// oversized one. Returns false if nothing was complete.
bool ControlServer::Impl::dispatch(std::uint64_t key, Connection& c) noexcept {
  const std::size_t newline = c.in.find('\n');
  if (newline == std::string::npos || newline > options.max_request_bytes) {
    if (c.in.size() <= options.max_request_bytes) return false;
    count([](ControlServerStats& s) { ++s.oversized; });
    c.in.clear();
    c.out = control::error_line("request line longer than " +
                                std::to_string(options.max_request_bytes) + " bytes") + "\n";
    c.close_after_write = true;
    c.state = State::writing;
    c.deadline = Clock::now() + options.reply_timeout;
    write_to(key, c);
    return true;
  }
  Job job{key, c.in.substr(0, newline), c.access};
  c.in.erase(0, newline + 1);
  c.state = State::handling;
  watch(key, c, 0);  // nothing more is read until the reply is out; hangups still show
  count([](ControlServerStats& s) { ++s.requests; });
  int lane = kOtherLane;
  if (c.access == Access::admin) {
    const auto request = control::parse_request(job.line);
    lane = request && control::is_slow(request->command) ? kSlowLane : kAdminLane;
  }
  {
    MutexLock guard(lanes[lane].lock);
    lanes[lane].jobs.push_back(std::move(job));
  }
  lanes[lane].ready.notify_one();
  return true;
}

void ControlServer::Impl::take_replies() noexcept {
  std::vector<Reply> ready;
  {
    MutexLock guard(replies_lock);
    ready.swap(replies);
  }
  for (Reply& reply : ready) {
    const auto it = connections.find(reply.key);
    if (it == connections.end()) continue;
    Connection& c = it->second;
    if (c.fd < 0) {
      close_connection(reply.key);  // hung up meanwhile: drop the reply
      continue;
    }
    c.out = std::move(reply.line);
    c.state = State::writing;
    c.deadline = Clock::now() + options.reply_timeout;
    write_to(reply.key, c);
  }
}

void ControlServer::Impl::write_to(std::uint64_t key, Connection& c) noexcept {
  while (!c.out.empty()) {
    const ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        watch(key, c, EPOLLOUT);  // the peer must read; reply_timeout runs
        return;
      }
      close_connection(key);
      return;
    }
    c.out.erase(0, static_cast<std::size_t>(n));
  }
  finish_reply(key, c);
}

void ControlServer::Impl::finish_reply(std::uint64_t key, Connection& c) noexcept {
  if (c.close_after_write && c.in.find('\n') == std::string::npos) {
    close_connection(key);
    return;
  }
  c.state = State::reading;
  // A request the client sent behind the last one goes next.
  if (dispatch(key, c)) return;
  c.deadline = Clock::now() + (c.in.empty() ? options.idle_timeout : options.request_timeout);
  watch(key, c, EPOLLIN);
}

void ControlServer::Impl::expire(Clock::time_point now) noexcept {
  if (accept_paused_until && *accept_paused_until <= now) {
    accept_paused_until.reset();
    epoll_event e{EPOLLIN, {.u64 = kListenKey}};
    epoll_ctl(epoll_fd, EPOLL_CTL_MOD, listen_fd, &e);
  }
  std::vector<std::uint64_t> expired;
  for (const auto& [key, c] : connections)
    if (c.fd >= 0 && c.state != State::handling && c.deadline <= now) expired.push_back(key);
  for (const std::uint64_t key : expired) {
    Connection& c = connections[key];
    if (c.state == State::reading && !c.in.empty())
      tell(c.fd, control::error_line("request not complete within " + seconds(options.request_timeout)) +
                     "\n");
    count([](ControlServerStats& s) { ++s.timed_out; });
    close_connection(key);
  }
}

void ControlServer::Impl::close_connection(std::uint64_t key) noexcept {
  const auto it = connections.find(key);
  if (it == connections.end()) return;
  Connection& c = it->second;
  if (c.fd >= 0) close(c.fd);  // also leaves the epoll set
  if (c.uid == 0) {
    --root_connections;
  } else {
    --other_connections;
  }
  if (--per_uid[c.uid] == 0) per_uid.erase(c.uid);
  connections.erase(it);
  count([&](ControlServerStats& s) { s.open = static_cast<unsigned>(connections.size()); });
}

// ---------------------------------------------------------------------------
// The client.

namespace {

using ClientClock = std::chrono::steady_clock;

int remaining_ms(ClientClock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - ClientClock::now());
  return static_cast<int>(std::max<std::int64_t>(0, left.count()));
}

const char* describe(ControlClientError error) noexcept {
  switch (error) {
    case ControlClientError::not_running: return "uzswapd is not running";
    case ControlClientError::not_accepting: return "uzswapd is not answering: no connection accepted in time";
    case ControlClientError::request_not_taken: return "uzswapd is not answering: the request was not taken in time";
    case ControlClientError::no_reply: return "uzswapd is not answering: no reply in time";
    case ControlClientError::closed: return "uzswapd closed the connection";
  }
  return "unknown control client error";
}

}  // namespace

const std::error_category& control_client_category() noexcept {
  static const ErrorCategory<ControlClientError> category("uzswap.control_client", describe);
  return category;
}

std::error_code make_error_code(ControlClientError error) noexcept {
  return {static_cast<int>(error), control_client_category()};
}

bool ControlClient::not_answering(std::error_code error) noexcept {
  return error == ControlClientError::not_accepting || error == ControlClientError::request_not_taken ||
         error == ControlClientError::no_reply;
}

std::string ControlClient::describe(std::error_code error, const std::string& path,
                                    std::chrono::milliseconds timeout) {
  if (not_answering(error)) {
    const char* what = error == ControlClientError::not_accepting       ? "no connection accepted"
                       : error == ControlClientError::request_not_taken ? "the request was not taken"
                                                                        : "no reply";
    return "uzswapd is not answering: " + std::string(what) + " within " + seconds(timeout) + " on " + path +
           " (is it stopped, stuck or overloaded?)";
  }
  if (error == ControlClientError::not_running) return "uzswapd is not running (nothing listens on " + path + ")";
  if (error == ControlClientError::closed) return "uzswapd closed the connection";
  if (error == std::errc::permission_denied) return "permission denied on " + path + " (run as root)";
  return "cannot talk to uzswapd on " + path + ": " + error.message();
}

Result<ControlClient> ControlClient::connect(const std::string& path, std::chrono::milliseconds timeout) {
  const auto addr = socket_address(path);
  if (!addr) return failure(addr.error());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return failure(errno_error());
  const auto deadline = ClientClock::now() + timeout;
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) == 0) break;
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN && remaining_ms(deadline) > 0) {
      // A unix socket whose queue is full: the daemon is not accepting.
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(10, remaining_ms(deadline))));
      continue;
    }
    close(fd);
    if (err == EAGAIN) return failure(ControlClientError::not_accepting);
    if (err == ENOENT || err == ECONNREFUSED) return failure(ControlClientError::not_running);
    return failure(errno_error(err));
  }
  return ControlClient(fd);
}

ControlClient::~ControlClient() {
  if (fd_ >= 0) close(fd_);
}

ControlClient::ControlClient(ControlClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), pending_(std::move(other.pending_)) {}

ControlClient& ControlClient::operator=(ControlClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    pending_ = std::move(other.pending_);
  }
  return *this;
}

Result<std::string> ControlClient::request(std::string_view line, std::chrono::milliseconds timeout) {
  const auto deadline = ClientClock::now() + timeout;
  std::string out(line);
  out.push_back('\n');
  std::string_view unsent = out;
  // A peer the daemon refuses is sent its reason and disconnected before
  // its request is read: if sending fails, the reason may still be waiting.
  int send_errno = 0;
  while (!unsent.empty()) {
    const ssize_t n = send(fd_, unsent.data(), unsent.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      unsent.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      send_errno = errno;
      break;
    }
    pollfd p{fd_, POLLOUT, 0};
    if (poll(&p, 1, remaining_ms(deadline)) == 0) return failure(ControlClientError::request_not_taken);
  }
  char chunk[4096];
  for (;;) {
    const std::size_t newline = pending_.find('\n');
    if (newline != std::string::npos) {
      std::string reply = pending_.substr(0, newline);
      pending_.erase(0, newline + 1);
      return reply;
    }
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      pending_.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd_, POLLIN, 0};
      const int ready = poll(&p, 1, remaining_ms(deadline));
      if (ready == 0) return failure(ControlClientError::no_reply);
      if (ready < 0 && errno != EINTR) return failure(errno_error());
      continue;
    }
    if (send_errno != 0) return failure(errno_error(send_errno));
    return failure(ControlClientError::closed);
  }
}

}  // namespace uzswap
