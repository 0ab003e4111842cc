#include "uzswap/frontend/slot_io.h"

#include <cerrno>

namespace uzswap {

namespace {

// The page every zero write stores: same-filled, so it costs no pool memory.
alignas(64) constexpr std::byte kZeroPage[kPageSize] = {};

}  // namespace

std::uint64_t SlotIo::read_prefix(std::uint64_t offset, std::span<std::byte> out) noexcept {
  // Pages in the backing file are read together: one wait for the disk.
  const std::uint64_t pages = out.size() / kPageSize;
  const std::uint64_t good = store_.load_many(offset / kPageSize, out.first(pages * kPageSize));
  if (good < pages) read_errors_.fetch_add(1, std::memory_order_relaxed);
  read_pages_.fetch_add(good, std::memory_order_relaxed);
  return good * kPageSize;
}

Result<> SlotIo::read(std::uint64_t offset, std::span<std::byte> out) noexcept {
  if (read_prefix(offset, out) != out.size()) return failure(errno_error(EIO));
  return {};
}

Result<> SlotIo::write(std::uint64_t offset, std::span<const std::byte> data, int node) noexcept {
  const PageStore::StoredMany stored = store_.store_many(offset / kPageSize, data, node);
  written_pages_.fetch_add(stored.pages, std::memory_order_relaxed);
  if (stored.error) {
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    return failure(errno_error(stored.error == StoreError::pool_full ? ENOSPC : EIO));
  }
  return {};
}

Result<> SlotIo::write_zeroes(std::uint64_t offset, std::uint64_t length) noexcept {
  for (std::uint64_t done = 0; done < length; done += kPageSize) {
    const auto stored = store_.store((offset + done) / kPageSize, PageView(kZeroPage, kPageSize));
    if (!stored) {
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      written_pages_.fetch_add(done / kPageSize, std::memory_order_relaxed);
      return failure(errno_error(stored.error() == StoreError::pool_full ? ENOSPC : EIO));
    }
  }
  written_pages_.fetch_add(length / kPageSize, std::memory_order_relaxed);
  return {};
}

Result<std::uint64_t> SlotIo::discard(std::uint64_t offset, std::uint64_t length) noexcept {
  const auto dropped = store_.invalidate(offset / kPageSize, length / kPageSize);
  if (!dropped) return failure(errno_error(EINVAL));
  discard_requests_.fetch_add(1, std::memory_order_relaxed);
  discarded_pages_.fetch_add(*dropped, std::memory_order_relaxed);
  return *dropped;
}

SlotIoStats SlotIo::stats() const noexcept {
  SlotIoStats s;
  s.read_pages = read_pages_.load(std::memory_order_relaxed);
  s.written_pages = written_pages_.load(std::memory_order_relaxed);
  s.discarded_pages = discarded_pages_.load(std::memory_order_relaxed);
  s.discard_requests = discard_requests_.load(std::memory_order_relaxed);
  s.write_errors = write_errors_.load(std::memory_order_relaxed);
  s.read_errors = read_errors_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace uzswap
