#pragma once
// The one Kubernetes watcher of a process: lists, then watches, pods and
// namespaces from the API server on its own thread (its own io_context) and
// publishes IdentitySnapshots. Nothing on a flow's path ever waits for it.
//
// Protocol (per resource, pods and namespaces independently):
// - LIST /api/v1/<resource>?limit=<page_size>, following `continue` until
//   the last page; the whole list replaces the resource's state at once
//   (a failed page keeps the old state and retries the list).
// - WATCH ?watch=true&resourceVersion=<list's or last event's>
//   &allowWatchBookmarks=true&timeoutSeconds=<watch_timeout>, reading the
//   chunked stream of newline-delimited JSON events incrementally (never the
//   whole stream; one event above max_event_bytes is an error).
//   ADDED/MODIFIED/DELETED update the index and the resourceVersion;
//   BOOKMARK only the resourceVersion; ERROR with code 410 (or an HTTP 410)
//   means the version is too old: relist at once. A watch that the server
//   ends cleanly is re-opened from the last resourceVersion (not counted).
// - Failures (connect, TLS, HTTP status other than 200/410, a cut stream,
//   malformed JSON, ERROR events) re-watch from the last resourceVersion —
//   or relist when the list itself failed — after a capped exponential
//   backoff with jitter (backoff_initial doubling to backoff_max, each
//   delay drawn in [d/2, d]); the backoff resets once a watch is open.
// - Deadlines: connect + TLS + each list page under request_timeout; a
//   watch that delivers no byte for stall_timeout (default twice
//   watch_timeout) is closed and counted as `timeout`.
// - TLS: the server certificate is verified against the CA of the
//   ClientConfig (or the system store when it has none) and must name the
//   server (ClientConfig::verify_name(): host name or IP address); SNI is
//   sent for names. Credentials: the bearer token is read again
//   (ClientConfig::read_token) for every request, so a rotated
//   service-account token is used as soon as it is written — a 401 is
//   retried with backoff and the fresh token. Client certificates are
//   presented when configured.
//
// Publication: on_snapshot is called on the watcher thread after the first
// complete list of BOTH resources (synced() becomes true just before) and
// after every batch of events that changed something (the events decoded
// from one read of the socket). It must not block for long. After the first
// sync the last snapshot stays valid while the API server is unreachable:
// the caller keeps serving it and can expose data_age().
//
// Status (any thread, lock-free): synced(), data_age(), restarts().
//
// Errors never escape: everything is caught on the watcher thread, logged
// with spdlog (warn for failures, info for (re)syncs), counted, and retried.
// stop() (or the destructor) ends it promptly: the sockets are closed and
// the thread joined; on_snapshot is not called after stop() returns.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "egressd/k8s/client_config.hpp"
#include "egressd/k8s/pod_index.hpp"

namespace egressd::k8s {

enum class Resource : std::uint8_t { pods, namespaces };
inline constexpr std::size_t kResourceCount = 2;

// egressd_kubernetes_watch_restarts_total{reason}: a list or watch that
// ended other than by the server's clean end of a watch.
enum class RestartReason : std::uint8_t {
  gone,     // 410: the resourceVersion is too old; relisted
  closed,   // the connection was cut (EOF or reset mid-response)
  error,    // connect/TLS/HTTP status/malformed data/ERROR event
  timeout,  // request_timeout or stall_timeout passed
};
inline constexpr std::size_t kRestartReasonCount = 4;

std::string_view to_string(Resource r) noexcept;       // "pods", "namespaces"
std::string_view to_string(RestartReason r) noexcept;  // "gone", "closed", ...

struct WatcherOptions {
  ClientConfig client;
  // Called on the watcher thread with each new snapshot (see above).
  std::function<void(IdentitySnapshotPtr)> on_snapshot;
  std::chrono::seconds watch_timeout{300};  // timeoutSeconds of each watch
  std::chrono::milliseconds request_timeout{30'000};
  std::chrono::milliseconds stall_timeout{0};  // 0 = 2 x watch_timeout
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{30'000};
  std::size_t page_size = 500;
  std::size_t max_event_bytes = std::size_t{4} << 20;
  // One list page's body; above it the list fails (error).
  std::size_t max_page_bytes = std::size_t{256} << 20;
};

class Watcher {
 public:
  // Starts the thread at once. Never throws for API server reasons (they
  // are retried on the thread); a TLS context that cannot be built from the
  // ClientConfig's PEM throws std::runtime_error here (start-up only).
  explicit Watcher(WatcherOptions options);
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;
  ~Watcher();

  // Ends the thread: closes the connections, joins. Idempotent.
  void stop() noexcept;

  // True once both first lists completed (stays true afterwards, also
  // while the API server is unreachable).
  [[nodiscard]] bool synced() const noexcept;
  // How old the published data may be: zero while both watches are open,
  // else the time since the last moment one of them was known current
  // (last byte received or watch open). nullopt before the first sync.
  [[nodiscard]] std::optional<std::chrono::milliseconds> data_age() const noexcept;
  // egressd_kubernetes_watch_restarts_total{resource, reason}.
  [[nodiscard]] std::uint64_t restarts(Resource resource, RestartReason reason) const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace egressd::k8s
