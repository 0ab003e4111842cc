#include "uzswap/nbd/nbd_kernel.h"

#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/nbd.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

#include "uzswap/common/result.h"

namespace uzswap {

namespace {

// A generic netlink message built in a fixed buffer: header, family
// header, attributes (nested ones by start and end).
class GenlMessage {
 public:
  GenlMessage(std::uint16_t family, std::uint8_t command, std::uint8_t version) {
    auto* nl = header();
    nl->nlmsg_type = family;
    nl->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nl->nlmsg_seq = 1;
    auto* genl = reinterpret_cast<genlmsghdr*>(buffer_ + NLMSG_HDRLEN);
    genl->cmd = command;
    genl->version = version;
    length_ = NLMSG_HDRLEN + GENL_HDRLEN;
  }
  void put(std::uint16_t type, const void* data, std::size_t size) {
    const std::size_t total = NLA_HDRLEN + size;
    if (length_ + NLA_ALIGN(total) > sizeof(buffer_)) throw std::length_error("netlink message too long");
    auto* attr = reinterpret_cast<nlattr*>(buffer_ + length_);
    attr->nla_type = type;
    attr->nla_len = static_cast<std::uint16_t>(total);
    std::memcpy(buffer_ + length_ + NLA_HDRLEN, data, size);
    length_ += NLA_ALIGN(total);
  }
  template <typename T>
  void put(std::uint16_t type, T value) {
    put(type, &value, sizeof(value));
  }
  std::size_t begin_nested(std::uint16_t type) {
    const std::size_t at = length_;
    put(static_cast<std::uint16_t>(type | NLA_F_NESTED), nullptr, 0);
    return at;
  }
  void end_nested(std::size_t at) {
    reinterpret_cast<nlattr*>(buffer_ + at)->nla_len = static_cast<std::uint16_t>(length_ - at);
  }
  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buffer_); }
  const void* data() {
    header()->nlmsg_len = static_cast<std::uint32_t>(length_);
    return buffer_;
  }
  std::size_t size() const { return length_; }

 private:
  alignas(NLMSG_ALIGNTO) char buffer_[4096] = {};
  std::size_t length_ = 0;
};

class GenlSocket {
 public:
  static Result<GenlSocket> open() noexcept {
    GenlSocket sock(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC));
    if (sock.fd_ < 0) return failure(errno_error());
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    if (bind(sock.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return failure(errno_error());
    return sock;
  }
  ~GenlSocket() {
    if (fd_ >= 0) close(fd_);
  }
  GenlSocket(GenlSocket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  GenlSocket(const GenlSocket&) = delete;
  GenlSocket& operator=(const GenlSocket&) = delete;

  // Sends and reads replies until the ack; `on_attr` sees each top-level
  // attribute of a data reply. The error is the kernel's (its -errno).
  template <typename F>
  Result<> transact(GenlMessage& message, F&& on_attr) {
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(fd_, message.data(), message.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0)
      return failure(errno_error());
    alignas(NLMSG_ALIGNTO) char reply[8192];
    for (;;) {
      const ssize_t n = recv(fd_, reply, sizeof(reply), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return failure(errno_error());
      }
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(reply); NLMSG_OK(h, static_cast<unsigned>(len));
           h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_ERROR) {
          const int error = reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;  // 0 is the ack
          if (error != 0) return failure(errno_error(error));
          return {};
        }
        if (h->nlmsg_type == NLMSG_DONE) return {};
        const auto* base = reinterpret_cast<const char*>(NLMSG_DATA(h)) + GENL_HDRLEN;
        int left = static_cast<int>(h->nlmsg_len) - NLMSG_HDRLEN - GENL_HDRLEN;
        while (left >= static_cast<int>(NLA_HDRLEN)) {
          const auto* a = reinterpret_cast<const nlattr*>(base);
          if (a->nla_len < NLA_HDRLEN || a->nla_len > left) break;
          on_attr(a->nla_type & NLA_TYPE_MASK, reinterpret_cast<const char*>(a) + NLA_HDRLEN,
                  a->nla_len - NLA_HDRLEN);
          const int step = static_cast<int>(NLA_ALIGN(a->nla_len));
          base += step;
          left -= step;
        }
      }
    }
  }

 private:
  explicit GenlSocket(int fd) noexcept : fd_(fd) {}
  int fd_ = -1;
};

// The nbd family's id; ENOENT when the kernel has none.
Result<std::uint16_t> nbd_family(GenlSocket& sock) {
  GenlMessage m(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
  m.put(CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME, sizeof(NBD_GENL_FAMILY_NAME));
  std::uint16_t id = 0;
  const auto asked = sock.transact(m, [&](std::uint16_t type, const char* data, std::size_t size) {
    if (type == CTRL_ATTR_FAMILY_ID && size >= 2) std::memcpy(&id, data, 2);
  });
  if (!asked) return failure(asked.error());
  if (id == 0) return failure(std::make_error_code(std::errc::no_such_file_or_directory));
  return id;
}

// The kernel's NBD client asks for these (it has no handshake to learn them).
constexpr std::uint64_t kServerFlags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_TRIM |
                                       NBD_FLAG_CAN_MULTI_CONN;
// A request the kernel waits on longer than this fails: swap under heavy
// thrashing is slow, never this slow.
constexpr std::uint64_t kRequestTimeoutSeconds = 600;

}  // namespace

