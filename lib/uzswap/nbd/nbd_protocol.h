// The NBD wire protocol (the fixed newstyle handshake and the transmission
// phase, as the protocol document of the NBD project describes them), as pure
// functions: parsers of what a client sends and builders of what the server
// answers, on caller-owned buffers. Nothing here does I/O, allocates or
// throws; NbdServer (nbd_server.h) moves the bytes. A parser's failure is a
// ProtocolError.
//
// Everything on the wire is big-endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "uzswap/common/result.h"

namespace uzswap::nbd {

// What a client sent that the server cannot take.
enum class ProtocolError {
  not_fixed_newstyle = 1,  // client flags without the fixed newstyle handshake
  unknown_client_flags,
  bad_option_magic,        // the stream is out of step: close
  malformed_option_data,   // NBD_OPT_INFO / NBD_OPT_GO data: NBD_REP_ERR_INVALID
  bad_request_magic,       // the stream is out of step: close
};
const std::error_category& protocol_category() noexcept;
std::error_code make_error_code(ProtocolError error) noexcept;

// --- Handshake ---------------------------------------------------------------

inline constexpr std::uint64_t kNbdMagic = 0x4e42444d41474943ull;     // "NBDMAGIC"
inline constexpr std::uint64_t kOptionMagic = 0x49484156454f5054ull;  // "IHAVEOPT"
inline constexpr std::uint64_t kOptionReplyMagic = 0x0003e889045565a9ull;

// Handshake flags (server, 16 bits) and client flags (32 bits).
inline constexpr std::uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr std::uint16_t kFlagNoZeroes = 1u << 1;
inline constexpr std::uint32_t kClientFixedNewstyle = 1u << 0;
inline constexpr std::uint32_t kClientNoZeroes = 1u << 1;

enum Option : std::uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
  kOptExtendedHeaders = 11,
};

inline constexpr std::uint32_t kRepErr = 1u << 31;
enum OptionReply : std::uint32_t {
  kRepAck = 1,
  kRepServer = 2,
  kRepInfo = 3,
  kRepErrUnsup = kRepErr | 1,
  kRepErrPolicy = kRepErr | 2,
  kRepErrInvalid = kRepErr | 3,
  kRepErrPlatform = kRepErr | 4,
  kRepErrTlsReqd = kRepErr | 5,
  kRepErrUnknown = kRepErr | 6,
  kRepErrShutdown = kRepErr | 7,
  kRepErrBlockSizeReqd = kRepErr | 8,
  kRepErrTooBig = kRepErr | 9,
};

enum Info : std::uint16_t {
  kInfoExport = 0,
  kInfoName = 1,
  kInfoDescription = 2,
  kInfoBlockSize = 3,
};

// Transmission flags (per export, 16 bits).
inline constexpr std::uint16_t kFlagHasFlags = 1u << 0;
inline constexpr std::uint16_t kFlagReadOnly = 1u << 1;
inline constexpr std::uint16_t kFlagSendFlush = 1u << 2;
inline constexpr std::uint16_t kFlagSendFua = 1u << 3;
inline constexpr std::uint16_t kFlagSendTrim = 1u << 5;
inline constexpr std::uint16_t kFlagSendWriteZeroes = 1u << 6;
inline constexpr std::uint16_t kFlagCanMultiConn = 1u << 8;

inline constexpr std::size_t kGreetingBytes = 18;      // magic, IHAVEOPT, handshake flags
inline constexpr std::size_t kOptionHeaderBytes = 16;  // IHAVEOPT, option, length
inline constexpr std::size_t kOptionReplyHeaderBytes = 20;
inline constexpr std::size_t kMaxExportName = 4096;    // the protocol's limit on names and strings
// An option's data is at most this long; a longer one is answered
// NBD_REP_ERR_TOO_BIG and the connection closed (the data is not read).
inline constexpr std::uint32_t kMaxOptionBytes = 2 * kMaxExportName + 64;

// What the server offers: one export, the swap device.
struct ExportInfo {
  std::uint64_t size_bytes = 0;
  std::string_view name;          // the export's name ("" is accepted too: the default export)
  std::string_view description;
  std::uint32_t min_block = 4096;
  std::uint32_t preferred_block = 4096;
  std::uint32_t max_block = 32u << 20;
  std::uint16_t transmission_flags = 0;
};

void write_greeting(std::span<std::byte, kGreetingBytes> out) noexcept;

// The client's 32-bit flags after the greeting: refused unless it speaks the
// fixed newstyle (the only handshake served) and asks for nothing unknown.
Result<std::uint32_t> parse_client_flags(std::span<const std::byte, 4> in) noexcept;

struct OptionHeader {
  std::uint32_t option = 0;
  std::uint32_t length = 0;
};
// A malformed option header means the stream is out of step: close.
Result<OptionHeader> parse_option_header(std::span<const std::byte, kOptionHeaderBytes> in) noexcept;

