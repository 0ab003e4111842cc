#include "uzswap/nbd/nbd_protocol.h"

#include <cerrno>
#include <cstring>

namespace uzswap::nbd {

namespace {

const char* describe(ProtocolError error) noexcept {
  switch (error) {
    case ProtocolError::not_fixed_newstyle: return "the client does not speak the fixed newstyle handshake";
    case ProtocolError::unknown_client_flags: return "unknown client flags";
    case ProtocolError::bad_option_magic: return "bad option magic";
    case ProtocolError::malformed_option_data: return "malformed NBD_OPT_INFO/NBD_OPT_GO data";
    case ProtocolError::bad_request_magic: return "bad request magic";
  }
  return "unknown NBD protocol error";
}

}  // namespace

const std::error_category& protocol_category() noexcept {
  static const ErrorCategory<ProtocolError> category("uzswap.nbd_protocol", describe);
  return category;
}

std::error_code make_error_code(ProtocolError error) noexcept { return {static_cast<int>(error), protocol_category()}; }

void put16(std::byte* p, std::uint16_t v) noexcept {
  p[0] = std::byte(v >> 8);
  p[1] = std::byte(v);
}
void put32(std::byte* p, std::uint32_t v) noexcept {
  put16(p, static_cast<std::uint16_t>(v >> 16));
  put16(p + 2, static_cast<std::uint16_t>(v));
}
void put64(std::byte* p, std::uint64_t v) noexcept {
  put32(p, static_cast<std::uint32_t>(v >> 32));
  put32(p + 4, static_cast<std::uint32_t>(v));
}
std::uint16_t get16(const std::byte* p) noexcept {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(p[0]) << 8) | std::to_integer<unsigned>(p[1]));
}
std::uint32_t get32(const std::byte* p) noexcept {
  return (std::uint32_t{get16(p)} << 16) | get16(p + 2);
}
std::uint64_t get64(const std::byte* p) noexcept {
  return (std::uint64_t{get32(p)} << 32) | get32(p + 4);
}

void write_greeting(std::span<std::byte, kGreetingBytes> out) noexcept {
  put64(out.data(), kNbdMagic);
  put64(out.data() + 8, kOptionMagic);
  put16(out.data() + 16, kFlagFixedNewstyle | kFlagNoZeroes);
}

Result<std::uint32_t> parse_client_flags(std::span<const std::byte, 4> in) noexcept {
  const std::uint32_t flags = get32(in.data());
  if (!(flags & kClientFixedNewstyle)) return failure(ProtocolError::not_fixed_newstyle);
  if (flags & ~(kClientFixedNewstyle | kClientNoZeroes)) return failure(ProtocolError::unknown_client_flags);
  return flags;
}

Result<OptionHeader> parse_option_header(std::span<const std::byte, kOptionHeaderBytes> in) noexcept {
  if (get64(in.data()) != kOptionMagic) return failure(ProtocolError::bad_option_magic);
  return OptionHeader{get32(in.data() + 8), get32(in.data() + 12)};
}

Result<GoRequest> parse_go(std::span<const std::byte> data) noexcept {
  if (data.size() < 6) return failure(ProtocolError::malformed_option_data);
  const std::uint32_t name_length = get32(data.data());
  if (name_length > kMaxExportName || name_length > data.size() - 6)
    return failure(ProtocolError::malformed_option_data);
  GoRequest go;
  go.name = std::string_view(reinterpret_cast<const char*>(data.data() + 4), name_length);
  go.requests = get16(data.data() + 4 + name_length);
  const std::span<const std::byte> list = data.subspan(6 + name_length);
  if (list.size() != std::size_t{go.requests} * 2) return failure(ProtocolError::malformed_option_data);
  for (std::size_t i = 0; i < go.requests; ++i) {
    switch (get16(list.data() + 2 * i)) {
      case kInfoName: go.wants_name = true; break;
      case kInfoDescription: go.wants_description = true; break;
      case kInfoBlockSize: go.wants_block_size = true; break;
      default: break;  // unknown or NBD_INFO_EXPORT (always sent): ignored, as the protocol asks
    }
  }
  return go;
}

