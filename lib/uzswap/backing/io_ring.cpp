#include "uzswap/backing/io_ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <system_error>

namespace uzswap {

IoRing::IoRing(int fd, unsigned depth, std::size_t buffer_pages)
    : depth_(depth), buffer_pages_(buffer_pages) {
  if (const int err = io_uring_queue_init(depth, &ring_, 0); err < 0)
    throw std::system_error(-err, std::generic_category(), "io_uring_queue_init");
  void* mem = mmap(nullptr, buffer_pages * 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mem == MAP_FAILED) {
    const int err = errno;
    io_uring_queue_exit(&ring_);
    throw std::system_error(err, std::generic_category(), "mmap io buffers");
  }
  buffers_ = static_cast<std::byte*>(mem);
  const iovec region{buffers_, buffer_pages * 4096};
  int err = io_uring_register_buffers(&ring_, &region, 1);
  if (err == 0) err = io_uring_register_files(&ring_, &fd, 1);
  if (err < 0) {
    munmap(buffers_, buffer_pages * 4096);
    io_uring_queue_exit(&ring_);
    throw std::system_error(-err, std::generic_category(), "io_uring register");
  }
  // At most one op per buffer page can be in a batch.
  done_.resize(buffer_pages);
  queue_.resize(buffer_pages);
}

IoRing::~IoRing() {
  io_uring_queue_exit(&ring_);
  munmap(buffers_, buffer_pages_ * 4096);
}

void IoRing::start(std::span<IoOp> ops) noexcept {
  ops_ = ops.first(std::min(ops.size(), queue_.size()));
  head_ = tail_ = completed_ = 0;
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    done_[i] = 0;
    ops_[i].result = 0;
    queue_[tail_++ % queue_.size()] = static_cast<std::uint32_t>(i);
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
  const int submitted = wait ? io_uring_submit_and_wait(&ring_, 1) : io_uring_submit(&ring_);
  if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY) {
    // The ring itself failed: every op not yet complete fails with it.
    for (std::size_t i = 0; i < ops_.size(); ++i)
      if (done_[i] < ops_[i].pages * 4096u && ops_[i].result == 0) {
        ops_[i].result = submitted;
        ++completed_;
      }
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
        ++completed_;
      } else if (res == 0 && op.pages > 0) {
        op.result = op.write ? -EIO : -ENODATA;  // no progress: past the end of the file
        ++completed_;
      } else {
        if (res > 0) done_[i] += static_cast<std::uint32_t>(res);
        if (done_[i] < op.pages * 4096u) {
          queue_[tail_++ % queue_.size()] = i;  // short or interrupted: the rest again
        } else {
          op.result = static_cast<int>(done_[i]);
          ++completed_;
        }
      }
    }
    io_uring_cq_advance(&ring_, seen);
    if (completed_ < ops_.size()) submit_queued(true);
  }
}

}  // namespace uzswap
