#pragma once
// The body of a Kubernetes watch response, decoded: newline-delimited JSON
// events ({"type":"ADDED","object":{...}}), split into lines across any
// chunking, each line decoded into an event or a failure. Pure: no sockets,
// no index; the watcher feeds it what it reads and applies what comes out.
// Hostile bytes give failures, never exceptions.

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

#include <boost/json/value.hpp>

#include "egressd/k8s/pod_index.hpp"

namespace egressd::k8s {

// One decoded event line.
struct WatchEvent {
  enum class Type : std::uint8_t { added, modified, deleted, bookmark };
  Type type = Type::bookmark;
  boost::json::value object;     // the event's "object" (the index checks its shape)
  std::string resource_version;  // object.metadata.resourceVersion, "" when absent

  // added / modified / deleted as the index's event type; bookmark has none.
  [[nodiscard]] EventType index_event() const noexcept;
};

// A line that ends the watch: an ERROR event (410 Gone: the resource
// version expired, list again), or a line that is not a watch event.
struct WatchFailure {
  bool gone = false;
  std::string message;
};

using WatchDecoded = std::variant<WatchEvent, WatchFailure>;

// One line (without its newline) into an event or a failure.
[[nodiscard]] WatchDecoded decode_watch_event(std::string_view line);

// Splits the stream into lines, whatever the read boundaries. Blank lines
// (only spaces, tabs, CRs) are skipped.
class WatchLineSplitter {
 public:
  explicit WatchLineSplitter(std::size_t max_line) noexcept : max_line_(max_line) {}

  enum class Stop : std::uint8_t { more, by_caller, line_too_long };

  // Calls on_line(std::string_view) for each complete line in `data` (with
  // what earlier calls held); on_line returns false to stop. Returns why it
  // stopped: `more` when `data` is used up. After line_too_long the stream
  // is unusable.
  template <class OnLine>
  Stop feed(std::string_view data, OnLine&& on_line) {
    while (!data.empty()) {
      const std::size_t nl = data.find('\n');
      const std::string_view piece = data.substr(0, nl);
      if (pending_.size() + piece.size() > max_line_) return Stop::line_too_long;
      if (nl == std::string_view::npos) {
        pending_.append(piece);
        return Stop::more;
      }
      data.remove_prefix(nl + 1);
      std::string_view line = piece;
      if (!pending_.empty()) {
        pending_.append(piece);
        line = pending_;
      }
      const bool blank = line.find_first_not_of(" \t\r") == std::string_view::npos;
      const bool go_on = blank || on_line(line);
      pending_.clear();
      if (!go_on) return Stop::by_caller;
    }
    return Stop::more;
  }

  // Bytes of an unterminated line are held: a stream that ends now was cut
  // inside an event.
  [[nodiscard]] bool mid_line() const noexcept { return !pending_.empty(); }

 private:
  std::size_t max_line_;
  std::string pending_;
};

}  // namespace egressd::k8s
