// Threads for the request path: a fixed stack, mapped and populated when the
// thread is made (so, under mlockall, locked before the first request), and
// a name that shows in top and /proc. Each has a slot in the liveness
// registry (liveness.h) from its start until it is joined; an exception that
// escapes its body marks it dead there instead of ending the process.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace uzswap {

class Thread {
 public:
  static constexpr std::size_t kDefaultStackBytes = 256u << 10;

  Thread() = default;
  // Starts `body` on a new thread; throws std::system_error.
  Thread(std::string name, std::function<void()> body,
         std::size_t stack_bytes = kDefaultStackBytes);
  ~Thread();
  Thread(Thread&& other) noexcept;
  Thread& operator=(Thread&& other) noexcept;
  Thread(const Thread&) = delete;
  Thread& operator=(const Thread&) = delete;

  bool joinable() const noexcept { return started_; }
  void join() noexcept;

  struct Start;  // what the new thread runs; public for the trampoline

 private:
  unsigned long handle_ = 0;  // pthread_t
  void* stack_ = nullptr;
  std::size_t stack_bytes_ = 0;
  bool started_ = false;
  int slot_ = -1;  // in the liveness registry (liveness.h), until joined
};

}  // namespace uzswap
