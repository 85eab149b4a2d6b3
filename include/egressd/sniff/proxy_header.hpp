#pragma once
// PROXY protocol header, versions 1 (text) and 2 (binary), as specified in
// HAProxy's doc/proxy-protocol.txt. Only read on listeners whose peer is
// trusted; the addresses it carries replace the socket's.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "egressd/core/ip.hpp"
#include "egressd/sniff/status.hpp"

namespace egressd::sniff {

// v1: "a maximum of 107 bytes" for the whole line, CRLF included (§2.1).
inline constexpr std::size_t kMaxProxyV1Length = 107;
// v2: cap on the 16-bit length after the 16-byte fixed header. Addresses
// take at most 216 bytes; the rest is TLVs (SSL info, unique id, AWS/Azure
// ids) that a sane sender keeps well under this.
inline constexpr std::size_t kMaxProxyV2Length = 4096;
inline constexpr std::string_view kProxyV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};

struct ProxyHeader {
  enum class Command : std::uint8_t { local, proxy };
  enum class Family : std::uint8_t { unspec, inet, inet6, unix_socket };

  unsigned version = 0;  // 1 or 2
  // v1 is always proxy; LOCAL (v2 only) means "use the socket's addresses",
  // as for the sender's own health checks.
  Command command = Command::proxy;
  Family family = Family::unspec;  // v1 UNKNOWN is unspec
  // Both set exactly when command is proxy and family is inet or inet6.
  std::optional<Endpoint> source;
  std::optional<Endpoint> destination;
  std::size_t bytes_consumed = 0;  // the header's length; the payload follows
};

struct ProxyHeaderResult {
  Status status = Status::need_more;
  std::string_view reason;  // static text; set unless found / need_more
  ProxyHeader header;       // meaningful only when status == found
};

// Parses a PROXY v1 or v2 header at the start of `data` (the connection's
// bytes from byte 0).
//
// Guarantees: never throws, never reads outside `data`, final verdicts do
// not change when bytes are appended; allocation-free.
//  - not_this_protocol: `data` starts with neither "PROXY " nor the v2
//    signature (decided on the first differing byte).
//  - malformed: v1 without CRLF within 107 bytes, a byte outside printable
//    ASCII, a protocol other than TCP4/TCP6/UNKNOWN, not exactly one space
//    between fields, an address not of the announced family, a port with
//    leading zeros or over 65535; v2 with a version other than 2, a command
//    other than LOCAL/PROXY, an unknown family or transport, PROXY over a
//    non-stream transport, a length beyond kMaxProxyV2Length or too short
//    for its addresses, or a TLV overrunning the header.
//  - found: v2 LOCAL and PROXY over UNSPEC or UNIX carry no endpoints (and
//    their remaining bytes are skipped unread, as the spec says); the
//    caller decides whether that is acceptable.
ProxyHeaderResult parse_proxy_header(std::span<const std::uint8_t> data);

// The longest header write_proxy_v2 produces: the fixed 16 bytes and an
// INET6 address block (no TLVs).
inline constexpr std::size_t kMaxWrittenProxyV2Length = 16 + 36;

// A written PROXY v2 header, held by value (no allocation).
struct ProxyV2Bytes {
  std::array<std::uint8_t, kMaxWrittenProxyV2Length> data{};
  std::size_t size = 0;
  [[nodiscard]] std::span<const std::uint8_t> bytes() const noexcept { return {data.data(), size}; }
};

// Writes the PROXY v2 header a node agent sends before a pod's bytes:
// command PROXY, transport STREAM, no TLVs. Two IPv4 endpoints give INET
// (28 bytes); otherwise INET6 (52 bytes), an IPv4 endpoint written as its
// IPv4-mapped address (which parse_proxy_header reads back as IPv4).
// Pure, never fails.
ProxyV2Bytes write_proxy_v2(const Endpoint& source, const Endpoint& destination) noexcept;

}  // namespace egressd::sniff
