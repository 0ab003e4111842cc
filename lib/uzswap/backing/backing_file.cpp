#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "uzswap/backing/backing_store.h"
#include "uzswap/backing/io_ring.h"

namespace uzswap {

namespace {

std::atomic<std::uint64_t> g_next_id{1};

// The calling thread's ring, for the store it was made for, and the batch
// between begin_write() and end_write().
struct ThreadRing {
  std::uint64_t owner = 0;
  std::unique_ptr<IoRing> ring;
  std::span<PageWrite> pending;
  IoOp ops[BackingFile::kBatchPages];
  std::size_t op_of[BackingFile::kBatchPages];
  bool failed = false;
};
thread_local ThreadRing t_ring;

}  // namespace

BackingFile::BackingFile(const std::string& path, std::uint64_t bytes)
    : path_(path), bytes_(bytes), id_(g_next_id.fetch_add(1)) {
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "open backing file " + path);
  if (fallocate(fd_, 0, 0, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    close(fd_);
    throw std::system_error(err, std::generic_category(),
                            "preallocate " + std::to_string(bytes) + " bytes for " + path);
  }
}

BackingFile::~BackingFile() {
  if (fd_ >= 0) close(fd_);
}

IoRing& BackingFile::ring() {
  if (t_ring.owner != id_ || !t_ring.ring) {
    t_ring.ring.reset();
    t_ring.ring = std::make_unique<IoRing>(fd_, kBatchPages, kBatchPages);
    t_ring.owner = id_;
  }
  return *t_ring.ring;
}

void BackingFile::prepare_thread() { ring(); }

bool BackingFile::wait_for_other_writers(std::chrono::milliseconds timeout) noexcept {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (fcntl(fd_, F_SETLEASE, F_WRLCK) == 0) {
      fcntl(fd_, F_SETLEASE, F_UNLCK);
      return true;
    }
    if (errno != EAGAIN && errno != EBUSY) return false;  // no leases here: cannot tell
    if (std::chrono::steady_clock::now() >= deadline) return false;
    usleep(10000);
  }
}

void BackingFile::begin_write(std::span<PageWrite> batch) noexcept {
  ThreadRing& t = t_ring;
  IoRing* r;
  try {
    r = &ring();
  } catch (const std::exception&) {
    t.pending = batch;
    t.failed = true;
    return;
  }
  t.failed = false;
  const std::size_t n = std::min(batch.size(), r->buffer_pages());
  t.pending = batch.first(n);
  // Pages past the buffer are not written: they must not read as written.
  for (PageWrite& p : batch.subspan(n)) p.result = -E2BIG;
  // Sorted by slot, adjacent slots sit in adjacent buffer pages and go out
  // as one write.
  std::sort(t.pending.begin(), t.pending.end(),
            [](const PageWrite& a, const PageWrite& b) { return a.slot < b.slot; });
  std::size_t nops = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::memcpy(r->buffer(i), t.pending[i].page, kPageSize);
    if (i > 0 && t.pending[i].slot == t.pending[i - 1].slot + 1) {
      ++t.ops[nops - 1].pages;
    } else {
      t.ops[nops++] = IoOp{t.pending[i].slot * kPageSize, static_cast<std::uint32_t>(i), 1, true, 0};
    }
    t.op_of[i] = nops - 1;
  }
  r->start(std::span(t.ops, nops));
}

void BackingFile::end_write() noexcept {
  ThreadRing& t = t_ring;
  if (t.failed) {
    for (PageWrite& p : t.pending) p.result = -ENOMEM;
  } else {
    t.ring->finish();
    for (std::size_t i = 0; i < t.pending.size(); ++i) {
      const int res = t.ops[t.op_of[i]].result;
      t.pending[i].result = res < 0 ? res : 0;
    }
  }
  t.pending = {};
}

void BackingFile::write(std::span<PageWrite> pages) noexcept {
  while (!pages.empty()) {
    const std::size_t n = std::min<std::size_t>(pages.size(), kBatchPages);
    begin_write(pages.first(n));
    end_write();
    pages = pages.subspan(n);
  }
}

std::error_code BackingFile::read(Slot slot, PageBuffer out) noexcept {
  IoRing* r;
  try {
    r = &ring();
  } catch (const std::system_error& e) {
    return e.code();
  }
  IoOp op{slot * kPageSize, 0, 1, false, 0};
  r->run(std::span(&op, 1));
  if (op.result < 0) return {-op.result, std::generic_category()};
  std::memcpy(out.data(), r->buffer(0), kPageSize);
  return {};
}

}  // namespace uzswap
