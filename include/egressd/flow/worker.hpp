#pragma once
// A worker: one thread, one io_context, its own acceptors, pools and
// metrics shard. Flows never leave the worker that accepted them, so
// nothing on the per-flow path is shared but the policy snapshot (an
// immutable object held by shared_ptr) and the DNS cache.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "egressd/config/spec.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/k8s/pod_index.hpp"
#include "egressd/policy/policy.hpp"
#include "egressd/relay/relay.hpp"

namespace egressd::dns {
class Resolver;
class Cache;
}  // namespace egressd::dns
namespace egressd::log {
class AccessLog;
struct FlowRecord;
}  // namespace egressd::log
namespace egressd::metrics {
class Registry;
class WorkerMetrics;
}  // namespace egressd::metrics

namespace egressd::flow {

// What a config reload swaps: everything a new flow reads at its start.
struct Snapshot {
  std::shared_ptr<const policy::CompiledPolicy> policy;
  config::TimeoutsSpec timeouts;
  config::TlsSpec tls;
  std::uint32_t upstream_mark = 0;
  std::uint64_t generation = 0;
};

class ReplicaSet;

struct ListenerInfo {
  std::string name;
  config::ListenerMode mode = config::ListenerMode::redirect;
  Endpoint address;
  std::size_t index = 0;  // position in the config, for metric shards
  // proxy_protocol: source and original destination come from a PROXY
  // header, accepted only from peers in `trusted`.
  bool proxy_protocol = false;
  std::vector<Cidr> trusted;
  // A node agent's listener (`forward`): the central gateway's replicas,
  // shared by every worker serving this listener.
  std::shared_ptr<ReplicaSet> forward;
};

// Per-source connection counts shared by all workers; only used when
// limits.max_connections_per_source is set (a short critical section per
// flow start and end, never per byte).
class SourceLimiter {
 public:
  explicit SourceLimiter(std::uint32_t max_per_source) : max_(max_per_source) {}
  // False when `src` is at its limit (nothing is taken then).
  bool try_acquire(const IpAddress& src);
  void release(const IpAddress& src);
  [[nodiscard]] bool enabled() const noexcept { return max_ != 0; }

