// The encrypted backing store (backing/backing_cipher.h): pages come back
// exactly, the file beneath holds only ciphertext, and every block that is
// not the one last written for its slot (changed on disk, copied from
// another slot, left stale by a failed write, read without its key) fails
// with EBADMSG, which the page store counts as an integrity error: never
// wrong bytes. A state made with encryption carries its key and seals to
// the next process that adopts it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <set>
#include <string_view>
#include <thread>
#include <vector>

#include "uzswap/backing/backing_cipher.h"
#include "uzswap/daemon/config.h"
#include "uzswap/store/page_store.h"
#include "support/faulty_backing.h"
#include "support/page_mix.h"
#include "uzswap/writeback/shrink_memcg.h"

namespace uzswap {
namespace {

using Page = std::array<std::byte, kPageSize>;
constexpr std::uint64_t kSlots = 1024;
constexpr std::string_view kMarker = "uzswap-cipher-test-marker-7f3a ";

Page page_of(std::uint64_t seed) {
  Page p;
  testing::make_page(seed % 2 ? testing::PageKind::text : testing::PageKind::binary, seed, p);
  return p;
}

// A page of readable text: the marker over and over, then the seed.
Page marked_page(std::uint64_t seed) {
  Page p;
  for (std::size_t i = 0; i < kPageSize; ++i) p[i] = static_cast<std::byte>(kMarker[i % kMarker.size()]);
  std::memcpy(p.data(), &seed, sizeof(seed));
  return p;
}

bool contains(const Page& haystack, std::string_view needle) {
  const auto* begin = reinterpret_cast<const char*>(haystack.data());
  return std::string_view(begin, kPageSize).find(needle) != std::string_view::npos;
}

PageStoreOptions options() {
  PageStoreOptions o;
  o.slots = kSlots;
  o.pool.reserve_bytes_per_node = 64u << 20;
  return o;
}

SharedState new_state(BackingCipher cipher = BackingCipher::xchacha20_poly1305) {
  const PageStoreOptions o = options();
  return SharedState::create(
      {o.slots, o.pool.nodes, ZPool::region_bytes_for(o.pool.reserve_bytes_per_node), cipher});
}

// Writes that land in the file but are reported failed: the caller must
// treat the block as not written (the kernel, told of the failure, keeps its
// page), so the block's seal must stay the old one.
class LandsButFails final : public BackingStore {
 public:
  explicit LandsButFails(BackingStore& real) : real_(real) {}
  void write(std::span<PageWrite> pages) noexcept override {
    real_.write(pages);
    for (PageWrite& p : pages) p.result = -EIO;
  }
  std::error_code read(Slot slot, PageBuffer out) noexcept override { return real_.read(slot, out); }
  std::size_t max_batch() const noexcept override { return real_.max_batch(); }
  void prepare_thread() override { real_.prepare_thread(); }

