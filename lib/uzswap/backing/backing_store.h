// The backing store: where written-back pages live. Slot N is at offset
// N * 4096 (an identity mapping, as zswap writes a page to its own swap slot).
//
// BackingStore is an interface so tests can inject faults; BackingFile is the
// real one: a preallocated file opened O_DIRECT, driven by io_uring. Each
// thread that calls it gets its own ring (made on its first call, or by
// prepare_thread()).
#pragma once

#include <chrono>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>

#include "uzswap/common/page.h"

namespace uzswap {

struct PageWrite {
  Slot slot;
  const std::byte* page;  // kPageSize bytes
  int result = 0;         // filled in: 0 or -errno
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

class BackingFile final : public BackingStore {
 public:
  static constexpr unsigned kBatchPages = 64;

  // Creates or opens `path`, preallocates `bytes` of disk, opens it O_DIRECT.
  // Throws std::system_error with a message naming the path.
  BackingFile(const std::string& path, std::uint64_t bytes);
  ~BackingFile() override;

  void write(std::span<PageWrite> pages) noexcept override;
  void begin_write(std::span<PageWrite> pages) noexcept override;
  void end_write() noexcept override;
  std::error_code read(Slot slot, PageBuffer out) noexcept override;
  std::size_t max_batch() const noexcept override { return kBatchPages; }
  void prepare_thread() override;
  // A write lease is granted only while no other open file description has
  // the file open for writing, and an O_DIRECT write in flight keeps its
  // file open: so the lease tells when a dead process's writes have landed.
  bool wait_for_other_writers(std::chrono::milliseconds timeout) noexcept override;

  const std::string& path() const noexcept { return path_; }

 private:
  class IoRing& ring();

  std::string path_;
  std::uint64_t bytes_;
  int fd_ = -1;
  std::uint64_t id_;  // tells this store's per-thread rings from another's
};

}  // namespace uzswap
