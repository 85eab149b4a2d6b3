#include "egressd/metrics/registry.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <tuple>
#include <utility>

#include "egressd/metrics/process.hpp"

namespace egressd::metrics {
namespace {

constexpr std::array<Proto, kProtos> kAllProtos = {Proto::tls, Proto::http, Proto::h2c, Proto::tcp,
                                                   Proto::connect};
constexpr std::array<log::Decision, kDecisions> kAllDecisions = {
    log::Decision::allow, log::Decision::deny, log::Decision::audit_deny, log::Decision::forward};

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;  // our own constant text: nothing to escape
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// name{k1="v1",k2="v2"} — `labels` are (key, unescaped value) pairs.
void series(std::string& out, std::string_view name,
            std::initializer_list<std::pair<std::string_view, std::string_view>> labels) {
  out += name;
  if (labels.size() > 0) {
    out += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) out += ',';
      first = false;
      out += k;
      out += "=\"";
      append_label_value(out, v);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
}

template <class V>
void sample(std::string& out, std::string_view name,
            std::initializer_list<std::pair<std::string_view, std::string_view>> labels, V value) {
  series(out, name, labels);
  append_value(out, value);
  out += '\n';
}

std::string format_bound(double b) {
  std::string s;
  append_value(s, b);
  return s;
}

}  // namespace

std::string_view to_string(ConnectFailure f) noexcept {
  switch (f) {
    case ConnectFailure::timeout:
      return "timeout";
    case ConnectFailure::refused:
      return "refused";
    case ConnectFailure::unreachable:
      return "unreachable";
    case ConnectFailure::reset:
      return "reset";
    case ConnectFailure::resolve:
      return "resolve";
    case ConnectFailure::other:
      return "other";
  }
  return "other";
}

std::string_view to_string(GuardClass c) noexcept {
  switch (c) {
    case GuardClass::own_host:
      return "own_host";
    case GuardClass::unspecified:
      return "unspecified";
    case GuardClass::loopback:
      return "loopback";
    case GuardClass::multicast:
      return "multicast";
    case GuardClass::broadcast:
      return "broadcast";
    case GuardClass::link_local:
      return "link_local";
    case GuardClass::cloud_metadata:
      return "cloud_metadata";
    case GuardClass::private_use:
      return "private";
    case GuardClass::ipv4_embedded:
      return "ipv4_embedded";
  }
  return "own_host";
}

std::optional<GuardClass> guard_class_from(std::string_view label) noexcept {
  for (std::size_t i = 0; i < kGuardClasses; ++i) {
    const auto c = static_cast<GuardClass>(i);
    if (to_string(c) == label) return c;
  }
  return std::nullopt;
}

std::string_view to_string(DnsResult r) noexcept {
  switch (r) {
    case DnsResult::success:
      return "success";
    case DnsResult::nxdomain:
      return "nxdomain";
    case DnsResult::nodata:
      return "nodata";
    case DnsResult::servfail:
      return "servfail";
    case DnsResult::timeout:
      return "timeout";
    case DnsResult::error:
      return "error";
  }
  return "error";
}

void append_label_value(std::string& out, std::string_view value) {
  for (const char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

void append_value(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

// ---- WorkerMetrics --------------------------------------------------------

WorkerMetrics::WorkerMetrics(std::size_t listeners) {
  grow(std::min(listeners, kMaxListeners));
}

WorkerMetrics::PerListener* WorkerMetrics::per_listener(std::size_t i) const noexcept {
  if (i >= listener_count_.load(std::memory_order_acquire)) return nullptr;
  return chunks_[i / kListenerChunk].load(std::memory_order_acquire) + i % kListenerChunk;
}

bool WorkerMetrics::grow(std::size_t n) {
  if (n > kMaxListeners) return false;
  const std::size_t have = listener_count_.load(std::memory_order_relaxed);
  if (n <= have) return true;
  for (std::size_t c = chunk_storage_.size(); c * kListenerChunk < n; ++c) {
    chunk_storage_.push_back(std::make_unique<PerListener[]>(kListenerChunk));
    chunks_[c].store(chunk_storage_.back().get(), std::memory_order_release);
  }
  {
    std::lock_guard lock(mu_);
    durations_.resize(n);
  }
  listener_count_.store(n, std::memory_order_release);
  return true;
}

void WorkerMetrics::flow_opened(std::size_t listener) noexcept {
  PerListener* l = per_listener(listener);
  if (l == nullptr) return;
  l->active.store(l->active.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void WorkerMetrics::flow_closed(std::size_t listener, Proto proto, log::Decision decision,
                                std::string_view rule, std::chrono::nanoseconds duration) {
  PerListener* l = per_listener(listener);
  if (l == nullptr) return;
  l->active.store(l->active.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);

  const auto us = static_cast<std::uint64_t>(std::max<std::int64_t>(
      0, std::chrono::duration_cast<std::chrono::microseconds>(duration).count()));
  const double seconds = static_cast<double>(us) / 1e6;
  std::size_t bucket = 0;
  while (bucket < kDurationBuckets.size() && seconds > kDurationBuckets[bucket]) ++bucket;

  struct KeyView {
    std::size_t listener;
    Proto proto;
    log::Decision decision;
    std::string_view rule;
  };
  const KeyView key{listener, proto, decision, rule};
  std::lock_guard lock(mu_);
  // Heterogeneous lookup: no allocation once a series exists.
  if (auto it = flows_.find(key); it != flows_.end()) {
    ++it->second;
  } else {
    flows_.emplace(FlowKey{listener, proto, decision, std::string(rule)}, 1);
  }
  auto& h = durations_[listener];
  ++h.buckets[bucket];
  h.sum_us += us;
  ++h.count;
}

void WorkerMetrics::add_bytes(std::size_t listener, std::uint64_t up, std::uint64_t down) noexcept {
  PerListener* l = per_listener(listener);
  if (l == nullptr) return;
  if (up != 0) l->bytes_up.add(up);
  if (down != 0) l->bytes_down.add(down);
}

void WorkerMetrics::http_request(Proto proto, log::Decision decision) noexcept {
  const auto p = static_cast<std::size_t>(proto);
  const auto d = static_cast<std::size_t>(decision);
  if (p < kProtos && d < kDecisions) http_requests_[p][d].add(1);
}

void WorkerMetrics::guard_denied(GuardClass cls) noexcept {
  const auto c = static_cast<std::size_t>(cls);
  if (c < kGuardClasses) guard_denials_[c].add(1);
}

void WorkerMetrics::upstream_connect_failed(ConnectFailure reason) noexcept {
  const auto r = static_cast<std::size_t>(reason);
  if (r < kConnectFailures) connect_failures_[r].add(1);
}

// ---- Registry -------------------------------------------------------------

Registry::Registry(unsigned workers, std::vector<std::string> listeners, std::string version)
    : version_(std::move(version)) {
  if (workers == 0) workers = 1;
  workers_.reserve(workers);
  for (unsigned i = 0; i < workers; ++i) workers_.push_back(std::make_unique<WorkerMetrics>(0));
  for (const std::string& name : listeners) add_listener(name);
}

std::vector<std::string> Registry::listeners() const {
  std::lock_guard lock(listeners_mu_);
  return listeners_;
}

std::optional<std::size_t> Registry::add_listener(const std::string& name) {
  std::lock_guard lock(listeners_mu_);
  const auto it = std::find(listeners_.begin(), listeners_.end(), name);
  if (it != listeners_.end()) return static_cast<std::size_t>(it - listeners_.begin());
  const std::size_t n = listeners_.size() + 1;
  if (n > WorkerMetrics::kMaxListeners) return std::nullopt;
  // Every shard has the counters before the name is visible: a scrape that
  // sees the name finds them on every shard.
  for (auto& w : workers_) w->grow(n);
  listeners_.push_back(name);
  return n - 1;
}

void Registry::dns_query(DnsResult result) noexcept {
  const auto r = static_cast<std::size_t>(result);
  if (r < kDnsResults) dns_[r].fetch_add(1, std::memory_order_relaxed);
}

void Registry::config_loaded(std::uint64_t generation,
                             std::chrono::system_clock::time_point when) noexcept {
  generation_.store(generation, std::memory_order_relaxed);
  last_success_ms_.store(
      std::chrono::duration_cast<std::chrono::milliseconds>(when.time_since_epoch()).count(),
      std::memory_order_relaxed);
}

void Registry::reload_succeeded(std::uint64_t generation,
                                std::chrono::system_clock::time_point when) noexcept {
  config_loaded(generation, when);
  reloads_ok_.fetch_add(1, std::memory_order_relaxed);
}

void Registry::reload_failed() noexcept {
  reloads_failed_.fetch_add(1, std::memory_order_relaxed);
}

void Registry::set_flows_limit(std::uint64_t limit) noexcept {
  flows_limit_.store(limit, std::memory_order_relaxed);
}

void Registry::set_kubernetes_source(std::function<KubernetesStatus()> source) {
  std::lock_guard lock(source_mu_);
  kubernetes_ = std::move(source);
}

void Registry::set_access_log_dropped_source(std::function<std::uint64_t()> source) {
  std::lock_guard lock(source_mu_);
  access_log_dropped_ = std::move(source);
}

std::string Registry::render() const {
  std::string out;
  out.reserve(8192);
  render_egressd(out);
  if (const auto stats = read_process_stats()) render_process(out, *stats);
  return out;
}

void Registry::render_egressd(std::string& out) const {
  // Snapshot the shards first: each shard's mutex is held only for a copy.
  struct FlowSeries {
    std::string_view listener;
    std::string_view proto;
    std::string_view decision;
    std::string rule;
    auto operator<=>(const FlowSeries&) const = default;
  };
  // The names so far; a listener a reload adds while this runs shows up at
  // the next scrape.
  const std::vector<std::string> listeners = this->listeners();
  const std::size_t n_listeners = listeners.size();
  std::map<FlowSeries, std::uint64_t> flows;
  std::vector<WorkerMetrics::Histogram> durations(n_listeners);
  std::vector<std::int64_t> active(n_listeners, 0);
  std::vector<std::uint64_t> up(n_listeners, 0);
  std::vector<std::uint64_t> down(n_listeners, 0);
  std::array<std::array<std::uint64_t, kDecisions>, kProtos> http{};
  std::array<std::uint64_t, kConnectFailures> connect{};
  std::array<std::uint64_t, kGuardClasses> guard{};

  for (const auto& w : workers_) {
    for (std::size_t l = 0; l < n_listeners; ++l) {
      const WorkerMetrics::PerListener* pl = w->per_listener(l);
      if (pl == nullptr) continue;  // not possible: names appear after every shard grew
      active[l] += pl->active.load(std::memory_order_relaxed);
      up[l] += pl->bytes_up.get();
      down[l] += pl->bytes_down.get();
    }
    for (std::size_t p = 0; p < kProtos; ++p) {
      for (std::size_t d = 0; d < kDecisions; ++d) http[p][d] += w->http_requests_[p][d].get();
    }
    for (std::size_t r = 0; r < kConnectFailures; ++r) connect[r] += w->connect_failures_[r].get();
    for (std::size_t c = 0; c < kGuardClasses; ++c) guard[c] += w->guard_denials_[c].get();

    std::lock_guard lock(w->mu_);
    for (const auto& [k, n] : w->flows_) {
      if (k.listener >= n_listeners) continue;  // added after `listeners` was read
      flows[FlowSeries{listeners[k.listener], to_string(k.proto), log::to_string(k.decision),
                       k.rule}] += n;
    }
    for (std::size_t l = 0; l < n_listeners && l < w->durations_.size(); ++l) {
      const auto& h = w->durations_[l];
      for (std::size_t b = 0; b < h.buckets.size(); ++b) durations[l].buckets[b] += h.buckets[b];
      durations[l].sum_us += h.sum_us;
      durations[l].count += h.count;
    }
  }

  // Listener names sorted, for stable output whatever the config order.
  std::vector<std::size_t> by_name(n_listeners);
  for (std::size_t i = 0; i < by_name.size(); ++i) by_name[i] = i;
  std::sort(by_name.begin(), by_name.end(),
            [&](std::size_t a, std::size_t b) { return listeners[a] < listeners[b]; });

  std::uint64_t dropped = 0;
  {
    std::lock_guard lock(source_mu_);
    if (access_log_dropped_) dropped = access_log_dropped_();
  }

  header(out, "egressd_access_log_dropped_total", "counter",
         "Access log records not written (queue full in drop mode, or a failed write).");
  sample(out, "egressd_access_log_dropped_total", {}, dropped);

  header(out, "egressd_build_info", "gauge", "Always 1; the version label says which build runs.");
  sample(out, "egressd_build_info", {{"version", version_}}, std::uint64_t{1});

  header(out, "egressd_config_generation", "gauge",
         "Generation of the configuration in force (1 at start, +1 per accepted reload).");
  sample(out, "egressd_config_generation", {}, generation_.load(std::memory_order_relaxed));

  header(out, "egressd_config_last_reload_success_timestamp_seconds", "gauge",
         "Unix time the configuration in force was loaded.");
  sample(out, "egressd_config_last_reload_success_timestamp_seconds", {},
         static_cast<double>(last_success_ms_.load(std::memory_order_relaxed)) / 1e3);

  header(out, "egressd_config_reloads_total", "counter", "Configuration reloads, by result.");
  sample(out, "egressd_config_reloads_total", {{"result", "failure"}},
         reloads_failed_.load(std::memory_order_relaxed));
  sample(out, "egressd_config_reloads_total", {{"result", "success"}},
         reloads_ok_.load(std::memory_order_relaxed));

  {
    header(out, "egressd_dns_queries_total", "counter", "DNS queries sent, by result.");
    std::array<std::pair<std::string_view, std::uint64_t>, kDnsResults> rows{};
    for (std::size_t r = 0; r < kDnsResults; ++r) {
      rows[r] = {to_string(static_cast<DnsResult>(r)), dns_[r].load(std::memory_order_relaxed)};
    }
    std::sort(rows.begin(), rows.end());
    for (const auto& [name, n] : rows)
      sample(out, "egressd_dns_queries_total", {{"result", name}}, n);
  }

  header(out, "egressd_flow_bytes_total", "counter",
         "Bytes relayed, up (client to upstream) and down.");
  for (const std::size_t l : by_name) {
    sample(out, "egressd_flow_bytes_total", {{"listener", listeners[l]}, {"direction", "down"}},
           down[l]);
    sample(out, "egressd_flow_bytes_total", {{"listener", listeners[l]}, {"direction", "up"}},
           up[l]);
  }

  header(out, "egressd_flow_duration_seconds", "histogram",
         "Connection durations, from accept to close.");
  static const std::array<std::string, kDurationBuckets.size()> kBounds = [] {
    std::array<std::string, kDurationBuckets.size()> b;
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = format_bound(kDurationBuckets[i]);
    return b;
  }();
  for (const std::size_t l : by_name) {
    const auto& h = durations[l];
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < kBounds.size(); ++b) {
      cumulative += h.buckets[b];
      sample(out, "egressd_flow_duration_seconds_bucket",
             {{"listener", listeners[l]}, {"le", kBounds[b]}}, cumulative);
    }
    cumulative += h.buckets.back();
    sample(out, "egressd_flow_duration_seconds_bucket",
           {{"listener", listeners[l]}, {"le", "+Inf"}}, cumulative);
    sample(out, "egressd_flow_duration_seconds_sum", {{"listener", listeners[l]}},
           static_cast<double>(h.sum_us) / 1e6);
    sample(out, "egressd_flow_duration_seconds_count", {{"listener", listeners[l]}}, h.count);
  }

  header(out, "egressd_flows_active", "gauge", "Connections open now.");
  for (const std::size_t l : by_name) {
    // A scrape between a shard's two relaxed stores can't see a negative
    // sum (pairs stay on one shard), but clamp anyway: a gauge of flows.
    sample(out, "egressd_flows_active", {{"listener", listeners[l]}},
           static_cast<std::uint64_t>(std::max<std::int64_t>(0, active[l])));
  }

  header(out, "egressd_flows_limit", "gauge",
         "Concurrent flows allowed (limits.max_connections, or what the fd limit allows).");
  sample(out, "egressd_flows_limit", {}, flows_limit_.load(std::memory_order_relaxed));

  header(out, "egressd_flows_total", "counter",
         "Connections ended, by protocol and final decision and rule.");
  for (const auto& [k, n] : flows) {
    sample(
        out, "egressd_flows_total",
        {{"listener", k.listener}, {"proto", k.proto}, {"decision", k.decision}, {"rule", k.rule}},
        n);
  }

  {
    header(out, "egressd_guard_denials_total", "counter",
           "Flows and requests refused by the built-in address guard, by address class.");
    std::array<std::pair<std::string_view, std::uint64_t>, kGuardClasses> rows{};
    for (std::size_t c = 0; c < kGuardClasses; ++c) {
      rows[c] = {to_string(static_cast<GuardClass>(c)), guard[c]};
    }
    std::sort(rows.begin(), rows.end());
    for (const auto& [name, n] : rows) {
      sample(out, "egressd_guard_denials_total", {{"class", name}}, n);
    }
  }

  {
    header(out, "egressd_http_requests_total", "counter",
           "HTTP/1 and h2c requests judged by the policy, by decision.");
    std::vector<std::tuple<std::string_view, std::string_view, std::uint64_t>> rows;
    for (const Proto p : kAllProtos) {
      for (const log::Decision d : kAllDecisions) {
        const auto n = http[static_cast<std::size_t>(p)][static_cast<std::size_t>(d)];
        if (n != 0) rows.emplace_back(to_string(p), log::to_string(d), n);
      }
    }
    std::sort(rows.begin(), rows.end());
    for (const auto& [p, d, n] : rows) {
      sample(out, "egressd_http_requests_total", {{"proto", p}, {"decision", d}}, n);
    }
  }

  std::optional<KubernetesStatus> k8s;
  {
    std::lock_guard lock(source_mu_);
    if (kubernetes_) k8s = kubernetes_();
  }
  if (k8s) {
    if (k8s->data_age_seconds) {
      header(out, "egressd_kubernetes_data_age_seconds", "gauge",
             "How old the pod index may be: 0 while the API server watches are open.");
      sample(out, "egressd_kubernetes_data_age_seconds", {}, *k8s->data_age_seconds);
    }
    header(out, "egressd_kubernetes_pods", "gauge",
           "Pods whose IPs the identity index holds (running, or pending with an IP).");
    sample(out, "egressd_kubernetes_pods", {}, k8s->pods);
    header(out, "egressd_kubernetes_synced", "gauge",
           "1 once the first list of pods and namespaces completed, else 0.");
    sample(out, "egressd_kubernetes_synced", {}, std::uint64_t{k8s->synced ? 1U : 0U});
    header(out, "egressd_kubernetes_watch_restarts_total", "counter",
           "Kubernetes lists and watches restarted, by resource and reason.");
    constexpr std::array<std::string_view, 2> kResources = {"namespaces", "pods"};
    constexpr std::array<std::string_view, 4> kReasons = {"closed", "error", "gone", "timeout"};
    for (const std::string_view resource : kResources) {
      const std::size_t r = resource == "pods" ? 0 : 1;
      for (const std::string_view reason : kReasons) {
        const std::size_t why = reason == "gone"     ? 0
                                : reason == "closed" ? 1
                                : reason == "error"  ? 2
                                                     : 3;
        sample(out, "egressd_kubernetes_watch_restarts_total",
               {{"resource", resource}, {"reason", reason}}, k8s->restarts[r][why]);
      }
    }
  }

  {
    header(out, "egressd_upstream_connect_failures_total", "counter",
           "Upstream connections that could not be established, by reason.");
    std::array<std::pair<std::string_view, std::uint64_t>, kConnectFailures> rows{};
    for (std::size_t r = 0; r < kConnectFailures; ++r) {
      rows[r] = {to_string(static_cast<ConnectFailure>(r)), connect[r]};
    }
    std::sort(rows.begin(), rows.end());
    for (const auto& [name, n] : rows) {
      sample(out, "egressd_upstream_connect_failures_total", {{"reason", name}}, n);
    }
  }
}

}  // namespace egressd::metrics
