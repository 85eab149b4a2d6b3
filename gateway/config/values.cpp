// Value syntax of the config that is not YAML structure: durations, dates,
// host patterns.

#include <algorithm>
#include <memory>

#include <idn2.h>

#include "egressd/config/loader.hpp"
#include "egressd/core/hostname.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/core/ip_literal.hpp"

namespace egressd::config {
namespace {

bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

}  // namespace

std::optional<Duration> parse_duration(std::string_view text) noexcept {
  std::size_t digits = 0;
  while (digits < text.size() && is_digit(text[digits])) ++digits;
  if (digits == 0) return std::nullopt;
  const std::string_view unit = text.substr(digits);
  std::int64_t ms_per_unit = 0;
  if (unit == "ms") {
    ms_per_unit = 1;
  } else if (unit == "s") {
    ms_per_unit = 1'000;
  } else if (unit == "m") {
    ms_per_unit = 60'000;
  } else if (unit == "h") {
    ms_per_unit = 3'600'000;
  } else {
    return std::nullopt;
  }
  // Accumulate in milliseconds and stop as soon as the cap is passed, so no
  // number of digits can overflow.
  const std::int64_t cap = kMaxDuration.count();
  std::int64_t value = 0;
  for (std::size_t i = 0; i < digits; ++i) {
    value = value * 10 + (text[i] - '0');
    if (value > cap / ms_per_unit) return std::nullopt;
  }
  return Duration{value * ms_per_unit};
}

std::optional<std::chrono::sys_days> parse_date(std::string_view text) noexcept {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
  auto number = [&](std::size_t from, std::size_t len) -> std::optional<unsigned> {
    unsigned v = 0;
    for (std::size_t i = from; i < from + len; ++i) {
      if (!is_digit(text[i])) return std::nullopt;
      v = v * 10 + static_cast<unsigned>(text[i] - '0');
    }
    return v;
  };
  const auto y = number(0, 4);
  const auto m = number(5, 2);
  const auto d = number(8, 2);
  if (!y || !m || !d) return std::nullopt;
  const std::chrono::year_month_day ymd{std::chrono::year{static_cast<int>(*y)},
                                        std::chrono::month{*m}, std::chrono::day{*d}};
  if (!ymd.ok()) return std::nullopt;
  return std::chrono::sys_days{ymd};
}

HostPatternResult canonicalize_host_pattern(std::string_view raw) {
  HostPatternResult result;
  auto fail = [&](std::string why) {
    result.error = std::move(why);
    return result;
  };
  if (raw.empty()) return fail("an empty host");

  // An IP literal (bare, bracketed IPv6, or a CIDR) belongs in `cidr`: a
  // host entry matches names from the traffic, never addresses.
  {
    std::string_view literal = raw;
    if (literal.size() > 2 && literal.front() == '[' && literal.back() == ']')
      literal = literal.substr(1, literal.size() - 2);
    if (IpAddress::parse(literal) || Cidr::parse(raw))
      return fail("an IP address, not a name; use cidr");
  }

  std::string_view prefix;
  std::string_view base = raw;
  if (base.starts_with("**.")) {
    prefix = "**.";
  } else if (base.starts_with("*.")) {
    prefix = "*.";
  }
  base.remove_prefix(prefix.size());
  if (base.find('*') != std::string_view::npos || (prefix.empty() && raw.find('*') != raw.npos))
    return fail(
        "'*' is allowed only as the whole first label, as in '*.example.com' or "
        "'**.example.com'");
  if (!base.empty() && base.back() == '.') base.remove_suffix(1);
  if (base.empty()) {
    return fail(prefix.empty() ? std::string("a lone '.' is not a name")
                               : "nothing after '" + std::string(prefix) + "'");
  }

  std::string ascii;
  const bool non_ascii = std::any_of(base.begin(), base.end(),
                                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
  if (non_ascii) {
    // libidn2 wants a NUL-terminated string; an embedded NUL would cut the
    // name short and hide bytes, so refuse it first.
    if (base.find('\0') != std::string_view::npos)
      return fail("a byte other than a letter, digit, hyphen or dot");
    const std::string input(base);
    char* out = nullptr;
    const int rc = idn2_to_ascii_8z(input.c_str(), &out, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
    const std::unique_ptr<char, decltype(&idn2_free)> owned(out, &idn2_free);
    if (rc != IDN2_OK || out == nullptr)
      return fail(std::string("not a valid internationalised name (") + idn2_strerror(rc) + ")");
    ascii = out;
  } else {
    ascii = std::string(base);
  }

  // check_dns_name tolerates one trailing dot; one was removed already, so
  // another means an empty last label ("a..").
  if (!ascii.empty() && ascii.back() == '.')
    return fail(std::string(describe(NameProblem::empty_label)));
  const NameProblem problem = check_dns_name(ascii);
  if (problem != NameProblem::none) return fail(std::string(describe(problem)));
  // Traffic names ending in a number are IP literals (or invalid), never
  // DNS names (core/ip_literal.hpp): such a pattern could never match.
  if (parse_ip_literal(ascii).kind != LiteralKind::not_literal)
    return fail("ends in a number, so it is an IP address, not a name; use cidr");
  // The shortest name a wildcard matches has one more label: "x." + base.
  if (!prefix.empty() && ascii.size() + 2 > kMaxNameLength)
    return fail("too long: no name under it fits in 253 bytes");
  ascii_lowercase(ascii);
  result.pattern = std::string(prefix) + ascii;
  return result;
}

namespace {

bool alnum(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool lower_alnum(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63 bytes.
std::optional<std::string> qualified_name_problem(std::string_view name, std::string_view what) {
  if (name.empty()) return std::string(what) + " is empty";
  if (name.size() > 63) return std::string(what) + " is longer than 63 bytes";
  if (!alnum(name.front()) || !alnum(name.back()))
    return std::string(what) + " must start and end with a letter or digit";
  for (const char c : name) {
    if (!alnum(c) && c != '-' && c != '_' && c != '.')
      return std::string(what) + " may hold only letters, digits, '-', '_' and '.'";
  }
  return std::nullopt;
}

// A DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 bytes.
bool dns1123_label(std::string_view label) noexcept {
  if (label.empty() || label.size() > 63) return false;
  if (!lower_alnum(label.front()) || !lower_alnum(label.back())) return false;
  return std::all_of(label.begin(), label.end(), [](char c) { return lower_alnum(c) || c == '-'; });
}

}  // namespace

std::optional<std::string> label_key_problem(std::string_view key) {
  const std::size_t slash = key.find('/');
  if (slash != std::string_view::npos) {
    const std::string_view prefix = key.substr(0, slash);
    if (prefix.empty() || prefix.size() > 253)
      return std::string("the key's prefix must be 1-253 bytes");
    std::string_view rest = prefix;
    while (!rest.empty()) {
      const std::size_t dot = rest.find('.');
      if (!dns1123_label(rest.substr(0, dot)))
        return std::string(
            "the key's prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.')");
      if (dot == std::string_view::npos) break;
      rest.remove_prefix(dot + 1);
      if (rest.empty())
        return std::string(
            "the key's prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.')");
    }
    return qualified_name_problem(key.substr(slash + 1), "the key's name");
  }
  return qualified_name_problem(key, "the key");
}

std::optional<std::string> label_value_problem(std::string_view value) {
  if (value.empty()) return std::nullopt;
  return qualified_name_problem(value, "the value");
}

std::optional<std::string> namespace_name_problem(std::string_view name) {
  if (dns1123_label(name)) return std::nullopt;
  return std::string(
      "a namespace name is 1-63 lowercase letters, digits and '-', starting and ending with a "
      "letter or digit");
}

}  // namespace egressd::config
