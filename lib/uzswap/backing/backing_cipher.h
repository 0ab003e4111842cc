// EncryptedBacking: a BackingStore over another one (a file, a remote tier)
// that keeps only ciphertext there. Each page is sealed with
// XChaCha20-Poly1305 (IETF, libsodium) on its way out and authenticated on
// its way back: a block changed on disk, a block copied to another slot, a
// stale block whose newer write failed, all fail with EBADMSG, never as
// bytes.
//
//   key    32 random bytes in the shared state's header (state/layout.h):
//          locked RAM, never written to disk, readable by root only; the
//          process that adopts the state reads the same key. Zeroed when a
//          clean stop destroys the state (SharedState::forget_key()).
//   nonce  slot (8 bytes, little endian) || counter (8) || zeros (8). The
//          counter comes from one atomic word in the shared state, so no
//          nonce is used twice with the key, across restarts too.
//   AD     the slot (8 bytes, little endian): a block is bound to its slot.
//   seal   per slot {counter, tag} in the shared state's seal region,
//          written only once the inner store reported the block written: a
//          failed or torn write leaves the old seal, and the block then fails
//          to authenticate.
//
// Threads: like the inner store, each thread that calls it gets its own
// buffers (made on its first call, or by prepare_thread()); nothing is
// allocated per request after that. Reads of a slot do not race writes of
// it in the page store (its file_write bit); should one race all the same,
// the read fails to authenticate and the store's re-check discards it.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "uzswap/backing/backing_store.h"
#include "uzswap/state/shared_state.h"

namespace uzswap {

struct CipherThreadBuffers;  // backing_cipher.cpp

// "xchacha20-poly1305", or "off" for none: the status JSON's spelling.
const char* backing_cipher_name(BackingCipher cipher) noexcept;

// Why the configuration (`--backing-encryption` on or off) and the state
// disagree, or nullopt when they agree. A state keeps the setting it was
// made with: its key and seals exist or they do not.
std::optional<std::string> backing_cipher_mismatch(const SharedState& state, bool wanted);

class EncryptedBacking final : public BackingStore {
 public:
  // Over `inner`, with the key, counter and seals of `state` (made with a
  // cipher: else std::invalid_argument). Both must outlive this.
  // std::runtime_error if libsodium cannot start.
  EncryptedBacking(BackingStore& inner, SharedState& state);
  // The same, owning the inner store.
  EncryptedBacking(std::unique_ptr<BackingStore> inner, SharedState& state);

  // Encrypts each page into this thread's buffer and writes the ciphertext;
  // the seals of the pages written change before this returns. A slot out
  // of the state's range fails with EINVAL.
  void write(std::span<PageWrite> pages) noexcept override;
  void begin_write(std::span<PageWrite> pages) noexcept override;
  void end_write() noexcept override;
  // Reads the block and authenticates it: EBADMSG (and `out` zeroed) when
  // it fails, the inner store's error when the read does.
  std::error_code read(Slot slot, PageBuffer out) noexcept override;
  // The inner store's read_many, then each page authenticated as read() does.
  void read_many(std::span<PageRead> pages) noexcept override;
  bool wait_for_other_writers(std::chrono::milliseconds timeout) noexcept override {
    return inner_.wait_for_other_writers(timeout);
  }
  std::size_t max_batch() const noexcept override { return batch_; }
  void prepare_thread() override;

  BackingStore& inner() noexcept { return inner_; }

 private:
  CipherThreadBuffers& buffers();
  bool seal_batch(std::span<PageWrite> batch) noexcept;
  std::error_code open_sealed(Slot slot, std::byte* page) const noexcept;
  void finish_batch() noexcept;

  std::unique_ptr<BackingStore> owned_;
  BackingStore& inner_;
  const std::uint8_t* key_;
  std::uint64_t* counter_;
  CipherSeal* seals_;
  std::uint64_t slots_;
  std::size_t batch_;
  std::uint64_t id_;  // tells this store's per-thread buffers from another's
};

}  // namespace uzswap
