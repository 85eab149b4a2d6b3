// libFuzzer target for parse_proxy_header. Checks that a final verdict on a
// prefix holds for the whole input and that found consumes only what it
// was given (and, for v1, no more than 107 bytes).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "egressd/sniff/proxy_header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using egressd::sniff::Status;
  const std::span<const std::uint8_t> all(data, size);
  const auto whole = egressd::sniff::parse_proxy_header(all);

  const std::size_t split = size == 0 ? 0 : (data[size - 1] * 263U + data[0]) % (size + 1);
  const auto first = egressd::sniff::parse_proxy_header(all.first(split));
  if (first.status != Status::need_more) {
    if (first.status != whole.status || first.reason != whole.reason) std::abort();
    if (first.status == Status::found &&
        (first.header.bytes_consumed != whole.header.bytes_consumed ||
         first.header.source != whole.header.source ||
         first.header.destination != whole.header.destination)) {
      std::abort();
    }
  }
  if (whole.status == Status::found) {
    const auto& h = whole.header;
    if (h.bytes_consumed > size) std::abort();
    if (h.version == 1 && h.bytes_consumed > egressd::sniff::kMaxProxyV1Length) std::abort();
    if (h.source.has_value() != h.destination.has_value()) std::abort();
  } else if (whole.status != Status::need_more && whole.reason.empty()) {
    std::abort();
  }
  return 0;
}
