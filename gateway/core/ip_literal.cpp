// IP literals in names from traffic, by the WHATWG URL Standard's host
// parser (https://url.spec.whatwg.org/#host-parsing):
//
//   host          = "[" ipv6-zoned "]"         ; 3.5 host parser, step 1
//                 / ipv6-zoned                 ; bare: a CONNECT authority's brackets removed
//                 / ipv4                       ; when the name ends in a number
//                 / other                      ; not a literal: a DNS name or nothing
//   ipv6-zoned    = ipv6 [ "%" zone ]          ; zone: RFC 6874 (URI) / RFC 4007, dropped
//   ipv6          = RFC 4291 2.2 text          ; "IPv6 parser", 3.5; IPv4 tail allowed,
//                                              ; its octets decimal without leading zeros
//   zone          = 1*( unreserved / "%" HEXDIG HEXDIG )
//                                              ; so "%25eth0" (URI form) and "%eth0" both pass
//
//   ends in a number (3.5 "ends in a number checker"): drop one trailing "."
//   if there is one; the name ends in a number when its last label is
//   1*DIGIT or parses as an ipv4-number below ("0x", "0x1f", "017").
//
//   ipv4          = ipv4-number *3( "." ipv4-number ) [ "." ]   ; 3.5 "IPv4 parser"
//   ipv4-number   = ( "0x" / "0X" ) *HEXDIG    ; hex; "0x" alone is 0
//                 / "0" 1*ODIGIT               ; octal ("09" fails)
//                 / 1*DIGIT                    ; decimal
//     each part but the last <= 255; the last < 256^(5 - number of parts)
//     and fills the bytes the others leave: "127.1", "2130706433",
//     "0x7f000001", "0177.0.0.1", "0x7f.1" are all 127.0.0.1.
//
// A name that ends in a number but is not ipv4 is a failure in the URL
// Standard, never a domain: here it is `invalid`, so it cannot reach DNS
// (where inet_aton-style resolvers would read it as an address anyway).

#include "egressd/core/ip_literal.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "egressd/core/hostname.hpp"

