#pragma once
// Prometheus metrics (contract "Metrics"), text exposition format 0.0.4.
//
// Cost model: each worker thread owns one WorkerMetrics shard and is its only
// writer. Per-byte and per-request counters are single-writer relaxed
// atomics (a load and a store, no read-modify-write, no lock); per-flow
// results (flows_total, the duration histogram) go under the shard's own
// mutex, taken once at flow end and contended only by a scrape. render()
// sums the shards. Registry-wide counters (DNS, reloads) are updated rarely
// and use ordinary atomics.
//
// Labels are bounded: listener names and rule names (both from the config;
// a reload adds names, old series are kept, so a series never goes
// backwards), and fixed enums. A host name or an IP is never a label.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/core/protocol.hpp"
#include "egressd/log/record.hpp"

namespace egressd::metrics {

// egressd_upstream_connect_failures_total{reason}
enum class ConnectFailure : std::uint8_t { timeout, refused, unreachable, reset, resolve, other };
inline constexpr std::size_t kConnectFailures = 6;
std::string_view to_string(ConnectFailure f) noexcept;

// egressd_dns_queries_total{result}
enum class DnsResult : std::uint8_t { success, nxdomain, nodata, servfail, timeout, error };
inline constexpr std::size_t kDnsResults = 6;
std::string_view to_string(DnsResult r) noexcept;

// egressd_guard_denials_total{class}: which address class the built-in
// guard refused (contract decision rule 7).
enum class GuardClass : std::uint8_t {
  own_host,
  unspecified,
  loopback,
  multicast,
  broadcast,
  link_local,
  cloud_metadata,
  private_use,
  ipv4_embedded,
};
inline constexpr std::size_t kGuardClasses = 9;
// "own_host", ..., "private", "ipv4_embedded": the policy's guard_class text.
std::string_view to_string(GuardClass c) noexcept;
// The class named by the policy's guard_class text; nullopt for any other.
std::optional<GuardClass> guard_class_from(std::string_view label) noexcept;

inline constexpr std::size_t kProtos = 5;     // egressd::Proto
inline constexpr std::size_t kDecisions = 4;  // log::Decision

// Upper bounds of egressd_flow_duration_seconds (+Inf is implicit): from a
// denied TLS hello (ms) to a week-long tunnel (the last finite bucket).
inline constexpr std::array<double, 10> kDurationBuckets = {0.005, 0.025, 0.1, 0.5, 1,
                                                            5,     30,    120, 600, 3600};

// A counter with exactly one writing thread: readers on other threads see a
// value at most one update old, never a torn one.
class LocalCounter {
 public:
  void add(std::uint64_t n) noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t get() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

// One worker's shard. Every method is for that worker's thread only; a
// listener index outside the registry's listeners is ignored.
class alignas(64) WorkerMetrics {
 public:
  // Listener names a process can have over its life (Registry::add_listener
  // refuses more): per-listener counters live in fixed chunks that are
  // never moved, so a reload can add listeners while workers count.
  static constexpr std::size_t kListenerChunk = 16;
  static constexpr std::size_t kMaxListenerChunks = 256;
  static constexpr std::size_t kMaxListeners = kListenerChunk * kMaxListenerChunks;

  explicit WorkerMetrics(std::size_t listeners);
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  // A connection was accepted on `listener`; pair with exactly one
  // flow_closed() on this same shard.
  void flow_opened(std::size_t listener) noexcept;

  // The connection ended with its final decision and rule (the same as its
  // `flow` record). `rule` must be bounded: a rule name from the config,
  // "default" or "builtin:...". Bytes are not passed here: add_bytes()
  // counts them as they move, so long tunnels show up before they end.
  void flow_closed(std::size_t listener, Proto proto, log::Decision decision, std::string_view rule,
                   std::chrono::nanoseconds duration);

  // Per-byte path: a load and a store per direction, nothing shared.
  void add_bytes(std::size_t listener, std::uint64_t up, std::uint64_t down) noexcept;

  // One HTTP/1 or h2c request judged by the policy.
  void http_request(Proto proto, log::Decision decision) noexcept;

  void upstream_connect_failed(ConnectFailure reason) noexcept;

  // A flow or request refused by the built-in guard.
  void guard_denied(GuardClass cls) noexcept;

 private:
  friend class Registry;

  struct PerListener {
    std::atomic<std::int64_t> active{0};  // single writer: load + store
    LocalCounter bytes_up;
    LocalCounter bytes_down;
  };
  struct Histogram {
    std::array<std::uint64_t, kDurationBuckets.size() + 1>
        buckets{};             // non-cumulative; last = +Inf
    std::uint64_t sum_us = 0;  // exact integer sum; rendered in seconds
    std::uint64_t count = 0;
  };
  struct FlowKey {
    std::size_t listener;
    Proto proto;
    log::Decision decision;
    std::string rule;
  };
  struct FlowKeyLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const noexcept {
      if (a.listener != b.listener) return a.listener < b.listener;
      if (a.proto != b.proto) return a.proto < b.proto;
      if (a.decision != b.decision) return a.decision < b.decision;
      return std::string_view(a.rule) < std::string_view(b.rule);
    }
  };

