#include "uzswap/common/thread.h"

#include "uzswap/common/liveness.h"
#include "uzswap/common/result.h"

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <system_error>
#include <utility>

namespace uzswap {

struct Thread::Start {
  std::string name;
  std::function<void()> body;
  int slot;
};

namespace {

void* trampoline(void* arg) {
  std::unique_ptr<Thread::Start> start(static_cast<Thread::Start*>(arg));
  pthread_setname_np(pthread_self(), start->name.substr(0, 15).c_str());
  liveness::adopt(start->slot);
  // An exception that escapes a thread's body would be std::terminate, the
  // whole serving process gone with no word of why: the thread is marked
  // dead instead, with the reason, and the liveness check decides.
  try {
    start->body();
    liveness::finish(start->slot, ThreadState::ended);
  } catch (const std::exception& e) {
    liveness::finish(start->slot, ThreadState::dead, e.what());
  } catch (...) {
    liveness::finish(start->slot, ThreadState::dead, "unknown exception");
  }
  return nullptr;
}

}  // namespace

namespace {

// The sanitizers keep their own per-thread state at the top of a
// caller-provided stack (TSan close to 1 MiB): give them room.
std::size_t stack_size(std::size_t requested) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  return std::max<std::size_t>(requested, 8u << 20);
#else
  return requested;
#endif
}

}  // namespace

Thread::Thread(std::string name, std::function<void()> body, std::size_t stack_bytes)
    : stack_bytes_(stack_size(stack_bytes)) {
  stack_ = mmap(nullptr, stack_bytes_, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_POPULATE, -1, 0);
  if (stack_ == MAP_FAILED) {
    const std::error_code error = errno_error();
    stack_ = nullptr;
    throw std::system_error(error, "mmap the stack of thread " + name);
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, stack_, stack_bytes_);
  slot_ = liveness::enroll(name);
  auto start = std::make_unique<Start>(Start{std::move(name), std::move(body), slot_});
  pthread_t thread;
  const int err = pthread_create(&thread, &attr, trampoline, start.get());
  pthread_attr_destroy(&attr);
  if (err != 0) {
    liveness::release(std::exchange(slot_, -1));
    munmap(stack_, stack_bytes_);
    stack_ = nullptr;
    throw std::system_error(errno_error(err), "pthread_create " + start->name);
  }
  start.release();
  handle_ = thread;
  started_ = true;
}

Thread::~Thread() { join(); }

Thread::Thread(Thread&& other) noexcept { *this = std::move(other); }

Thread& Thread::operator=(Thread&& other) noexcept {
  if (this != &other) {
    join();
    handle_ = std::exchange(other.handle_, 0);
    stack_ = std::exchange(other.stack_, nullptr);
    stack_bytes_ = std::exchange(other.stack_bytes_, 0);
    started_ = std::exchange(other.started_, false);
    slot_ = std::exchange(other.slot_, -1);
  }
  return *this;
}

void Thread::join() noexcept {
  if (started_) {
    pthread_join(static_cast<pthread_t>(handle_), nullptr);
    started_ = false;
  }
  liveness::release(std::exchange(slot_, -1));
  if (stack_ != nullptr) {
    munmap(stack_, stack_bytes_);
    stack_ = nullptr;
  }
}

}  // namespace uzswap
