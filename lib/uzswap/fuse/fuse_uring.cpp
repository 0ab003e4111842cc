#include "uzswap/fuse/fuse_uring.h"

#include <liburing.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>

#include "uzswap/common/liveness.h"
#include "uzswap/common/text_file.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace uzswap {

namespace {

// The FUSE-over-io_uring ABI (<linux/fuse.h> of Linux 6.14 and later;
// Debian 12's header predates it), with the sizes the kernel checks.
struct UringEntInOut {
  std::uint64_t flags;
  std::uint64_t commit_id;   // the request's unique id, echoed in the commit
  std::uint32_t payload_sz;  // bytes used in the payload buffer, either way
  std::uint32_t padding;
  std::uint64_t reserved;
};
struct UringReqHeader {
  std::byte in_out[128];  // fuse_in_header in, fuse_out_header back
  std::byte op_in[128];   // the opcode's first argument
  UringEntInOut ent;
};
static_assert(sizeof(UringReqHeader) == 288);
struct UringCmdReq {  // in the SQE's command area
  std::uint64_t flags;
  std::uint64_t commit_id;
  std::uint16_t qid;
  std::uint8_t padding[6];
};
constexpr std::uint32_t kCmdRegister = 1;
constexpr std::uint32_t kCmdCommitAndFetch = 2;

// Room in front of the payload buffer: a request with payload (WRITE) is
// laid out as header + first argument immediately before its data.
constexpr std::size_t kPrefix = 4096;

// The size of the opcode's first argument, which the kernel puts in op_in.
// Opcodes not listed have none that handle() reads (or are answered ENOSYS).
std::size_t op_in_size(std::uint32_t opcode) noexcept {
  switch (opcode) {
    case FUSE_READ: return sizeof(fuse_read_in);
    case FUSE_WRITE: return sizeof(fuse_write_in);
    case FUSE_FALLOCATE: return sizeof(fuse_fallocate_in);
    case FUSE_GETATTR: return sizeof(fuse_getattr_in);
    case FUSE_SETATTR: return sizeof(fuse_setattr_in);
    case FUSE_OPEN: return sizeof(fuse_open_in);
    case FUSE_FLUSH: return sizeof(fuse_flush_in);
    case FUSE_FSYNC: return sizeof(fuse_fsync_in);
    case FUSE_RELEASE: return sizeof(fuse_release_in);
    case FUSE_ACCESS: return sizeof(fuse_access_in);
    default: return 0;
  }
}

std::size_t payload_bytes(const FuseConfig& config) noexcept {
  // The kernel's max_payload_sz: max(FUSE_MIN_READ_BUFFER, max_write, max_pages pages).
  return std::max<std::size_t>(FUSE_MIN_READ_BUFFER, config.max_write);
}

}  // namespace

struct FuseUring::Entry {
  UringReqHeader header{};
  std::byte* buffer = nullptr;  // kPrefix + payload, mmap'ed and populated at start
  std::size_t buffer_bytes = 0;
  std::byte* payload = nullptr;
  iovec iov[2]{};
  unsigned qid = 0;
  ~Entry() {
    if (buffer != nullptr) munmap(buffer, buffer_bytes);
  }
};

struct FuseUring::Worker {
  unsigned index = 0;
  int cpu = -1;  // pinned to this CPU, or -1
  std::vector<std::unique_ptr<Entry>> entries;
  io_uring ring{};
  bool ring_ready = false;
  std::array<std::byte, 512> request{};         // header + first argument of a request without payload
  std::array<std::byte, 4096> reply{};          // the reply to a request with payload (WRITE)
  ~Worker() {
    if (ring_ready) io_uring_queue_exit(&ring);
  }
};

unsigned FuseUring::kernel_queues() {
  // "0-N" (or a list): the kernel uses num_possible_cpus() queues indexed by CPU.
  const std::string text = read_text_file("/sys/devices/system/cpu/possible").value_or("");
  unsigned highest = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] < '0' || text[i] > '9') {
      ++i;
      continue;
    }
    unsigned v = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') v = v * 10 + unsigned(text[i++] - '0');
    highest = std::max(highest, v);
  }
  return text.empty() ? static_cast<unsigned>(std::thread::hardware_concurrency()) : highest + 1;
}

bool FuseUring::kernel_enabled() {
  const std::string v = read_text_file("/sys/module/fuse/parameters/enable_uring").value_or("");
  return !v.empty() && (v[0] == 'Y' || v[0] == '1');
}

