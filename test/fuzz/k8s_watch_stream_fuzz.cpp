// The watch stream decoder (k8s/watch_stream.hpp) as the watcher drives it:
// the response body arrives in reads of any size; lines are split out,
// decoded into events or failures, and events applied to the pod index.
// The first input byte picks the read sizes. Whatever the bytes: no crash,
// no leak, and the same lines come out however the body is chunked (the
// body fed whole is the reference).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "egressd/k8s/pod_index.hpp"
#include "egressd/k8s/watch_stream.hpp"

namespace {

using egressd::k8s::WatchLineSplitter;

constexpr std::size_t kMaxLine = 4096;  // small, so the limit is reached

struct Split {
  std::vector<std::string> lines;
  WatchLineSplitter::Stop stop = WatchLineSplitter::Stop::more;
  bool mid_line = false;
};

Split split(std::string_view body, std::size_t step) {
  Split out;
  WatchLineSplitter s(kMaxLine);
  while (!body.empty() && out.stop == WatchLineSplitter::Stop::more) {
    const std::string_view chunk = body.substr(0, step);
    body.remove_prefix(chunk.size());
    out.stop = s.feed(chunk, [&](std::string_view line) {
      out.lines.emplace_back(line);
      return true;
    });
  }
  out.mid_line = s.mid_line();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t step = 1 + data[0] % 64;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  const Split whole = split(body, body.size() + 1);
  const Split chunked = split(body, step);
  // Chunking changes nothing: the same lines, and the same reason to stop
  // (an over-long line is caught at the same line, whole or in pieces).
  if (chunked.lines != whole.lines || chunked.stop != whole.stop) __builtin_trap();
  if (whole.stop == WatchLineSplitter::Stop::more && chunked.mid_line != whole.mid_line) {
    __builtin_trap();
  }

  egressd::k8s::PodIndex index;
  for (const std::string& line : chunked.lines) {
    auto decoded = egressd::k8s::decode_watch_event(line);
    auto* event = std::get_if<egressd::k8s::WatchEvent>(&decoded);
    if (event == nullptr) continue;
    if (event->type == egressd::k8s::WatchEvent::Type::bookmark) continue;
    const auto* o = event->object.if_object();
    const auto* kind = o != nullptr ? o->if_contains("kind") : nullptr;
    if (kind != nullptr && kind->is_string() && kind->get_string() == "Namespace") {
      index.apply_namespace(event->index_event(), event->object);
    } else {
      index.apply_pod(event->index_event(), event->object);
    }
  }
  const auto snap = index.snapshot();
  if (snap && snap->addresses() > 0 && snap->pods() == 0) __builtin_trap();
  return 0;
}
