#pragma once
// DNS names seen in traffic (SNI, Host, :authority, CONNECT target) and in
// the config, in one canonical form: ASCII lowercase, no trailing dot.
//
// A name from traffic is valid (contract decision rule 2) when it is an IP
// literal in any spelling a URL parser accepts (parse_ip_literal,
// core/ip_literal.hpp), or a DNS name of 1-253 bytes made of dot-separated
// labels of 1-63 bytes each, every byte a letter, digit or hyphen, whose
// last label is not a number. Anything else — empty labels, NUL, spaces,
// underscores, non-ASCII bytes, "1.2.3.256", "foo.0x10" — is invalid and
// is denied as `builtin:invalid-name`. Unicode is never converted here:
// that is only done for the config, by `config` with libidn2.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "egressd/core/ip.hpp"
#include "egressd/core/ip_literal.hpp"  // part of this interface: canonicalize_name's literals

namespace egressd {

inline constexpr std::size_t kMaxNameLength = 253;
inline constexpr std::size_t kMaxLabelLength = 63;

enum class NameProblem {
  none,
  empty,
  too_long,        // over 253 bytes without the trailing dot
  empty_label,     // "a..b", ".a", or a lone "."
  label_too_long,  // a label over 63 bytes
  bad_byte,        // a byte other than letter, digit, hyphen, dot
  bad_ip_literal,  // LiteralKind::invalid: "1.2.3.256", "foo.0x10", "[1.2.3.4]", "::1]"
};

// One sentence, e.g. "an empty label".
std::string_view describe(NameProblem problem) noexcept;

// Checks `raw` as a DNS name (one trailing dot allowed) without allocating.
NameProblem check_dns_name(std::string_view raw) noexcept;

// A name from traffic in canonical form.
struct CanonicalName {
  std::string text;             // lowercase, no trailing dot
  std::optional<IpAddress> ip;  // set when the name is an IP literal
};

// Canonicalises a name taken from traffic. An IP literal by
// parse_ip_literal, in any spelling ("127.1", "0x7f000001", "0177.0.0.1",
// "[::ffff:127.0.0.1]", "[fe80::1%25eth0]", bare "fe80::1%eth0"), yields
// its canonical text (dotted quad, or RFC 5952 without zone) and `ip`; an
// IPv4-mapped address yields the IPv4 address. A name parse_ip_literal
// calls invalid yields bad_ip_literal and never falls back to DNS. Any
// other name must pass check_dns_name and yields lowercase text without
// the trailing dot. Returns the problem when the name is invalid.
struct CanonicalNameResult {
  std::optional<CanonicalName> name;
  NameProblem problem = NameProblem::none;
};
CanonicalNameResult canonicalize_name(std::string_view raw);

// Lowercases ASCII letters in place.
void ascii_lowercase(std::string& s) noexcept;

}  // namespace egressd