// NBD_OPT_INFO / NBD_OPT_GO data: name length, name, count of info requests,
// info requests (16 bits each).
struct GoRequest {
  std::string_view name;
  std::uint16_t requests = 0;
  bool wants_name = false;
  bool wants_description = false;
  bool wants_block_size = false;
};
// Malformed data (answered NBD_REP_ERR_INVALID: the connection stays in the
// handshake) is ProtocolError::malformed_option_data.
Result<GoRequest> parse_go(std::span<const std::byte> data) noexcept;

// What the handshake does after one option: stay, start transmission
// (GO / EXPORT_NAME accepted), or close the connection.
enum class Next : std::uint8_t { options, transmission, close };

struct HandshakeState {
  bool no_zeroes = false;          // from the client flags
  bool structured_replies = false;
};

// One option, fully read (header and data), answered into `reply`:
// returns the reply's length and what comes next. `reply` must hold
// handshake_reply_bytes(info).
struct OptionOutcome {
  std::size_t reply_bytes = 0;
  Next next = Next::options;
  bool refused = false;  // answered with an error (counted)
};
OptionOutcome handle_option(const OptionHeader& header, std::span<const std::byte> data, const ExportInfo& info,
                            HandshakeState& state, std::span<std::byte> reply) noexcept;
std::size_t handshake_reply_bytes(const ExportInfo& info) noexcept;

// --- Transmission ------------------------------------------------------------

inline constexpr std::uint32_t kRequestMagic = 0x25609513u;
inline constexpr std::uint32_t kSimpleReplyMagic = 0x67446698u;
inline constexpr std::uint32_t kStructuredReplyMagic = 0x668e33efu;
inline constexpr std::size_t kRequestBytes = 28;
inline constexpr std::size_t kSimpleReplyBytes = 16;
inline constexpr std::size_t kStructuredReplyBytes = 20;

enum Command : std::uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
};

inline constexpr std::uint16_t kCmdFlagFua = 1u << 0;
inline constexpr std::uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr std::uint16_t kCmdFlagDf = 1u << 2;
inline constexpr std::uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr std::uint16_t kCmdFlagFastZero = 1u << 4;

inline constexpr std::uint16_t kReplyFlagDone = 1u << 0;
enum ReplyType : std::uint16_t {
  kReplyNone = 0,
  kReplyOffsetData = 1,
  kReplyOffsetHole = 2,
  kReplyError = (1u << 15) | 1,
  kReplyErrorOffset = (1u << 15) | 2,
};

// The protocol's error numbers (they are Linux's, for the ones it has).
inline constexpr std::uint32_t kEperm = 1, kEio = 5, kEnomem = 12, kEinval = 22, kEnospc = 28,
                               kEoverflow = 75, kEnotsup = 95, kEshutdown = 108;
// An errno as the protocol carries it (EIO for anything it lacks).
std::uint32_t wire_error(int errno_value) noexcept;

struct Request {
  std::uint16_t flags = 0;
  std::uint16_t type = 0;
  std::uint64_t cookie = 0;
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
};
// A wrong magic means the stream is out of step: the connection closes.
Result<Request> parse_request(std::span<const std::byte, kRequestBytes> in) noexcept;

// What to do with a parsed request, decided before any payload is read.
struct Verdict {
  std::uint32_t error = 0;     // 0: serve it; else answer this error
  bool close = false;          // the stream cannot be trusted any more: close
  bool payload = false;        // a WRITE payload of `length` bytes follows
  bool disconnect = false;     // NBD_CMD_DISC: close, without a reply
};
Verdict check_request(const Request& request, const ExportInfo& info) noexcept;

void write_simple_reply(std::span<std::byte, kSimpleReplyBytes> out, std::uint32_t error,
                        std::uint64_t cookie) noexcept;
void write_structured_header(std::span<std::byte, kStructuredReplyBytes> out, std::uint16_t flags,
                             std::uint16_t type, std::uint64_t cookie, std::uint32_t length) noexcept;
// A whole NBD_REPLY_TYPE_ERROR chunk with the done flag and a message;
// returns its length (`out` holds at least kStructuredReplyBytes + 6 + message).
std::size_t write_structured_error(std::span<std::byte> out, std::uint32_t error, std::uint64_t cookie,
                                   std::string_view message) noexcept;

// Big-endian helpers, for the server and the tests.
void put16(std::byte* p, std::uint16_t v) noexcept;
void put32(std::byte* p, std::uint32_t v) noexcept;
void put64(std::byte* p, std::uint64_t v) noexcept;
std::uint16_t get16(const std::byte* p) noexcept;
std::uint32_t get32(const std::byte* p) noexcept;
std::uint64_t get64(const std::byte* p) noexcept;

}  // namespace uzswap::nbd

template <>
struct std::is_error_code_enum<uzswap::nbd::ProtocolError> : std::true_type {};
