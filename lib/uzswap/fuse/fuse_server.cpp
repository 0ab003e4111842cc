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

// One request being handled: its header, the opcode's arguments that follow
// it, and the caller's reply buffer.
struct FuseServer::Request {
  const fuse_in_header& in;
  std::span<const std::byte> payload;
  std::span<std::byte> reply;

  std::size_t error(int err) const noexcept { return reply_error(reply, in.unique, err); }
  std::size_t done() const noexcept { return reply_error(reply, in.unique, 0); }
  template <typename T>
  std::size_t body(const T& out) const noexcept { return reply_body(reply, in.unique, out); }
};

std::size_t FuseServer::handle(std::span<const std::byte> request,
                               std::span<std::byte> reply) noexcept {
  fuse_in_header in;
  if (!read_arg(request, in)) {
    // Without a header there is no request id to answer.
    bad_requests_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (in.len != request.size()) {
    bad_requests_.fetch_add(1, std::memory_order_relaxed);
    return reply_error(reply, in.unique, EINVAL);
  }
  const Request r{in, request.subspan(sizeof(in)), reply};

  switch (in.opcode) {
    case FUSE_INIT: return init(r);
    case FUSE_DESTROY: return r.done();
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    case FUSE_INTERRUPT:
      return 0;  // no reply, by protocol
    case FUSE_GETATTR: return getattr(r);
    case FUSE_SETATTR: return setattr(r);
    case FUSE_OPEN: return open(r);
    case FUSE_FLUSH:
    case FUSE_FSYNC:
    case FUSE_RELEASE:
    case FUSE_ACCESS:
      // Nothing is buffered: a stored page is as durable as it will ever be.
      return r.done();
    case FUSE_STATFS: return statfs(r);
    case FUSE_READ: return read(r);
    case FUSE_WRITE: return write(r);
    case FUSE_FALLOCATE: return fallocate(r);
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
      return r.error(ENOTDIR);  // the root is a file
    default:
      // xattrs, locks, lseek, ioctl, poll...: not supported. ENOSYS also
      // tells the kernel not to ask again.
      unsupported_.fetch_add(1, std::memory_order_relaxed);
      return r.error(ENOSYS);
  }
}

std::size_t FuseServer::malformed(const Request& r) noexcept {
  bad_requests_.fetch_add(1, std::memory_order_relaxed);
  return r.error(EINVAL);
}

std::size_t FuseServer::attr(const Request& r) const noexcept {
  // The one inode: the root, a regular file of the device's size.
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
  return r.body(out);
}

std::size_t FuseServer::init(const Request& r) noexcept {
  fuse_init_in init{};
  std::memcpy(&init, r.payload.data(), std::min(r.payload.size(), sizeof(init)));
  if (r.payload.size() < 16) return malformed(r);
  fuse_init_out out{};
  out.major = kFuseMajor;
  if (init.major > kFuseMajor) {
    // Answer with our major version alone; the kernel retries with it.
    std::memcpy(r.reply.data() + sizeof(fuse_out_header), &out, FUSE_COMPAT_INIT_OUT_SIZE);
    return reply_header(r.reply, r.in.unique, 0, FUSE_COMPAT_INIT_OUT_SIZE);
  }
  if (init.major < kFuseMajor || init.minor < 26) return r.error(EPROTO);
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
  return r.body(out);
}

std::size_t FuseServer::getattr(const Request& r) const noexcept {
  if (r.in.nodeid != FUSE_ROOT_ID) return r.error(ENOENT);
  return attr(r);
}

std::size_t FuseServer::setattr(const Request& r) noexcept {
  fuse_setattr_in set;
  if (!read_arg(r.payload, set)) return malformed(r);
  // The device has a fixed size; mode, owner and times are not stored.
  if ((set.valid & FATTR_SIZE) && set.size != config_.size_bytes) return r.error(EPERM);
  return attr(r);
}

std::size_t FuseServer::open(const Request& r) noexcept {
  fuse_open_in open;
  if (!read_arg(r.payload, open)) return malformed(r);
  if (r.in.nodeid != FUSE_ROOT_ID) return r.error(ENOENT);
  fuse_open_out out{};
  out.fh = kFileHandle;
  // No page cache anywhere: every read and write reaches the store, and
  // direct writes to different ranges run in parallel.
  out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
  return r.body(out);
}

std::size_t FuseServer::statfs(const Request& r) const noexcept {
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
  return r.body(out);
}

std::size_t FuseServer::read(const Request& r) noexcept {
  fuse_read_in rd;
  if (!read_arg(r.payload, rd)) return malformed(r);
  if (!page_aligned(rd.offset) || !page_aligned(rd.size) || rd.size > config_.max_write) return malformed(r);
  // Past the end reads short, as any file does.
  const std::uint64_t end =
      std::min<std::uint64_t>(config_.size_bytes, std::max<std::uint64_t>(rd.offset, rd.offset + rd.size));
  const std::uint64_t start = std::min(rd.offset, end);
  std::byte* data = r.reply.data() + sizeof(fuse_out_header);
  // A page that cannot be served (damaged, or the backing file failed)
  // is reported, never made up. The good pages before it are answered:
  // a short read, which the loop driver completes and asks again from
  // the bad page, which then fails alone.
  const std::uint64_t good = io_.read_prefix(start, std::span(data, end - start));
  if (good == 0 && end > start) return r.error(EIO);
  return reply_header(r.reply, r.in.unique, 0, good);
}

std::size_t FuseServer::write(const Request& r) noexcept {
  fuse_write_in wr;
  if (!read_arg(r.payload, wr)) return malformed(r);
  const std::span<const std::byte> data = r.payload.subspan(sizeof(wr));
  if (data.size() != wr.size || !page_aligned(wr.offset) || !page_aligned(wr.size)) return malformed(r);
  if (wr.offset > config_.size_bytes || wr.size > config_.size_bytes - wr.offset) {
    bad_requests_.fetch_add(1, std::memory_order_relaxed);
    return r.error(EFBIG);
  }
  // On a refusal the kernel keeps the page and retries; earlier pages of
  // this request hold their new versions, which is what it will rewrite.
  if (const auto written = io_.write(wr.offset, data, requester_node(r.in.pid)); !written)
    return r.error(written.error().value());
  fuse_write_out out{};
  out.size = wr.size;
  return r.body(out);
}

std::size_t FuseServer::fallocate(const Request& r) noexcept {
  fuse_fallocate_in fa;
  if (!read_arg(r.payload, fa)) return malformed(r);
  const bool keep_size = fa.mode & FALLOC_FL_KEEP_SIZE;
  const std::uint32_t action = fa.mode & ~static_cast<std::uint32_t>(FALLOC_FL_KEEP_SIZE);
  if (fa.length == 0 || fa.offset + fa.length < fa.offset) return malformed(r);
  if (action == 0) {
    // Preallocation: every slot already exists; the size cannot grow.
    if (!keep_size && fa.offset + fa.length > config_.size_bytes) return r.error(EFBIG);
    return r.done();
  }
  // Discard: a hole punched or a range zeroed frees the pages' slots.
  const bool punch = action == FALLOC_FL_PUNCH_HOLE && keep_size;
  const bool zero = action == FALLOC_FL_ZERO_RANGE;
  if (!punch && !zero) return r.error(EOPNOTSUPP);
  // Only whole pages can be forgotten; anything else would need a
  // read-modify-write the kernel never asks for.
  if (!page_aligned(fa.offset) || !page_aligned(fa.length)) return malformed(r);
  if (fa.offset >= config_.size_bytes) return r.done();
  const std::uint64_t end = std::min(config_.size_bytes, fa.offset + fa.length);
  if (!io_.discard(fa.offset, end - fa.offset)) return malformed(r);
  return r.done();
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
