#pragma once
// HTTP/2 prior-knowledge client connection preface (RFC 9113 §3.4).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "egressd/sniff/status.hpp"

namespace egressd::sniff {

// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24 bytes.
inline constexpr std::string_view kH2cPreface{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24};

struct H2cPrefaceResult {
  Status status = Status::need_more;
  std::size_t bytes_consumed = 0;  // 24 when found
};

// found: `data` starts with the whole preface; need_more: `data` is a proper
// prefix of it (empty included); not_this_protocol otherwise. Never
// malformed: the preface is a fixed string. Allocation-free.
H2cPrefaceResult parse_h2c_preface(std::span<const std::uint8_t> data) noexcept;

}  // namespace egressd::sniff
