#pragma once
// IP literals in names taken from untrusted traffic (CONNECT targets,
// absolute-URI hosts, Host headers, SNI), read the way a browser or a URL
// library would, so that no spelling of an address slips past the address
// guard as a "DNS name" that a resolver later turns back into the address.
//
// The rules are the WHATWG URL Standard's host parser:
//   https://url.spec.whatwg.org/#concept-host-parser
//   https://url.spec.whatwg.org/#ends-in-a-number-checker
//   https://url.spec.whatwg.org/#concept-ipv4-parser
//   https://url.spec.whatwg.org/#concept-ipv6-parser
// with one addition (a zone id after an IPv6 address, RFC 6874 / RFC 4007,
// which is dropped) and one restriction (nothing over 253 bytes).

#include <string_view>

#include "egressd/core/ip.hpp"

namespace egressd {

enum class LiteralKind : unsigned char {
  not_literal,  // not an IP literal: judge it as a DNS name
  ip,           // an IP literal; `address` holds it
  invalid,      // looks like an IP literal but does not parse: refuse the name
};

struct IpLiteral {
  LiteralKind kind = LiteralKind::not_literal;
  IpAddress address;  // meaningful only when kind == ip
};

// Classifies `host` (no port) without allocating.
//
// ip:
//   "[" IPv6 [zone] "]", or a bare IPv6 [zone] (what a CONNECT authority
//   parser hands over); zone = "%" 1*(unreserved / pct-encoded), dropped.
//   A name that "ends in a number" — its last label, after one trailing dot
//   is dropped, is all ASCII digits or "0x"/"0X" followed by hex digits —
//   and parses as WHATWG IPv4: 1-4 parts, each decimal, 0x-hex or
//   leading-0 octal, the last part filling the remaining bytes ("127.1",
//   "2130706433", "0x7f000001", "0177.0.0.1" are all 127.0.0.1).
//   IPv4-mapped IPv6 yields the IPv4 address, as everywhere in egressd.
// invalid:
//   A name that ends in a number but is not WHATWG IPv4 (a part out of
//   range, an empty part, more than 4 parts, a non-number part as in
//   "foo.0x10", "09" which is not octal): it must not fall back to DNS.
//   Anything with "[", "]" or ":" that is not an IPv6 literal as above.
//   Any of these over 253 bytes (254 with a trailing dot; brackets not
//   counted).
// not_literal:
//   Everything else, valid DNS name or not: the caller checks it as a DNS
//   name (check_dns_name), which also refuses what is neither.
//
// Unlike a URL parser this does not map Unicode (fullwidth digits and dots
// stay non-ASCII bytes, refused as DNS names) nor percent-decode the host.
IpLiteral parse_ip_literal(std::string_view host) noexcept;

}  // namespace egressd
