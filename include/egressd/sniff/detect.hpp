#pragma once
// First-bytes protocol detection: which sniff parser to run on a flow.

#include <cstdint>
#include <span>
#include <string_view>

namespace egressd::sniff {

enum class Detected : std::uint8_t {
  need_more,  // too few bytes to tell
  tls,        // a TLS handshake record: run parse_client_hello
  http1,      // an HTTP method token and a space: run parse_http1_head
  h2c,        // the complete HTTP/2 prior-knowledge preface
  other,      // none of these: judge the flow as plain TCP
};

std::string_view to_string(Detected detected) noexcept;

// Classifies a connection from its first bytes, with as few as possible:
//  - 0x16 then 0x03 (handshake record, TLS major version 3): tls after 2
//    bytes; 0x16 then anything else is other.
//  - a proper prefix of the h2c preface: need_more until it is complete
//    (h2c) or differs (then judged as below). "PRI " also looks like an
//    HTTP method: the preface wins.
//  - an uppercase method token (see parse_http1_head) then a space: http1;
//    need_more while the token may still be one.
//  - anything else: other.
// The parser chosen may still answer malformed or not_this_protocol: this
// is a routing decision, not validation. Allocation-free, never throws.
Detected detect_protocol(std::span<const std::uint8_t> data) noexcept;

}  // namespace egressd::sniff
