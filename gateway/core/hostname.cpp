#include "egressd/core/hostname.hpp"

namespace egressd {

std::string_view describe(NameProblem problem) noexcept {
  switch (problem) {
    case NameProblem::none:
      return "a valid name";
    case NameProblem::empty:
      return "an empty name";
    case NameProblem::too_long:
      return "a name longer than 253 bytes";
    case NameProblem::empty_label:
      return "an empty label";
    case NameProblem::label_too_long:
      return "a label longer than 63 bytes";
    case NameProblem::bad_byte:
      return "a byte other than a letter, digit, hyphen or dot";
    case NameProblem::bad_ip_literal:
      return "a malformed IP literal or a name ending in a number";
  }
  return "an invalid name";
}

NameProblem check_dns_name(std::string_view raw) noexcept {
  if (raw.empty()) return NameProblem::empty;
  if (raw.back() == '.') raw.remove_suffix(1);
  if (raw.empty()) return NameProblem::empty_label;
  if (raw.size() > kMaxNameLength) {
    // Report a bad byte before length: it says more about hostile input.
    for (char c : raw) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.';
      if (!ok) return NameProblem::bad_byte;
    }
    return NameProblem::too_long;
  }
  std::size_t label = 0;
  for (char c : raw) {
    if (c == '.') {
      if (label == 0) return NameProblem::empty_label;
      label = 0;
      continue;
    }
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok) return NameProblem::bad_byte;
    if (++label > kMaxLabelLength) return NameProblem::label_too_long;
  }
  if (label == 0) return NameProblem::empty_label;
  return NameProblem::none;
}

void ascii_lowercase(std::string& s) noexcept {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
}

CanonicalNameResult canonicalize_name(std::string_view raw) {
  CanonicalNameResult result;
  // Literals first: "0x7f000001" and "127.1" pass check_dns_name, yet a
  // resolver would read them as 127.0.0.1.
  const IpLiteral literal = parse_ip_literal(raw);
  switch (literal.kind) {
    case LiteralKind::ip:
      result.name = CanonicalName{literal.address.to_string(), literal.address};
      return result;
    case LiteralKind::invalid:
      result.problem = NameProblem::bad_ip_literal;
      return result;
    case LiteralKind::not_literal:
      break;
  }
  result.problem = check_dns_name(raw);
  if (result.problem != NameProblem::none) return result;
  if (raw.back() == '.') raw.remove_suffix(1);
  CanonicalName name{std::string(raw), std::nullopt};
  ascii_lowercase(name.text);
  result.name = std::move(name);
  return result;
}

}  // namespace egressd
