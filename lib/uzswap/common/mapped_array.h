// A fixed-capacity array in its own anonymous mapping. Pages are only backed
// (and, under mlockall(MCL_ONFAULT), only locked) once touched, so a large
// capacity reserved at start-up costs nothing until it is used, and using it
// later never calls malloc.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstddef>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "uzswap/common/result.h"

namespace uzswap {

template <typename T>
class MappedArray {
  static_assert(std::is_trivially_default_constructible_v<T> &&
                std::is_trivially_destructible_v<T>);

 public:
  MappedArray() = default;
  explicit MappedArray(std::size_t capacity) : capacity_(capacity) {
    if (capacity_ == 0) return;
    void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      const std::error_code error = errno_error();
      throw std::system_error(error, "mmap an array of " + std::to_string(bytes()) + " bytes");
    }
    data_ = static_cast<T*>(p);
  }
  ~MappedArray() {
    if (data_ != nullptr) munmap(data_, bytes());
  }
  MappedArray(MappedArray&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), capacity_(std::exchange(other.capacity_, 0)) {}
  MappedArray& operator=(MappedArray&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
    return *this;
  }

  // Backs every page now (zeroed), so that using the array later never faults
  // in fresh memory. Best effort: without MADV_POPULATE_WRITE pages come on
  // first touch.
  void populate() noexcept { (void)populate(0, capacity_); }
  // The same for the pages holding elements [first, first + count) (clamped
  // to the capacity). An error when the kernel could not back them (ENOMEM),
  // or has no MADV_POPULATE_WRITE (EINVAL).
  Result<> populate(std::size_t first, std::size_t count) noexcept {
    if (data_ == nullptr || first >= capacity_) return {};
    count = std::min(count, capacity_ - first);
    if (count == 0) return {};
    constexpr std::uintptr_t kPage = 4096;
    const auto begin = reinterpret_cast<std::uintptr_t>(data_ + first) & ~(kPage - 1);
    const auto end = reinterpret_cast<std::uintptr_t>(data_ + first + count);
    if (madvise(reinterpret_cast<void*>(begin), end - begin, 23 /* MADV_POPULATE_WRITE */) != 0)
      return failure(errno_error());
    return {};
  }

  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t bytes() const noexcept { return capacity_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  std::size_t capacity_ = 0;
};

}  // namespace uzswap