namespace egressd {
namespace {

// The largest IPv4 address; anything above it is out of range wherever it
// stands, so numbers saturate here instead of growing without bound.
constexpr std::uint64_t kMaxV4 = 0xFFFFFFFFU;

constexpr bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

constexpr bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

constexpr unsigned hex_value(char c) noexcept {
  if (is_digit(c)) return static_cast<unsigned>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
  return static_cast<unsigned>(c - 'A' + 10);
}

// WHATWG "IPv4 number parser". A value above kMaxV4 comes back as
// kMaxV4 + 1: too big for any position, yet still a number (which is what
// the ends-in-a-number checker asks).
std::optional<std::uint64_t> parse_ipv4_number(std::string_view s) noexcept {
  if (s.empty()) return std::nullopt;
  unsigned radix = 10;
  if (s.size() >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    radix = 16;
  } else if (s.size() >= 2 && s[0] == '0') {
    s.remove_prefix(1);
    radix = 8;
  }
  std::uint64_t value = 0;  // "0x" alone: 0
  for (const char c : s) {
    if (!is_hex(c)) return std::nullopt;
    const unsigned digit = hex_value(c);
    if (digit >= radix) return std::nullopt;
    value = value * radix + digit;  // <= (kMaxV4 + 1) * 16 + 15: no overflow
    if (value > kMaxV4) value = kMaxV4 + 1;
  }
  return value;
}

// WHATWG "ends in a number checker".
bool ends_in_a_number(std::string_view host) noexcept {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  const std::size_t dot = host.rfind('.');
  const std::string_view last = dot == std::string_view::npos ? host : host.substr(dot + 1);
  if (last.empty()) return false;
  bool all_digits = true;
  for (const char c : last) all_digits = all_digits && is_digit(c);
  return all_digits || parse_ipv4_number(last).has_value();
}

// WHATWG "IPv4 parser", validation errors ignored, failures kept.
std::optional<IpAddress> parse_ipv4(std::string_view host) noexcept {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);  // one trailing dot
  std::array<std::uint64_t, 4> numbers{};
  std::size_t count = 0;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = host.find('.', start);
    if (count == numbers.size()) return std::nullopt;  // a fifth part
    const auto n = parse_ipv4_number(host.substr(start, dot - start));
    if (!n) return std::nullopt;  // includes an empty part ("1..2", "..1")
    numbers[count++] = *n;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  for (std::size_t i = 0; i + 1 < count; ++i) {
    if (numbers[i] > 255) return std::nullopt;
  }
  const std::uint64_t last = numbers[count - 1];
  if (last >= (std::uint64_t{1} << (8 * (5 - count)))) return std::nullopt;
  auto value = static_cast<std::uint32_t>(last);
  for (std::size_t i = 0; i + 1 < count; ++i) {
    value |= static_cast<std::uint32_t>(numbers[i] << (8 * (3 - i)));
  }
  return IpAddress::from_v4_uint(value);
}

// RFC 3986 unreserved.
constexpr bool is_unreserved(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

bool is_zone(std::string_view zone) noexcept {
  if (zone.empty()) return false;
  for (std::size_t i = 0; i < zone.size(); ++i) {
    if (is_unreserved(zone[i])) continue;
    if (zone[i] != '%' || i + 2 >= zone.size() || !is_hex(zone[i + 1]) || !is_hex(zone[i + 2]))
      return false;
    i += 2;
  }
  return true;
}

// An IPv6 address with an optional zone, no brackets.
std::optional<IpAddress> parse_ipv6_zoned(std::string_view text) noexcept {
  const std::size_t percent = text.find('%');
  if (percent != std::string_view::npos && !is_zone(text.substr(percent + 1))) return std::nullopt;
  const std::string_view address = text.substr(0, percent);
  // Only hex digits, colons and dots before the zone. This also keeps NUL
  // away from IpAddress::parse: inet_pton would stop at it and accept
  // "::1\0anything". A colon is required: "[1.2.3.4]" is not a literal.
  bool colon = false;
  for (const char c : address) {
    if (!is_hex(c) && c != ':' && c != '.') return std::nullopt;
    colon = colon || c == ':';
  }
  if (!colon) return std::nullopt;
  return IpAddress::parse(address);  // IPv4-mapped becomes IPv4 there
}

constexpr IpLiteral kNotLiteral{LiteralKind::not_literal, IpAddress{}};
constexpr IpLiteral kInvalid{LiteralKind::invalid, IpAddress{}};

IpLiteral from(const std::optional<IpAddress>& address) noexcept {
  return address ? IpLiteral{LiteralKind::ip, *address} : kInvalid;
}

}  // namespace

IpLiteral parse_ip_literal(std::string_view host) noexcept {
  if (host.empty()) return kNotLiteral;

  if (host.front() == '[') {
    if (host.size() < 2 || host.back() != ']') return kInvalid;  // "[::1"
    const std::string_view inner = host.substr(1, host.size() - 2);
    if (inner.size() > kMaxNameLength) return kInvalid;
    return from(parse_ipv6_zoned(inner));
  }

  // '[', ']' and ':' occur in no DNS name: the name is an IPv6 literal or
  // nothing ("::1]" is nothing). One pass, no memchr per byte.
  bool v6_byte = false;
  for (const char c : host) v6_byte = v6_byte || c == ':' || c == '[' || c == ']';
  if (v6_byte) {
    if (host.size() > kMaxNameLength) return kInvalid;
    return from(parse_ipv6_zoned(host));
  }

  if (!ends_in_a_number(host)) return kNotLiteral;
  const std::size_t limit = kMaxNameLength + (host.back() == '.' ? 1 : 0);
  if (host.size() > limit) return kInvalid;
  return from(parse_ipv4(host));
}

}  // namespace egressd
