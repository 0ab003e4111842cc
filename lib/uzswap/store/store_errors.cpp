#include "uzswap/store/store_errors.h"

namespace uzswap {

namespace {

const char* describe_store(StoreError e) noexcept {
  switch (e) {
    case StoreError::out_of_range: return "slot beyond the device";
    case StoreError::pool_full: return "the pool is at its limit";
    case StoreError::alloc_failed: return "no memory for the pool";
    case StoreError::backing_failed: return "the write to the backing store failed";
  }
  return "unknown store error";
}

const char* describe_load(LoadError e) noexcept {
  switch (e) {
    case LoadError::out_of_range: return "slot beyond the device";
    case LoadError::corrupt: return "the stored page is damaged";
    case LoadError::backing_io: return "reading the backing store failed";
    case LoadError::raced: return "the slot changed while it was read";
  }
  return "unknown load error";
}

// Made before main (constant-initialised): the request path that first
// fails never runs a guarded static's initialisation.
constinit const ErrorCategory<StoreError> kStoreCategory("uzswap.store", describe_store);
constinit const ErrorCategory<LoadError> kLoadCategory("uzswap.load", describe_load);

}  // namespace

const std::error_category& store_error_category() noexcept { return kStoreCategory; }
const std::error_category& load_error_category() noexcept { return kLoadCategory; }

}  // namespace uzswap
