// IoRing: one io_uring, owned by one thread, over one registered file and one
// registered buffer region of whole pages (O_DIRECT-aligned).
//
// run() carries a batch of page reads and writes to completion: a full
// submission queue means submit and reap, short transfers are resubmitted
// for the remainder, and each op gets its own result. user_data is the op's
// index, so a completion is routed without a lookup. Nothing allocates after
// construction.
//
// If the ring itself fails (a submission refused with anything but EINTR,
// EAGAIN or EBUSY), every op of the batch not yet complete fails, those in
// flight included, and the ring is replaced, buffers and all: a completion
// still to come could otherwise be credited to the next batch while that
// batch refills the buffer. If no new ring can be made, the next start()
// tries again and fails its batch with EIO meanwhile. buffer() pointers are
// valid until the next batch starts.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace uzswap {

struct IoOp {
  std::uint64_t offset;    // file offset, page-aligned
  std::uint32_t buf_page;  // first page of the ring's buffer region
  std::uint32_t pages;     // contiguous pages in the file and in the buffer
  bool write;
  int result = 0;          // filled in: bytes transferred, or -errno
};

class IoRing {
 public:
  // Throws std::system_error (io_uring disabled, memlock limit...).
  IoRing(int fd, unsigned depth, std::size_t buffer_pages);
  ~IoRing();
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  std::byte* buffer(std::size_t page) noexcept { return buffers_ + page * 4096; }
  std::size_t buffer_pages() const noexcept { return buffer_pages_; }
  unsigned depth() const noexcept { return depth_; }
  // Rings made anew after a failure.
  std::uint64_t replaced() const noexcept { return replaced_; }

  // Runs every op to completion (at most buffer_pages() of them).
  void run(std::span<IoOp> ops) noexcept {
    start(ops);
    finish();
  }
  // The same in two halves, so the caller can work while the I/O is in
  // flight: start() submits and returns, finish() waits for every op. One
  // start() at a time; `ops` must live until finish().
  void start(std::span<IoOp> ops) noexcept;
  void finish() noexcept;

  // Tests only: the submission after `after` more successful ones fails
  // with `error` (a negative errno), as if the kernel had refused it.
  void fail_submit_for_testing(unsigned after, int error) noexcept;

 private:
  int fd_;
  io_uring ring_{};
  bool broken_ = false;  // failed, and no new ring could be made yet
  std::uint64_t replaced_ = 0;
  unsigned depth_;
  std::byte* buffers_ = nullptr;
  std::size_t buffer_pages_;
  std::vector<std::uint32_t> done_;     // bytes done per op
  std::vector<std::uint32_t> queue_;    // ops waiting for a submission slot
  std::vector<std::uint8_t> finished_;  // per op: its result is final
  std::span<IoOp> ops_;                 // the batch between start() and finish()
  std::size_t head_ = 0, tail_ = 0, completed_ = 0;
  int fail_submit_after_ = -1, fail_submit_error_ = 0;

  // 0 or an errno (`step` names what failed).
  int open_ring(io_uring& ring, std::byte*& buffers, const char*& step) noexcept;
  void close_ring(io_uring& ring, std::byte*& buffers) noexcept;
  bool replace_ring() noexcept;
  void fail_remaining(int err) noexcept;
  void submit_queued(bool wait) noexcept;
};

}  // namespace uzswap
