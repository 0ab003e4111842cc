// Mutexes that clang's thread-safety analysis can check.
//
// A member that a mutex guards says so with GUARDED_BY(mutex), and a
// function whose caller holds a mutex (a `...Locked` helper) with
// REQUIRES(mutex); clang's -Wthread-safety (the build with
// -Dthread_safety=true) then rejects every access made without it. The
// wrappers below are what the analysis understands: std::mutex and the
// std::lock_guard family carry no annotations in libstdc++.
//
//   Mutex       std::mutex, annotated; a capability the macros can name.
//   MutexLock   holds a Mutex for its scope (std::lock_guard).
//   UniqueLock  the same, and may unlock() and lock() again in between
//               (std::unique_lock without the deferring and moving).
//   CondVar     std::condition_variable over a Mutex: wait(mu) with `mu`
//               held. There is no predicate overload: a predicate lambda is
//               a function of its own, which the analysis checks without the
//               lock, so the caller loops (`while (!ready) cv.wait(mu);`)
//               where it can see its guarded reads are under the lock.
//
// Everything is inline and as cheap as the std types it wraps (MutexLock is
// a reference; CondVar adopts the held std::mutex for the wait). Under GCC
// the macros expand to nothing.
//
// The analysis follows locks within one function. Where it cannot (a lock
// taken in one function and released in another, locks picked from an
// array at run time, a callback that runs with a lock its caller took), the
// narrowest escape is NO_THREAD_SAFETY_ANALYSIS on one small function, with
// a comment that says which lock is held and why the analysis cannot see it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define UZSWAP_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define UZSWAP_THREAD_ANNOTATION(x)
#endif

// A type that is a lock (a capability named `x` in the warnings).
#define CAPABILITY(x) UZSWAP_THREAD_ANNOTATION(capability(x))
// An RAII type that holds a capability for its lifetime.
#define SCOPED_CAPABILITY UZSWAP_THREAD_ANNOTATION(scoped_lockable)
// A member read or written only with `x` held.
#define GUARDED_BY(x) UZSWAP_THREAD_ANNOTATION(guarded_by(x))
// A pointer whose pointee is read or written only with `x` held.
#define PT_GUARDED_BY(x) UZSWAP_THREAD_ANNOTATION(pt_guarded_by(x))
// Lock order between mutexes (checked by -Wthread-safety-beta only).
#define ACQUIRED_BEFORE(...) UZSWAP_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) UZSWAP_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
// The caller holds these.
#define REQUIRES(...) UZSWAP_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
// The function takes these and returns holding them.
#define ACQUIRE(...) UZSWAP_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
// The function releases these, which the caller held.
#define RELEASE(...) UZSWAP_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
// The function takes these when it returns `result`.
#define TRY_ACQUIRE(...) UZSWAP_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
// The caller must not hold these (the function takes them).
#define EXCLUDES(...) UZSWAP_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
// The function checks that `x` is held; afterwards the analysis assumes it.
#define ASSERT_CAPABILITY(x) UZSWAP_THREAD_ANNOTATION(assert_capability(x))
// The function returns (a reference to) the capability `x`.
#define RETURN_CAPABILITY(x) UZSWAP_THREAD_ANNOTATION(lock_returned(x))
// The function's body is not checked; say why next to it.
#define NO_THREAD_SAFETY_ANALYSIS UZSWAP_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace uzswap {

class CAPABILITY("mutex") Mutex {
 public:
  constexpr Mutex() noexcept = default;  // constant-initialised, like std::mutex
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() { mutex_.lock(); }
  void unlock() RELEASE() { mutex_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mutex_.try_lock(); }

 private:
  friend class CondVar;
  std::mutex mutex_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mutex) ACQUIRE(mutex) : mutex_(mutex) { mutex_.lock(); }
  ~MutexLock() RELEASE() { mutex_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mutex_;
};

class SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& mutex) ACQUIRE(mutex) : mutex_(mutex) { mutex_.lock(); }
  ~UniqueLock() RELEASE() {
    if (held_) mutex_.unlock();
  }
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  // Drops the mutex early, and takes it again; the destructor releases it
  // only if held.
  void unlock() RELEASE() {
    mutex_.unlock();
    held_ = false;
  }
  void lock() ACQUIRE() {
    mutex_.lock();
    held_ = true;
  }

 private:
  Mutex& mutex_;
  bool held_ = true;
};

class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Releases `mutex`, blocks until notified (or spuriously), and takes it
  // again before returning.
  void wait(Mutex& mutex) REQUIRES(mutex) {
    Adopted held(mutex);
    cond_.wait(held.lock);
  }
  template <typename Clock, typename Duration>
  std::cv_status wait_until(Mutex& mutex, const std::chrono::time_point<Clock, Duration>& deadline)
      REQUIRES(mutex) {
    Adopted held(mutex);
    return cond_.wait_until(held.lock, deadline);
  }
  template <typename Rep, typename Period>
  std::cv_status wait_for(Mutex& mutex, const std::chrono::duration<Rep, Period>& timeout)
      REQUIRES(mutex) {
    Adopted held(mutex);
    return cond_.wait_for(held.lock, timeout);
  }

  void notify_one() noexcept { cond_.notify_one(); }
  void notify_all() noexcept { cond_.notify_all(); }

 private:
  // The caller's hold on the mutex, lent to std::condition_variable for one
  // wait and handed back (still held) however the wait ends.
  struct Adopted {
    explicit Adopted(Mutex& mutex) : lock(mutex.mutex_, std::adopt_lock) {}
    ~Adopted() { (void)lock.release(); }
    Adopted(const Adopted&) = delete;
    Adopted& operator=(const Adopted&) = delete;
    std::unique_lock<std::mutex> lock;
  };

  std::condition_variable cond_;
};

}  // namespace uzswap
