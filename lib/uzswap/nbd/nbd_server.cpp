#include "uzswap/nbd/nbd_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "uzswap/common/result.h"

namespace uzswap {

namespace {

using namespace nbd;

// The buffer: a scratch part for the handshake (option data, then the
// reply) whose last bytes also hold reply headers, then the data part, so
// that a read's reply header and data leave in one send.
constexpr std::size_t kScratchBytes = 64u << 10;
constexpr std::size_t kReplyAt = 16u << 10;      // handshake replies in the scratch part
constexpr unsigned kMaxOptions = 256;            // options one handshake may send
constexpr std::size_t kHeaderRoom = 32;          // before the data part: the largest reply header

enum class Io : std::uint8_t { ok, eof, timeout, error };

Io recv_all(int fd, std::byte* p, std::size_t n) noexcept {
  while (n > 0) {
    const ssize_t r = recv(fd, p, n, MSG_WAITALL);
    if (r > 0) {
      p += r;
      n -= static_cast<std::size_t>(r);
    } else if (r == 0) {
      return Io::eof;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return Io::timeout;
    } else if (errno != EINTR) {
      return Io::error;
    }
  }
  return Io::ok;
}

Io send_all(int fd, const std::byte* p, std::size_t n) noexcept {
  while (n > 0) {
    const ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) {
      p += r;
      n -= static_cast<std::size_t>(r);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return Io::timeout;
    } else if (errno != EINTR) {
      return Io::error;
    }
  }
  return Io::ok;
}

void set_timeout(int fd, int option, std::chrono::milliseconds timeout) noexcept {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000);
  setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv));
}

NbdEnd end_of(Io io) noexcept {
  switch (io) {
    case Io::eof: return NbdEnd::eof;
    case Io::timeout: return NbdEnd::timeout;
    default: return NbdEnd::io_error;
  }
}

}  // namespace

const char* to_string(NbdEnd end) noexcept {
  switch (end) {
    case NbdEnd::aborted: return "aborted";
    case NbdEnd::disconnected: return "the client disconnected";
    case NbdEnd::eof: return "the client closed the connection";
    case NbdEnd::protocol_error: return "a protocol error";
    case NbdEnd::timeout: return "a timeout";
    case NbdEnd::io_error: return "a socket error";
  }
  return "unknown";
}

NbdServer::NbdServer(PageStore& store, const NbdConfig& config) : config_(config), io_(store) {
  if (config_.export_name.size() > 256 || config_.description.size() > 1024)
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "NBD export name or description too long");
  config_.max_block = std::max<std::uint32_t>(config_.max_block, static_cast<std::uint32_t>(kPageSize));
  config_.chunk_bytes = std::clamp<std::uint32_t>(config_.chunk_bytes / kPageSize * kPageSize,
                                                  static_cast<std::uint32_t>(kPageSize), config_.max_block);
  info_.size_bytes = config_.size_bytes;
  info_.name = config_.export_name;
  info_.description = config_.description;
  info_.min_block = static_cast<std::uint32_t>(kPageSize);
  info_.preferred_block = static_cast<std::uint32_t>(kPageSize);
  info_.max_block = config_.max_block;
  // Every connection sees every other's writes at once (one store behind
  // them all), and a write is as durable as it gets when it is answered:
  // FLUSH and FUA have nothing to do, and are accepted.
  info_.transmission_flags = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendTrim | kFlagSendWriteZeroes |
                             kFlagCanMultiConn;
}

std::size_t NbdServer::buffer_bytes() const noexcept { return kScratchBytes + config_.chunk_bytes; }

void NbdServer::count_connection(int delta) noexcept {
  if (delta > 0) {
    total_.fetch_add(1, std::memory_order_relaxed);
    active_.fetch_add(1, std::memory_order_relaxed);
  } else {
    active_.fetch_sub(1, std::memory_order_relaxed);
  }
}

