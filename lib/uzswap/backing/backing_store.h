// The backing store: where written-back pages live. Slot N is at offset
// N * 4096 (an identity mapping, as zswap writes a page to its own swap slot).
//
// BackingStore is an interface so tests can inject faults; BackingFile is the
// real one: a preallocated file, written once at set-up so no block is left
// unwritten, opened O_DIRECT, driven by io_uring. Each
// thread that calls it gets its own ring (made on its first call, or by
// prepare_thread()).
#pragma once

#include <chrono>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "uzswap/common/page.h"

namespace uzswap {

struct PageWrite {
  Slot slot;
  const std::byte* page;  // kPageSize bytes
  int result = 0;         // filled in: 0 or -errno
};

struct PageRead {
  Slot slot;
  std::byte* page;  // kPageSize bytes, filled in
  int result = 0;   // filled in: 0 or -errno (EBADMSG: failed to authenticate)
};

class BackingStore {
 public:
  virtual ~BackingStore() = default;
  // Writes each page to its slot; adjacent slots become one I/O. Sets each
  // op's result.
  virtual void write(std::span<PageWrite> pages) noexcept = 0;
  // write() in two halves, so the caller can prepare the next batch while
  // this one is in flight: begin_write() takes the pages (they may be reused
  // on return) and starts; end_write() waits and sets the results. At most
  // max_batch() pages, one batch at a time per thread. By default the whole
  // write happens in end_write().
  virtual void begin_write(std::span<PageWrite> pages) noexcept { pending_ = pages; }
  virtual void end_write() noexcept {
    write(pending_);
    pending_ = {};
  }
  virtual std::error_code read(Slot slot, PageBuffer out) noexcept = 0;
  // Reads each page of its slot, as read() does one, but all at once where
  // the store can: in one submission, adjacent slots as one I/O (a READ of
  // several written-back pages waits for the disk once, not once a page).
  // Sets each op's result. By default one read() after another.
  virtual void read_many(std::span<PageRead> pages) noexcept {
    for (PageRead& p : pages) {
      const std::error_code ec = read(p.slot, PageBuffer(p.page, kPageSize));
      p.result = ec ? -ec.value() : 0;
    }
  }
  // Waits until nobody else (a dead serving process's I/O still in flight)
  // has the store open for writing, up to `timeout`. True when that is
  // known; false on timeout or when the store cannot tell.
  virtual bool wait_for_other_writers(std::chrono::milliseconds timeout) noexcept {
    (void)timeout;
    return true;
  }
  // Pages one write() call takes at most.
  virtual std::size_t max_batch() const noexcept = 0;
  virtual void prepare_thread() = 0;

 private:
  std::span<PageWrite> pending_;
};

// One extent of a file as FIEMAP reports it.
struct FileExtent {
  std::uint64_t offset;
  std::uint64_t length;
  bool unwritten;  // allocated, but reads as zeros until first written
};
// A byte range of a file.
struct FileRange {
  std::uint64_t offset;
  std::uint64_t length;
  bool operator==(const FileRange&) const = default;
};
// The ranges of [0, bytes) whose first write would still need the
// filesystem's journal: unwritten extents and holes between `extents` (in
// offset order, as FIEMAP gives them). Adjacent ranges are merged.
std::vector<FileRange> ranges_to_write_once(std::span<const FileExtent> extents, std::uint64_t bytes);

// What readying a BackingFile at construction cost.
struct BackingFileSetup {
  bool mapped = false;             // FIEMAP answered; false: nothing could be checked
  std::error_code map_error;       // why not
  std::uint64_t written_bytes = 0; // unwritten or unallocated bytes written once, with zeros
  std::uint64_t ranges = 0;        // ranges of them
  double seconds = 0;              // preallocation and writes
};

class BackingFile final : public BackingStore {
 public:
  static constexpr unsigned kBatchPages = 64;
  // Called about once a second while the constructor writes the file.
  using SetupProgress = std::function<void(std::uint64_t written_bytes, std::uint64_t to_write_bytes)>;

  // Creates or opens `path`, preallocates `bytes` of disk, opens it
  // O_DIRECT, then writes zeros once over every block in [0, bytes) that
  // FIEMAP shows unwritten or missing: fallocate() leaves unwritten extents,
  // and the first write of each would convert it, a journal transaction
  // in the swap-out path, while the machine is short of memory. Blocks
  // already written are left alone, so pages written by an earlier process
  // survive and reopening a ready file writes nothing. On a filesystem
  // without FIEMAP nothing is written (setup().mapped is false). Throws
  // std::system_error with a message naming the path.
  BackingFile(const std::string& path, std::uint64_t bytes, const SetupProgress& progress = {});
  ~BackingFile() override;

  const BackingFileSetup& setup() const noexcept { return setup_; }

  void write(std::span<PageWrite> pages) noexcept override;
  void begin_write(std::span<PageWrite> pages) noexcept override;
  void end_write() noexcept override;
  std::error_code read(Slot slot, PageBuffer out) noexcept override;
  void read_many(std::span<PageRead> pages) noexcept override;
  std::size_t max_batch() const noexcept override { return kBatchPages; }
  void prepare_thread() override;
  // A write lease is granted only while no other open file description has
  // the file open for writing, and an O_DIRECT write in flight keeps its
  // file open: so the lease tells when a dead process's writes have landed.
  bool wait_for_other_writers(std::chrono::milliseconds timeout) noexcept override;

  const std::string& path() const noexcept { return path_; }

 private:
  class IoRing& ring();

  void write_once(const SetupProgress& progress);

  std::string path_;
  std::uint64_t bytes_;
  int fd_ = -1;
  std::uint64_t id_;  // tells this store's per-thread rings from another's
  BackingFileSetup setup_;
};

}  // namespace uzswap
