#include "egressd/core/protocol.hpp"

namespace egressd {

std::string_view to_string(Proto p) noexcept {
  switch (p) {
    case Proto::tls:
      return "tls";
    case Proto::http:
      return "http";
    case Proto::h2c:
      return "h2c";
    case Proto::tcp:
      return "tcp";
    case Proto::connect:
      return "connect";
  }
  return "tcp";
}

std::optional<Proto> parse_proto(std::string_view text) noexcept {
  if (text == "tls") return Proto::tls;
  if (text == "http") return Proto::http;
  if (text == "h2c") return Proto::h2c;
  if (text == "tcp") return Proto::tcp;
  if (text == "connect") return Proto::connect;
  return std::nullopt;
}

}  // namespace egressd
