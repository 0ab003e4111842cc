// The NBD front end on whatever a client might send: the input is the byte
// stream of one connection (client flags, options, requests and payloads),
// played to NbdServer::serve() over a socketpair while a second thread
// drains the replies. The pure parsers run on it too, at every offset a
// header could start, with their contracts checked. Every input starts from
// an empty store (made once: making one per input would cost more than the
// requests), so a crash reproduces from its input alone.
//
// Beyond "no crash, no sanitizer report": a request check that lets a
// request through means it is aligned and inside the export; an option
// reply fits the buffer handshake_reply_bytes() sizes; a connection never
// outlives its input (serve() returns once the stream ends).
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "uzswap/nbd/nbd_protocol.h"
#include "uzswap/nbd/nbd_server.h"
#include "uzswap/store/page_store.h"

namespace {

using namespace uzswap;

constexpr std::uint64_t kSlots = 64;
constexpr std::size_t kMaxInput = 60000;  // fits a unix socket's buffer: written before serving

PageStoreOptions store_options() {
  PageStoreOptions o;
  o.slots = kSlots;
  o.max_pool_bytes = 32 * kPageSize;  // small enough that stores can be refused
  o.pool.reserve_bytes_per_node = 8u << 20;
  return o;
}

NbdConfig nbd_config() {
  NbdConfig c;
  c.size_bytes = kSlots * kPageSize;
  c.export_name = "swap";
  c.max_block = 16 * kPageSize;
  c.chunk_bytes = 4 * kPageSize;
  c.handshake_timeout = std::chrono::milliseconds(1000);
  c.send_timeout = std::chrono::milliseconds(1000);
  return c;
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_parsers(const std::uint8_t* data, std::size_t size, const nbd::ExportInfo& info) {
  std::vector<std::byte> reply(nbd::handshake_reply_bytes(info));
  for (std::size_t at = 0; at + nbd::kRequestBytes <= size; ++at) {
    const auto* p = reinterpret_cast<const std::byte*>(data + at);
    if (const auto r = nbd::parse_request(std::span<const std::byte, nbd::kRequestBytes>(p, nbd::kRequestBytes))) {
      const nbd::Verdict v = nbd::check_request(*r, info);
      if (v.error == 0 && !v.disconnect && r->type != nbd::kCmdFlush) {
        check(r->offset % kPageSize == 0 && r->length % kPageSize == 0 && r->length > 0);
        check(r->offset <= info.size_bytes && r->length <= info.size_bytes - r->offset);
        // The maximum is of payloads: TRIM and WRITE_ZEROES may go further.
        if (r->type == nbd::kCmdRead || r->type == nbd::kCmdWrite) check(r->length <= info.max_block);
      }
    }
    if (const auto h = nbd::parse_option_header(
            std::span<const std::byte, nbd::kOptionHeaderBytes>(p, nbd::kOptionHeaderBytes))) {
      const std::size_t len = std::min<std::size_t>(h->length, size - at - nbd::kOptionHeaderBytes);
      nbd::HandshakeState state;
      const nbd::OptionOutcome out =
          nbd::handle_option(*h, std::span<const std::byte>(p + nbd::kOptionHeaderBytes, len), info, state, reply);
      check(out.reply_bytes <= reply.size());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > kMaxInput) return 0;
  static PageStore& store = *new PageStore(store_options());
  static NbdServer& server = *new NbdServer(store, nbd_config());
  static std::vector<std::byte>& buffer = *new std::vector<std::byte>(server.buffer_bytes());
  check(store.invalidate(0, kSlots).has_value());
  check_parsers(data, size, server.export_info());

  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return 0;
  const int client = fds[0], conn = fds[1];
  const int big = 1 << 20;
  setsockopt(client, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  if (size > 0 && send(client, data, size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) {
    close(client);
    close(conn);
    return 0;
  }
  shutdown(client, SHUT_WR);  // the stream ends where the input does
  std::thread drain([client] {
    std::byte sink[16384];
    while (recv(client, sink, sizeof(sink), 0) > 0) {
    }
  });
  (void)server.serve(conn, buffer);
  shutdown(conn, SHUT_RDWR);
  drain.join();
  close(client);
  close(conn);
  return 0;
}
