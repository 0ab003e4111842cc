// FuseServer::handle() on whatever the kernel (or anyone who can write to
// /dev/fuse) might send. The input is a sequence of requests, each as long as
// its header's len field says (cut to what is left), so that one input can
// INIT, WRITE and READ back. Every input starts from an empty store (all
// slots discarded) and a fresh FuseServer, so a crash reproduces from its
// input alone; the PageStore itself is made once (making one per input would
// cost more than the requests).
//
// Beyond "no crash, no sanitizer report": a reply never exceeds the reply
// buffer, its header's len is the length returned, and it answers the
// request's unique id.
#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "uzswap/fuse/fuse_server.h"
#include "uzswap/store/page_store.h"

namespace {

using namespace uzswap;

constexpr std::uint64_t kSlots = 64;
constexpr std::uint32_t kMaxWrite = 4 * kPageSize;

PageStoreOptions store_options() {
  PageStoreOptions o;
  o.slots = kSlots;
  o.max_pool_bytes = 32 * kPageSize;  // small enough that stores can be refused
  o.pool.reserve_bytes_per_node = 8u << 20;
  return o;
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuseConfig config;
  config.size_bytes = kSlots * kPageSize;
  config.max_write = kMaxWrite;
  config.over_io_uring = size > 0 && (data[0] & 1);
  static PageStore& store = *new PageStore(store_options());
  check(store.invalidate(0, kSlots).has_value());
  FuseServer server(store, config);
  // Aligned buffers of the sizes the daemon uses, as read(2) would fill them.
  std::vector<std::byte> request(FuseServer::request_buffer_bytes(config));
  std::vector<std::byte> reply(FuseServer::reply_buffer_bytes(config));

  std::size_t at = 0;
  while (at < size) {
    std::size_t len = size - at;
    if (len >= sizeof(fuse_in_header)) {
      std::uint32_t claimed;
      std::memcpy(&claimed, data + at, sizeof(claimed));
      if (claimed > 0 && claimed < len) len = claimed;
    }
    len = std::min(len, request.size());
    std::memcpy(request.data(), data + at, len);
    at += len;

    const std::size_t n = server.handle(std::span(request.data(), len), reply);
    check(n <= reply.size());
    if (n == 0) continue;
    check(n >= sizeof(fuse_out_header) && len >= sizeof(fuse_in_header));
    fuse_out_header out;
    std::memcpy(&out, reply.data(), sizeof(out));
    fuse_in_header in;
    std::memcpy(&in, request.data(), sizeof(in));
    check(out.len == n && out.unique == in.unique && out.error <= 0);
  }
  return 0;
}
