#pragma once
// The one answer vocabulary of every sniff parser.
//
// Parsers are pure functions over the whole buffered prefix of a connection
// (from its byte 0). They are called again, with more bytes, after each
// read; a verdict other than `need_more` never changes when more bytes are
// appended (a final verdict depends only on the bytes it looked at).

#include <cstdint>
#include <string_view>

namespace egressd::sniff {

enum class Status : std::uint8_t {
  found,              // complete and valid: the result's data is set
  need_more,          // a valid prefix so far: call again with more bytes
  not_this_protocol,  // these bytes cannot start this protocol
  malformed,          // this protocol, but broken: `reason` says how
  too_large,          // this protocol, but beyond the parser's cap
};

// "found", "need_more", "not_this_protocol", "malformed", "too_large".
std::string_view to_string(Status status) noexcept;

// True for the verdicts that more bytes cannot change.
constexpr bool is_final(Status status) noexcept {
  return status != Status::need_more;
}

}  // namespace egressd::sniff
