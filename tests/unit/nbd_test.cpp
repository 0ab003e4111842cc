// The NBD front end: the pure protocol functions on hand-made bytes, and
// NbdServer over a socketpair with a client written here from the protocol
// document (so a misreading of the protocol in the server shows as a
// disagreement, not as two halves of the same mistake).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "uzswap/nbd/nbd_listen.h"
#include "uzswap/nbd/nbd_protocol.h"
#include "uzswap/nbd/nbd_server.h"
#include "support/page_mix.h"

namespace uzswap {
namespace {

using namespace nbd;

constexpr std::uint64_t kSize = 256 * kPageSize;

std::vector<std::byte> go_data(std::string_view name, std::initializer_list<std::uint16_t> infos) {
  std::vector<std::byte> d(4 + name.size() + 2 + 2 * infos.size());
  put32(d.data(), static_cast<std::uint32_t>(name.size()));
  std::memcpy(d.data() + 4, name.data(), name.size());
  put16(d.data() + 4 + name.size(), static_cast<std::uint16_t>(infos.size()));
  std::size_t at = 6 + name.size();
  for (auto i : infos) {
    put16(d.data() + at, i);
    at += 2;
  }
  return d;
}

ExportInfo export_info() {
  ExportInfo info;
  info.size_bytes = kSize;
  info.name = "swap";
  info.max_block = 1u << 20;
  info.transmission_flags = kFlagHasFlags | kFlagSendTrim;
  return info;
}

TEST(NbdProtocol, ClientMustSpeakFixedNewstyle) {
  std::byte b[4];
  put32(b, 0);
  EXPECT_EQ(parse_client_flags(b).error(), ProtocolError::not_fixed_newstyle);
  put32(b, kClientFixedNewstyle | kClientNoZeroes);
  EXPECT_EQ(*parse_client_flags(b), kClientFixedNewstyle | kClientNoZeroes);
  put32(b, kClientFixedNewstyle | 0x100);
  EXPECT_EQ(parse_client_flags(b).error(), ProtocolError::unknown_client_flags);
}

TEST(NbdProtocol, OptionHeaderNeedsItsMagic) {
  std::byte h[kOptionHeaderBytes];
  put64(h, kOptionMagic);
  put32(h + 8, kOptGo);
  put32(h + 12, 77);
  const auto ok = parse_option_header(h);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->option, kOptGo);
  EXPECT_EQ(ok->length, 77u);
  put64(h, kNbdMagic);
  EXPECT_EQ(parse_option_header(h).error(), ProtocolError::bad_option_magic);
}

TEST(NbdProtocol, GoDataIsParsedAndCheckedForLength) {
  const auto d = go_data("swap", {kInfoBlockSize, kInfoName, 999});
  const auto go = parse_go(d);
  ASSERT_TRUE(go);
  EXPECT_EQ(go->name, "swap");
  EXPECT_TRUE(go->wants_block_size);
  EXPECT_TRUE(go->wants_name);
  EXPECT_FALSE(go->wants_description);
  // A name length past the data, and a count that does not match.
  auto bad = d;
  put32(bad.data(), 1000);
  EXPECT_EQ(parse_go(bad).error(), ProtocolError::malformed_option_data);
  bad = d;
  put16(bad.data() + 8, 4);
  EXPECT_EQ(parse_go(bad).error(), ProtocolError::malformed_option_data);
  EXPECT_FALSE(parse_go(std::span<const std::byte>(d.data(), 3)));
}

TEST(NbdProtocol, GoAnswersExportAndBlockSizeThenAck) {
  const ExportInfo info = export_info();
  HandshakeState state;
  std::vector<std::byte> reply(handshake_reply_bytes(info));
  const auto d = go_data("", {kInfoBlockSize});
  const OptionOutcome out = handle_option({kOptGo, static_cast<std::uint32_t>(d.size())}, d, info, state, reply);
  EXPECT_EQ(out.next, Next::transmission);
  EXPECT_FALSE(out.refused);
  // INFO(export): 20 + 12; INFO(block size): 20 + 14; ACK: 20.
  ASSERT_EQ(out.reply_bytes, 32u + 34u + 20u);
  EXPECT_EQ(get64(reply.data()), kOptionReplyMagic);
  EXPECT_EQ(get32(reply.data() + 12), kRepInfo);
  EXPECT_EQ(get16(reply.data() + 20), kInfoExport);
  EXPECT_EQ(get64(reply.data() + 22), kSize);
  EXPECT_EQ(get16(reply.data() + 30), info.transmission_flags);
  EXPECT_EQ(get16(reply.data() + 52), kInfoBlockSize);
  EXPECT_EQ(get32(reply.data() + 54), 4096u);
  EXPECT_EQ(get32(reply.data() + 58), 4096u);
  EXPECT_EQ(get32(reply.data() + 62), 1u << 20);
  EXPECT_EQ(get32(reply.data() + 66 + 12), kRepAck);
}

TEST(NbdProtocol, UnknownExportAndOptionsAreRefusedWithoutLeavingTheHandshake) {
  const ExportInfo info = export_info();
  HandshakeState state;
  std::vector<std::byte> reply(handshake_reply_bytes(info));
  const auto d = go_data("other", {});
  OptionOutcome out = handle_option({kOptInfo, static_cast<std::uint32_t>(d.size())}, d, info, state, reply);
  EXPECT_TRUE(out.refused);
  EXPECT_EQ(out.next, Next::options);
  EXPECT_EQ(get32(reply.data() + 12), kRepErrUnknown);
  out = handle_option({kOptListMetaContext, 0}, {}, info, state, reply);
  EXPECT_EQ(get32(reply.data() + 12), kRepErrUnsup);
  out = handle_option({12345, 0}, {}, info, state, reply);
  EXPECT_EQ(get32(reply.data() + 12), kRepErrUnsup);
  EXPECT_EQ(out.next, Next::options);
  // EXPORT_NAME with an unknown name can only close.
  const char other[] = "nope";
  out = handle_option({kOptExportName, 4}, std::as_bytes(std::span(other, 4)), info, state, reply);
  EXPECT_EQ(out.next, Next::close);
}

TEST(NbdProtocol, StructuredReplyAndListAndAbort) {
  const ExportInfo info = export_info();
  HandshakeState state;
  std::vector<std::byte> reply(handshake_reply_bytes(info));
  OptionOutcome out = handle_option({kOptStructuredReply, 0}, {}, info, state, reply);
  EXPECT_TRUE(state.structured_replies);
  EXPECT_EQ(get32(reply.data() + 12), kRepAck);
  out = handle_option({kOptList, 0}, {}, info, state, reply);
  EXPECT_EQ(get32(reply.data() + 12), kRepServer);
  EXPECT_EQ(get32(reply.data() + 20), 4u);
  EXPECT_EQ(std::memcmp(reply.data() + 24, "swap", 4), 0);
  EXPECT_EQ(out.reply_bytes, 28u + 20u);
  out = handle_option({kOptAbort, 0}, {}, info, state, reply);
  EXPECT_EQ(out.next, Next::close);
  EXPECT_EQ(get32(reply.data() + 12), kRepAck);
}

Request request(std::uint16_t type, std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0) {
  return Request{flags, type, 7, offset, length};
}

TEST(NbdProtocol, RequestHeaderNeedsItsMagic) {
  std::byte b[kRequestBytes];
  put32(b, kRequestMagic);
  put16(b + 4, kCmdFlagFua);
  put16(b + 6, kCmdWrite);
  put64(b + 8, 0x1122334455667788ull);
  put64(b + 16, 8192);
  put32(b + 24, 4096);
  const auto r = parse_request(b);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->type, kCmdWrite);
  EXPECT_EQ(r->flags, kCmdFlagFua);
  EXPECT_EQ(r->cookie, 0x1122334455667788ull);
  EXPECT_EQ(r->offset, 8192u);
  EXPECT_EQ(r->length, 4096u);
  put32(b, kSimpleReplyMagic);
  EXPECT_EQ(parse_request(b).error(), ProtocolError::bad_request_magic);
}