  // The counters of listener `i`, or nullptr when `i` is not (yet) one of
  // this shard's listeners. Any thread.
  [[nodiscard]] PerListener* per_listener(std::size_t i) const noexcept;
  // Registry::add_listener only (serialised by the registry): makes room for
  // `n` listeners; false past kMaxListeners.
  bool grow(std::size_t n);

  // Chunks are published with release before listener_count_ grows past
  // them; a reader that saw the count sees the chunk. Never shrinks.
  std::array<std::atomic<PerListener*>, kMaxListenerChunks> chunks_{};
  std::vector<std::unique_ptr<PerListener[]>> chunk_storage_;  // grow() only
  std::atomic<std::size_t> listener_count_{0};
  std::array<std::array<LocalCounter, kDecisions>, kProtos> http_requests_{};
  std::array<LocalCounter, kConnectFailures> connect_failures_{};
  std::array<LocalCounter, kGuardClasses> guard_denials_{};

  mutable std::mutex mu_;                                // flow ends and scrapes only
  std::map<FlowKey, std::uint64_t, FlowKeyLess> flows_;  // guarded by mu_
  std::vector<Histogram> durations_;                     // guarded by mu_, per listener
};

class Registry {
 public:
  // `workers` shards (at least one), `listeners` the config's listener
  // names in order (their index is the listener argument of WorkerMetrics),
  // `version` for egressd_build_info. Duplicate names share one index.
  Registry(unsigned workers, std::vector<std::string> listeners, std::string version);
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // i < workers(); the reference is valid for the registry's life.
  [[nodiscard]] WorkerMetrics& worker(unsigned i) noexcept { return *workers_[i]; }
  [[nodiscard]] unsigned workers() const noexcept { return static_cast<unsigned>(workers_.size()); }
  // The listener names so far, in index order. Any thread.
  [[nodiscard]] std::vector<std::string> listeners() const;
  // A reload's listener: the index of `name` (the same as before when the
  // name was seen already, so a changed listener keeps its series), its
  // counters ready on every shard before this returns. nullopt once
  // WorkerMetrics::kMaxListeners names exist. Any thread.
  std::optional<std::size_t> add_listener(const std::string& name);

  // Any thread.
  void dns_query(DnsResult result) noexcept;
  // The first config at start-up: sets generation and the success
  // timestamp without counting a reload.
  void config_loaded(std::uint64_t generation, std::chrono::system_clock::time_point when) noexcept;
  void reload_succeeded(std::uint64_t generation,
                        std::chrono::system_clock::time_point when) noexcept;
  void reload_failed() noexcept;

  // The kubernetes watcher's state, read at each scrape (any thread).
  struct KubernetesStatus {
    std::uint64_t pods = 0;  // egressd_kubernetes_pods
    bool synced = false;     // egressd_kubernetes_synced
    // egressd_kubernetes_data_age_seconds: how old the pod index may be
    // (0 while the watches are open); nullopt before the first sync.
    std::optional<double> data_age_seconds;
    // egressd_kubernetes_watch_restarts_total{resource, reason}:
    // [pods, namespaces] x [gone, closed, error, timeout].
    std::array<std::array<std::uint64_t, 4>, 2> restarts{};
  };
  // Set when the config has a kubernetes section; the egressd_kubernetes_*
  // families are written only then.
  void set_kubernetes_source(std::function<KubernetesStatus()> source);

  // egressd_flows_limit: the concurrent-flow limit in force
  // (limits.max_connections, or what the descriptor limit allows).
  void set_flows_limit(std::uint64_t limit) noexcept;

  // Where egressd_access_log_dropped_total comes from (AccessLog::dropped_total).
  // Called at each scrape; set it before serving scrapes or from any thread.
  void set_access_log_dropped_source(std::function<std::uint64_t()> source);

  // The whole exposition: egressd_* families then process_*. Families in
  // name order, series sorted by label values: the same state always
  // renders the same text.
  [[nodiscard]] std::string render() const;
  // Only the egressd_* families (deterministic, for tests and tools).
  void render_egressd(std::string& out) const;

 private:
  mutable std::mutex listeners_mu_;
  std::vector<std::string> listeners_;  // guarded by listeners_mu_; only grows
  std::string version_;
  std::vector<std::unique_ptr<WorkerMetrics>> workers_;

  std::array<std::atomic<std::uint64_t>, kDnsResults> dns_{};
  std::atomic<std::uint64_t> reloads_ok_{0};
  std::atomic<std::uint64_t> reloads_failed_{0};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::int64_t> last_success_ms_{0};  // since the epoch; 0 = never
  std::atomic<std::uint64_t> flows_limit_{0};

  mutable std::mutex source_mu_;
  std::function<std::uint64_t()> access_log_dropped_;  // guarded by source_mu_
  std::function<KubernetesStatus()> kubernetes_;       // guarded by source_mu_
};

// Text format helpers, exposed for tests: label value escaping (\\ \" \n)
// and sample value formatting (shortest round-trip, +Inf/-Inf/NaN).
void append_label_value(std::string& out, std::string_view value);
void append_value(std::string& out, double v);
void append_value(std::string& out, std::uint64_t v);

}  // namespace egressd::metrics
