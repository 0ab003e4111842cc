#include "uzswap/backing/io_ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <system_error>

namespace uzswap {

IoRing::IoRing(int fd, unsigned depth, std::size_t buffer_pages)
    : fd_(fd), depth_(depth), buffer_pages_(buffer_pages) {
  const char* step = "";
  if (const int err = open_ring(ring_, buffers_, step); err != 0)
    throw std::system_error(err, std::generic_category(), step);
  // At most one op per buffer page can be in a batch.
  done_.resize(buffer_pages);
  queue_.resize(buffer_pages);
  finished_.resize(buffer_pages);
}

IoRing::~IoRing() { close_ring(ring_, buffers_); }

int IoRing::open_ring(io_uring& ring, std::byte*& buffers, const char*& step) noexcept {
  if (const int err = io_uring_queue_init(depth_, &ring, 0); err < 0) {
    step = "io_uring_queue_init";
    return -err;
  }
  void* mem = mmap(nullptr, buffer_pages_ * 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mem == MAP_FAILED) {
    const int err = errno;
    io_uring_queue_exit(&ring);
    step = "mmap io buffers";
    return err;
  }
  buffers = static_cast<std::byte*>(mem);
  const iovec region{buffers, buffer_pages_ * 4096};
  int err = io_uring_register_buffers(&ring, &region, 1);
  if (err == 0) err = io_uring_register_files(&ring, &fd_, 1);
  if (err < 0) {
    munmap(buffers, buffer_pages_ * 4096);
    buffers = nullptr;
    io_uring_queue_exit(&ring);
    step = "io_uring register";
    return -err;
  }
  return 0;
}

void IoRing::close_ring(io_uring& ring, std::byte*& buffers) noexcept {
  // The kernel cancels or finishes what is still in flight after this
  // returns; the buffer's pages stay pinned by the ring until it has, so a
  // late transfer lands in pages nobody else is given, never in the next
  // batch's.
  io_uring_queue_exit(&ring);
  munmap(buffers, buffer_pages_ * 4096);
  buffers = nullptr;
}

bool IoRing::replace_ring() noexcept {
  io_uring fresh{};
  std::byte* fresh_buffers = nullptr;
  const char* step = "";
  if (open_ring(fresh, fresh_buffers, step) != 0) return false;  // the old one stays, broken
  close_ring(ring_, buffers_);
  ring_ = fresh;
  buffers_ = fresh_buffers;
  broken_ = false;
  ++replaced_;
  return true;
}

void IoRing::fail_remaining(int err) noexcept {
  for (std::size_t i = 0; i < ops_.size(); ++i)
    if (!finished_[i]) {
      ops_[i].result = err;
      finished_[i] = 1;
      ++completed_;
    }
  head_ = tail_ = 0;
}

void IoRing::start(std::span<IoOp> ops) noexcept {
  ops_ = ops.first(std::min(ops.size(), queue_.size()));
  head_ = tail_ = completed_ = 0;
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    done_[i] = 0;
    finished_[i] = 0;
    ops_[i].result = 0;
    queue_[tail_++ % queue_.size()] = static_cast<std::uint32_t>(i);
  }
  if (broken_ && !replace_ring()) {
    // No new ring after a failure: this batch fails, the next one tries again.
    fail_remaining(-EIO);
    return;
  }
  submit_queued(false);
}

void IoRing::submit_queued(bool wait) noexcept {
  while (head_ != tail_) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) break;  // full: submitted below, the rest after a reap
    const std::uint32_t i = queue_[head_++ % queue_.size()];
    IoOp& op = ops_[i];
    const std::uint32_t len = op.pages * 4096u - done_[i];
    std::byte* buf = buffer(op.buf_page) + done_[i];
    if (op.write)
      io_uring_prep_write_fixed(sqe, 0, buf, len, op.offset + done_[i], 0);
    else
      io_uring_prep_read_fixed(sqe, 0, buf, len, op.offset + done_[i], 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, i);
  }
  int submitted;
  if (fail_submit_after_ >= 0 && fail_submit_after_-- == 0) {
    submitted = fail_submit_error_;
    fail_submit_after_ = -1;
  } else {
    submitted = wait ? io_uring_submit_and_wait(&ring_, 1) : io_uring_submit(&ring_);
  }
  if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY) {
    // The ring itself failed. Every op not complete fails with it, those in
    // flight included; their completions may still come, and would be
    // credited to the next batch, whose buffers are being filled: the ring
    // and its buffers are let go (the kernel finishes with them) and the
    // next batch gets new ones.
    fail_remaining(submitted);
    broken_ = true;
    replace_ring();
  }
}

void IoRing::finish() noexcept {
  while (completed_ < ops_.size()) {
    io_uring_cqe* cqe;
    unsigned seen = 0, head_index;
    io_uring_for_each_cqe(&ring_, head_index, cqe) {
      ++seen;
      const auto i = static_cast<std::uint32_t>(io_uring_cqe_get_data64(cqe));
      IoOp& op = ops_[i];
      const int res = cqe->res;
      if (res < 0 && res != -EAGAIN && res != -EINTR) {
        op.result = res;
        finished_[i] = 1;
        ++completed_;
      } else if (res == 0 && op.pages > 0) {
        op.result = op.write ? -EIO : -ENODATA;  // no progress: past the end of the file
        finished_[i] = 1;
        ++completed_;
      } else {
        if (res > 0) done_[i] += static_cast<std::uint32_t>(res);
        if (done_[i] < op.pages * 4096u) {
          queue_[tail_++ % queue_.size()] = i;  // short or interrupted: the rest again
        } else {
          op.result = static_cast<int>(done_[i]);
          finished_[i] = 1;
          ++completed_;
        }
      }
    }
    io_uring_cq_advance(&ring_, seen);
    if (completed_ < ops_.size()) submit_queued(true);
  }
}

void IoRing::fail_submit_for_testing(unsigned after, int error) noexcept {
  fail_submit_after_ = static_cast<int>(after);
  fail_submit_error_ = error;
}

}  // namespace uzswap