TEST(NbdProtocol, RequestChecks) {
  const ExportInfo info = export_info();
  EXPECT_EQ(check_request(request(kCmdRead, 0, 4096), info).error, 0u);
  EXPECT_EQ(check_request(request(kCmdRead, 100, 4096), info).error, kEinval);     // unaligned
  EXPECT_EQ(check_request(request(kCmdRead, 0, 100), info).error, kEinval);
  EXPECT_EQ(check_request(request(kCmdRead, kSize, 4096), info).error, kEinval);   // past the end
  EXPECT_EQ(check_request(request(kCmdRead, ~0ull - 4095, 8192), info).error, kEinval);  // wraps
  EXPECT_EQ(check_request(request(kCmdRead, 0, 2u << 20), info).error, kEoverflow);
  EXPECT_EQ(check_request(request(kCmdWrite, kSize - 4096, 8192), info).error, kEnospc);
  const Verdict huge = check_request(request(kCmdWrite, 0, 64u << 20), info);
  EXPECT_TRUE(huge.close);  // its payload cannot be skipped safely
  const Verdict w = check_request(request(kCmdWrite, 4096, 4096), info);
  EXPECT_TRUE(w.payload);
  EXPECT_EQ(w.error, 0u);
  EXPECT_TRUE(check_request(request(kCmdDisc, 0, 0), info).disconnect);
  EXPECT_EQ(check_request(request(kCmdFlush, 0, 0), info).error, 0u);
  EXPECT_EQ(check_request(request(kCmdFlush, 0, 4096), info).error, kEinval);
  EXPECT_EQ(check_request(request(kCmdBlockStatus, 0, 4096), info).error, kEinval);
  EXPECT_EQ(check_request(request(99, 0, 4096), info).error, kEinval);
  EXPECT_EQ(check_request(request(kCmdTrim, 0, 4096, 0x8000), info).error, kEinval);  // unknown flag
  EXPECT_EQ(check_request(request(kCmdWriteZeroes, 0, 8192, kCmdFlagNoHole), info).error, 0u);
}