NbdEnd NbdServer::serve(int fd, std::span<std::byte> buffer) noexcept {
  if (buffer.size() < buffer_bytes()) return NbdEnd::io_error;
  set_timeout(fd, SO_SNDTIMEO, config_.send_timeout);
  set_timeout(fd, SO_RCVTIMEO, config_.handshake_timeout);
  HandshakeState state;
  if (const auto ended = handshake(fd, buffer, state)) {
    if (*ended == NbdEnd::timeout) timeouts_.fetch_add(1, std::memory_order_relaxed);
    if (*ended != NbdEnd::aborted) handshake_failures_.fetch_add(1, std::memory_order_relaxed);
    return *ended;
  }
  handshakes_.fetch_add(1, std::memory_order_relaxed);
  if (state.structured_replies) structured_.fetch_add(1, std::memory_order_relaxed);
  // Transmission: a connection may stay idle for as long as it likes.
  set_timeout(fd, SO_RCVTIMEO, std::chrono::milliseconds(0));
  const NbdEnd end = transmission(fd, buffer, state.structured_replies);
  if (end == NbdEnd::timeout) timeouts_.fetch_add(1, std::memory_order_relaxed);
  if (end == NbdEnd::protocol_error) protocol_errors_.fetch_add(1, std::memory_order_relaxed);
  return end;
}

NbdEnd NbdServer::serve_transmission(int fd, std::span<std::byte> buffer) noexcept {
  if (buffer.size() < buffer_bytes()) return NbdEnd::io_error;
  const NbdEnd end = transmission(fd, buffer, false);  // no send timeout: a socketpair has none
  if (end == NbdEnd::protocol_error) protocol_errors_.fetch_add(1, std::memory_order_relaxed);
  return end;
}

std::optional<NbdEnd> NbdServer::handshake(int fd, std::span<std::byte> buffer, HandshakeState& state) noexcept {
  std::byte* scratch = buffer.data();
  write_greeting(std::span<std::byte, kGreetingBytes>(scratch, kGreetingBytes));
  if (const Io io = send_all(fd, scratch, kGreetingBytes); io != Io::ok) return end_of(io);
  if (const Io io = recv_all(fd, scratch, 4); io != Io::ok) return end_of(io);
  const auto flags = parse_client_flags(std::span<const std::byte, 4>(scratch, 4));
  if (!flags) return NbdEnd::protocol_error;
  state.no_zeroes = (*flags & kClientNoZeroes) != 0;

  const std::span<std::byte> reply = buffer.subspan(kReplyAt, kScratchBytes - kReplyAt);
  for (unsigned n = 0; n < kMaxOptions; ++n) {
    if (const Io io = recv_all(fd, scratch, kOptionHeaderBytes); io != Io::ok) return end_of(io);
    const auto header = parse_option_header(std::span<const std::byte, kOptionHeaderBytes>(scratch, kOptionHeaderBytes));
    if (!header) return NbdEnd::protocol_error;
    if (header->length > kMaxOptionBytes) {
      // Not read: the client may not be sending it at all. Say why, then close.
      std::byte* p = reply.data();
      put64(p, kOptionReplyMagic);
      put32(p + 8, header->option);
      put32(p + 12, kRepErrTooBig);
      put32(p + 16, 0);
      options_refused_.fetch_add(1, std::memory_order_relaxed);
      (void)send_all(fd, p, kOptionReplyHeaderBytes);
      return NbdEnd::protocol_error;
    }
    if (const Io io = recv_all(fd, scratch, header->length); io != Io::ok) return end_of(io);
    const OptionOutcome out = handle_option(*header, std::span<const std::byte>(scratch, header->length), info_,
                                            state, reply);
    if (out.refused) options_refused_.fetch_add(1, std::memory_order_relaxed);
    if (out.reply_bytes > 0) {
      if (const Io io = send_all(fd, reply.data(), out.reply_bytes); io != Io::ok) return end_of(io);
    }
    if (out.next == Next::close) return header->option == kOptAbort ? NbdEnd::aborted : NbdEnd::protocol_error;
    if (out.next == Next::transmission) return std::nullopt;
  }
  return NbdEnd::protocol_error;  // a client that only ever negotiates
}

std::optional<NbdEnd> NbdServer::reply(int fd, const Request& r, std::uint32_t error, bool structured) noexcept {
  if (error != 0) error_replies_.fetch_add(1, std::memory_order_relaxed);
  std::byte out[kStructuredReplyBytes + 64];
  std::size_t n;
  if (structured && r.type == kCmdRead) {
    // Once structured replies are agreed, a read is never answered simply.
    n = write_structured_error(out, error, r.cookie, {});
  } else {
    write_simple_reply(std::span<std::byte, kSimpleReplyBytes>(out, kSimpleReplyBytes), error, r.cookie);
    n = kSimpleReplyBytes;
  }
  const Io io = send_all(fd, out, n);
  if (io != Io::ok) return end_of(io);
  return std::nullopt;
}

