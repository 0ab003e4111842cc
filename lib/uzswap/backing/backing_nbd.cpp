#include "uzswap/backing/backing_nbd.h"

#include <libnbd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace uzswap {

namespace {

std::atomic<std::uint64_t> g_next_id{1};
constexpr std::chrono::seconds kWriteTimeout{60};

// The calling thread's batch between begin_write() and end_write(), and
// its contiguous buffer (runs of adjacent slots go out as one request).
struct ThreadBatch {
  std::uint64_t owner = 0;
  unsigned hint = 0;
  std::unique_ptr<std::byte[]> buffer;
  std::span<PageWrite> pending;
  int conn = -1;
  int error = 0;
  std::size_t runs = 0;
  std::int64_t cookies[BackingNbd::kBatchPages];
  std::size_t run_of[BackingNbd::kBatchPages];
};
thread_local ThreadBatch t_batch;

std::string libnbd_error(const char* what) {
  const char* e = nbd_get_error();
  return e != nullptr && *e != '\0' ? std::string(what) + ": " + e : std::string(what);
}

}  // namespace

BackingNbd::BackingNbd(std::string uri, std::uint64_t bytes)
    : uri_(std::move(uri)), bytes_(bytes), id_(g_next_id.fetch_add(1)) {
  conns_ = std::make_unique<Connection[]>(kConnections);
  nbd_handle* first = open_connection();
  if (first == nullptr) throw std::runtime_error(status().last_error);
  // Without multi-conn, writes on one connection need not be visible to
  // reads on another: one connection only.
  count_ = nbd_can_multi_conn(first) == 1 ? kConnections : 1;
  {
    MutexLock guard(conns_[0].lock);
    installLocked(0, first);
  }
  for (unsigned i = 1; i < count_; ++i) {
    // A failure here is retried by the reconnect thread.
    if (nbd_handle* h = open_connection()) {
      MutexLock guard(conns_[i].lock);
      installLocked(i, h);
    }
  }
  reconnector_ = Thread("uzswap-nbd-tier", [this] { reconnect_loop(); });
}

BackingNbd::~BackingNbd() {
  {
    MutexLock guard(wake_lock_);
    stop_ = true;
  }
  wake_.notify_all();
  reconnector_.join();
  for (unsigned i = 0; i < kConnections; ++i) {
    MutexLock guard(conns_[i].lock);
    if (conns_[i].handle != nullptr) {
      nbd_shutdown(conns_[i].handle, 0);
      nbd_close(conns_[i].handle);
      conns_[i].handle = nullptr;
    }
  }
}

void BackingNbd::set_error(const std::string& message) noexcept {
  try {
    MutexLock guard(error_lock_);
    last_error_ = message;
  } catch (...) {
  }
}

nbd_handle* BackingNbd::open_connection() {
  nbd_handle* h = nbd_create();
  if (h == nullptr) {
    set_error(libnbd_error("nbd_create"));
    failed_connects_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  // Asynchronously, with a deadline: a server that accepts and then says
  // nothing (a stopped process behind a live socket) must not hold us.
  std::string why;
  if (nbd_aio_connect_uri(h, uri_.c_str()) != 0) {
    why = libnbd_error(("connect to " + uri_).c_str());
  } else {
    const auto deadline = std::chrono::steady_clock::now() + kCommandTimeout;
    while (nbd_aio_is_connecting(h) == 1) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || nbd_poll(h, static_cast<int>(std::min<long long>(left.count(), 1000))) < 0) break;
    }
    if (nbd_aio_is_ready(h) != 1) {
      why = nbd_aio_is_connecting(h) == 1 ? uri_ + ": no handshake within " + std::to_string(kCommandTimeout.count()) + " s"
                                          : libnbd_error(("connect to " + uri_).c_str());
    }
  }
  if (why.empty()) {
    if (const std::int64_t size = nbd_get_size(h); size < 0 || static_cast<std::uint64_t>(size) < bytes_)
      why = uri_ + ": the export holds " + std::to_string(size) + " bytes, the swap area needs " + std::to_string(bytes_);
    else if (nbd_is_read_only(h) == 1)
      why = uri_ + ": the export is read-only";
    else
      export_bytes_.store(static_cast<std::uint64_t>(size), std::memory_order_relaxed);
  }
  if (!why.empty()) {
    set_error(why);
    nbd_close(h);
    failed_connects_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  return h;
}

void BackingNbd::installLocked(unsigned i, nbd_handle* h) noexcept {
  conns_[i].fua = nbd_can_fua(h) == 1;
  conns_[i].handle = h;
  up_count_.fetch_add(1, std::memory_order_relaxed);
  connects_.fetch_add(1, std::memory_order_relaxed);
}

void BackingNbd::dropLocked(unsigned i, const char* why) noexcept {
  nbd_handle*& handle = conns_[i].handle;
  if (handle == nullptr) return;
  set_error(libnbd_error(why));
  nbd_close(handle);  // commands in flight are abandoned; their pages stay in RAM
  handle = nullptr;
  up_count_.fetch_sub(1, std::memory_order_relaxed);
  disconnects_.fetch_add(1, std::memory_order_relaxed);
  wake_.notify_all();
}

