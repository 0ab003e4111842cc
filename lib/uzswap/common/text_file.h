// Reading a whole (small) kernel or config file as text. A file that cannot
// be opened or read is an error (ENOENT when it is gone): callers that treat
// a vanished file as "gone" test for the error, an empty file reads as "".
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <string_view>

#include "uzswap/common/result.h"

namespace uzswap {

inline Result<std::string> read_text_file(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failure(errno_error());
  std::string text;
  char chunk[4096];
  for (;;) {
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n > 0) {
      text.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      const std::error_code error = errno_error();
      close(fd);
      return failure(error);
    }
  }
  close(fd);
  return text;
}

// Writes `text` to a (small) kernel file in one write(2), as `echo text >`
// does: the kernel takes a setting whole or not at all. A short write,
// which has no errno of its own, is EIO.
inline Result<> write_text_file(const std::string& path, std::string_view text) {
  const int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return failure(errno_error());
  const ssize_t written = write(fd, text.data(), text.size());
  const std::error_code error = written < 0 ? errno_error() : std::make_error_code(std::errc::io_error);
  close(fd);
  if (written != static_cast<ssize_t>(text.size())) return failure(error);
  return {};
}

}  // namespace uzswap