TEST(NbdListen, ParsesUnixAndTcpAndKnowsTheLoopback) {
  auto a = parse_listen_address("unix:/run/x/nbd");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->path, "/run/x/nbd");
  EXPECT_TRUE(is_loopback(*a));
  a = parse_listen_address("tcp:127.0.0.1:10809");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->port, 10809);
  EXPECT_TRUE(is_loopback(*a));
  a = parse_listen_address("tcp:[::1]:99");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "::1");
  EXPECT_TRUE(is_loopback(*a));
  EXPECT_EQ(a->to_string(), "tcp:[::1]:99");
  a = parse_listen_address("tcp:0.0.0.0:10809");
  ASSERT_TRUE(a);
  EXPECT_FALSE(is_loopback(*a));
  EXPECT_EQ(open_listener(*a, false).error(), ListenError::not_loopback);  // refused without asking
  EXPECT_EQ(parse_listen_address("unix:relative").error(), ListenError::relative_path);
  EXPECT_EQ(parse_listen_address("unix:/" + std::string(200, 'x')).error(), ListenError::path_too_long);
  EXPECT_EQ(parse_listen_address("tcp:127.0.0.1").error(), ListenError::no_port);
  EXPECT_EQ(parse_listen_address("tcp:[::1]99").error(), ListenError::bad_ipv6_form);
  EXPECT_EQ(parse_listen_address("tcp:127.0.0.1:0").error(), ListenError::bad_port);
  EXPECT_EQ(parse_listen_address("tcp:127.0.0.1:70000").error(), ListenError::bad_port);
  EXPECT_EQ(parse_listen_address("tcp:example.com:10809").error(), ListenError::host_not_numeric);
  EXPECT_EQ(parse_listen_address("udp:1.2.3.4:5").error(), ListenError::not_unix_or_tcp);
}

// --- NbdServer over a socketpair ---------------------------------------------