bool BackingNbd::lock_up(unsigned hint, unsigned& i) noexcept {
  for (unsigned k = 0; k < count_; ++k) {
    i = (hint + k) % count_;
    if (conns_[i].lock.try_lock()) {
      if (conns_[i].handle != nullptr) return true;
      conns_[i].lock.unlock();
    }
  }
  for (unsigned k = 0; k < count_; ++k) {
    i = (hint + k) % count_;
    conns_[i].lock.lock();
    if (conns_[i].handle != nullptr) return true;
    conns_[i].lock.unlock();
  }
  return false;
}

void BackingNbd::keep_for_end_write(unsigned) noexcept NO_THREAD_SAFETY_ANALYSIS {}
void BackingNbd::held_since_begin_write(unsigned) noexcept NO_THREAD_SAFETY_ANALYSIS {}

bool BackingNbd::wait_all(nbd_handle* h, const std::int64_t* cookies, std::size_t n, int* error) noexcept {
  bool done[kBatchPages] = {};
  std::size_t left = n;
  bool ok = true;
  const auto deadline = std::chrono::steady_clock::now() + (n > 1 ? kWriteTimeout : kCommandTimeout);
  for (;;) {
    for (std::size_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      const int r = nbd_aio_command_completed(h, static_cast<std::uint64_t>(cookies[i]));
      if (r == 0) continue;
      done[i] = true;
      --left;
      if (r < 0) {
        ok = false;
        *error = nbd_get_errno() != 0 ? nbd_get_errno() : EIO;
      }
    }
    if (left == 0) return ok;
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (remaining <= 0) {
      *error = ETIMEDOUT;
      return false;
    }
    if (nbd_poll(h, static_cast<int>(std::min<long long>(remaining, 1000))) < 0) {
      *error = nbd_get_errno() != 0 ? nbd_get_errno() : ECONNRESET;
      return false;
    }
  }
}

void BackingNbd::prepare_thread() {
  ThreadBatch& t = t_batch;
  if (t.owner == id_ && t.buffer) return;
  t.buffer = std::make_unique<std::byte[]>(kBatchPages * kPageSize);
  std::memset(t.buffer.get(), 0, kBatchPages * kPageSize);
  t.hint = next_.fetch_add(1, std::memory_order_relaxed);
  t.owner = id_;
}

void BackingNbd::begin_write(std::span<PageWrite> batch) noexcept {
  ThreadBatch& t = t_batch;
  t.error = 0;
  t.runs = 0;
  t.conn = -1;
  const std::size_t n = std::min<std::size_t>(batch.size(), kBatchPages);
  t.pending = batch.first(n);
  if (t.owner != id_ || !t.buffer) {
    try {
      prepare_thread();
    } catch (...) {
      t.error = ENOMEM;
      return;
    }
  }
  if (!up()) {
    // The remote is down: writeback stops here, every page stays in RAM.
    refused_.fetch_add(n, std::memory_order_relaxed);
    t.error = ENOTCONN;
    return;
  }
  std::sort(t.pending.begin(), t.pending.end(), [](const PageWrite& a, const PageWrite& b) { return a.slot < b.slot; });
  unsigned conn;
  if (!lock_up(t.hint, conn)) {
    refused_.fetch_add(n, std::memory_order_relaxed);
    t.error = ENOTCONN;
    return;
  }
  t.conn = static_cast<int>(conn);
  nbd_handle* const handle = conns_[conn].handle;
  const bool fua = conns_[conn].fua;
  keep_for_end_write(conn);
  // Runs of adjacent slots, each one request, all in flight together.
  std::size_t start = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::memcpy(t.buffer.get() + i * kPageSize, t.pending[i].page, kPageSize);
    const bool last = i + 1 == n || t.pending[i + 1].slot != t.pending[i].slot + 1;
    t.run_of[i] = t.runs;
    if (!last) continue;
    const std::int64_t cookie =
        nbd_aio_pwrite(handle, t.buffer.get() + start * kPageSize, (i + 1 - start) * kPageSize,
                       t.pending[start].slot * kPageSize, NBD_NULL_COMPLETION, fua ? LIBNBD_CMD_FLAG_FUA : 0);
    if (cookie < 0) {
      t.error = nbd_get_errno() != 0 ? nbd_get_errno() : EIO;
      return;  // end_write waits for those already sent, then drops the connection
    }
    t.cookies[t.runs++] = cookie;
    writes_.fetch_add(1, std::memory_order_relaxed);
    start = i + 1;
  }
}

