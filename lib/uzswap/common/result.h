// The library's one error convention (docs/design.md, "Errors"):
//
// - A fallible operation returns Result<T>: the value, or a std::error_code.
// - A system failure is an errno value in std::system_category (or a
//   std::errc); errno_error() makes one.
// - A failure of the library's own (a state of the wrong layout, an address
//   that is not one) is a value of an error-code enum of the module that
//   reports it, with its own std::error_category and std::is_error_code_enum
//   specialisation, so that a caller writes `r.error() == ListenError::no_port`.
//   ErrorCategory<Enum> below is that category.
// - A constructor that cannot build its object throws std::system_error with
//   the same kind of error_code and a message that names the thing (a path, a
//   device).
// - bool answers yes/no questions only, never "it failed"; no -errno returns;
//   no empty string that means an error.
// - Parsed<T> is the one exception: a parser or check of what a person wrote
//   or configured (parse_daemon_args, check_backing_file, control's
//   parse_request, ZPool::check_region_bytes) and SharedState::attach, whose
//   refusal is reported to a person as it is, keep that sentence:
//   std::expected<T, std::string>. Nothing branches on its text.
// - Exceptions are for programming errors and for start-up steps whose
//   failure aborts the start (constructors, LoopDevice::attach); never for a
//   failure a caller is expected to handle.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <system_error>

namespace uzswap {

template <class T = void>
using Result = std::expected<T, std::error_code>;

// The value, or a sentence for a person (see above: parsers of user input).
template <class T = void>
using Parsed = std::expected<T, std::string>;

// An errno value as an error_code (std::system_category). A negated one, as
// io_uring completions and netlink acks carry it, is taken as it is meant.
inline std::error_code errno_error(int value) noexcept {
  return {value < 0 ? -value : value, std::system_category()};
}
// errno, as it is now.
inline std::error_code errno_error() noexcept { return errno_error(errno); }

// The failure side of a Result: `return failure(errno_error());`,
// `return failure(ListenError::no_port);`.
inline std::unexpected<std::error_code> failure(std::error_code error) noexcept {
  return std::unexpected(error);
}

// The std::error_category of a domain error enum: a name and one message per
// value (`describe`, which must not allocate or throw). One static instance
// per enum, in the module's .cpp:
//
//   const std::error_category& listen_category() noexcept {
//     static const ErrorCategory<ListenError> category("uzswap.nbd_listen", describe);
//     return category;
//   }
template <class Enum>
class ErrorCategory final : public std::error_category {
 public:
  using Describe = const char* (*)(Enum) noexcept;
  constexpr ErrorCategory(const char* name, Describe describe) noexcept : name_(name), describe_(describe) {}
  const char* name() const noexcept override { return name_; }
  std::string message(int value) const override { return describe_(static_cast<Enum>(value)); }

 private:
  const char* name_;
  Describe describe_;
};

}  // namespace uzswap