FuseUring::FuseUring(int fuse_fd, FuseServer& server, unsigned threads, unsigned depth,
                     std::function<void()> thread_init)
    : fd_(fuse_fd), server_(server), thread_init_(std::move(thread_init)), queues_(kernel_queues()) {
  threads = std::clamp(threads, 1u, queues_);
  depth = std::max(depth, 1u);
  const std::size_t payload = payload_bytes(server.config());
  for (unsigned t = 0; t < threads; ++t) {
    auto w = std::make_unique<Worker>();
    w->index = t;
    if (threads == queues_) w->cpu = static_cast<int>(t);
    for (unsigned q = t; q < queues_; q += threads) {
      for (unsigned d = 0; d < depth; ++d) {
        auto e = std::make_unique<Entry>();
        e->buffer_bytes = kPrefix + payload;
        void* p = mmap(nullptr, e->buffer_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "FUSE ring buffers");
        e->buffer = static_cast<std::byte*>(p);
        // Backed now, off the request path: under mlockall(MCL_ONFAULT) an
        // untouched page would be faulted in by the first swap request that
        // uses it, when memory is short.
        if (madvise(p, e->buffer_bytes, MADV_POPULATE_WRITE) != 0)
          throw std::system_error(errno, std::generic_category(), "populate the FUSE ring buffers");
        buffer_bytes_ += e->buffer_bytes;
        e->payload = e->buffer + kPrefix;
        e->iov[0] = {&e->header, sizeof(e->header)};
        e->iov[1] = {e->payload, payload};
        e->qid = q;
        w->entries.push_back(std::move(e));
      }
    }
    unsigned ring_entries = 1;
    while (ring_entries < w->entries.size()) ring_entries <<= 1;
    if (const int rc = io_uring_queue_init(ring_entries, &w->ring, IORING_SETUP_SQE128); rc < 0)
      throw std::system_error(-rc, std::generic_category(), "io_uring for FUSE");
    w->ring_ready = true;
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_)
    threads_.emplace_back("uzswap-fring" + std::to_string(w->index), [this, worker = w.get()] { run(*worker); });
}

FuseUring::~FuseUring() {
  for (Thread& t : threads_) t.join();
}

FuseUring::WaitOutcome FuseUring::classify_wait(int rc) noexcept {
  // liburing returns -errno and leaves errno alone.
  if (rc >= 0) return WaitOutcome::reap;
  switch (-rc) {
    case EINTR:   // a signal, SIGSTOP/SIGCONT, a cgroup freeze, a ptrace stop
    case EAGAIN:  // the kernel is short of request memory for the moment
    case EBUSY:   // completions not reaped yet (overflow): reap them first
    case ETIME:
      return WaitOutcome::reap;
    default:  // EBADF, EFAULT, EINVAL, ENXIO, EOWNERDEAD: the ring itself is gone
      return WaitOutcome::broken;
  }
}

FuseUring::EntryOutcome FuseUring::classify_completion(int res) noexcept {
  if (res >= 0) return EntryOutcome::request;
  switch (-res) {
    case ENOTCONN:      // the connection ended (unmount, abort) or its ring stopped
    case ECONNABORTED:
    case ENODEV:
    case ECANCELED:     // io_uring cancelled the command: the ring or its task is going away
      return EntryOutcome::gone;
    default:
      // EAGAIN: INIT's reply is not processed yet. Anything else (ENOENT: the
      // request a commit named was ended meanwhile; EINVAL, EIO, ENOMEM) left
      // the kernel without this entry: register it again, or the queue runs
      // dry and every request on it hangs.
      return EntryOutcome::register_again;
  }
}

