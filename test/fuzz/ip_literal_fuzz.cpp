// libFuzzer target for parse_ip_literal (and canonicalize_name, which
// relies on it). Checks, for any bytes:
//  - parse_ip_literal agrees with a second, literal reading of the WHATWG
//    IPv4 parser and ends-in-a-number checker (split into parts, then the
//    spec's steps one by one);
//  - an `ip` result is what canonicalize_name returns, its text parses back
//    through IpAddress::parse and parse_ip_literal to the same address, and
//    an IPv4-mapped address never survives as IPv6;
//  - an `invalid` result is an invalid name (never a DNS name);
//  - whatever inet_aton (what resolvers use to spot an address in a name)
//    reads as an address is, if the name is valid at all, that address.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/core/hostname.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/core/ip_literal.hpp"

namespace {

using egressd::IpAddress;
using egressd::IpLiteral;
using egressd::LiteralKind;

std::vector<std::string_view> split_dots(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) return parts;
    start = dot + 1;
  }
}

// "IPv4 number parser", returning the value capped at 2^40 (enough to be out
// of range anywhere) so the arithmetic stays in 64 bits.
std::optional<std::uint64_t> ref_number(std::string_view s) {
  if (s.empty()) return std::nullopt;
  int radix = 10;
  if (s.size() >= 2 && (s.substr(0, 2) == "0x" || s.substr(0, 2) == "0X")) {
    s.remove_prefix(2);
    radix = 16;
  } else if (s.size() >= 2 && s[0] == '0') {
    s.remove_prefix(1);
    radix = 8;
  }
  if (s.empty()) return 0;
  const std::string_view digits = "0123456789abcdef";
  std::uint64_t v = 0;
  for (char c : s) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    const auto d = digits.find(c);
    if (d == std::string_view::npos || static_cast<int>(d) >= radix) return std::nullopt;
    v = std::min<std::uint64_t>(v * static_cast<std::uint64_t>(radix) + d, std::uint64_t{1} << 40);
  }
  return v;
}

bool ref_ends_in_a_number(std::string_view input) {
  auto parts = split_dots(input);
  if (parts.back().empty()) {
    if (parts.size() == 1) return false;
    parts.pop_back();
  }
  const std::string_view last = parts.back();
  if (!last.empty() &&
      std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return true;
  }
  return ref_number(last).has_value();
}

std::optional<std::uint32_t> ref_ipv4(std::string_view input) {
  auto parts = split_dots(input);
  if (parts.back().empty() && parts.size() > 1) parts.pop_back();
  if (parts.size() > 4) return std::nullopt;
  std::vector<std::uint64_t> numbers;
  for (auto p : parts) {
    auto n = ref_number(p);
    if (!n) return std::nullopt;
    numbers.push_back(*n);
  }
  for (std::size_t i = 0; i + 1 < numbers.size(); ++i) {
    if (numbers[i] > 255) return std::nullopt;
  }
  std::uint64_t limit = 1;
  for (std::size_t i = numbers.size(); i < 5; ++i) limit *= 256;
  if (numbers.back() >= limit) return std::nullopt;
  std::uint64_t v = numbers.back();
  for (std::size_t i = 0; i + 1 < numbers.size(); ++i) v += numbers[i] << (8 * (3 - i));
  return static_cast<std::uint32_t>(v);
}

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const IpLiteral got = egressd::parse_ip_literal(in);
  const auto name = egressd::canonicalize_name(in);

  // Agreement with canonicalize_name.
  switch (got.kind) {
    case LiteralKind::ip:
      check(name.name && name.name->ip && *name.name->ip == got.address);
      check(name.name->text == got.address.to_string());
      check(egressd::IpAddress::parse(name.name->text) == got.address);
      {
        const IpLiteral again = egressd::parse_ip_literal(name.name->text);
        check(again.kind == LiteralKind::ip && again.address == got.address);
      }
      if (got.address.is_v6()) {
        const auto b = got.address.bytes();
        const bool mapped = std::all_of(b.begin(), b.begin() + 10, [](auto x) { return x == 0; }) &&
                            b[10] == 0xff && b[11] == 0xff;
        check(!mapped);
        const IpLiteral bracketed = egressd::parse_ip_literal("[" + name.name->text + "]");
        check(bracketed.kind == LiteralKind::ip && bracketed.address == got.address);
      }
      break;
    case LiteralKind::invalid:
      check(!name.name && name.problem == egressd::NameProblem::bad_ip_literal);
      break;
    case LiteralKind::not_literal:
      check(!name.name || !name.name->ip);
      check(name.problem != egressd::NameProblem::bad_ip_literal);
      break;
  }

  // The WHATWG IPv4 path, read a second way (inputs without IPv6 bytes and
  // of a name's length; longer ones are refused outright).
  const bool v6_bytes = in.find_first_of(":[]") != std::string_view::npos;
  if (!v6_bytes && !in.empty()) {
    const bool ends = ref_ends_in_a_number(in);
    if (!ends) check(got.kind == LiteralKind::not_literal);
    const std::size_t limit = egressd::kMaxNameLength + (in.back() == '.' ? 1 : 0);
    if (ends && in.size() <= limit) {
      const auto ref = ref_ipv4(in);
      check(ref ? got.kind == LiteralKind::ip && got.address == IpAddress::from_v4_uint(*ref)
                : got.kind == LiteralKind::invalid);
    }
    if (ends && in.size() > limit) check(got.kind == LiteralKind::invalid);
  }

  // Whatever a resolver would take for an address is never a DNS name.
  if (in.find('\0') == std::string_view::npos && size < 512) {
    const std::string text(in);
    in_addr a{};
    if (::inet_aton(text.c_str(), &a) != 0 && name.name) {
      check(name.name->ip && *name.name->ip == IpAddress::from_v4_uint(ntohl(a.s_addr)));
    }
  }
  return 0;
}
