#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "uzswap/backing/backing_store.h"
#include "uzswap/common/result.h"
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

// One I/O per run of adjacent slots in `pages` (page i in buffer page i):
// fills ops and, for each page, the index of its op; returns the op count.
template <class Page>
std::size_t ops_for_runs(std::span<const Page> pages, bool write, IoOp* ops, std::size_t* op_of) noexcept {
  std::size_t nops = 0;
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (i > 0 && pages[i].slot == pages[i - 1].slot + 1) {
      ++ops[nops - 1].pages;
    } else {
      ops[nops++] = IoOp{pages[i].slot * kPageSize, static_cast<std::uint32_t>(i), 1, write, 0};
    }
    op_of[i] = nops - 1;
  }
  return nops;
}

// The extents of [0, bytes), in offset order, or the error FIEMAP failed
// with (EOPNOTSUPP: the filesystem has none). The first call writes out
// delayed allocations (FIEMAP_FLAG_SYNC), so what it reports is on disk.
Result<std::vector<FileExtent>> map_extents(int fd, std::uint64_t bytes) {
  constexpr unsigned kPerCall = 256;
  std::vector<std::uint64_t> storage((sizeof(fiemap) + kPerCall * sizeof(fiemap_extent)) / sizeof(std::uint64_t) + 1);
  auto* map = reinterpret_cast<fiemap*>(storage.data());
  std::vector<FileExtent> extents;
  std::uint64_t start = 0;
  bool first = true;
  while (start < bytes) {
    *map = fiemap{};
    map->fm_start = start;
    map->fm_length = bytes - start;
    map->fm_flags = first ? FIEMAP_FLAG_SYNC : 0;
    map->fm_extent_count = kPerCall;
    first = false;
    if (ioctl(fd, FS_IOC_FIEMAP, map) != 0) return failure(errno_error());
    if (map->fm_mapped_extents == 0) break;
    bool last = false;
    for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
      const fiemap_extent& e = map->fm_extents[i];
      extents.push_back({e.fe_logical, e.fe_length, (e.fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0});
      last = (e.fe_flags & FIEMAP_EXTENT_LAST) != 0;
    }
    if (last) break;
    start = extents.back().offset + extents.back().length;
  }
  return extents;
}

}  // namespace

std::vector<FileRange> ranges_to_write_once(std::span<const FileExtent> extents, std::uint64_t bytes) {
  std::vector<FileRange> ranges;
  const auto add = [&](std::uint64_t from, std::uint64_t to) {
    if (from >= to) return;
    if (!ranges.empty() && ranges.back().offset + ranges.back().length == from) ranges.back().length += to - from;
    else ranges.push_back({from, to - from});
  };
  std::uint64_t done = 0;  // [0, done) is accounted for
  for (const FileExtent& e : extents) {
    const std::uint64_t from = std::min(e.offset, bytes);
    const std::uint64_t to = std::min(e.offset + e.length, bytes);
    add(done, from);  // a hole before the extent
    if (e.unwritten) add(std::max(from, done), to);
    done = std::max(done, to);
  }
  add(done, bytes);
  return ranges;
}

BackingFile::BackingFile(const std::string& path, std::uint64_t bytes, const SetupProgress& progress)
    : path_(path), bytes_(bytes), id_(g_next_id.fetch_add(1)) {
  const auto start = std::chrono::steady_clock::now();
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "open backing file " + path);
  if (fallocate(fd_, 0, 0, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    close(fd_);
    throw std::system_error(err, std::generic_category(),
                            "preallocate " + std::to_string(bytes) + " bytes for " + path);
  }
  try {
    write_once(progress);
  } catch (...) {
    close(fd_);
    throw;
  }
  setup_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void BackingFile::write_once(const SetupProgress& progress) {
  // Blocks a dead serving process was writing may still be in flight here
  // (a restart that adopts its state): zeros over such a block can land
  // before or after its write, which is harmless, as the new process trusts
  // no block whose write was in flight
  // (RestartSide::release_stale_file_writes) and writes nothing before this
  // returns.
  const auto extents = map_extents(fd_, bytes_);
  if (!extents) {
    setup_.map_error = extents.error();
    return;
  }
  setup_.mapped = true;
  const std::vector<FileRange> ranges = ranges_to_write_once(*extents, bytes_);
  std::uint64_t to_write = 0;
  for (const FileRange& r : ranges) to_write += r.length;
  if (to_write == 0) return;

  // Large O_DIRECT writes from a buffer of zeros (an anonymous mapping
  // reads as zeros), given back once done.
  constexpr std::size_t kChunk = 8u << 20;
  void* zeros = mmap(nullptr, kChunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (zeros == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "map a buffer of zeros");
  struct Unmap {
    void* p;
    ~Unmap() { munmap(p, kChunk); }
  } unmap{zeros};
  auto last_report = std::chrono::steady_clock::now();
  for (const FileRange& r : ranges) {
    for (std::uint64_t offset = r.offset; offset < r.offset + r.length;) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, r.offset + r.length - offset));
      const ssize_t done = pwrite(fd_, zeros, n, static_cast<off_t>(offset));
      if (done < 0 && errno == EINTR) continue;
      if (done <= 0)
        throw std::system_error(done < 0 ? errno : EIO, std::generic_category(),
                                "write the unwritten blocks of " + path_ + " once, at offset " +
                                    std::to_string(offset));
      offset += static_cast<std::uint64_t>(done);
      setup_.written_bytes += static_cast<std::uint64_t>(done);
      if (const auto now = std::chrono::steady_clock::now(); progress && now - last_report >= std::chrono::seconds(1)) {
        progress(setup_.written_bytes, to_write);
        last_report = now;
      }
    }
    ++setup_.ranges;
  }
  // The extents' conversion, committed now rather than by the journal's
  // next commit.
  if (fdatasync(fd_) != 0)
    throw std::system_error(errno, std::generic_category(), "fdatasync " + path_);
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
  for (std::size_t i = 0; i < n; ++i) std::memcpy(r->buffer(i), t.pending[i].page, kPageSize);
  r->start(std::span(t.ops, ops_for_runs<PageWrite>(t.pending, true, t.ops, t.op_of)));
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

void BackingFile::read_many(std::span<PageRead> pages) noexcept {
  IoRing* r;
  try {
    r = &ring();
  } catch (const std::system_error& e) {
    for (PageRead& p : pages) p.result = -e.code().value();
    return;
  }
  // The pages come in the order of the request (slot order), so runs of
  // adjacent slots go out as one read each; a batch at most fills the ring.
  IoOp ops[kBatchPages];
  std::size_t op_of[kBatchPages];
  while (!pages.empty()) {
    const std::size_t n = std::min<std::size_t>({pages.size(), kBatchPages, r->buffer_pages()});
    const std::span<PageRead> batch = pages.first(n);
    r->run(std::span(ops, ops_for_runs<PageRead>(batch, false, ops, op_of)));
    for (std::size_t i = 0; i < n; ++i) {
      const int res = ops[op_of[i]].result;
      batch[i].result = res < 0 ? res : 0;
      if (res >= 0) std::memcpy(batch[i].page, r->buffer(i), kPageSize);
    }
    pages = pages.subspan(n);
  }
}

}  // namespace uzswap