bool KernelNbd::available() noexcept {
  auto sock = GenlSocket::open();
  return sock && nbd_family(*sock).has_value();
}

KernelNbd::KernelNbd(NbdServer& server, unsigned queues, std::function<void()> thread_init) : server_(server) {
  auto sock = GenlSocket::open();
  if (!sock) throw std::system_error(sock.error(), "netlink socket");
  const auto family = nbd_family(*sock);
  if (!family)
    throw std::system_error(family.error(), "the kernel has no nbd netlink family (modprobe nbd; Linux 4.12+)");
  queues = std::max(1u, queues);
  std::vector<int> kernel_ends;
  const auto close_kernel_ends = [&] {
    for (int fd : kernel_ends) close(fd);
    kernel_ends.clear();
  };
  for (unsigned i = 0; i < queues; ++i) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      const std::error_code error = errno_error();
      close_kernel_ends();
      throw std::system_error(error, "socketpair for the kernel's NBD client");
    }
    auto q = std::make_unique<Queue>();
    q->fd = pair[0];
    q->buffer = std::make_unique<std::byte[]>(server.buffer_bytes());
    std::memset(q->buffer.get(), 0, server.buffer_bytes());
    queues_.push_back(std::move(q));
    kernel_ends.push_back(pair[1]);
  }
  // The threads first: the kernel may send requests (the partition scan's
  // reads) as soon as the device is connected.
  for (std::size_t i = 0; i < queues_.size(); ++i) {
    Queue* q = queues_[i].get();
    q->thread = Thread("uzswap-knbd" + std::to_string(i), [this, q, thread_init] {
      if (thread_init) thread_init();
      q->end.store(server_.serve_transmission(q->fd, std::span(q->buffer.get(), server_.buffer_bytes())));
      q->ended.store(true);
    });
  }

  GenlMessage m(*family, NBD_CMD_CONNECT, NBD_GENL_VERSION);
  m.put<std::uint64_t>(NBD_ATTR_SIZE_BYTES, server.config().size_bytes);
  m.put<std::uint64_t>(NBD_ATTR_BLOCK_SIZE_BYTES, kPageSize);
  m.put<std::uint64_t>(NBD_ATTR_SERVER_FLAGS, kServerFlags);
  m.put<std::uint64_t>(NBD_ATTR_TIMEOUT, kRequestTimeoutSeconds);
  const std::size_t sockets = m.begin_nested(NBD_ATTR_SOCKETS);
  for (int fd : kernel_ends) {
    const std::size_t item = m.begin_nested(NBD_SOCK_ITEM);
    m.put<std::uint32_t>(NBD_SOCK_FD, static_cast<std::uint32_t>(fd));
    m.end_nested(item);
  }
  m.end_nested(sockets);
  bool got_index = false;
  auto connected = sock->transact(m, [&](std::uint16_t type, const char* data, std::size_t size) {
    if (type == NBD_ATTR_INDEX && size >= 4) {
      std::uint32_t index;
      std::memcpy(&index, data, 4);
      index_ = index;
      got_index = true;
    }
  });
  // The kernel holds its own references to its ends now.
  close_kernel_ends();
  if (connected && !got_index) connected = failure(std::make_error_code(std::errc::protocol_error));
  if (!connected) {
    for (auto& q : queues_) shutdown(q->fd, SHUT_RDWR);
    for (auto& q : queues_) {
      q->thread.join();
      close(q->fd);
    }
    queues_.clear();
    throw std::system_error(connected.error(), "NBD_CMD_CONNECT");
  }
  connected_ = true;
  path_ = "/dev/nbd" + std::to_string(index_);
  // The block device has its size once the kernel has set it up.
  const std::string size_file = "/sys/block/nbd" + std::to_string(index_) + "/size";
  for (int i = 0; i < 500; ++i) {
    std::ifstream f(size_file);
    if (std::uint64_t sectors = 0; f >> sectors && sectors * 512 == server.config().size_bytes) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::optional<KernelNbd::Lost> KernelNbd::lost() const noexcept {
  if (disconnecting_.load()) return std::nullopt;
  for (std::size_t i = 0; i < queues_.size(); ++i)
    if (queues_[i]->ended.load()) return Lost{static_cast<unsigned>(i), queues_[i]->end.load()};
  return std::nullopt;
}

void KernelNbd::disconnect() noexcept {
  disconnecting_.store(true);
  if (!connected_) return;
  connected_ = false;
  // Best effort: a kernel that cannot be told ends the connections when
  // the sockets close.
  auto sock = GenlSocket::open();
  if (!sock) return;
  if (const auto family = nbd_family(*sock)) {
    GenlMessage m(*family, NBD_CMD_DISCONNECT, NBD_GENL_VERSION);
    m.put<std::uint32_t>(NBD_ATTR_INDEX, index_);
    (void)sock->transact(m, [](std::uint16_t, const char*, std::size_t) {});
  }
}

KernelNbd::~KernelNbd() {
  // The kernel sends NBD_CMD_DISC on each connection and closes its ends:
  // the threads' transmission loops end.
  disconnect();
  for (auto& q : queues_) {
    shutdown(q->fd, SHUT_RDWR);
    q->thread.join();
    close(q->fd);
  }
}

}  // namespace uzswap
