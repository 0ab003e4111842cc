// SlotIo: the store-facing request path every front end shares. A front end
// (FUSE, NBD) parses its own wire protocol and checks its own rules (what is
// aligned, what past the end means); what reaches the store is one of three
// things on a whole-page byte range: read it, write it, or forget it. They
// live here once, with the counters status shows, so both transports store,
// load and discard pages exactly alike.
//
// Every call is noexcept and allocates nothing (PageStore's request-path
// rules); the caller has checked that offset and length are page-aligned and
// inside the device. Errors come back as a positive errno, the value both
// protocols put on the wire.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "uzswap/common/result.h"
#include "uzswap/store/page_store.h"

namespace uzswap {

struct SlotIoStats {
  std::uint64_t read_pages = 0;
  std::uint64_t written_pages = 0;
  std::uint64_t discarded_pages = 0;   // slots freed by a discard that held a page
  std::uint64_t discard_requests = 0;
  std::uint64_t write_errors = 0;      // writes refused (pool full, no memory)
  std::uint64_t read_errors = 0;       // reads that stopped at a page that could not be served
};

class SlotIo {
 public:
  explicit SlotIo(PageStore& store) noexcept : store_(store) {}

  // The errors are errno values (system_category), what a front end answers
  // its kernel with: `error().value()`.
  //
  // Fills `out` (a whole number of pages) with the pages from byte `offset`.
  // EIO when a page cannot be served (damaged, or the backing store failed):
  // reported, never made up.
  Result<> read(std::uint64_t offset, std::span<std::byte> out) noexcept;
  // The same, stopping at the first page that cannot be served: returns the
  // bytes filled (all of `out` when every page was served), so a front end
  // that can answer a short read answers the good pages before a bad one.
  std::uint64_t read_prefix(std::uint64_t offset, std::span<std::byte> out) noexcept;

  // Stores `data` (a whole number of pages) from byte `offset`, the pages
  // for the backing file in one write (PageStore::store_many). On a refusal
  // of any page (ENOSPC: pool full; EIO otherwise) the others hold their
  // new versions, which is what the writer will write again.
  // `node` >= 0 puts the pages in that NUMA node's pool (the node of the
  // task the pages came from, where the front end knows it); -1: the node
  // of the calling CPU.
  Result<> write(std::uint64_t offset, std::span<const std::byte> data, int node = -1) noexcept;

  // Stores a zero page in each slot of the range (a write of zeros without
  // the bytes: same-filled pages take no pool memory).
  Result<> write_zeroes(std::uint64_t offset, std::uint64_t length) noexcept;

  // Forgets the slots of [offset, offset + length); they read as zeros.
  // Returns how many held a page.
  Result<std::uint64_t> discard(std::uint64_t offset, std::uint64_t length) noexcept;

  SlotIoStats stats() const noexcept;
  PageStore& store() noexcept { return store_; }
  const PageStore& store() const noexcept { return store_; }

 private:
  PageStore& store_;
  std::atomic<std::uint64_t> read_pages_{0}, written_pages_{0}, discarded_pages_{0}, discard_requests_{0},
      write_errors_{0}, read_errors_{0};
};

}  // namespace uzswap
