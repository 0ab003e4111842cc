#include "uzswap/reclaim/swap_type.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "uzswap/reclaim/kernel_files.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

namespace uzswap {

namespace {

const char* describe(SwapTypeError error) noexcept {
  switch (error) {
    case SwapTypeError::probe_failed: return "the probe process failed";
    case SwapTypeError::not_paged_out:
      return "the probe page was not paged out (is swap on? MADV_PAGEOUT needs kernel 5.4)";
    case SwapTypeError::other_device:
      return "the probe page went to another swap device (is this one's priority the highest?)";
  }
  return "unknown swap type probe error";
}

// All `len` bytes, or the error (EPIPE for an early end).
Result<> read_all(int fd, void* buf, std::size_t len) {
  auto* p = static_cast<std::byte*>(buf);
  while (len > 0) {
    const ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failure(errno_error());
    if (n == 0) return failure(std::make_error_code(std::errc::broken_pipe));
    p += n;
    len -= static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace

const std::error_category& swap_type_category() noexcept {
  static const ErrorCategory<SwapTypeError> category("uzswap.swap_type", describe);
  return category;
}

std::error_code make_error_code(SwapTypeError error) noexcept { return {static_cast<int>(error), swap_type_category()}; }

// In the child: marker page out to swap, then its pagemap word to `out`;
// waits for a byte on `release` before exiting (which frees the slot).
void run_swap_type_probe_child(int out, int release) {
  auto* page = static_cast<std::byte*>(
      mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  std::uint64_t word = 0;
  std::array<std::byte, kPageSize> marker{};
  if (page != MAP_FAILED && getrandom(marker.data(), marker.size(), 0) == kPageSize) {
    munlockall();  // not inherited across fork, but be sure
    std::memcpy(page, marker.data(), kPageSize);
    for (int tries = 0; tries < 20; ++tries) {
      madvise(page, kPageSize, MADV_PAGEOUT);
      const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        const off_t at = static_cast<off_t>(reinterpret_cast<std::uintptr_t>(page) / kPageSize * 8);
        if (pread(fd, &word, sizeof(word), at) != sizeof(word)) word = 0;
        close(fd);
      }
      if (decode_pagemap(word).swapped) break;
      usleep(10000);
    }
  }
  (void)!write(out, &word, sizeof(word));
  (void)!write(out, marker.data(), marker.size());
  char byte;
  (void)!read(release, &byte, 1);
  _exit(0);
}

namespace {

// The page is unmapped (and its swap entry visible) before its write reaches
// the device: give the write up to a second.
bool eventually_holds(const std::function<bool(std::uint64_t, PageView)>& holds,
                      std::uint64_t offset, PageView page) {
  for (int i = 0; i < 100; ++i) {
    if (holds(offset, page)) return true;
    usleep(10000);
  }
  return false;
}

}  // namespace

Result<unsigned> probe_swap_type(const std::string& exe, const std::function<bool(std::uint64_t, PageView)>& holds,
                                 int attempts) {
  std::error_code why = SwapTypeError::probe_failed;  // also for no attempt at all
  for (int attempt = 0; attempt < attempts; ++attempt) {
    int to_parent[2], to_child[2];
    if (pipe2(to_parent, O_CLOEXEC) != 0) return failure(errno_error());
    if (pipe2(to_child, O_CLOEXEC) != 0) {
      const std::error_code error = errno_error();
      close(to_parent[0]);
      close(to_parent[1]);
      return failure(error);
    }
    // The child's ends become its fds 3 and 4 (dup2 clears close-on-exec).
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_parent[1], 3);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], 4);
    posix_spawn_file_actions_addclosefrom_np(&actions, 5);  // nothing else of ours
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    std::string program = exe;
    std::string arg = kSwapTypeProbeArg;
    std::string out_fd = "3", release_fd = "4";
    char* argv[] = {program.data(), arg.data(), out_fd.data(), release_fd.data(), nullptr};
    char* envp[] = {nullptr};
    pid_t pid = -1;
    const int spawned = posix_spawn(&pid, exe.c_str(), &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (spawned != 0) {
      for (const int fd : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) close(fd);
      return failure(errno_error(spawned));
    }
    close(to_parent[1]);
    close(to_child[0]);
    std::uint64_t word = 0;
    std::array<std::byte, kPageSize> marker;
    const bool got = read_all(to_parent[0], &word, sizeof(word)) &&
                     read_all(to_parent[0], marker.data(), marker.size());
    std::optional<unsigned> found;
    const PagemapEntry e = decode_pagemap(word);
    if (!got) {
      why = SwapTypeError::probe_failed;
    } else if (!e.swapped) {
      why = SwapTypeError::not_paged_out;
    } else if (!eventually_holds(holds, e.swap_offset, PageView(marker))) {
      why = SwapTypeError::other_device;
    } else {
      found = e.swap_type;
    }
    (void)!write(to_child[1], "x", 1);  // let the child exit now
    close(to_child[1]);
    close(to_parent[0]);
    waitpid(pid, nullptr, 0);
    if (found) return *found;
  }
  return failure(why);
}

}  // namespace uzswap
