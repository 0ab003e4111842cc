// Why a store or a load failed: error-code enums (common/result.h), so that
// PageStore's operations return Result<T> like the rest of the library and a
// caller compares `r.error() == StoreError::pool_full`.
#pragma once

#include <cstdint>
#include <system_error>

#include "uzswap/common/result.h"

namespace uzswap {

// Why a store was refused (zswap's reject_* counters).
enum class StoreError : std::uint8_t {
  out_of_range = 1,  // slot beyond the device
  pool_full,         // the pool is at its limit (and no backing store took the page)
  alloc_failed,      // the pool could not get memory from the system
  backing_failed,    // the pool was full and the write to the backing store failed
};

enum class LoadError : std::uint8_t {
  out_of_range = 1,  // slot beyond the device
  corrupt,           // stored data did not decompress, or was lost in a crash: never wrong data
  backing_io,        // reading a written-back page from the backing store failed
  raced,             // (internal) the slot changed while its page was read: load again
};

const std::error_category& store_error_category() noexcept;
const std::error_category& load_error_category() noexcept;

inline std::error_code make_error_code(StoreError e) noexcept {
  return {static_cast<int>(e), store_error_category()};
}
inline std::error_code make_error_code(LoadError e) noexcept {
  return {static_cast<int>(e), load_error_category()};
}

}  // namespace uzswap

template <>
struct std::is_error_code_enum<uzswap::StoreError> : std::true_type {};
template <>
struct std::is_error_code_enum<uzswap::LoadError> : std::true_type {};