void FuseUring::run(Worker& w) noexcept {
  if (w.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w.cpu, &set);
    (void)sched_setaffinity(0, sizeof(set), &set);  // locality only: fine if refused
  }
  if (thread_init_) {
    try {
      thread_init_();
    } catch (const std::exception& e) {
      liveness::error(std::string("thread set-up: ") + e.what());  // serve anyway
    }
  }
  // Commands that found no free SQE: submitted at the top of the next turn,
  // never dropped. At most one command per entry is ever outstanding, so
  // these vectors never grow past their reservation.
  struct Pending {
    Entry* e;
    std::uint32_t cmd;
    std::uint64_t commit_id;
  };
  std::vector<Pending> unsubmitted;
  unsubmitted.reserve(2 * w.entries.size());  // an entry may sit twice while its turn is retried
  std::vector<Entry*> retry;
  retry.reserve(w.entries.size());
  const auto submit = [&](Entry& e, std::uint32_t cmd, std::uint64_t commit_id) {
    io_uring_sqe* sqe = io_uring_get_sqe(&w.ring);
    if (sqe == nullptr) {
      (void)io_uring_submit(&w.ring);
      sqe = io_uring_get_sqe(&w.ring);
      if (sqe == nullptr) {
        unsubmitted.push_back({&e, cmd, commit_id});
        return;
      }
    }
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd_;
    sqe->cmd_op = cmd;
    sqe->addr = reinterpret_cast<std::uint64_t>(e.iov);
    sqe->len = 2;
    io_uring_sqe_set_data(sqe, &e);
    UringCmdReq req{};
    req.commit_id = commit_id;
    req.qid = static_cast<std::uint16_t>(e.qid);
    std::memcpy(sqe->cmd, &req, sizeof(req));
  };
  for (auto& e : w.entries) submit(*e, kCmdRegister, 0);

  std::size_t live = w.entries.size();
  while (live > 0) {
    if (const std::size_t n = unsubmitted.size(); n > 0) {
      for (std::size_t i = 0; i < n; ++i) submit(*unsubmitted[i].e, unsubmitted[i].cmd, unsubmitted[i].commit_id);
      unsubmitted.erase(unsubmitted.begin(), unsubmitted.begin() + static_cast<std::ptrdiff_t>(n));
    }
    liveness::waiting();
    const int rc = io_uring_submit_and_wait(&w.ring, 1);
    if (classify_wait(rc) == WaitOutcome::broken) {
      // Nothing more can arrive on this ring: the thread cannot serve its
      // queues, and the liveness check hands over to a new process.
      liveness::failed(std::string("io_uring wait: ") + std::strerror(-rc));
      return;
    }
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    bool served = false;
    io_uring_for_each_cqe(&w.ring, head, cqe) {
      ++seen;
      Entry& e = *static_cast<Entry*>(io_uring_cqe_get_data(cqe));
      switch (classify_completion(cqe->res)) {
        case EntryOutcome::gone:
          --live;
          continue;
        case EntryOutcome::register_again:
          if (cqe->res != -EAGAIN) liveness::error(std::string("FUSE ring entry: ") + std::strerror(-cqe->res));
          retry.push_back(&e);
          continue;
        case EntryOutcome::request:
          break;
      }
      if (!served) liveness::working();
      served = true;
      serve_entry(w, e);
      submit(e, kCmdCommitAndFetch, e.header.ent.commit_id);
    }
    io_uring_cq_advance(&w.ring, seen);
    if (served) liveness::progressed();
    if (!retry.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      for (Entry* e : retry) submit(*e, kCmdRegister, 0);
      retry.clear();
    }
  }
  exited_.fetch_add(1);
}

void FuseUring::serve_entry(Worker& w, Entry& e) noexcept {
  // A request is in the entry: answer it from handle(), with no copy of
  // page data either way.
  fuse_in_header in;
  std::memcpy(&in, e.header.in_out, sizeof(in));
  const std::size_t op = op_in_size(in.opcode);
  const std::size_t data = std::min<std::size_t>(e.header.ent.payload_sz, e.iov[1].iov_len);
  in.len = static_cast<std::uint32_t>(sizeof(in) + op + data);
  std::size_t len;
  if (data == 0) {
    std::memcpy(w.request.data(), &in, sizeof(in));
    std::memcpy(w.request.data() + sizeof(in), e.header.op_in, op);
    // The reply's header lands just before the payload, its body in it.
    std::byte* reply = e.payload - sizeof(fuse_out_header);
    len = server_.handle(std::span<const std::byte>(w.request.data(), sizeof(in) + op),
                         std::span<std::byte>(reply, sizeof(fuse_out_header) + e.iov[1].iov_len));
    if (len >= sizeof(fuse_out_header)) std::memcpy(e.header.in_out, reply, sizeof(fuse_out_header));
  } else {
    std::byte* request = e.payload - sizeof(in) - op;
    std::memcpy(request, &in, sizeof(in));
    std::memcpy(request + sizeof(in), e.header.op_in, op);
    len = server_.handle(std::span<const std::byte>(request, sizeof(in) + op + data),
                         std::span<std::byte>(w.reply.data(), w.reply.size()));
    if (len >= sizeof(fuse_out_header)) {
      std::memcpy(e.header.in_out, w.reply.data(), sizeof(fuse_out_header));
      std::memcpy(e.payload, w.reply.data() + sizeof(fuse_out_header), len - sizeof(fuse_out_header));
    }
  }
  if (len < sizeof(fuse_out_header)) {
    // No reply (cannot happen for ring requests): the kernel still needs one.
    fuse_out_header out{};
    out.len = sizeof(out);
    out.error = -ENOSYS;
    out.unique = in.unique;
    std::memcpy(e.header.in_out, &out, sizeof(out));
    len = sizeof(out);
  }
  e.header.ent.payload_sz = static_cast<std::uint32_t>(len - sizeof(fuse_out_header));
}

}  // namespace uzswap
