#include "egressd/sniff/h2c_preface.hpp"

#include <algorithm>

namespace egressd::sniff {

// Client connection preface, RFC 9113 §3.4 (a SETTINGS frame follows it):
//
//   +------------------------------------------------------+
//   | "PRI * HTTP/2.0" CRLF CRLF "SM" CRLF CRLF  (24 bytes) |
//   +------------------------------------------------------+
H2cPrefaceResult parse_h2c_preface(std::span<const std::uint8_t> data) noexcept {
  const std::size_t n = std::min(data.size(), kH2cPreface.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (data[i] != static_cast<std::uint8_t>(kH2cPreface[i])) return {Status::not_this_protocol, 0};
  }
  if (n < kH2cPreface.size()) return {Status::need_more, 0};
  return {Status::found, kH2cPreface.size()};
}

}  // namespace egressd::sniff