 private:
  struct Hash {
    std::size_t operator()(const IpAddress& ip) const noexcept;
  };
  std::uint32_t max_;
  std::mutex mu_;
  std::unordered_map<IpAddress, std::uint32_t, Hash> counts_;
};

// limits.max_connections across all workers: one atomic add per flow start
// and end (never per byte), so the limit means what it says however the
// kernel spreads connections over the workers' SO_REUSEPORT sockets.
class ConnectionLimit {
 public:
  explicit ConnectionLimit(std::uint64_t max) : max_(max) {}
  // False when the limit is reached (nothing is taken then).
  bool try_acquire() noexcept {
    if (active_.fetch_add(1, std::memory_order_relaxed) < max_) return true;
    active_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  void release() noexcept { active_.fetch_sub(1, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }

 private:
  std::uint64_t max_;
  std::atomic<std::uint64_t> active_{0};
};

// Process-wide services the workers use; each is thread-safe.
struct Services {
  log::AccessLog* access_log = nullptr;
  metrics::Registry* metrics = nullptr;
  dns::Resolver* resolver = nullptr;
  dns::Cache* dns_cache = nullptr;
  SourceLimiter* source_limiter = nullptr;
  ConnectionLimit* connection_limit = nullptr;
  std::chrono::milliseconds verify_window{300'000};
  // Set once a drain starts (SIGTERM): kept-alive HTTP/1 connections get
  // `Connection: close` on their next response. nullptr = never.
  const std::atomic<bool>* draining = nullptr;
};

// A flow as seen by whoever must stop it (drain's end, revoke).
struct ActiveFlow {
  boost::asio::ip::tcp::socket* client = nullptr;
  boost::asio::ip::tcp::socket* upstream = nullptr;
  relay::RelayControl* control = nullptr;
  std::size_t listener_index = 0;
  std::chrono::milliseconds idle{0};  // timeouts.idle once relaying; 0 before

  // Bytes already added to egressd_flow_bytes_total, so a week-long tunnel
  // shows its traffic in the metrics while it runs, not only at its end.
  std::uint64_t reported_up = 0;
  std::uint64_t reported_down = 0;
  bool stop_requested = false;
  relay::EndReason stop_reason = relay::EndReason::drained;

  // The flow's record (its facts: listener, source, destination, name,
  // proto, source pod) while the flow lives, and whether the policy let it
  // through on those facts: what policy.revoke_on_reload judges again.
  log::FlowRecord* record = nullptr;
  bool admitted = false;
  bool transparent = true;  // redirect/tproxy (integrity applies) vs explicit
  // Decided at once (rule 11): the record's proto and name were observed
  // after the decision, which did not use them.
  bool decided_at_once = false;
};

class Worker {
 public:
  Worker(std::size_t index, const Services& services, std::size_t max_pipes);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  [[nodiscard]] std::size_t index() const noexcept { return index_; }
  boost::asio::io_context& io() noexcept { return io_; }
  [[nodiscard]] const Services& services() const noexcept { return services_; }
  metrics::WorkerMetrics& metrics();

  // Worker thread only.
  [[nodiscard]] const std::shared_ptr<const Snapshot>& snapshot() const noexcept {
    return snapshot_;
  }
  // Any thread: new flows on this worker see `s` from the next accept on.
  void publish(std::shared_ptr<const Snapshot> s);

  // Worker thread only: the pod index new flows look their source up in
  // (null without a kubernetes section or before the first sync).
  [[nodiscard]] const k8s::IdentitySnapshotPtr& identities() const noexcept { return identities_; }
  // Any thread: the kubernetes watcher's newest snapshot, swapped in on the
  // worker thread (no lock on the flow path).
  void publish_identities(k8s::IdentitySnapshotPtr s);

  // Any thread: starts accepting on `acceptor` (already bound and
  // listening) on this worker's thread, after what was posted before
  // (publish a snapshot first and the listener's first flow sees it).
  void serve(std::shared_ptr<const ListenerInfo> listener, boost::asio::ip::tcp::acceptor acceptor);
  // Any thread (a reload removed or changed `listener`): closes this
  // worker's acceptors of exactly that ListenerInfo (compared by address,
  // so a changed listener's new acceptors, served before, stay open). The
  // flows it accepted go on and end by the usual rules: they hold their
  // ListenerInfo themselves.
  void stop_listener(std::shared_ptr<const ListenerInfo> listener);
  // Any thread: close this worker's acceptors (drain: stop taking flows).
  void close_listeners();
  // Any thread: stop every open flow with `reason` (drain's end, revoke).
  void stop_flows(relay::EndReason reason);
  // Any thread (policy.revoke_on_reload): on the worker thread, judge every
  // admitted open flow again, on the facts it was let through on, against
  // `s`'s policy; those now denied are closed with `revoked`, their records
  // naming the rule that revoked them. A flow whose judgement would need a
  // DNS answer the shared cache does not hold is kept.
  void revoke(std::shared_ptr<const Snapshot> s);

  [[nodiscard]] std::size_t active_flows() const noexcept { return active_count_.load(); }

  // Worker thread only, every second: adds the bytes open flows moved
  // since the last sweep to the metrics, and ends relays idle for longer
  // than timeouts.idle (one sweep instead of a timer per flow).
  void sweep();

  relay::PipePool& pipes() noexcept { return pipes_; }
  relay::BufferPool& buffers() noexcept { return buffers_; }

  // Worker thread only: flow bookkeeping (flow.cpp).
  std::list<ActiveFlow>::iterator register_flow();
  void unregister_flow(std::list<ActiveFlow>::iterator it);

 private:
  std::size_t index_;
  Services services_;
  boost::asio::io_context io_{1};
  std::shared_ptr<const Snapshot> snapshot_;
  k8s::IdentitySnapshotPtr identities_;
  // Worker thread only. The accept loop owns its acceptor too, so one
  // removed here (stop_listener) lives until its loop has seen the close.
  struct Acceptor {
    std::shared_ptr<const ListenerInfo> listener;
    std::shared_ptr<boost::asio::ip::tcp::acceptor> acceptor;
  };
  std::vector<Acceptor> acceptors_;
  std::list<ActiveFlow> flows_;
  std::size_t peak_flows_ = 0;  // open flows at most, since the last malloc_trim
  std::atomic<std::size_t> active_count_{0};
  relay::PipePool pipes_;
  relay::BufferPool buffers_;
};

// The life of one connection, accept to flow record (see README "Life of
// a flow"). Runs on `worker`'s thread; never throws.
boost::asio::awaitable<void> run_flow(Worker& worker, std::shared_ptr<const ListenerInfo> listener,
                                      boost::asio::ip::tcp::socket client,
                                      boost::asio::ip::tcp::endpoint peer);

// A connection on an explicit listener (HTTP CONNECT and absolute-form
// forward proxying), accept to flow record; every request is judged.
// Runs on `worker`'s thread; never throws.
boost::asio::awaitable<void> run_explicit_flow(Worker& worker,
                                               std::shared_ptr<const ListenerInfo> listener,
                                               boost::asio::ip::tcp::socket client,
                                               boost::asio::ip::tcp::endpoint peer);

// A node agent's connection (a listener with `forward`): the pod's bytes,
// untouched, to a central replica behind a PROXY v2 header; no sniffing,
// no policy; one `flow` record with decision `forward`. Never throws.
boost::asio::awaitable<void> run_forward_flow(Worker& worker,
                                              std::shared_ptr<const ListenerInfo> listener,
                                              boost::asio::ip::tcp::socket client,
                                              boost::asio::ip::tcp::endpoint peer);

}  // namespace egressd::flow