namespace {

// Appends one option reply (header and data) at `at`; returns the new end.
std::size_t option_reply(std::span<std::byte> out, std::size_t at, std::uint32_t option, std::uint32_t type,
                         std::span<const std::byte> data = {}) noexcept {
  std::byte* p = out.data() + at;
  put64(p, kOptionReplyMagic);
  put32(p + 8, option);
  put32(p + 12, type);
  put32(p + 16, static_cast<std::uint32_t>(data.size()));
  if (!data.empty()) std::memcpy(p + kOptionReplyHeaderBytes, data.data(), data.size());
  return at + kOptionReplyHeaderBytes + data.size();
}

std::span<const std::byte> bytes_of(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// NBD_REP_INFO with a 16-bit type followed by a string.
std::size_t info_string(std::span<std::byte> out, std::size_t at, std::uint32_t option, std::uint16_t type,
                        std::string_view text) noexcept {
  std::byte* p = out.data() + at;
  put64(p, kOptionReplyMagic);
  put32(p + 8, option);
  put32(p + 12, kRepInfo);
  put32(p + 16, static_cast<std::uint32_t>(2 + text.size()));
  put16(p + 20, type);
  std::memcpy(p + 22, text.data(), text.size());
  return at + kOptionReplyHeaderBytes + 2 + text.size();
}

bool known_export(std::string_view name, const ExportInfo& info) noexcept {
  return name.empty() || name == info.name;
}

}  // namespace

std::size_t handshake_reply_bytes(const ExportInfo& info) noexcept {
  // The largest answer is to GO with every info: export, name, description,
  // block size, ack (or LIST: one server entry and an ack); errors carry
  // short fixed messages.
  return 6 * kOptionReplyHeaderBytes + 64 + 2 * info.name.size() + info.description.size() + 256;
}

OptionOutcome handle_option(const OptionHeader& header, std::span<const std::byte> data, const ExportInfo& info,
                            HandshakeState& state, std::span<std::byte> reply) noexcept {
  OptionOutcome out;
  const std::uint32_t option = header.option;
  const auto refuse = [&](std::uint32_t type, std::string_view message) {
    out.refused = true;
    out.reply_bytes = option_reply(reply, 0, option, type, bytes_of(message));
    return out;
  };
  switch (option) {
    case kOptExportName: {
      // The old way to finish: no option reply, the export's size and flags
      // straight away; an unknown name can only be answered by closing.
      const std::string_view name(reinterpret_cast<const char*>(data.data()), data.size());
      if (data.size() > kMaxExportName || !known_export(name, info)) {
        out.refused = true;
        out.next = Next::close;
        return out;
      }
      put64(reply.data(), info.size_bytes);
      put16(reply.data() + 8, info.transmission_flags);
      out.reply_bytes = 10;
      if (!state.no_zeroes) {
        std::memset(reply.data() + 10, 0, 124);
        out.reply_bytes += 124;
      }
      out.next = Next::transmission;
      return out;
    }
    case kOptAbort:
      out.reply_bytes = option_reply(reply, 0, option, kRepAck);
      out.next = Next::close;
      return out;
    case kOptList: {
      if (!data.empty()) return refuse(kRepErrInvalid, "NBD_OPT_LIST takes no data");
      std::byte* p = reply.data();
      put64(p, kOptionReplyMagic);
      put32(p + 8, option);
      put32(p + 12, kRepServer);
      put32(p + 16, static_cast<std::uint32_t>(4 + info.name.size()));
      put32(p + 20, static_cast<std::uint32_t>(info.name.size()));
      std::memcpy(p + 24, info.name.data(), info.name.size());
      out.reply_bytes = option_reply(reply, 24 + info.name.size(), option, kRepAck);
      return out;
    }
    case kOptInfo:
    case kOptGo: {
      const auto go = parse_go(data);
      if (!go) return refuse(kRepErrInvalid, "malformed NBD_OPT_INFO/NBD_OPT_GO data");
      if (!known_export(go->name, info)) return refuse(kRepErrUnknown, "no export of that name");
      std::byte exp[12];
      put16(exp, kInfoExport);
      put64(exp + 2, info.size_bytes);
      put16(exp + 10, info.transmission_flags);
      std::size_t at = option_reply(reply, 0, option, kRepInfo, exp);
      if (go->wants_name) at = info_string(reply, at, option, kInfoName, info.name);
      if (go->wants_description && !info.description.empty())
        at = info_string(reply, at, option, kInfoDescription, info.description);
      // Always sent: the client must know that only whole pages are served.
      std::byte block[14];
      put16(block, kInfoBlockSize);
      put32(block + 2, info.min_block);
      put32(block + 6, info.preferred_block);
      put32(block + 10, info.max_block);
      at = option_reply(reply, at, option, kRepInfo, block);
      out.reply_bytes = option_reply(reply, at, option, kRepAck);
      if (option == kOptGo) out.next = Next::transmission;
      return out;
    }
    case kOptStructuredReply:
      if (!data.empty()) return refuse(kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
      state.structured_replies = true;
      out.reply_bytes = option_reply(reply, 0, option, kRepAck);
      return out;
    case kOptStartTls:
      return refuse(kRepErrUnsup, "no TLS: use a unix socket or a loopback address");
    default:
      // Meta contexts (block status), extended headers and anything newer.
      return refuse(kRepErrUnsup, "option not supported");
  }
}

std::uint32_t wire_error(int errno_value) noexcept {
  switch (errno_value) {
    case 0: return 0;
    case EPERM: return kEperm;
    case EIO: return kEio;
    case ENOMEM: return kEnomem;
    case EINVAL: return kEinval;
    case ENOSPC: return kEnospc;
    case EOVERFLOW: return kEoverflow;
    case ENOTSUP: return kEnotsup;
    case ESHUTDOWN: return kEshutdown;
    default: return kEio;
  }
}

Result<Request> parse_request(std::span<const std::byte, kRequestBytes> in) noexcept {
  if (get32(in.data()) != kRequestMagic) return failure(ProtocolError::bad_request_magic);
  Request r;
  r.flags = get16(in.data() + 4);
  r.type = get16(in.data() + 6);
  r.cookie = get64(in.data() + 8);
  r.offset = get64(in.data() + 16);
  r.length = get32(in.data() + 24);
  return r;
}

Verdict check_request(const Request& r, const ExportInfo& info) noexcept {
  Verdict v;
  const auto aligned = [&](std::uint64_t x) { return x % info.min_block == 0; };
  const bool in_range = r.offset <= info.size_bytes && r.length <= info.size_bytes - r.offset;
  const std::uint16_t known_flags = kCmdFlagFua | kCmdFlagNoHole | kCmdFlagDf | kCmdFlagReqOne | kCmdFlagFastZero;
  switch (r.type) {
    case kCmdWrite:
      // The payload follows whatever the verdict: a length beyond the
      // maximum cannot be skipped safely (it may be a stream out of step).
      if (r.length > info.max_block) {
        v.error = kEoverflow;
        v.close = true;
        return v;
      }
      v.payload = true;
      break;
    case kCmdDisc:
      v.disconnect = true;
      return v;
    case kCmdRead:
    case kCmdTrim:
    case kCmdWriteZeroes:
    case kCmdFlush:
    case kCmdCache:
      break;
    default:
      v.error = kEinval;  // BLOCK_STATUS (no meta context agreed), RESIZE, unknown
      return v;
  }
  if (r.flags & ~known_flags) {
    v.error = kEinval;
    return v;
  }
  if (r.type == kCmdFlush) {
    if (r.offset != 0 || r.length != 0) v.error = kEinval;
    return v;
  }
  if ((r.type == kCmdRead || r.type == kCmdCache) && r.length > info.max_block) {
    v.error = kEoverflow;
    return v;
  }
  if (r.length == 0) {
    v.error = kEinval;
    return v;
  }
  if (!aligned(r.offset) || !aligned(r.length)) {
    v.error = kEinval;
    return v;
  }
  if (!in_range) {
    // Writes past the end are ENOSPC, everything else EINVAL.
    v.error = r.type == kCmdWrite || r.type == kCmdWriteZeroes ? kEnospc : kEinval;
    return v;
  }
  return v;
}

void write_simple_reply(std::span<std::byte, kSimpleReplyBytes> out, std::uint32_t error,
                        std::uint64_t cookie) noexcept {
  put32(out.data(), kSimpleReplyMagic);
  put32(out.data() + 4, error);
  put64(out.data() + 8, cookie);
}

void write_structured_header(std::span<std::byte, kStructuredReplyBytes> out, std::uint16_t flags,
                             std::uint16_t type, std::uint64_t cookie, std::uint32_t length) noexcept {
  put32(out.data(), kStructuredReplyMagic);
  put16(out.data() + 4, flags);
  put16(out.data() + 6, type);
  put64(out.data() + 8, cookie);
  put32(out.data() + 16, length);
}

std::size_t write_structured_error(std::span<std::byte> out, std::uint32_t error, std::uint64_t cookie,
                                   std::string_view message) noexcept {
  const std::size_t body = 6 + message.size();
  write_structured_header(out.first<kStructuredReplyBytes>(), kReplyFlagDone, kReplyError, cookie,
                          static_cast<std::uint32_t>(body));
  std::byte* p = out.data() + kStructuredReplyBytes;
  put32(p, error);
  put16(p + 4, static_cast<std::uint16_t>(message.size()));
  if (!message.empty()) std::memcpy(p + 6, message.data(), message.size());
  return kStructuredReplyBytes + body;
}

}  // namespace uzswap::nbd