std::optional<NbdEnd> NbdServer::serve_read(int fd, std::span<std::byte> buffer, const Request& r, bool structured) noexcept {
  std::byte* const data = buffer.data() + kScratchBytes;
  const std::uint64_t end = r.offset + r.length;
  for (std::uint64_t at = r.offset; at < end;) {
    const std::uint32_t n = static_cast<std::uint32_t>(std::min<std::uint64_t>(config_.chunk_bytes, end - at));
    if (const auto loaded = io_.read(at, std::span(data, n)); !loaded) {
      const std::uint32_t error = wire_error(loaded.error().value());
      if (structured) {
        // The chunks sent so far stand; the error ends the reply.
        error_replies_.fetch_add(1, std::memory_order_relaxed);
        std::byte out[kStructuredReplyBytes + 64];
        const std::size_t len = write_structured_error(out, error, r.cookie, "stored data does not decode");
        const Io io = send_all(fd, out, len);
        if (io != Io::ok) return end_of(io);
        return std::nullopt;
      }
      // A simple reply says its error before the data: only the first
      // chunk can still fail cleanly.
      if (at == r.offset) return reply(fd, r, error, false);
      return NbdEnd::io_error;
    }
    std::size_t header;
    if (structured) {
      header = kStructuredReplyBytes + 8;
      std::byte* h = data - header;
      const bool last = at + n == end;
      write_structured_header(std::span<std::byte, kStructuredReplyBytes>(h, kStructuredReplyBytes),
                              last ? kReplyFlagDone : 0, kReplyOffsetData, r.cookie, 8 + n);
      put64(h + kStructuredReplyBytes, at);
    } else {
      header = at == r.offset ? kSimpleReplyBytes : 0;
      if (header != 0)
        write_simple_reply(std::span<std::byte, kSimpleReplyBytes>(data - header, kSimpleReplyBytes), 0, r.cookie);
    }
    if (const Io io = send_all(fd, data - header, header + n); io != Io::ok) return end_of(io);
    at += n;
  }
  return std::nullopt;
}

NbdEnd NbdServer::transmission(int fd, std::span<std::byte> buffer, bool structured) noexcept {
  std::byte* const data = buffer.data() + kScratchBytes;
  std::byte header[kRequestBytes];
  for (;;) {
    if (const Io io = recv_all(fd, header, kRequestBytes); io != Io::ok) return end_of(io);
    const auto request = parse_request(header);
    if (!request) return NbdEnd::protocol_error;
    const Request& r = *request;
    requests_.fetch_add(1, std::memory_order_relaxed);
    const Verdict v = check_request(r, info_);
    if (v.disconnect) return NbdEnd::disconnected;
    if (v.close) {
      (void)reply(fd, r, v.error, structured);
      return NbdEnd::protocol_error;
    }
    std::uint32_t error = v.error;
    std::optional<NbdEnd> step;
    if (v.payload) {
      // Every byte of the payload is read, whatever happens to it.
      std::uint64_t at = r.offset;
      for (std::uint32_t left = r.length; left > 0;) {
        const std::uint32_t n = std::min(left, config_.chunk_bytes);
        if (const Io io = recv_all(fd, data, n); io != Io::ok) return end_of(io);
        if (error == 0) {
          if (const auto written = io_.write(at, std::span<const std::byte>(data, n)); !written)
            error = wire_error(written.error().value());
        }
        at += n;
        left -= n;
      }
      step = reply(fd, r, error, structured);
    } else if (error != 0) {
      step = reply(fd, r, error, structured);
    } else {
      switch (r.type) {
        case kCmdRead:
          step = serve_read(fd, buffer, r, structured);
          break;
        case kCmdTrim:
          error = io_.discard(r.offset, r.length) ? 0 : kEinval;
          step = reply(fd, r, error, structured);
          break;
        case kCmdWriteZeroes: {
          // Without NO_HOLE the range may become a hole: forgotten slots
          // read as zeros and hold nothing. With it, zeros are stored.
          if (r.flags & kCmdFlagNoHole) {
            const auto zeroed = io_.write_zeroes(r.offset, r.length);
            error = zeroed ? 0 : wire_error(zeroed.error().value());
          } else {
            error = io_.discard(r.offset, r.length) ? 0 : kEinval;
          }
          step = reply(fd, r, error, structured);
          break;
        }
        default:  // FLUSH, CACHE: nothing is buffered, nothing to fetch
          step = reply(fd, r, 0, structured);
          break;
      }
    }
    if (step) return *step;
  }
}