void BackingNbd::end_write() noexcept {
  ThreadBatch& t = t_batch;
  if (t.conn >= 0) {
    const unsigned conn = static_cast<unsigned>(t.conn);
    held_since_begin_write(conn);
    nbd_handle* const handle = conns_[conn].handle;
    int error = 0;
    const bool ok = wait_all(handle, t.cookies, t.runs, &error) && t.error == 0;
    if (!ok) {
      if (t.error == 0) t.error = error;
      // A request that failed on a live connection is the server's error
      // (the pages stay in RAM); a connection that broke is closed.
      if (nbd_aio_is_ready(handle) != 1 || error == ETIMEDOUT) dropLocked(conn, "write");
    }
    conns_[conn].lock.unlock();
    t.conn = -1;
  }
  for (PageWrite& p : t.pending) p.result = t.error == 0 ? 0 : -t.error;
  t.pending = {};
}

void BackingNbd::write(std::span<PageWrite> pages) noexcept {
  while (!pages.empty()) {
    const std::size_t n = std::min<std::size_t>(pages.size(), kBatchPages);
    begin_write(pages.first(n));
    end_write();
    pages = pages.subspan(n);
  }
}

std::error_code BackingNbd::read(Slot slot, PageBuffer out) noexcept {
  ThreadBatch& t = t_batch;
  const auto deadline = std::chrono::steady_clock::now() + kReadPatience;
  for (;;) {
    unsigned conn;
    if (lock_up(t.hint, conn)) {
      nbd_handle* const handle = conns_[conn].handle;
      int error = 0;
      const std::int64_t cookie =
          nbd_aio_pread(handle, out.data(), kPageSize, slot * kPageSize, NBD_NULL_COMPLETION, 0);
      reads_.fetch_add(1, std::memory_order_relaxed);
      if (cookie >= 0 && wait_all(handle, &cookie, 1, &error)) {
        conns_[conn].lock.unlock();
        return {};
      }
      if (cookie < 0) error = nbd_get_errno() != 0 ? nbd_get_errno() : EIO;
      if (nbd_aio_is_ready(handle) == 1 && error != ETIMEDOUT) {
        // The server answered with an error: asking again will not help.
        conns_[conn].lock.unlock();
        return {error, std::generic_category()};
      }
      dropLocked(conn, "read");
      conns_[conn].lock.unlock();
      continue;  // another connection, or the same one once it is back
    }
    // Down: the page is only there. Wait for the remote to come back.
    if (std::chrono::steady_clock::now() >= deadline) return {ENOTCONN, std::generic_category()};
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void BackingNbd::reconnect_loop() noexcept {
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    {
      MutexLock guard(wake_lock_);
      const bool all_up = up_count_.load() == count_;
      // A dropped connection wakes this thread at once; a failed reconnect
      // waits out its backoff.
      const auto until = std::chrono::steady_clock::now() + (all_up ? std::chrono::milliseconds(1000) : backoff);
      while (!stop_ && !(all_up && up_count_.load() < count_))
        if (wake_.wait_until(wake_lock_, until) == std::cv_status::timeout) break;
      if (stop_) return;
    }
    // An idle connection learns of a remote that went away only when it
    // looks: the end of the stream is processed here, so status says
    // "down" without waiting for the next write.
    for (unsigned i = 0; i < count_; ++i) {
      if (!conns_[i].lock.try_lock()) continue;  // busy: its command will tell
      if (nbd_handle* h = conns_[i].handle; h != nullptr) {
        if (nbd_aio_in_flight(h) == 0 && (nbd_poll(h, 0) < 0 || nbd_aio_is_ready(h) != 1))
          dropLocked(i, "the remote closed the connection");
      }
      conns_[i].lock.unlock();
    }
    if (up_count_.load() == count_) {
      backoff = std::chrono::milliseconds(100);
      continue;
    }
    bool all = true;
    for (unsigned i = 0; i < count_; ++i) {
      {
        MutexLock guard(conns_[i].lock);
        if (conns_[i].handle != nullptr) continue;
      }
      // Connected without the lock, so readers are not held up meanwhile;
      // only this thread fills an empty connection.
      nbd_handle* h = nullptr;
      try {
        h = open_connection();
      } catch (...) {
      }
      if (h == nullptr) {
        all = false;
        break;  // the remote is not back: wait before the next one
      }
      MutexLock guard(conns_[i].lock);
      installLocked(i, h);
    }
    backoff = all ? std::chrono::milliseconds(100) : std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

BackingNbdStatus BackingNbd::status() const {
  BackingNbdStatus s;
  s.uri = uri_;
  s.connections = count_;
  s.connections_up = up_count_.load(std::memory_order_relaxed);
  s.up = s.connections_up > 0;
  s.export_bytes = export_bytes_.load(std::memory_order_relaxed);
  s.connects = connects_.load(std::memory_order_relaxed);
  s.disconnects = disconnects_.load(std::memory_order_relaxed);
  s.failed_connects = failed_connects_.load(std::memory_order_relaxed);
  s.write_requests = writes_.load(std::memory_order_relaxed);
  s.read_requests = reads_.load(std::memory_order_relaxed);
  s.refused_writes = refused_.load(std::memory_order_relaxed);
  MutexLock guard(error_lock_);
  s.last_error = last_error_;
  return s;
}

}  // namespace uzswap
