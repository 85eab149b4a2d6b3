#include "egressd/sniff/status.hpp"

namespace egressd::sniff {

std::string_view to_string(Status status) noexcept {
  switch (status) {
    case Status::found:
      return "found";
    case Status::need_more:
      return "need_more";
    case Status::not_this_protocol:
      return "not_this_protocol";
    case Status::malformed:
      return "malformed";
    case Status::too_large:
      return "too_large";
  }
  return "malformed";
}

}  // namespace egressd::sniff
