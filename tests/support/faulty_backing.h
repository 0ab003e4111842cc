// A BackingStore for tests: forwards to a real one, and can fail writes
// (EIO, ENOSPC, or the tail of a batch as a write that came up short) and
// run a hook in the middle of a write, while no slot lock is held, to force
// an interleaving with writeback's check-lock-check.
#pragma once

#include <atomic>
#include <functional>

#include "uzswap/backing/backing_store.h"
#include "uzswap/common/mutex.h"

namespace uzswap::testing {

class FaultyBacking final : public BackingStore {
 public:
  explicit FaultyBacking(BackingStore& real) : real_(real) {}

  // Every write fails with -error (0 = no failure).
  void fail_writes(int error) { fail_error_.store(error); }
  // Writes succeed for the first `pages` pages of each call, the rest fail
  // with -EIO: a short write that could not be completed.
  void short_writes(std::size_t pages) { short_after_.store(pages); }
  void fail_reads(int error) { read_error_.store(error); }
  // Reads of one slot fail with -error (0 = none).
  void fail_reads_of(Slot slot, int error) {
    bad_slot_.store(slot);
    bad_slot_error_.store(error);
  }
  // Reads succeed but the page comes back with one byte flipped: a block
  // damaged on disk.
  void corrupt_reads(bool on) { corrupt_reads_.store(on); }
  // Runs once, inside the next read, before the data is read.
  void on_next_read(std::function<void()> hook) {
    MutexLock guard(lock_);
    read_hook_ = std::move(hook);
  }
  // Runs once, inside the next write, before the data reaches the file.
  void on_next_write(std::function<void()> hook) {
    MutexLock guard(lock_);
    hook_ = std::move(hook);
  }

  // Pages written so far, and write() calls (submissions).
  std::uint64_t writes() const { return writes_.load(); }
  std::uint64_t write_calls() const { return write_calls_.load(); }
  // read() and read_many() calls so far.
  std::uint64_t reads() const { return reads_.load(); }
  std::uint64_t read_many_calls() const { return read_many_calls_.load(); }

  void write(std::span<PageWrite> pages) noexcept override {
    std::function<void()> hook;
    {
      MutexLock guard(lock_);
      hook.swap(hook_);
    }
    if (hook) hook();
    writes_.fetch_add(pages.size());
    write_calls_.fetch_add(1);
    if (const int error = fail_error_.load()) {
      for (PageWrite& p : pages) p.result = -error;
      return;
    }
    const std::size_t ok = std::min(pages.size(), short_after_.load());
    real_.write(pages.first(ok));
    for (PageWrite& p : pages.subspan(ok)) p.result = -EIO;
  }
  std::error_code read(Slot slot, PageBuffer out) noexcept override {
    std::function<void()> hook;
    {
      MutexLock guard(lock_);
      hook.swap(read_hook_);
    }
    if (hook) hook();
    reads_.fetch_add(1);
    if (const int error = read_error_.load()) return {error, std::generic_category()};
    if (slot == bad_slot_.load() && bad_slot_error_.load() != 0) return {bad_slot_error_.load(), std::generic_category()};
    const std::error_code ec = real_.read(slot, out);
    if (!ec && corrupt_reads_.load()) out[1234] ^= std::byte{0x10};
    return ec;
  }
  // The real store's read_many (one batch), with the same faults as read().
  void read_many(std::span<PageRead> pages) noexcept override {
    std::function<void()> hook;
    {
      MutexLock guard(lock_);
      hook.swap(read_hook_);
    }
    if (hook) hook();
    read_many_calls_.fetch_add(1);
    if (const int error = read_error_.load()) {
      for (PageRead& p : pages) p.result = -error;
      return;
    }
    real_.read_many(pages);
    for (PageRead& p : pages) {
      if (p.slot == bad_slot_.load() && bad_slot_error_.load() != 0) {
        p.result = -bad_slot_error_.load();
      } else if (p.result == 0 && corrupt_reads_.load()) {
        p.page[1234] ^= std::byte{0x10};
      }
    }
  }
  std::size_t max_batch() const noexcept override { return real_.max_batch(); }
  void prepare_thread() override { real_.prepare_thread(); }

 private:
  BackingStore& real_;
  std::atomic<int> fail_error_{0};
  std::atomic<int> read_error_{0};
  std::atomic<bool> corrupt_reads_{false};
  std::atomic<std::size_t> short_after_{SIZE_MAX};
  std::atomic<std::uint64_t> writes_{0};
  std::atomic<std::uint64_t> write_calls_{0};
  std::atomic<std::uint64_t> reads_{0};
  std::atomic<std::uint64_t> read_many_calls_{0};
  std::atomic<Slot> bad_slot_{~Slot{0}};
  std::atomic<int> bad_slot_error_{0};
  Mutex lock_;
  std::function<void()> hook_ GUARDED_BY(lock_);
  std::function<void()> read_hook_ GUARDED_BY(lock_);
};

}  // namespace uzswap::testing