NbdStats NbdServer::stats() const noexcept {
  NbdStats s;
  s.connections_total = total_.load(std::memory_order_relaxed);
  s.connections_active = active_.load(std::memory_order_relaxed);
  s.connections_refused = refused_.load(std::memory_order_relaxed);
  s.handshakes = handshakes_.load(std::memory_order_relaxed);
  s.handshake_failures = handshake_failures_.load(std::memory_order_relaxed);
  s.options_refused = options_refused_.load(std::memory_order_relaxed);
  s.protocol_errors = protocol_errors_.load(std::memory_order_relaxed);
  s.timeouts = timeouts_.load(std::memory_order_relaxed);
  s.requests = requests_.load(std::memory_order_relaxed);
  s.error_replies = error_replies_.load(std::memory_order_relaxed);
  s.structured_connections = structured_.load(std::memory_order_relaxed);
  s.io = io_.stats();
  return s;
}

// --- NbdListener ---------------------------------------------------------------

NbdListener::NbdListener(NbdServer& server, int listen_fd, unsigned connections, std::function<void()> thread_init)
    : server_(server), listen_fd_(listen_fd), count_(std::max(1u, connections)),
      buffer_bytes_(server.buffer_bytes()) {
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) throw std::system_error(errno_error(), "eventfd for the NBD listener");
  slots_ = std::make_unique<Slot[]>(count_);
  try {
    for (unsigned i = 0; i < count_; ++i) {
      Slot& slot = slots_[i];
      slot.buffer = std::make_unique<std::byte[]>(buffer_bytes_);
      std::memset(slot.buffer.get(), 0, buffer_bytes_);  // resident (and locked) now, not at the first read
      slot.thread = Thread("uzswap-nbd" + std::to_string(i), [this, &slot, thread_init] {
        if (thread_init) thread_init();
        connection_loop(slot);
      });
    }
    acceptor_ = Thread("uzswap-nbd-acc", [this] { accept_loop(); });
  } catch (...) {
    stop();
    throw;
  }
}

NbdListener::~NbdListener() { stop(); }

void NbdListener::stop() noexcept {
  if (slots_ == nullptr) return;
  stopping_.store(true);
  const std::uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  acceptor_.join();
  for (unsigned i = 0; i < count_; ++i) {
    Slot& slot = slots_[i];
    MutexLock guard(slot.lock);
    int idle = -1;
    if (slot.fd.compare_exchange_strong(idle, -2)) {
      slot.fd.notify_all();
    } else if (idle >= 0) {
      shutdown(idle, SHUT_RDWR);  // the connection's recv or send returns
    }
  }
  for (unsigned i = 0; i < count_; ++i) slots_[i].thread.join();
  slots_.reset();
  close(stop_fd_);
}

void NbdListener::accept_loop() noexcept {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0 || stopping_.load()) return;
    if (fds[0].revents & POLLNVAL) return;  // no listening socket: nothing to accept, ever
    if (!(fds[0].revents & POLLIN)) {
      // An error on the listening socket: do not spin on it.
      poll(&fds[1], 1, 100);
      continue;
    }
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // The client went away (ECONNABORTED), or no fds or memory for it:
      // the next one may fare better, after a pause that keeps this thread
      // from spinning on a queue it cannot empty.
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) poll(&fds[1], 1, 100);
      continue;
    }
    bool placed = false;
    for (unsigned i = 0; i < count_ && !placed; ++i) {
      int idle = -1;
      if (slots_[i].fd.compare_exchange_strong(idle, fd)) {
        server_.count_connection(+1);
        slots_[i].fd.notify_all();
        placed = true;
      }
    }
    if (!placed) {
      server_.count_refused();
      close(fd);
    }
  }
}

void NbdListener::connection_loop(Slot& slot) noexcept {
  for (;;) {
    slot.fd.wait(-1);
    const int fd = slot.fd.load();
    if (fd == -2) return;
    (void)server_.serve(fd, std::span(slot.buffer.get(), buffer_bytes_));
    MutexLock guard(slot.lock);
    close(fd);
    server_.count_connection(-1);
    slot.fd.store(stopping_.load() ? -2 : -1);
    if (stopping_.load()) return;
  }
}

}  // namespace uzswap
