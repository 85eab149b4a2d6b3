// Watch events from the API server into the pod index (k8s/pod_index.hpp):
// the input is newline-delimited JSON events as a watch stream carries them
// ({"type":"ADDED","object":{...}}), each applied to pods or namespaces by
// the object's "kind". Whatever the bytes: no crash, no leak, and every
// identity the snapshot hands out is consistent (its namespace labels name
// its namespace; an IP maps to at most one pod).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <boost/json.hpp>

#include "egressd/k8s/pod_index.hpp"

namespace {

using egressd::IpAddress;
using egressd::k8s::EventType;

void check(const egressd::k8s::IdentitySnapshotPtr& snap, const std::uint8_t* data,
           std::size_t size) {
  if (!snap) return;
  // Probe addresses made from the input's bytes, and a few fixed ones.
  for (std::size_t i = 0; i + 4 <= size && i < 64; i += 4) {
    const auto ip = IpAddress::from_v4({data[i], data[i + 1], data[i + 2], data[i + 3]});
    if (auto pod = snap->find(ip)) {
      const std::string* ns =
          egressd::find_label(pod->namespace_labels, egressd::kNamespaceNameLabel);
      if (ns == nullptr || *ns != pod->namespace_name) __builtin_trap();
    }
  }
  if (snap->addresses() > 0 && snap->pods() == 0) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  egressd::k8s::PodIndex index;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (!rest.empty()) {
    const std::size_t nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    boost::system::error_code ec;
    const boost::json::value event = boost::json::parse(line, ec);
    if (ec || !event.is_object()) continue;
    const auto& o = event.get_object();
    const auto* type = o.if_contains("type");
    const auto* object = o.if_contains("object");
    if (type == nullptr || object == nullptr || !type->is_string() || !object->is_object())
      continue;
    const std::string_view t = type->get_string();
    EventType et = EventType::added;
    if (t == "MODIFIED") {
      et = EventType::modified;
    } else if (t == "DELETED") {
      et = EventType::deleted;
    } else if (t != "ADDED") {
      continue;
    }
    const auto* kind = object->get_object().if_contains("kind");
    if (kind != nullptr && kind->is_string() && kind->get_string() == "Namespace") {
      index.apply_namespace(et, *object);
    } else {
      index.apply_pod(et, *object);
    }
    check(index.snapshot(), data, size);
  }
  check(index.snapshot(), data, size);
  return 0;
}
