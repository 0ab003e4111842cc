#include "uzswap/backing/backing_cipher.h"

#include <endian.h>
#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace uzswap {

static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == kCipherKeyBytes);
static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == 24);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == sizeof(CipherSeal::tag));

// The calling thread's ciphertext for one batch, for the store it was made
// for, and the batch between begin_write() and end_write().
struct CipherThreadBuffers {
  std::uint64_t owner = 0;
  std::size_t capacity = 0;
  std::unique_ptr<std::byte[]> pages;    // capacity pages of ciphertext
  std::unique_ptr<PageWrite[]> writes;   // what the inner store is given
  std::unique_ptr<CipherSeal[]> sealed;  // per buffer page: its seal, once written
  std::span<PageWrite> pending;          // the caller's batch
  std::size_t inner_count = 0;           // writes given to the inner store
};

namespace {

std::atomic<std::uint64_t> g_next_id{1};
thread_local CipherThreadBuffers t_buffers;

// Ciphertext buffers a thread holds at most, whatever the inner store takes.
constexpr std::size_t kMaxBatch = 256;

struct Nonce {
  unsigned char bytes[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES] = {};
  Nonce(Slot slot, std::uint64_t counter) noexcept {
    const std::uint64_t s = htole64(slot), c = htole64(counter);
    std::memcpy(bytes, &s, 8);
    std::memcpy(bytes + 8, &c, 8);
  }
};

// The associated data: the slot, so that a block is valid only at its own.
struct SlotAd {
  unsigned char bytes[8];
  explicit SlotAd(Slot slot) noexcept {
    const std::uint64_t s = htole64(slot);
    std::memcpy(bytes, &s, 8);
  }
};

void store_seal(CipherSeal& to, const CipherSeal& from) noexcept {
  std::atomic_ref(to.tag[0]).store(from.tag[0], std::memory_order_relaxed);
  std::atomic_ref(to.tag[1]).store(from.tag[1], std::memory_order_relaxed);
  std::atomic_ref(to.counter).store(from.counter, std::memory_order_relaxed);
}

CipherSeal load_seal(CipherSeal& from) noexcept {
  CipherSeal s;
  s.counter = std::atomic_ref(from.counter).load(std::memory_order_relaxed);
  s.tag[0] = std::atomic_ref(from.tag[0]).load(std::memory_order_relaxed);
  s.tag[1] = std::atomic_ref(from.tag[1]).load(std::memory_order_relaxed);
  return s;
}

}  // namespace

const char* backing_cipher_name(BackingCipher cipher) noexcept {
  switch (cipher) {
    case BackingCipher::none:
      return "off";
    case BackingCipher::xchacha20_poly1305:
      return "xchacha20-poly1305";
  }
  return "unknown";
}

std::optional<std::string> backing_cipher_mismatch(const SharedState& state, bool wanted) {
  const bool made = state.cipher() != BackingCipher::none;
  if (made == wanted) return std::nullopt;
  return std::string("--backing-encryption ") + (wanted ? "on" : "off") + ": the swap area was made with it " +
         (made ? "on" : "off");
}

EncryptedBacking::EncryptedBacking(std::unique_ptr<BackingStore> inner, SharedState& state)
    : EncryptedBacking(*inner, state) {
  owned_ = std::move(inner);
}

EncryptedBacking::EncryptedBacking(BackingStore& inner, SharedState& state)
    : inner_(inner),
      key_(state.header().cipher_key),
      counter_(&state.header().cipher_counter),
      seals_(state.seals()),
      slots_(state.header().slots),
      batch_(std::min(inner.max_batch(), kMaxBatch)),
      id_(g_next_id.fetch_add(1)) {
  if (state.cipher() != BackingCipher::xchacha20_poly1305 || seals_ == nullptr)
    throw std::invalid_argument("the shared state was made without backing encryption");
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot start");
}

CipherThreadBuffers& EncryptedBacking::buffers() {
  CipherThreadBuffers& t = t_buffers;
  if (t.owner == id_) return t;
  // Made whole before anything is replaced: a throw leaves the old ones.
  // Zeroed, so touched now, not in the swap-out path.
  auto pages = std::make_unique<std::byte[]>(batch_ * kPageSize);
  auto writes = std::make_unique<PageWrite[]>(batch_);
  auto sealed = std::make_unique<CipherSeal[]>(batch_);
  t.pages = std::move(pages);
  t.writes = std::move(writes);
  t.sealed = std::move(sealed);
  t.capacity = batch_;
  t.owner = id_;
  t.pending = {};
  t.inner_count = 0;
  return t;
}

void EncryptedBacking::prepare_thread() {
  buffers();
  inner_.prepare_thread();
}

