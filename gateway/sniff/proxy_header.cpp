#include "egressd/sniff/proxy_header.hpp"

#include <algorithm>
#include <array>

#include "byte_reader.hpp"

namespace egressd::sniff {
namespace {

using Bytes = std::span<const std::uint8_t>;
using detail::ByteReader;

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::size_t kV2FixedLength = 16;
constexpr std::size_t kV2InetLength = 12;
constexpr std::size_t kV2Inet6Length = 36;
constexpr std::size_t kV2UnixLength = 216;

ProxyHeaderResult verdict(Status status, std::string_view reason) {
  ProxyHeaderResult r;
  r.status = status;
  r.reason = reason;
  return r;
}

// Compares what is present of `data` with `prefix`: found when all of the
// prefix is there, need_more for a proper prefix, else not_this_protocol.
Status match_prefix(Bytes data, std::string_view prefix) {
  const std::size_t n = std::min(data.size(), prefix.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (data[i] != static_cast<std::uint8_t>(prefix[i])) return Status::not_this_protocol;
  }
  return n == prefix.size() ? Status::found : Status::need_more;
}

// Decimal port, 0-65535, "0" or no leading zero (§2.1).
std::optional<std::uint16_t> parse_v1_port(std::string_view text) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  std::uint32_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (n > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(n);
}

// Splits off the text up to the next single space; false when the field is
// empty (two spaces in a row, or a leading/trailing space).
bool next_field(std::string_view& rest, std::string_view& field, bool last) {
  const auto space = rest.find(' ');
  if (last) {
    if (space != std::string_view::npos) return false;
    field = rest;
    rest = {};
  } else {
    if (space == std::string_view::npos) return false;
    field = rest.substr(0, space);
    rest.remove_prefix(space + 1);
  }
  return !field.empty();
}

// Version 1, proxy-protocol.txt §2.1:
//
//   "PROXY" SP ( "TCP4" | "TCP6" ) SP src-addr SP dst-addr SP src-port SP
//   dst-port CRLF
//   "PROXY" SP "UNKNOWN" [ anything but CRLF ] CRLF
//
// At most 107 bytes, CRLF included; single spaces; addresses in their
// family's text form; ports decimal without leading zeros.
ProxyHeaderResult parse_v1(Bytes data) {
  const std::size_t limit = std::min(data.size(), kMaxProxyV1Length);
  std::size_t end = 0;
  for (std::size_t i = kV1Prefix.size(); i < limit && end == 0; ++i) {
    const std::uint8_t c = data[i];
    if (c == '\n') {
      if (data[i - 1] != '\r') return verdict(Status::malformed, "bare LF in PROXY v1 header");
      end = i + 1;
    } else if (c == '\r') {
      if (i + 1 < limit && data[i + 1] != '\n') {
        return verdict(Status::malformed, "bare CR in PROXY v1 header");
      }
    } else if (c < 0x20 || c > 0x7e) {
      return verdict(Status::malformed, "non-printable byte in PROXY v1 header");
    }
  }
  if (end == 0) {
    if (data.size() >= kMaxProxyV1Length) {
      return verdict(Status::malformed, "PROXY v1 header without CRLF within 107 bytes");
    }
    return verdict(Status::need_more, {});
  }

  ProxyHeaderResult result;
  ProxyHeader& h = result.header;
  h.version = 1;
  h.command = ProxyHeader::Command::proxy;
  h.bytes_consumed = end;
  std::string_view rest(reinterpret_cast<const char*>(data.data()) + kV1Prefix.size(),
                        end - 2 - kV1Prefix.size());

  if (rest.substr(0, 7) == "UNKNOWN" && (rest.size() == 7 || rest[7] == ' ')) {
    // The sender does not know the addresses; the rest is to be ignored.
    h.family = ProxyHeader::Family::unspec;
    result.status = Status::found;
    return result;
  }
  std::string_view proto;
  std::string_view src;
  std::string_view dst;
  std::string_view sport;
  std::string_view dport;
  if (!next_field(rest, proto, false)) return verdict(Status::malformed, "bad PROXY v1 field");
  const bool v4 = proto == "TCP4";
  if (!v4 && proto != "TCP6") return verdict(Status::malformed, "unknown PROXY v1 protocol");
  if (!next_field(rest, src, false) || !next_field(rest, dst, false) ||
      !next_field(rest, sport, false) || !next_field(rest, dport, true)) {
    return verdict(Status::malformed, "bad PROXY v1 field");
  }
  // TCP4 takes dotted quads only; TCP6 takes IPv6 text (an IPv4-mapped one
  // is normalised to IPv4 by IpAddress, as everywhere).
  auto address_ok = [v4](std::string_view text) {
    return v4 == (text.find(':') == std::string_view::npos);
  };
  auto src_ip = IpAddress::parse(src);
  auto dst_ip = IpAddress::parse(dst);
  if (!src_ip || !dst_ip || !address_ok(src) || !address_ok(dst)) {
    return verdict(Status::malformed, "bad PROXY v1 address");
  }
  auto src_port = parse_v1_port(sport);
  auto dst_port = parse_v1_port(dport);
  if (!src_port || !dst_port) return verdict(Status::malformed, "bad PROXY v1 port");
  h.family = v4 ? ProxyHeader::Family::inet : ProxyHeader::Family::inet6;
  h.source = Endpoint{*src_ip, *src_port};
  h.destination = Endpoint{*dst_ip, *dst_port};
  result.status = Status::found;
  return result;
}

template <std::size_t N>
IpAddress read_ip(ByteReader& r) {
  std::array<std::uint8_t, N> bytes{};
  Bytes raw;
  r.bytes(N, raw);  // the caller checked the length
  std::copy(raw.begin(), raw.end(), bytes.begin());
  if constexpr (N == 4) {
    return IpAddress::from_v4(bytes);
  } else {
    return IpAddress::from_v6(bytes);
  }
}

// Version 2, proxy-protocol.txt §2.2:
//
//   0                   1                   2                   3
//   +-------------------------------------------------------------------+
//   |           signature \r\n\r\n\0\r\nQUIT\n (12 bytes)               |
//   +----------------+----------------+---------------------------------+
//   | ver(4) cmd(4)  | fam(4) proto(4)|  length (16 bits, big endian)   |
//   +----------------+----------------+---------------------------------+
//   | addresses: INET  src(4)  dst(4)  sport(2) dport(2)   = 12 bytes   |
//   |            INET6 src(16) dst(16) sport(2) dport(2)   = 36 bytes   |
//   |            UNIX  src(108) dst(108)                   = 216 bytes  |
//   +-------------------------------------------------------------------+
//   | TLVs: type(1) length(2) value ... until `length` is used up        |
//   +-------------------------------------------------------------------+
//   ver = 2; cmd 0 LOCAL, 1 PROXY; fam 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX;
//   proto 0 UNSPEC, 1 STREAM, 2 DGRAM.
ProxyHeaderResult parse_v2(Bytes data) {
  if (data.size() < kV2FixedLength) return verdict(Status::need_more, {});
  const std::uint8_t version = data[12] >> 4U;
  const std::uint8_t command = data[12] & 0x0fU;
  const std::uint8_t family = data[13] >> 4U;
  const std::uint8_t transport = data[13] & 0x0fU;
  const std::size_t length = (std::size_t{data[14]} << 8U) | data[15];
  if (version != 2) return verdict(Status::malformed, "PROXY v2 version is not 2");
  if (command > 1) return verdict(Status::malformed, "unknown PROXY v2 command");
  if (family > 3) return verdict(Status::malformed, "unknown PROXY v2 address family");
  if (transport > 2) return verdict(Status::malformed, "unknown PROXY v2 transport");
  if (length > kMaxProxyV2Length) return verdict(Status::malformed, "PROXY v2 header over the cap");
  if (data.size() < kV2FixedLength + length) return verdict(Status::need_more, {});

  ProxyHeaderResult result;
  ProxyHeader& h = result.header;
  h.version = 2;
  h.bytes_consumed = kV2FixedLength + length;
  h.family = static_cast<ProxyHeader::Family>(family);
  if (command == 0) {
    // LOCAL: the receiver "must ignore the protocol block and the addresses".
    h.command = ProxyHeader::Command::local;
    result.status = Status::found;
    return result;
  }
  h.command = ProxyHeader::Command::proxy;
  ByteReader r(data.subspan(kV2FixedLength, length));
  switch (h.family) {
    case ProxyHeader::Family::unspec:
      // Unknown protocol: nothing in the block can be interpreted.
      result.status = Status::found;
      return result;
    case ProxyHeader::Family::unix_socket:
      if (!r.skip(kV2UnixLength)) return verdict(Status::malformed, "PROXY v2 block too short");
      break;
    case ProxyHeader::Family::inet:
    case ProxyHeader::Family::inet6: {
      if (transport != 1) return verdict(Status::malformed, "PROXY v2 transport is not STREAM");
      const bool v4 = h.family == ProxyHeader::Family::inet;
      if (r.remaining() < (v4 ? kV2InetLength : kV2Inet6Length)) {
        return verdict(Status::malformed, "PROXY v2 block too short for its addresses");
      }
      const IpAddress src = v4 ? read_ip<4>(r) : read_ip<16>(r);
      const IpAddress dst = v4 ? read_ip<4>(r) : read_ip<16>(r);
      std::uint16_t sport = 0;
      std::uint16_t dport = 0;
      r.u16(sport);
      r.u16(dport);
      h.source = Endpoint{src, sport};
      h.destination = Endpoint{dst, dport};
      break;
    }
  }
  // TLVs are skipped, but must tile the rest of the block exactly.
  while (!r.empty()) {
    std::uint8_t type = 0;
    std::uint16_t tlv_length = 0;
    if (!r.u8(type) || !r.u16(tlv_length) || !r.skip(tlv_length)) {
      return verdict(Status::malformed, "PROXY v2 TLV overruns the header");
    }
  }
  result.status = Status::found;
  return result;
}

}  // namespace

ProxyHeaderResult parse_proxy_header(std::span<const std::uint8_t> data) {
  if (data.empty()) return verdict(Status::need_more, {});
  if (data[0] == 'P') {
    switch (match_prefix(data, kV1Prefix)) {
      case Status::found:
        return parse_v1(data);
      case Status::need_more:
        return verdict(Status::need_more, {});
      default:
        return verdict(Status::not_this_protocol, "not a PROXY protocol header");
    }
  }
  switch (match_prefix(data, kProxyV2Signature)) {
    case Status::found:
      return parse_v2(data);
    case Status::need_more:
      return verdict(Status::need_more, {});
    default:
      return verdict(Status::not_this_protocol, "not a PROXY protocol header");
  }
}

namespace {

// The 16 bytes of an address as INET6 wants them (IPv4 as ::ffff:a.b.c.d).
std::array<std::uint8_t, 16> as_v6_bytes(const IpAddress& ip) noexcept {
  std::array<std::uint8_t, 16> out{};
  const auto b = ip.bytes();
  if (ip.is_v4()) {
    out[10] = 0xff;
    out[11] = 0xff;
    std::copy(b.begin(), b.end(), out.begin() + 12);
  } else {
    std::copy(b.begin(), b.end(), out.begin());
  }
  return out;
}

}  // namespace

// The layout drawn above parse_v2, written: signature, 0x21 (version 2,
// PROXY), family/transport (0x11 INET/STREAM or 0x21 INET6/STREAM), the
// block length, source address, destination address, source port,
// destination port, all big endian.
ProxyV2Bytes write_proxy_v2(const Endpoint& source, const Endpoint& destination) noexcept {
  ProxyV2Bytes out;
  auto put = [&out](std::uint8_t b) { out.data[out.size++] = b; };
  for (char c : kProxyV2Signature) put(static_cast<std::uint8_t>(c));
  const bool v4 = source.ip.is_v4() && destination.ip.is_v4();
  put(0x21);
  put(v4 ? 0x11 : 0x21);
  const std::size_t block = v4 ? kV2InetLength : kV2Inet6Length;
  put(static_cast<std::uint8_t>(block >> 8U));
  put(static_cast<std::uint8_t>(block & 0xffU));
  if (v4) {
    for (auto b : source.ip.bytes()) put(b);
    for (auto b : destination.ip.bytes()) put(b);
  } else {
    for (auto b : as_v6_bytes(source.ip)) put(b);
    for (auto b : as_v6_bytes(destination.ip)) put(b);
  }
  put(static_cast<std::uint8_t>(source.port >> 8U));
  put(static_cast<std::uint8_t>(source.port & 0xffU));
  put(static_cast<std::uint8_t>(destination.port >> 8U));
  put(static_cast<std::uint8_t>(destination.port & 0xffU));
  return out;
}

}  // namespace egressd::sniff