class NbdServerTest : public ::testing::Test {
 protected:
  NbdServerTest() : store_(store_options()), server_(store_, config()) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    client_ = fds[0];
    server_fd_ = fds[1];
    buffer_.resize(server_.buffer_bytes());
    thread_ = std::thread([this] {
      end_ = server_.serve(server_fd_, buffer_);
      shutdown(server_fd_, SHUT_RDWR);  // what the listener's close does
    });
  }
  ~NbdServerTest() override {
    shutdown(client_, SHUT_RDWR);
    thread_.join();
    close(client_);
    close(server_fd_);
  }
  static PageStoreOptions store_options() {
    PageStoreOptions o;
    o.slots = kSize / kPageSize;
    o.pool.reserve_bytes_per_node = 64u << 20;
    return o;
  }
  static NbdConfig config() {
    NbdConfig c;
    c.size_bytes = kSize;
    c.export_name = "swap";
    c.max_block = 1u << 20;
    c.chunk_bytes = 16 * kPageSize;  // small, so that reads and writes take several chunks
    c.handshake_timeout = std::chrono::milliseconds(2000);
    return c;
  }
  void send_bytes(const void* p, std::size_t n) { ASSERT_EQ(send(client_, p, n, MSG_NOSIGNAL), ssize_t(n)); }
  bool recv_bytes(void* p, std::size_t n) { return recv(client_, p, n, MSG_WAITALL) == ssize_t(n); }
  void option(std::uint32_t opt, std::span<const std::byte> data) {
    std::byte h[16];
    put64(h, kOptionMagic);
    put32(h + 8, opt);
    put32(h + 12, static_cast<std::uint32_t>(data.size()));
    send_bytes(h, 16);
    if (!data.empty()) send_bytes(data.data(), data.size());
  }
  // Reads option replies until ACK or an error; returns the last type.
  std::uint32_t option_replies() {
    for (;;) {
      std::byte h[20];
      if (!recv_bytes(h, 20)) return 0;
      EXPECT_EQ(get64(h), kOptionReplyMagic);
      std::vector<std::byte> data(get32(h + 16));
      if (!data.empty() && !recv_bytes(data.data(), data.size())) return 0;
      const std::uint32_t type = get32(h + 12);
      if (type == kRepInfo && get16(data.data()) == kInfoExport) flags_ = get16(data.data() + 10);
      if (type != kRepInfo) return type;
    }
  }
  void handshake(bool structured) {
    std::byte g[18];
    ASSERT_TRUE(recv_bytes(g, 18));
    EXPECT_EQ(get64(g), kNbdMagic);
    EXPECT_EQ(get64(g + 8), kOptionMagic);
    EXPECT_TRUE(get16(g + 16) & kFlagFixedNewstyle);
    std::byte f[4];
    put32(f, kClientFixedNewstyle | kClientNoZeroes);
    send_bytes(f, 4);
    if (structured) {
      option(kOptStructuredReply, {});
      ASSERT_EQ(option_replies(), kRepAck);
    }
    const auto d = go_data("swap", {kInfoBlockSize});
    option(kOptGo, d);
    ASSERT_EQ(option_replies(), kRepAck);
    EXPECT_TRUE(flags_ & kFlagCanMultiConn);
  }
  void request(std::uint16_t type, std::uint64_t offset, std::uint32_t length, std::uint16_t flags = 0,
               std::span<const std::byte> payload = {}) {
    std::byte r[kRequestBytes];
    put32(r, kRequestMagic);
    put16(r + 4, flags);
    put16(r + 6, type);
    put64(r + 8, ++cookie_);
    put64(r + 16, offset);
    put32(r + 24, length);
    send_bytes(r, sizeof(r));
    if (!payload.empty()) send_bytes(payload.data(), payload.size());
  }
  std::uint32_t simple_reply() {
    std::byte h[16];
    if (!recv_bytes(h, 16)) return ~0u;
    EXPECT_EQ(get32(h), kSimpleReplyMagic);
    EXPECT_EQ(get64(h + 8), cookie_);
    return get32(h + 4);
  }
  // A structured read reply: fills `out` from the data chunks; the error, or 0.
  std::uint32_t structured_read(std::uint64_t offset, std::span<std::byte> out) {
    for (;;) {
      std::byte h[20];
      if (!recv_bytes(h, 20)) return ~0u;
      EXPECT_EQ(get32(h), kStructuredReplyMagic);
      EXPECT_EQ(get64(h + 8), cookie_);
      const std::uint16_t flags = get16(h + 4), type = get16(h + 6);
      std::vector<std::byte> body(get32(h + 16));
      if (!body.empty() && !recv_bytes(body.data(), body.size())) return ~0u;
      if (type == kReplyOffsetData) {
        const std::uint64_t at = get64(body.data());
        std::memcpy(out.data() + (at - offset), body.data() + 8, body.size() - 8);
      } else if (type & (1u << 15)) {
        return get32(body.data());
      }
      if (flags & kReplyFlagDone) return 0;
    }
  }
  std::uint64_t stored() { return store_.stats().stored_pages; }

  PageStore store_;
  NbdServer server_;
  int client_ = -1, server_fd_ = -1;
  std::vector<std::byte> buffer_;
  std::thread thread_;
  NbdEnd end_ = NbdEnd::io_error;
  std::uint64_t cookie_ = 0;
  std::uint16_t flags_ = 0;
};