// Encrypts what of the batch fits into the thread's buffers and fills in
// the writes for the inner store; false (every page failed) when the
// buffers cannot be made.
bool EncryptedBacking::seal_batch(std::span<PageWrite> batch) noexcept {
  CipherThreadBuffers* b;
  try {
    b = &buffers();
  } catch (const std::exception&) {
    for (PageWrite& p : batch) p.result = -ENOMEM;
    t_buffers.pending = {};
    t_buffers.inner_count = 0;
    return false;
  }
  CipherThreadBuffers& t = *b;
  const std::size_t n = std::min(batch.size(), t.capacity);
  // Pages past the buffers are not written: they must not read as written.
  for (PageWrite& p : batch.subspan(n)) p.result = -E2BIG;
  t.pending = batch.first(n);
  // One atomic step for the batch's counters: first .. first + n - 1.
  const std::uint64_t first = std::atomic_ref(*counter_).fetch_add(n, std::memory_order_relaxed) + 1;
  std::size_t m = 0;
  for (std::size_t i = 0; i < n; ++i) {
    PageWrite& p = t.pending[i];
    if (p.slot >= slots_) {
      p.result = -EINVAL;
      continue;
    }
    std::byte* cipher = t.pages.get() + i * kPageSize;
    CipherSeal& seal = t.sealed[i];
    seal.counter = first + i;
    const Nonce nonce(p.slot, seal.counter);
    const SlotAd ad(p.slot);
    crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
        reinterpret_cast<unsigned char*>(cipher), reinterpret_cast<unsigned char*>(seal.tag), nullptr,
        reinterpret_cast<const unsigned char*>(p.page), kPageSize, ad.bytes, sizeof(ad.bytes), nullptr, nonce.bytes,
        key_);
    t.writes[m++] = PageWrite{p.slot, cipher, -EIO};
  }
  t.inner_count = m;
  return true;
}

// The inner store's results, back to the caller's batch; the seals of the
// blocks written.
void EncryptedBacking::finish_batch() noexcept {
  CipherThreadBuffers& t = t_buffers;
  // The inner store may have reordered its batch: each write finds its
  // page by its buffer.
  for (std::size_t j = 0; j < t.inner_count; ++j) {
    const PageWrite& w = t.writes[j];
    const auto i = static_cast<std::size_t>(w.page - t.pages.get()) / kPageSize;
    t.pending[i].result = w.result;
    // Only a block known to be written gets its seal; the old seal of a
    // failed or torn one makes that block fail to authenticate.
    if (w.result == 0) store_seal(seals_[w.slot], t.sealed[i]);
  }
  t.pending = {};
  t.inner_count = 0;
}

void EncryptedBacking::begin_write(std::span<PageWrite> batch) noexcept {
  if (!seal_batch(batch)) return;
  CipherThreadBuffers& t = t_buffers;
  if (t.inner_count > 0) inner_.begin_write(std::span(t.writes.get(), t.inner_count));
}

void EncryptedBacking::end_write() noexcept {
  CipherThreadBuffers& t = t_buffers;
  if (t.inner_count > 0) inner_.end_write();
  finish_batch();
}

void EncryptedBacking::write(std::span<PageWrite> pages) noexcept {
  // The inner store's write(), not its two halves: those of a store that
  // does not pipeline (BackingStore's own) are not for concurrent callers.
  while (!pages.empty()) {
    const std::size_t n = std::min(pages.size(), batch_);
    if (seal_batch(pages.first(n))) {
      CipherThreadBuffers& t = t_buffers;
      if (t.inner_count > 0) inner_.write(std::span(t.writes.get(), t.inner_count));
      finish_batch();
    }
    pages = pages.subspan(n);
  }
}

std::error_code EncryptedBacking::read(Slot slot, PageBuffer out) noexcept {
  if (slot >= slots_) return std::make_error_code(std::errc::invalid_argument);
  if (const std::error_code ec = inner_.read(slot, out)) return ec;
  return open_sealed(slot, out.data());
}

void EncryptedBacking::read_many(std::span<PageRead> pages) noexcept {
  for (PageRead& p : pages) p.result = p.slot < slots_ ? 0 : -EINVAL;
  // Only the slots in range go to the inner store, in runs between the others.
  std::size_t start = 0;
  for (std::size_t i = 0; i <= pages.size(); ++i) {
    if (i < pages.size() && pages[i].result == 0) continue;
    if (i > start) inner_.read_many(pages.subspan(start, i - start));
    start = i + 1;
  }
  for (PageRead& p : pages) {
    if (p.result != 0) continue;
    if (const std::error_code ec = open_sealed(p.slot, p.page)) p.result = -ec.value();
  }
}

std::error_code EncryptedBacking::open_sealed(Slot slot, std::byte* page) const noexcept {
  const CipherSeal seal = load_seal(seals_[slot]);
  const Nonce nonce(slot, seal.counter);
  const SlotAd ad(slot);
  auto* bytes = reinterpret_cast<unsigned char*>(page);
  // In place: the tag is checked before anything is decrypted.
  if (seal.counter == 0 ||
      crypto_aead_xchacha20poly1305_ietf_decrypt_detached(bytes, nullptr, bytes, kPageSize,
                                                          reinterpret_cast<const unsigned char*>(seal.tag),
                                                          ad.bytes, sizeof(ad.bytes), nonce.bytes, key_) != 0) {
    sodium_memzero(bytes, kPageSize);
    return std::make_error_code(std::errc::bad_message);
  }
  return {};
}

}  // namespace uzswap
