#include "egressd/sniff/detect.hpp"

#include "egressd/sniff/h2c_preface.hpp"
#include "egressd/sniff/http1_head.hpp"

namespace egressd::sniff {

std::string_view to_string(Detected detected) noexcept {
  switch (detected) {
    case Detected::need_more:
      return "need_more";
    case Detected::tls:
      return "tls";
    case Detected::http1:
      return "http1";
    case Detected::h2c:
      return "h2c";
    case Detected::other:
      return "other";
  }
  return "other";
}

Detected detect_protocol(std::span<const std::uint8_t> data) noexcept {
  if (data.empty()) return Detected::need_more;
  if (data[0] == 0x16) {
    if (data.size() < 2) return Detected::need_more;
    return data[1] == 0x03 ? Detected::tls : Detected::other;
  }
  switch (parse_h2c_preface(data).status) {
    case Status::found:
      return Detected::h2c;
    case Status::need_more:
      return Detected::need_more;
    default:
      break;
  }
  switch (check_http1_method(data)) {
    case Status::found:
      return Detected::http1;
    case Status::need_more:
      return Detected::need_more;
    default:
      return Detected::other;
  }
}

}  // namespace egressd::sniff
