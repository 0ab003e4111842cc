// How the supervisor hands a swap area to a serving process: the file
// descriptors that hold it (instance lock, FUSE connection, shared state),
// inherited across exec and named in the environment, and the exit codes by
// which a serving process says why it ended.
#pragma once

#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace uzswap {

// "LOCK_FD FUSE_FD META_SHMID"; with --frontend nbd, FUSE_FD is the NBD
// listening socket.
inline constexpr const char* kServeEnv = "UZSWAP_SERVE";
inline constexpr const char* kBinaryEnv = "UZSWAP_BINARY";  // what `restart` runs next

inline constexpr int kExitStopped = 0;       // swapoff done, everything taken down
inline constexpr int kExitStartFailed = 1;   // could not start; nothing depends on it yet
inline constexpr int kExitHandover = 75;     // left for a new serving process (restart)

// What a serving process is handed: inherited fds, and the shared memory id
// of the state's meta segment (whose header names the pool segments).
struct ServeFds {
  int lock = -1;
  int fuse = -1;  // the FUSE connection, or the NBD listening socket
  int meta_shm = -1;
};

inline std::string format_serve_fds(const ServeFds& fds) {
  return std::to_string(fds.lock) + " " + std::to_string(fds.fuse) + " " + std::to_string(fds.meta_shm);
}

inline std::optional<ServeFds> parse_serve_fds(const char* text) {
  if (text == nullptr) return std::nullopt;
  std::istringstream in(text);
  ServeFds fds;
  if (!(in >> fds.lock >> fds.fuse >> fds.meta_shm)) return std::nullopt;
  if (fds.lock < 0 || fds.fuse < 0 || fds.meta_shm < 0) return std::nullopt;
  return fds;
}

}  // namespace uzswap