std::vector<std::byte> pages(unsigned n, unsigned seed) {
  std::vector<std::byte> v(n * kPageSize);
  for (unsigned i = 0; i < n; ++i)
    testing::make_page(testing::PageKind::text, seed + i, PageBuffer(v.data() + i * kPageSize, kPageSize));
  return v;
}

TEST_F(NbdServerTest, WritesReadBackWithSimpleReplies) {
  handshake(false);
  const auto data = pages(40, 1);  // more than two chunks
  request(kCmdWrite, 8 * kPageSize, static_cast<std::uint32_t>(data.size()), kCmdFlagFua, data);
  EXPECT_EQ(simple_reply(), 0u);
  EXPECT_EQ(stored(), 40u);
  request(kCmdRead, 8 * kPageSize, static_cast<std::uint32_t>(data.size()));
  EXPECT_EQ(simple_reply(), 0u);
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(recv_bytes(back.data(), back.size()));
  EXPECT_EQ(back, data);
  request(kCmdFlush, 0, 0);
  EXPECT_EQ(simple_reply(), 0u);
  request(kCmdDisc, 0, 0);
  thread_.join();
  EXPECT_EQ(end_, NbdEnd::disconnected);
  thread_ = std::thread([] {});
}

TEST_F(NbdServerTest, StructuredReadsTrimAndZeroes) {
  handshake(true);
  const auto data = pages(20, 9);
  request(kCmdWrite, 0, static_cast<std::uint32_t>(data.size()), 0, data);
  EXPECT_EQ(simple_reply(), 0u);
  std::vector<std::byte> back(data.size());
  request(kCmdRead, 0, static_cast<std::uint32_t>(back.size()));
  EXPECT_EQ(structured_read(0, back), 0u);
  EXPECT_EQ(back, data);
  // TRIM forgets; WRITE_ZEROES without NO_HOLE forgets too; with it, stores zeros.
  request(kCmdTrim, 0, 5 * kPageSize);
  EXPECT_EQ(simple_reply(), 0u);
  EXPECT_EQ(stored(), 15u);
  request(kCmdWriteZeroes, 5 * kPageSize, 5 * kPageSize);
  EXPECT_EQ(simple_reply(), 0u);
  EXPECT_EQ(stored(), 10u);
  request(kCmdWriteZeroes, 10 * kPageSize, 5 * kPageSize, kCmdFlagNoHole);
  EXPECT_EQ(simple_reply(), 0u);
  EXPECT_EQ(stored(), 10u);
  EXPECT_EQ(store_.stats().same_filled_pages, 5u);
  request(kCmdRead, 0, static_cast<std::uint32_t>(back.size()));
  EXPECT_EQ(structured_read(0, back), 0u);
  const std::vector<std::byte> zeros(15 * kPageSize);
  EXPECT_EQ(std::memcmp(back.data(), zeros.data(), zeros.size()), 0);
  EXPECT_EQ(std::memcmp(back.data() + 15 * kPageSize, data.data() + 15 * kPageSize, 5 * kPageSize), 0);
  // An unaligned read gets a structured error, and nothing else happens.
  request(kCmdRead, 100, 4096);
  EXPECT_EQ(structured_read(100, back), kEinval);
  request(kCmdTrim, kSize, 4096);
  EXPECT_EQ(simple_reply(), kEinval);
  EXPECT_EQ(stored(), 10u);
}

