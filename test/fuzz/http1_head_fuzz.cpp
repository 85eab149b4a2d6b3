// libFuzzer target for parse_http1_head (and detect_protocol, which routes
// to it). Checks that a final verdict on a prefix holds for the whole input
// and that found never claims more bytes than it was given.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "egressd/sniff/detect.hpp"
#include "egressd/sniff/h2c_preface.hpp"
#include "egressd/sniff/http1_head.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using egressd::sniff::Status;
  const std::span<const std::uint8_t> all(data, size);
  // A small cap too, so the too_large paths are reached.
  const std::size_t cap =
      size > 0 && (data[0] & 1U) != 0 ? 64 : egressd::sniff::kDefaultMaxHttp1Head;
  const auto whole = egressd::sniff::parse_http1_head(all, cap);

  const std::size_t split = size == 0 ? 0 : (data[size - 1] * 131U) % (size + 1);
  const auto first = egressd::sniff::parse_http1_head(all.first(split), cap);
  if (first.status != Status::need_more) {
    if (first.status != whole.status || first.reason != whole.reason) std::abort();
    if (first.status == Status::found &&
        (first.head.head_length != whole.head.head_length ||
         first.head.host.name != whole.head.host.name || first.head.target != whole.head.target)) {
      std::abort();
    }
  }
  if (whole.status == Status::found &&
      (whole.head.head_length > size || whole.head.head_length > cap)) {
    std::abort();
  }
  if (whole.status != Status::found && whole.status != Status::need_more && whole.reason.empty()) {
    std::abort();
  }

  // Detection agrees with the parsers it routes to.
  const auto detected = egressd::sniff::detect_protocol(all);
  const auto h2c = egressd::sniff::parse_h2c_preface(all);
  if ((detected == egressd::sniff::Detected::h2c) != (h2c.status == Status::found)) std::abort();
  // A method token routes to HTTP/1; only a complete first line without an
  // HTTP version (contract rule 11: `EHLO x`, `PING`) turns that into "not
  // HTTP" — never before the line ends.
  if (detected == egressd::sniff::Detected::http1 && whole.status == Status::not_this_protocol &&
      std::find(data, data + size, std::uint8_t{'\n'}) == data + size) {
    std::abort();
  }
  return 0;
}
