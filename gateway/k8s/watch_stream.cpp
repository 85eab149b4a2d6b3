#include "egressd/k8s/watch_stream.hpp"

#include <initializer_list>

#include <boost/json/parse.hpp>

namespace egressd::k8s {
namespace json = boost::json;

namespace {

const json::value* at(const json::value* v, std::initializer_list<std::string_view> path) {
  for (const std::string_view key : path) {
    const auto* o = v != nullptr ? v->if_object() : nullptr;
    v = o != nullptr ? o->if_contains(key) : nullptr;
  }
  return v;
}

std::string string_at(const json::value* v, std::initializer_list<std::string_view> path) {
  const json::value* found = at(v, path);
  const auto* s = found != nullptr ? found->if_string() : nullptr;
  return s != nullptr ? std::string(s->data(), s->size()) : std::string();
}

}  // namespace

EventType WatchEvent::index_event() const noexcept {
  switch (type) {
    case Type::added:
      return EventType::added;
    case Type::modified:
      return EventType::modified;
    case Type::deleted:
    case Type::bookmark:
      break;
  }
  return EventType::deleted;
}

WatchDecoded decode_watch_event(std::string_view line) {
  json::error_code ec;
  json::value v = json::parse(line, ec);
  if (ec) return WatchFailure{false, "watch event: " + ec.message()};
  auto* event = v.if_object();
  json::value* object = event != nullptr ? event->if_contains("object") : nullptr;
  const std::string type = string_at(&v, {"type"});
  // A non-object "object" is still an event: the index skips it.
  if (object == nullptr || type.empty()) {
    return WatchFailure{false, "watch event without type or object"};
  }
  if (type == "ERROR") {
    const json::value* code = at(object, {"code"});
    const std::string message = string_at(object, {"message"});
    if (code != nullptr && code->is_number() && code->to_number<double>() == 410) {
      return WatchFailure{true, "watch: " + message};
    }
    return WatchFailure{false, "watch ERROR event: " + message};
  }
  WatchEvent out;
  if (type == "ADDED") {
    out.type = WatchEvent::Type::added;
  } else if (type == "MODIFIED") {
    out.type = WatchEvent::Type::modified;
  } else if (type == "DELETED") {
    out.type = WatchEvent::Type::deleted;
  } else if (type == "BOOKMARK") {
    out.type = WatchEvent::Type::bookmark;
  } else {
    return WatchFailure{false, "watch event of unknown type " + type};
  }
  out.resource_version = string_at(object, {"metadata", "resourceVersion"});
  out.object = std::move(*object);
  return out;
}

}  // namespace egressd::k8s
