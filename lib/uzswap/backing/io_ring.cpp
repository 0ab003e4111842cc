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

void IoRing::run(std::span<IoOp> ops) noexcept {
  const std::size_t n = std::min(ops.size(), queue_.size());
  std::size_t head = 0, tail = 0;  // queue_[head, tail): ops to (re)submit
  for (std::size_t i = 0; i < n; ++i) {
    done_[i] = 0;
    queue_[tail++ % queue_.size()] = static_cast<std::uint32_t>(i);
  }
  std::size_t in_flight = 0, completed = 0;
  while (completed < n) {
    // Fill the submission queue; when it is full, submit and reap.
    while (head != tail) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) break;
      const std::uint32_t i = queue_[head++ % queue_.size()];
      IoOp& op = ops[i];
      const std::uint32_t len = op.pages * 4096u - done_[i];
      std::byte* buf = buffer(op.buf_page) + done_[i];
      if (op.write)
        io_uring_prep_write_fixed(sqe, 0, buf, len, op.offset + done_[i], 0);
      else
        io_uring_prep_read_fixed(sqe, 0, buf, len, op.offset + done_[i], 0);
      sqe->flags |= IOSQE_FIXED_FILE;
      io_uring_sqe_set_data64(sqe, i);
      ++in_flight;
    }
    const int submitted = io_uring_submit_and_wait(&ring_, 1);
    if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY) {
      // The ring itself failed: every op not yet complete fails with it.
      for (std::size_t i = 0; i < n; ++i)
        if (done_[i] < ops[i].pages * 4096u && ops[i].result >= 0) ops[i].result = submitted;
      return;
    }
    io_uring_cqe* cqe;
    unsigned seen = 0, head_index;
    io_uring_for_each_cqe(&ring_, head_index, cqe) {
      ++seen;
      --in_flight;
      const auto i = static_cast<std::uint32_t>(io_uring_cqe_get_data64(cqe));
      IoOp& op = ops[i];
      const int res = cqe->res;
      if (res < 0 && res != -EAGAIN && res != -EINTR) {
        op.result = res;
        ++completed;
      } else if (res == 0 && op.pages > 0) {
        op.result = op.write ? -EIO : -ENODATA;  // no progress: past the end of the file
        ++completed;
      } else {
        if (res > 0) done_[i] += static_cast<std::uint32_t>(res);
        if (done_[i] < op.pages * 4096u) {
          queue_[tail++ % queue_.size()] = i;  // short or interrupted: the rest again
        } else {
          op.result = static_cast<int>(done_[i]);
          ++completed;
        }
      }
    }
    io_uring_cq_advance(&ring_, seen);
  }
}

}  // namespace uzswap