TEST_F(NbdServerTest, BadRequestsChangeNothingAndTheConnectionGoesOn) {
  handshake(false);
  const auto data = pages(2, 3);
  request(kCmdWrite, 100, 8192, 0, data);  // unaligned: its payload is read and dropped
  EXPECT_EQ(simple_reply(), kEinval);
  request(kCmdWrite, kSize - 4096, 8192, 0, data);  // past the end
  EXPECT_EQ(simple_reply(), kEnospc);
  request(kCmdRead, 0, 4u << 20);
  EXPECT_EQ(simple_reply(), kEoverflow);
  request(42, 0, 4096);
  EXPECT_EQ(simple_reply(), kEinval);
  EXPECT_EQ(stored(), 0u);
  request(kCmdWrite, 0, 8192, 0, data);  // still in step
  EXPECT_EQ(simple_reply(), 0u);
  EXPECT_EQ(stored(), 2u);
  EXPECT_EQ(server_.stats().error_replies, 4u);
}

TEST_F(NbdServerTest, BadMagicClosesTheConnection) {
  handshake(false);
  std::byte junk[kRequestBytes] = {};
  send_bytes(junk, sizeof(junk));
  std::byte b;
  EXPECT_EQ(recv(client_, &b, 1, 0), 0);  // closed by the server, no reply
  thread_.join();
  EXPECT_EQ(end_, NbdEnd::protocol_error);
  thread_ = std::thread([] {});
  EXPECT_EQ(server_.stats().protocol_errors, 1u);
}

TEST_F(NbdServerTest, AnOversizedWriteClosesTheConnection) {
  handshake(false);
  request(kCmdWrite, 0, 64u << 20);
  EXPECT_EQ(simple_reply(), kEoverflow);
  std::byte b;
  EXPECT_EQ(recv(client_, &b, 1, 0), 0);
  EXPECT_EQ(stored(), 0u);
}

TEST_F(NbdServerTest, OldStyleClientsAndSilentOnesAreDropped) {
  std::byte g[18];
  ASSERT_TRUE(recv_bytes(g, 18));
  std::byte f[4];
  put32(f, 0);  // not fixed newstyle
  send_bytes(f, 4);
  std::byte b;
  EXPECT_EQ(recv(client_, &b, 1, 0), 0);
  thread_.join();
  EXPECT_EQ(end_, NbdEnd::protocol_error);
  thread_ = std::thread([] {});
  EXPECT_EQ(server_.stats().handshake_failures, 1u);
}

TEST_F(NbdServerTest, ExportNameFinishesTheOldWay) {
  std::byte g[18];
  ASSERT_TRUE(recv_bytes(g, 18));
  std::byte f[4];
  put32(f, kClientFixedNewstyle);
  send_bytes(f, 4);
  option(kOptExportName, std::as_bytes(std::span("swap", 4)));
  std::byte e[134];
  ASSERT_TRUE(recv_bytes(e, sizeof(e)));  // size, flags, 124 zeros
  EXPECT_EQ(get64(e), kSize);
  request(kCmdRead, 0, 4096);
  EXPECT_EQ(simple_reply(), 0u);
}

TEST(NbdListener, ServesAndRefusesBeyondTheLimit) {
  PageStoreOptions o;
  o.slots = 64;
  o.pool.reserve_bytes_per_node = 16u << 20;
  PageStore store(o);
  NbdConfig c;
  c.size_bytes = 64 * kPageSize;
  NbdServer server(store, c);
  const std::string path = "/tmp/uzswap-nbd-test-" + std::to_string(getpid());
  const auto address = parse_listen_address("unix:" + path);
  const auto fd = open_listener(*address, false);
  ASSERT_TRUE(fd) << fd.error().message();
  {
    NbdListener listener(server, *fd, 1, nullptr);
    const auto connect_one = [&] {
      const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strcpy(addr.sun_path, path.c_str());
      EXPECT_EQ(connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
      return s;
    };
    const int first = connect_one();
    std::byte g[18];
    ASSERT_EQ(recv(first, g, 18, MSG_WAITALL), 18);
    const int second = connect_one();
    std::byte b;
    EXPECT_EQ(recv(second, &b, 1, 0), 0);  // closed at once: one connection at most
    EXPECT_EQ(server.stats().connections_refused, 1u);
    EXPECT_EQ(server.stats().connections_active, 1u);
    close(second);
    close(first);
  }  // the listener ends its connections and joins
  close(*fd);
  remove_listener_path(*address);
}

}  // namespace
}  // namespace uzswap