 private:
  BackingStore& real_;
};

// A store that holds nothing.
class Nowhere final : public BackingStore {
 public:
  void write(std::span<PageWrite> pages) noexcept override {
    for (PageWrite& p : pages) p.result = -EIO;
  }
  std::error_code read(Slot, PageBuffer) noexcept override { return std::make_error_code(std::errc::io_error); }
  std::size_t max_batch() const noexcept override { return 64; }
  void prepare_thread() override {}
};

// A real O_DIRECT file on the test machine's disk, under the cipher.
class BackingCipherTest : public ::testing::Test {
 protected:
  BackingCipherTest()
      : path_("/var/tmp/uzswap-cipher-test-" + std::to_string(getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()),
        state_(new_state()),
        file_(path_, kSlots * kPageSize),
        faulty_(file_),
        cipher_(faulty_, state_) {}
  ~BackingCipherTest() override { std::filesystem::remove(path_); }

  std::error_code write(Slot slot, const Page& page) {
    PageWrite w{slot, page.data(), 0};
    cipher_.write(std::span(&w, 1));
    return {-w.result, std::generic_category()};
  }
  Page raw(Slot slot) {
    Page p;
    EXPECT_FALSE(file_.read(slot, p));
    return p;
  }
  void put_raw(Slot slot, const Page& page) {
    PageWrite w{slot, page.data(), 0};
    file_.write(std::span(&w, 1));
    ASSERT_EQ(w.result, 0);
  }

  std::string path_;
  SharedState state_;
  BackingFile file_;
  testing::FaultyBacking faulty_;
  EncryptedBacking cipher_;
};

TEST_F(BackingCipherTest, ManySlotsComeBackExactlyInBatchesOfAnySize) {
  std::vector<Page> pages(kSlots);
  std::vector<PageWrite> writes;
  for (Slot s = 0; s < kSlots; ++s) {
    pages[s] = page_of(s);
    writes.push_back({(s * 7) % kSlots, nullptr, 1});  // every slot once, out of order
  }
  for (PageWrite& w : writes) w.page = pages[w.slot].data();
  // One call of more than a batch, then the pipelined halves.
  cipher_.write(std::span(writes).first(700));
  cipher_.begin_write(std::span(writes).subspan(700, cipher_.max_batch()));
  cipher_.end_write();
  cipher_.write(std::span(writes).subspan(700 + cipher_.max_batch()));
  for (const PageWrite& w : writes) ASSERT_EQ(w.result, 0) << "slot " << w.slot;
  for (Slot s = 0; s < kSlots; ++s) {
    Page out;
    ASSERT_FALSE(cipher_.read(s, out)) << s;
    EXPECT_EQ(out, pages[s]) << s;
  }
}

TEST_F(BackingCipherTest, TheFileHoldsNoPlaintext) {
  for (Slot s = 0; s < 64; ++s) ASSERT_FALSE(write(s, marked_page(s)));
  for (Slot s = 0; s < 64; ++s) {
    const Page block = raw(s);
    EXPECT_FALSE(contains(block, kMarker.substr(0, 12))) << "slot " << s;
    EXPECT_NE(block, marked_page(s));
    Page out;
    ASSERT_FALSE(cipher_.read(s, out));
    EXPECT_EQ(out, marked_page(s));
  }
  // The same page written twice is two different blocks: a new nonce each time.
  const Page first = raw(5);
  ASSERT_FALSE(write(5, marked_page(5)));
  EXPECT_NE(raw(5), first);
}

TEST_F(BackingCipherTest, AFlippedByteIsEbadmsgNeverTheBytes) {
  for (Slot s = 0; s < 8; ++s) ASSERT_FALSE(write(s, page_of(s)));
  for (const std::size_t offset : {std::size_t{0}, std::size_t{1000}, kPageSize - 1}) {
    Page block = raw(3);
    block[offset] ^= std::byte{0x01};
    put_raw(3, block);
    Page out = page_of(999);
    EXPECT_EQ(cipher_.read(3, out), std::errc::bad_message) << "offset " << offset;
    EXPECT_EQ(out, Page{}) << "nothing of the block comes back";
    block[offset] ^= std::byte{0x01};
    put_raw(3, block);
    ASSERT_FALSE(cipher_.read(3, out)) << "the block as it was is fine again";
    EXPECT_EQ(out, page_of(3));
  }
  // A damaged seal is as bad as a damaged block.
  state_.seals()[4].tag[1] ^= 1;
  Page out;
  EXPECT_EQ(cipher_.read(4, out), std::errc::bad_message);
  state_.seals()[4].counter += 1;
  state_.seals()[4].tag[1] ^= 1;
  EXPECT_EQ(cipher_.read(4, out), std::errc::bad_message) << "nor another nonce";
  for (Slot s : {0, 1, 2, 5, 6, 7}) {
    ASSERT_FALSE(cipher_.read(s, out));
    EXPECT_EQ(out, page_of(s));
  }
}

// read_many: one read of the inner store for the lot, each page
// authenticated on its own; a flipped block fails alone, a slot out of range
// is EINVAL without reaching the file.
TEST_F(BackingCipherTest, ManyPagesReadAtOnceAuthenticateEachOnItsOwn) {
  for (Slot s = 0; s < 8; ++s) ASSERT_FALSE(write(s, page_of(s)));
  Page block = raw(5);
  block[77] ^= std::byte{0x01};
  put_raw(5, block);
  std::vector<Page> out(9, page_of(999));
  std::vector<PageRead> reads;
  for (Slot s = 2; s < 8; ++s) reads.push_back({s, out[s].data(), 1});
  reads.push_back({kSlots, out[8].data(), 1});
  const std::uint64_t calls = faulty_.read_many_calls();
  cipher_.read_many(reads);
  EXPECT_EQ(faulty_.read_many_calls(), calls + 1);
  for (const PageRead& r : reads) {
    if (r.slot == 5) {
      EXPECT_EQ(r.result, -EBADMSG);
      EXPECT_EQ(out[5], Page{}) << "nothing of the damaged block comes back";
    } else if (r.slot == kSlots) {
      EXPECT_EQ(r.result, -EINVAL);
    } else {
      EXPECT_EQ(r.result, 0) << r.slot;
      EXPECT_EQ(out[r.slot], page_of(r.slot)) << r.slot;
    }
  }
}

TEST_F(BackingCipherTest, ABlockCopiedToAnotherSlotIsEbadmsg) {
  ASSERT_FALSE(write(3, page_of(3)));
  ASSERT_FALSE(write(4, page_of(4)));
  put_raw(4, raw(3));
  Page out;
  EXPECT_EQ(cipher_.read(4, out), std::errc::bad_message);
  // Its seal copied along does not help: the slot is in the nonce and the AD.
  state_.seals()[4] = state_.seals()[3];
  EXPECT_EQ(cipher_.read(4, out), std::errc::bad_message);
  EXPECT_EQ(out, Page{});
  ASSERT_FALSE(cipher_.read(3, out));
  EXPECT_EQ(out, page_of(3));
}

TEST_F(BackingCipherTest, ASlotNeverWrittenIsEbadmsg) {
  Page out;
  EXPECT_EQ(cipher_.read(10, out), std::errc::bad_message) << "a block of zeros, and no seal";
  EXPECT_EQ(cipher_.read(kSlots, out), std::errc::invalid_argument);
  Page page = page_of(1);
  PageWrite w{kSlots, page.data(), 0};
  cipher_.write(std::span(&w, 1));
  EXPECT_EQ(w.result, -EINVAL) << "no seal past the state's slots";
}

TEST_F(BackingCipherTest, AFailedWriteLeavesTheOldSealSoTheStaleBlockIsEbadmsg) {
  ASSERT_FALSE(write(6, page_of(6)));
  // Torn: half of a new block lands, then the write fails.
  faulty_.on_next_write([&] {
    Page half = raw(6);
    std::memset(half.data(), 0x5a, kPageSize / 2);
    put_raw(6, half);
    faulty_.fail_writes(EIO);
  });
  EXPECT_EQ(write(6, page_of(60)), std::errc::io_error);
  faulty_.fail_writes(0);
  Page out;
  EXPECT_EQ(cipher_.read(6, out), std::errc::bad_message);
  // Whole: the new block lands, but the store reported a failure.
  ASSERT_FALSE(write(7, page_of(7)));
  LandsButFails lying(file_);
  EncryptedBacking over_lying(lying, state_);
  const Page seventy = page_of(70);
  PageWrite w{7, seventy.data(), 0};
  over_lying.write(std::span(&w, 1));
  EXPECT_EQ(w.result, -EIO);
  EXPECT_EQ(cipher_.read(7, out), std::errc::bad_message) << "neither the old page nor the unacknowledged new one";
  EXPECT_EQ(out, Page{});
  // A later write that succeeds makes the slot good again.
  ASSERT_FALSE(write(7, page_of(71)));
  ASSERT_FALSE(cipher_.read(7, out));
  EXPECT_EQ(out, page_of(71));
}

TEST_F(BackingCipherTest, NoNonceIsUsedTwiceAcrossThreads) {
  constexpr unsigned kThreads = 4;
  constexpr Slot kPerThread = kSlots / kThreads;
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      cipher_.prepare_thread();
      std::vector<Page> pages(16);
      for (int round = 0; round < 4; ++round) {
        for (Slot first = t * kPerThread; first < (t + 1) * kPerThread; first += 16) {
          std::vector<PageWrite> batch;
          for (Slot s = first; s < first + 16; ++s) {
            pages[s - first] = page_of(s * 10 + static_cast<Slot>(round));
            batch.push_back({s, pages[s - first].data(), 0});
          }
          cipher_.write(batch);
          for (const PageWrite& w : batch) ASSERT_EQ(w.result, 0);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<std::uint64_t> counters;
  for (Slot s = 0; s < kSlots; ++s) counters.insert(state_.seals()[s].counter);
  EXPECT_EQ(counters.size(), kSlots);
  EXPECT_EQ(state_.header().cipher_counter, 4 * kSlots);
  for (Slot s = 0; s < kSlots; ++s) {
    Page out;
    ASSERT_FALSE(cipher_.read(s, out));
    EXPECT_EQ(out, page_of(s * 10 + 3)) << s;
  }
}

TEST_F(BackingCipherTest, AForgottenKeyReadsNothing) {
  ASSERT_FALSE(write(1, page_of(1)));
  state_.forget_key();
  EXPECT_EQ(state_.header().cipher_key[0] | state_.header().cipher_key[31], 0);
  Page out;
  EXPECT_EQ(cipher_.read(1, out), std::errc::bad_message);
}

// Through the page store: a block that fails to authenticate is an
// integrity error of its slot, not an I/O error.
class CipherStoreTest : public BackingCipherTest {
 protected:
  CipherStoreTest() { store_.attach_backing(&cipher_); }

  WritebackResult shrink_all(std::uint64_t pages) {
    WritebackResult total;
    for (int pass = 0; pass < 2; ++pass) total.written += writeback_.shrink_memcg(kRootCgroup, pages).written;
    return total;
  }

  PageStore store_{options(), state_};
  Writeback writeback_{store_};
};

TEST_F(CipherStoreTest, WrittenBackPagesComeBackAndDamageIsAnIntegrityError) {
  for (Slot s = 0; s < 100; ++s) ASSERT_TRUE(store_.store(s, page_of(s)));
  ASSERT_EQ(shrink_all(100).written, 100u);
  for (Slot s = 0; s < 100; ++s) {
    Page out;
    const auto r = store_.load(s, out);
    ASSERT_TRUE(r.has_value()) << s;
    EXPECT_EQ(*r, LoadedFrom::backing);
    EXPECT_EQ(out, page_of(s)) << s;
  }
  Page block = raw(42);
  block[1000] ^= std::byte{0x55};
  put_raw(42, block);
  Page out;
  const auto r = store_.load(42, out);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), LoadError::corrupt);
  const PageStoreStats s = store_.stats();
  EXPECT_EQ(s.integrity_errors, 1u);
  EXPECT_EQ(s.backing_read_errors, 0u) << "damage, not I/O";
  ASSERT_EQ(store_.integrity_log().count(), 1u);
  EXPECT_EQ(store_.integrity_log().at(0), std::make_pair(std::uint64_t{42}, true));
  // A read error of the file beneath stays an I/O error.
  faulty_.fail_reads(EIO);
  const auto io = store_.load(43, out);
  ASSERT_FALSE(io.has_value());
  EXPECT_EQ(io.error(), LoadError::backing_io);
  faulty_.fail_reads(0);
}

TEST_F(CipherStoreTest, AFailedDirectWriteOverAWrittenBackPageIsAnErrorNeverOldBytes) {
  PageStoreOptions o = options();
  o.max_pool_bytes = 1;  // once one page is in, every store goes straight to the backing store
  SharedState state = new_state();
  EncryptedBacking cipher(faulty_, state);
  PageStore store(o, state);
  store.attach_backing(&cipher);
  ASSERT_TRUE(store.store(100, page_of(100)));
  ASSERT_EQ(store.store(5, page_of(1)), StoredAs::written_back);
  // The new page's block lands whole, and the write is reported failed.
  LandsButFails lying(file_);
  EncryptedBacking over_lying(lying, state);
  store.attach_backing(&over_lying);
  EXPECT_FALSE(store.store(5, page_of(2)).has_value());
  store.attach_backing(&cipher);
  Page p;
  const auto r = store.load(5, p);
  ASSERT_FALSE(r.has_value()) << "neither page 1 (its block is gone) nor page 2 (never acknowledged)";
  EXPECT_EQ(r.error(), LoadError::corrupt);
  EXPECT_EQ(store.stats().integrity_errors, 1u);
}

TEST(BackingCipherAdoption, TheNextProcessReadsThePagesWithTheSameKey) {
  const std::string path = "/var/tmp/uzswap-cipher-adopt-" + std::to_string(getpid());
  SharedState state = new_state();
  std::array<std::uint8_t, kCipherKeyBytes> key;
  std::memcpy(key.data(), state.header().cipher_key, key.size());
  EXPECT_NE(key, (std::array<std::uint8_t, kCipherKeyBytes>{})) << "a random key";
  {
    BackingFile file(path, kSlots * kPageSize);
    EncryptedBacking cipher(file, state);
    PageStore first(options(), state);
    Writeback writeback(first);
    first.attach_backing(&cipher);
    for (Slot s = 0; s < 200; ++s) ASSERT_TRUE(first.store(s, page_of(s)));
    std::uint64_t written = 0;
    for (int pass = 0; pass < 2; ++pass) written += writeback.shrink_memcg(kRootCgroup, 200).written;
    ASSERT_EQ(written, 200u);
  }
  const std::uint64_t counter = state.header().cipher_counter;
  auto adopted = SharedState::attach(state.ids());
  ASSERT_TRUE(adopted.has_value()) << adopted.error();
  EXPECT_EQ(adopted->cipher(), BackingCipher::xchacha20_poly1305);
  EXPECT_EQ(std::memcmp(adopted->header().cipher_key, key.data(), key.size()), 0);
  BackingFile file(path, kSlots * kPageSize);
  std::filesystem::remove(path);
  EncryptedBacking cipher(file, *adopted);
  PageStore second(options(), *adopted);
  second.attach_backing(&cipher);
  ASSERT_TRUE(second.restart_side().report().adopted);
  EXPECT_EQ(second.restart_side().report().written_back, 200u);
  for (Slot s = 0; s < 200; ++s) {
    Page out;
    const auto r = second.load(s, out);
    ASSERT_TRUE(r.has_value()) << s;
    EXPECT_EQ(*r, LoadedFrom::backing);
    EXPECT_EQ(out, page_of(s)) << s;
  }
  // Its nonces go on from where the last process stopped.
  Page page = page_of(7);
  PageWrite w{300, page.data(), 0};
  cipher.write(std::span(&w, 1));
  ASSERT_EQ(w.result, 0);
  EXPECT_EQ(adopted->seals()[300].counter, counter + 1);
}

TEST(BackingCipherState, AStateKeepsTheSettingItWasMadeWith) {
  SharedState plain = new_state(BackingCipher::none);
  EXPECT_EQ(plain.seals(), nullptr);
  EXPECT_EQ(plain.header().cipher_key[0] | plain.header().cipher_key[17], 0);
  Nowhere nowhere;
  EXPECT_THROW(EncryptedBacking(nowhere, plain), std::invalid_argument);
  SharedState encrypted = new_state();
  EXPECT_NE(encrypted.seals(), nullptr);
  EXPECT_GT(encrypted.meta_bytes(), plain.meta_bytes()) << "the seal region";
  EXPECT_NE(std::memcmp(plain.header().cipher_key, encrypted.header().cipher_key, kCipherKeyBytes), 0);
  SharedState other = new_state();
  EXPECT_NE(std::memcmp(other.header().cipher_key, encrypted.header().cipher_key, kCipherKeyBytes), 0)
      << "each state its own key";

  EXPECT_EQ(backing_cipher_mismatch(plain, false), std::nullopt);
  EXPECT_EQ(backing_cipher_mismatch(encrypted, true), std::nullopt);
  const auto on_plain = backing_cipher_mismatch(plain, true);
  ASSERT_TRUE(on_plain.has_value());
  EXPECT_NE(on_plain->find("made with it off"), std::string::npos) << *on_plain;
  const auto off_encrypted = backing_cipher_mismatch(encrypted, false);
  ASSERT_TRUE(off_encrypted.has_value());
  EXPECT_NE(off_encrypted->find("made with it on"), std::string::npos) << *off_encrypted;
  EXPECT_STREQ(backing_cipher_name(plain.cipher()), "off");
  EXPECT_STREQ(backing_cipher_name(encrypted.cipher()), "xchacha20-poly1305");

  // Adoption checks the size against the cipher, and refuses what it does not know.
  encrypted.header().backing_cipher = 7;
  auto unknown = SharedState::attach(encrypted.ids());
  ASSERT_FALSE(unknown.has_value());
  EXPECT_NE(unknown.error().find("cipher"), std::string::npos) << unknown.error();
  encrypted.header().backing_cipher = static_cast<std::uint32_t>(BackingCipher::none);
  auto resized = SharedState::attach(encrypted.ids());
  ASSERT_FALSE(resized.has_value()) << "a state without seals is smaller";
}

TEST(BackingCipherState, AStateOfTheLayoutBeforeEncryptionIsAdoptedAsItIs) {
  // Layout 2 is layout 3 without encryption: a live upgrade from a binary of
  // layout 2 keeps serving the same state, and the state keeps its version
  // (the old binary can take it back).
  EXPECT_EQ(kStateLayoutVersion, 3u);
  EXPECT_EQ(kOldestAdoptableLayout, 2u);
  SharedState state = new_state(BackingCipher::none);
  state.header().layout_version = 2;
  auto adopted = SharedState::attach(state.ids());
  ASSERT_TRUE(adopted.has_value()) << adopted.error();
  EXPECT_EQ(adopted->header().layout_version, 2u);
  // Never one that claims encryption, nor an older or newer layout.
  state.header().backing_cipher = static_cast<std::uint32_t>(BackingCipher::xchacha20_poly1305);
  auto encrypted = SharedState::attach(state.ids());
  ASSERT_FALSE(encrypted.has_value());
  state.header().backing_cipher = static_cast<std::uint32_t>(BackingCipher::none);
  for (const std::uint32_t version : {1u, 4u}) {
    state.header().layout_version = version;
    auto refused = SharedState::attach(state.ids());
    ASSERT_FALSE(refused.has_value()) << version;
    EXPECT_NE(refused.error().find("layout version " + std::to_string(version)), std::string::npos)
        << refused.error();
  }
}

std::expected<ParsedArgs, std::string> parse(std::vector<std::string> args) {
  args.insert(args.begin(), {"uzswapd", "--config", "/dev/null"});
  return parse_daemon_args(args);
}

TEST(BackingCipherConfig, OffByDefaultOnOrOffAndOnlyWithABackingStore) {
  const auto plain = parse({"--backing-file", "/var/tmp/x.swap"});
  ASSERT_TRUE(plain.has_value()) << plain.error();
  EXPECT_FALSE(plain->config.backing_encryption);
  const auto on = parse({"--backing-file", "/var/tmp/x.swap", "--backing-encryption", "on"});
  ASSERT_TRUE(on.has_value()) << on.error();
  EXPECT_TRUE(on->config.backing_encryption);
  const auto remote = parse({"--backing-nbd", "nbd+unix:///?socket=/run/x", "--backing-encryption", "on"});
  ASSERT_TRUE(remote.has_value()) << remote.error();
  EXPECT_TRUE(remote->config.backing_encryption);
  const auto bad = parse({"--backing-file", "/var/tmp/x.swap", "--backing-encryption", "yes"});
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().find("backing-encryption"), std::string::npos) << bad.error();
  const auto alone = parse({"--backing-encryption", "on"});
  ASSERT_FALSE(alone.has_value());
  EXPECT_NE(alone.error().find("--backing-encryption: needs --backing-file or --backing-nbd"), std::string::npos)
      << alone.error();
}

}  // namespace
}  // namespace uzswap
