#include "uzswap/fuse/fuse_server.h"

#include <linux/falloc.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

namespace uzswap {

namespace {

constexpr std::uint32_t kFuseMajor = 7;
constexpr std::uint32_t kFuseMinor = 38;
constexpr std::uint64_t kAttrTimeout = 365 * 24 * 3600;  // the file never changes
constexpr std::uint64_t kFileHandle = 1;

// Reads a fixed-size argument that follows the request header; nullopt-like
// false when the request is too short.
template <typename T>
bool read_arg(std::span<const std::byte> payload, T& out) noexcept {
  if (payload.size() < sizeof(T)) return false;
  std::memcpy(&out, payload.data(), sizeof(T));
  return true;
}

std::size_t reply_header(std::span<std::byte> reply, std::uint64_t unique, int error,
                         std::size_t body) noexcept {
  fuse_out_header out{};
  out.len = static_cast<std::uint32_t>(sizeof(out) + body);
  out.error = -error;
  out.unique = unique;
  std::memcpy(reply.data(), &out, sizeof(out));
  return out.len;
}

std::size_t reply_error(std::span<std::byte> reply, std::uint64_t unique, int error) noexcept {
  return reply_header(reply, unique, error, 0);
}

template <typename T>
std::size_t reply_body(std::span<std::byte> reply, std::uint64_t unique, const T& body) noexcept {
  std::memcpy(reply.data() + sizeof(fuse_out_header), &body, sizeof(T));
  return reply_header(reply, unique, 0, sizeof(T));
}

bool page_aligned(std::uint64_t v) noexcept { return v % kPageSize == 0; }

}  // namespace

std::size_t FuseServer::request_buffer_bytes(const FuseConfig& config) noexcept {
  // Header and WRITE arguments, then the data; the kernel wants at least
  // FUSE_MIN_READ_BUFFER.
  return std::max<std::size_t>(FUSE_MIN_READ_BUFFER, config.max_write + kPageSize);
}

std::size_t FuseServer::reply_buffer_bytes(const FuseConfig& config) noexcept {
  return sizeof(fuse_out_header) + std::max<std::size_t>(config.max_write, sizeof(fuse_init_out) + 64);
}

bool add_cpu_list(const std::string& text, std::int8_t node, std::vector<std::int8_t>& table) {
  constexpr unsigned kMaxCpus = 4096;
  std::size_t i = 0;
  const auto number = [&](unsigned& out) {
    const std::size_t start = i;
    out = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9' && i - start < 5) out = out * 10 + unsigned(text[i++] - '0');
    return i > start && out < kMaxCpus;
  };
  while (i < text.size() && text[i] != '\n') {
    unsigned first = 0, last = 0;
    if (!number(first)) return false;
    last = first;
    if (i < text.size() && text[i] == '-') {
      ++i;
      if (!number(last) || last < first) return false;
    }
    if (table.size() <= last) table.resize(last + 1, -1);
    for (unsigned c = first; c <= last; ++c) table[c] = node;
    if (i < text.size() && text[i] == ',') ++i;
    else if (i < text.size() && text[i] != '\n') return false;
  }
  return true;
}

std::vector<std::int8_t> cpu_nodes_from_sysfs() {
  std::vector<std::int8_t> table;
  for (int node = 0; node < 64; ++node) {
    std::ifstream f("/sys/devices/system/node/node" + std::to_string(node) + "/cpulist");
    std::string text;
    if (!f || !std::getline(f, text)) continue;
    if (!add_cpu_list(text, static_cast<std::int8_t>(node), table)) return {};
  }
  return table;
}

int single_node_of(const cpu_set_t& allowed, std::span<const std::int8_t> cpu_node) noexcept {
  int node = -1;
  for (std::size_t cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    const int n = cpu < cpu_node.size() ? cpu_node[cpu] : -1;
    if (n < 0 || (node >= 0 && n != node)) return -1;
    node = n;
  }
  return node;
}

FuseServer::FuseServer(PageStore& store, const FuseConfig& config)
    : store_(store), io_(store), config_(config) {
  std::int8_t first = -1;
  for (const std::int8_t n : config_.cpu_node) {
    if (n < 0) continue;
    if (first >= 0 && n != first) numa_ = true;
    first = first < 0 ? n : first;
  }
}

int FuseServer::requester_node(std::uint32_t pid) const noexcept {
  if (!numa_ || pid == 0) return -1;
  // One system call per WRITE request (up to max_write of pages), no
  // allocation: cpu_set_t lives on the stack.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(static_cast<pid_t>(pid), sizeof(allowed), &allowed) != 0) return -1;
  const int node = single_node_of(allowed, config_.cpu_node);
  return node >= 0 && static_cast<unsigned>(node) < store_.nodes() ? node : -1;
}

std::size_t FuseServer::handle(std::span<const std::byte> request,
                               std::span<std::byte> reply) noexcept {
  fuse_in_header in;
  if (!read_arg(request, in)) {
    // Without a header there is no request id to answer.
    bad_requests_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  requests_.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t unique = in.unique;
  if (in.len != request.size()) {
    bad_requests_.fetch_add(1, std::memory_order_relaxed);
    return reply_error(reply, unique, EINVAL);
  }
  const std::span<const std::byte> payload = request.subspan(sizeof(in));
  const auto malformed = [&] {
    bad_requests_.fetch_add(1, std::memory_order_relaxed);
    return reply_error(reply, unique, EINVAL);
  };

  // The one inode: the root, a regular file of the device's size.
  const auto reply_attr = [&] {
    fuse_attr_out out{};
    out.attr_valid = kAttrTimeout;
    out.attr.ino = FUSE_ROOT_ID;
    out.attr.size = config_.size_bytes;
    out.attr.blocks = config_.size_bytes / 512;
    out.attr.mode = S_IFREG | 0600;
    out.attr.nlink = 1;
    out.attr.uid = config_.uid;
    out.attr.gid = config_.gid;
    out.attr.blksize = kPageSize;
    return reply_body(reply, unique, out);
  };

  switch (in.opcode) {
    case FUSE_INIT: {
      fuse_init_in init{};
      std::memcpy(&init, payload.data(), std::min(payload.size(), sizeof(init)));
      if (payload.size() < 16) return malformed();
      fuse_init_out out{};
      out.major = kFuseMajor;
      if (init.major > kFuseMajor) {
        // Answer with our major version alone; the kernel retries with it.
        std::memcpy(reply.data() + sizeof(fuse_out_header), &out, FUSE_COMPAT_INIT_OUT_SIZE);
        return reply_header(reply, unique, 0, FUSE_COMPAT_INIT_OUT_SIZE);
      }
      if (init.major < kFuseMajor || init.minor < 26) return reply_error(reply, unique, EPROTO);
      out.minor = std::min(init.minor, kFuseMinor);
      out.max_readahead = init.max_readahead;
      const std::uint32_t wanted = FUSE_BIG_WRITES | FUSE_ASYNC_DIO | FUSE_MAX_PAGES;
      out.flags = init.flags & wanted;
      out.max_background = config_.max_background;
      out.congestion_threshold = static_cast<std::uint16_t>(config_.max_background * 3 / 4);
      out.max_write = config_.max_write;
      out.time_gran = 1;
      out.max_pages = static_cast<std::uint16_t>(config_.max_write / kPageSize);
      if (config_.over_io_uring && (init.flags & FUSE_INIT_EXT) && (init.flags2 & kFuseOverIoUringFlags2)) {
        out.flags |= FUSE_INIT_EXT;
        out.flags2 = kFuseOverIoUringFlags2;
        uring_.store(true, std::memory_order_release);
      }
      initialized_.store(true, std::memory_order_release);
      return reply_body(reply, unique, out);
    }
    case FUSE_DESTROY:
      return reply_error(reply, unique, 0);
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    case FUSE_INTERRUPT:
      return 0;  // no reply, by protocol
    case FUSE_GETATTR: {
      if (in.nodeid != FUSE_ROOT_ID) return reply_error(reply, unique, ENOENT);
      return reply_attr();
    }
    case FUSE_SETATTR: {
      fuse_setattr_in set;
      if (!read_arg(payload, set)) return malformed();
      // The device has a fixed size; mode, owner and times are not stored.
      if ((set.valid & FATTR_SIZE) && set.size != config_.size_bytes)
        return reply_error(reply, unique, EPERM);
      return reply_attr();
    }
    case FUSE_OPEN: {
      fuse_open_in open;
      if (!read_arg(payload, open)) return malformed();
      if (in.nodeid != FUSE_ROOT_ID) return reply_error(reply, unique, ENOENT);
      fuse_open_out out{};
      out.fh = kFileHandle;
      // No page cache anywhere: every read and write reaches the store, and
      // direct writes to different ranges run in parallel.
      out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
      return reply_body(reply, unique, out);
    }
    case FUSE_FLUSH:
    case FUSE_FSYNC:
    case FUSE_RELEASE:
    case FUSE_ACCESS:
      // Nothing is buffered: a stored page is as durable as it will ever be.
      return reply_error(reply, unique, 0);
    case FUSE_STATFS: {
      fuse_statfs_out out{};
      const std::uint64_t slots = config_.size_bytes / kPageSize;
      const std::uint64_t used = std::min(slots, store_.stats().stored_pages);
      out.st.blocks = slots;
      out.st.bfree = slots - used;
      out.st.bavail = slots - used;
      out.st.files = 1;
      out.st.bsize = kPageSize;  // discard granularity: one page
      out.st.frsize = kPageSize;
      out.st.namelen = 255;
      return reply_body(reply, unique, out);
    }
    case FUSE_READ: {
      fuse_read_in rd;
      if (!read_arg(payload, rd)) return malformed();
      if (!page_aligned(rd.offset) || !page_aligned(rd.size) || rd.size > config_.max_write)
        return malformed();
      // Past the end reads short, as any file does.
      const std::uint64_t end =
          std::min<std::uint64_t>(config_.size_bytes, std::max<std::uint64_t>(rd.offset, rd.offset + rd.size));
      const std::uint64_t start = std::min(rd.offset, end);
      std::byte* data = reply.data() + sizeof(fuse_out_header);
      // A page that cannot be served (damaged, or the backing file failed)
      // is reported, never made up. The good pages before it are answered:
      // a short read, which the loop driver completes and asks again from
      // the bad page, which then fails alone.
      const std::uint64_t good = io_.read_prefix(start, std::span(data, end - start));
      if (good == 0 && end > start) return reply_error(reply, unique, EIO);
      return reply_header(reply, unique, 0, good);
    }
    case FUSE_WRITE: {
      fuse_write_in wr;
      if (!read_arg(payload, wr)) return malformed();
      const std::span<const std::byte> data = payload.subspan(sizeof(wr));
      if (data.size() != wr.size || !page_aligned(wr.offset) || !page_aligned(wr.size))
        return malformed();
      if (wr.offset > config_.size_bytes || wr.size > config_.size_bytes - wr.offset) {
        bad_requests_.fetch_add(1, std::memory_order_relaxed);
        return reply_error(reply, unique, EFBIG);
      }
      // On a refusal the kernel keeps the page and retries; earlier pages of
      // this request hold their new versions, which is what it will rewrite.
      if (const auto written = io_.write(wr.offset, data, requester_node(in.pid)); !written)
        return reply_error(reply, unique, written.error().value());
      fuse_write_out out{};
      out.size = wr.size;
      return reply_body(reply, unique, out);
    }
    case FUSE_FALLOCATE: {
      fuse_fallocate_in fa;
      if (!read_arg(payload, fa)) return malformed();
      const bool keep_size = fa.mode & FALLOC_FL_KEEP_SIZE;
      const std::uint32_t action = fa.mode & ~static_cast<std::uint32_t>(FALLOC_FL_KEEP_SIZE);
      if (fa.length == 0 || fa.offset + fa.length < fa.offset) return malformed();
      if (action == 0) {
        // Preallocation: every slot already exists; the size cannot grow.
        if (!keep_size && fa.offset + fa.length > config_.size_bytes)
          return reply_error(reply, unique, EFBIG);
        return reply_error(reply, unique, 0);
      }
      const bool punch = action == FALLOC_FL_PUNCH_HOLE && keep_size;
      const bool zero = action == FALLOC_FL_ZERO_RANGE;
      if (!punch && !zero) return reply_error(reply, unique, EOPNOTSUPP);
      // Only whole pages can be forgotten; anything else would need a
      // read-modify-write the kernel never asks for.
      if (!page_aligned(fa.offset) || !page_aligned(fa.length)) return malformed();
      if (fa.offset >= config_.size_bytes) return reply_error(reply, unique, 0);
      const std::uint64_t end = std::min(config_.size_bytes, fa.offset + fa.length);
      if (!io_.discard(fa.offset, end - fa.offset)) return malformed();
      return reply_error(reply, unique, 0);
    }
    case FUSE_LOOKUP:
    case FUSE_OPENDIR:
    case FUSE_READDIR:
    case FUSE_READDIRPLUS:
    case FUSE_MKDIR:
    case FUSE_MKNOD:
    case FUSE_CREATE:
    case FUSE_UNLINK:
    case FUSE_RMDIR:
    case FUSE_RENAME:
    case FUSE_RENAME2:
    case FUSE_LINK:
    case FUSE_SYMLINK:
      return reply_error(reply, unique, ENOTDIR);  // the root is a file
    default:
      // xattrs, locks, lseek, ioctl, poll...: not supported. ENOSYS also
      // tells the kernel not to ask again.
      unsupported_.fetch_add(1, std::memory_order_relaxed);
      return reply_error(reply, unique, ENOSYS);
  }
}

FuseStats FuseServer::stats() const noexcept {
  FuseStats s;
  s.requests = requests_.load(std::memory_order_relaxed);
  const SlotIoStats io = io_.stats();
  s.read_pages = io.read_pages;
  s.written_pages = io.written_pages;
  s.discarded_pages = io.discarded_pages;
  s.discard_requests = io.discard_requests;
  s.write_errors = io.write_errors;
  s.read_errors = io.read_errors;
  s.bad_requests = bad_requests_.load(std::memory_order_relaxed);
  s.unsupported = unsupported_.load(std::memory_order_relaxed);
  s.initialized = initialized_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace uzswap
