#include "egressd/server/gateway.hpp"

#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <fstream>
#include <limits>
#include <map>
#include <ostream>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "config_watcher.hpp"
#include "egressd/admin/admin_server.hpp"
#include "egressd/cli/validate.hpp"
#include "egressd/dns/cache.hpp"
#include "egressd/dns/host_addresses.hpp"
#include "egressd/dns/resolver.hpp"
#include "egressd/flow/replica_set.hpp"
#include "egressd/flow/worker.hpp"
#include "egressd/k8s/client_config.hpp"
#include "egressd/k8s/watcher.hpp"
#include "egressd/log/access_log.hpp"
#include "egressd/metrics/registry.hpp"
#include "egressd/net/socket.hpp"
#include "egressd/version.hpp"
#include "reload_plan.hpp"
#include "reloader.hpp"

namespace egressd::server {
namespace asio = boost::asio;
using asio::ip::tcp;

unsigned usable_cpus() {
  unsigned cpus = std::max(1U, std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    cpus = static_cast<unsigned>(std::max(1, CPU_COUNT(&set)));
  }
  // cgroup v2: "max 100000" (no quota) or "QUOTA PERIOD".
  std::ifstream cpu_max("/sys/fs/cgroup/cpu.max");
  std::string quota;
  double period = 0;
  if (cpu_max >> quota >> period && quota != "max" && period > 0) {
    try {
      const double q = std::stod(quota);
      const auto by_quota = static_cast<unsigned>(std::ceil(q / period));
      cpus = std::clamp(by_quota, 1U, cpus);
    } catch (const std::exception&) {
      // A malformed cpu.max leaves the affinity count.
    }
  }
  return cpus;
}

namespace {

std::string_view mode_name(config::ListenerMode m) {
  switch (m) {
    case config::ListenerMode::redirect:
      return "redirect";
    case config::ListenerMode::tproxy:
      return "tproxy";
    case config::ListenerMode::explicit_proxy:
      return "explicit";
  }
  return "redirect";
}

// Binds one SO_REUSEPORT acceptor of `l` on `io`, without listening yet:
// every worker gets its own, and once listening the kernel spreads
// connections across them. SO_REUSEPORT is also what lets a reload bind a
// changed listener's new acceptors on the address its old ones still hold.
// Throws with one sentence naming the listener and the address.
tcp::acceptor bind_listener(asio::io_context& io, const config::ListenerSpec& l) {
  const auto address = asio::ip::make_address(l.address.ip.to_string());
  const tcp::endpoint ep(address, l.address.port);
  const auto fail = [&l](const std::string& why) {
    return std::runtime_error("cannot listen on " + l.address.to_string() + " for listener '" +
                              l.name + "': " + why);
  };
  tcp::acceptor a(io);
  boost::system::error_code ec;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (ec) throw fail(ec.message());
  const int one = 1;
  if (::setsockopt(a.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    throw std::runtime_error("cannot set SO_REUSEPORT on listener '" + l.name + "'");
  }
  if (l.mode == config::ListenerMode::tproxy) {
    if (auto err = net::set_transparent(a.native_handle(), ep.address().is_v6())) {
      throw std::runtime_error("listener '" + l.name + "': " + *err);
    }
  }
  a.bind(ep, ec);
  if (ec) throw fail(ec.message());
  return a;
}

// Listeners bound on every worker and listening, not yet served: what a
// start or a reload has ready before it changes anything.
struct OpenedListener {
  std::shared_ptr<flow::ListenerInfo> info;  // index set once the reload is sure
  std::vector<tcp::acceptor> acceptors;      // one per worker, in worker order
};

// The ListenerInfo of `l` (without its metrics index). Throws with one
// sentence when its forward target is invalid.
std::shared_ptr<flow::ListenerInfo> listener_info(const config::ListenerSpec& l) {
  auto info = std::make_shared<flow::ListenerInfo>();
  info->name = l.name;
  info->mode = l.mode;
  info->address = l.address;
  if (l.proxy_protocol) {
    info->proxy_protocol = true;
    info->trusted = l.proxy_protocol->trusted;
  }
  if (l.forward) {
    std::shared_ptr<flow::ReplicaSet> replicas = flow::ReplicaSet::from_target(*l.forward);
    if (!replicas) {
      throw std::runtime_error("listener '" + l.name + "': invalid forward target '" + *l.forward +
                               "'");
    }
    info->forward = std::move(replicas);
  }
  return info;
}

// Binds every listener of `specs` on every worker, then listens on all of
// them: two passes, so a listener that cannot be bound leaves no socket in
// any reuseport group (the kernel hands connections only to listening
// sockets). All or nothing: on any failure everything opened here is
// closed and the error names the listener and its address.
std::vector<OpenedListener> open_listeners(
    const std::vector<config::ListenerSpec>& specs,
    const std::vector<std::unique_ptr<flow::Worker>>& workers) {
  std::vector<OpenedListener> opened;
  opened.reserve(specs.size());
  for (const config::ListenerSpec& l : specs) {
    OpenedListener o;
    o.info = listener_info(l);
    for (const auto& w : workers) o.acceptors.push_back(bind_listener(w->io(), l));
    opened.push_back(std::move(o));
  }
  for (std::size_t i = 0; i < opened.size(); ++i) {
    for (tcp::acceptor& a : opened[i].acceptors) {
      boost::system::error_code ec;
      a.listen(asio::socket_base::max_listen_connections, ec);
      if (ec) {
        throw std::runtime_error("cannot listen on " + specs[i].address.to_string() +
                                 " for listener '" + specs[i].name + "': " + ec.message());
      }
    }
  }
  return opened;  // on a throw, the acceptors close as `opened` goes
}

spdlog::level::level_enum parse_level(const std::string& s) {
  if (s == "debug") return spdlog::level::debug;
  if (s == "warn") return spdlog::level::warn;
  if (s == "error") return spdlog::level::err;
  return spdlog::level::info;
}

class Gateway {
 public:
  // `validated` was compiled with `own_addresses` (the guard's own host).
  Gateway(std::string config_path, cli::ValidatedConfig validated,
          std::vector<IpAddress> own_addresses)
      : config_path_(std::move(config_path)),
        config_(std::move(*validated.config)),
        initial_policy_(std::move(validated.policy)),
        cache_(dns::CacheOptions::from(config_.dns)),
        resolver_(cache_, dns::ResolverOptions::from(config_.dns)),
        source_limiter_(config_.limits.max_connections_per_source),
        own_addresses_(std::move(own_addresses)) {}

  int run() {
    const unsigned worker_count = config_.workers != 0 ? config_.workers : usable_cpus();
    auto log = log::AccessLog::open(config_.access_log);
    if (!log) {
      spdlog::error("cannot open access log {}: {}", config_.access_log.path,
                    log.error().message());
      return 1;
    }
    access_log_ = std::move(*log);
    std::vector<std::string> listener_names;
    for (const auto& l : config_.listeners) listener_names.push_back(l.name);
    metrics_ =
        std::make_unique<metrics::Registry>(worker_count, std::move(listener_names), kVersion);
    metrics_->set_access_log_dropped_source([this] { return access_log_->dropped_total(); });

    publish(make_snapshot(config_, std::move(initial_policy_), /*generation=*/1));
    metrics_->config_loaded(1, std::chrono::system_clock::now());

    // Limits: each flow holds two descriptors; pipes hold two each while
    // busy. Leave headroom so accept() does not meet EMFILE first.
    const std::uint64_t fds = net::fd_limit();
    const std::size_t pipes_per_worker = std::clamp<std::size_t>(fds / 16 / worker_count, 4, 256);
    std::uint64_t max_connections = config_.limits.max_connections;
    const std::uint64_t reserve = 64 + 2ULL * pipes_per_worker * worker_count;
    const std::uint64_t fitting = fds > reserve + 2 ? (fds - reserve) / 2 : 1;
    if (max_connections == 0) {
      max_connections = fitting;
    } else if (max_connections > fitting) {
      spdlog::warn(
          "limits.max_connections {} is more than RLIMIT_NOFILE {} holds (about {} flows at two "
          "descriptors each): past that, new connections fail or wait in the backlog; raise the "
          "descriptor limit or lower limits.max_connections",
          max_connections, fds, fitting);
    }
    connection_limit_ = std::make_unique<flow::ConnectionLimit>(max_connections);
    metrics_->set_flows_limit(max_connections);

    flow::Services services;
    services.access_log = access_log_.get();
    services.metrics = metrics_.get();
    services.resolver = &resolver_;
    services.dns_cache = &cache_;
    services.source_limiter = &source_limiter_;
    services.connection_limit = connection_limit_.get();
    services.verify_window = config_.dns.verify_window;
    services.draining = &draining_;
    for (unsigned i = 0; i < worker_count; ++i) {
      workers_.push_back(std::make_unique<flow::Worker>(i, services, pipes_per_worker));
      workers_.back()->publish(snapshot_);
    }

    // Bind everything before serving anything: a listener that cannot be
    // bound stops the start with one clear sentence.
    try {
      std::vector<OpenedListener> opened = open_listeners(config_.listeners, workers_);
      for (std::size_t li = 0; li < opened.size(); ++li) {
        opened[li].info->index = li;  // the registry was built with these names
        serve(std::move(opened[li]));
      }
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
      access_log_->stop();
      return 1;
    }

    admin_ = std::make_unique<admin::AdminServer>(control_io_, config_.admin.address,
                                                  [this] { return metrics_->render(); });
    if (auto error = admin_->start()) {
      spdlog::error("cannot serve admin on {}: {}", config_.admin.address.to_string(), *error);
      access_log_->stop();
      return 1;
    }

    // Pod identity: one watcher for the process; its snapshots go to every
    // worker, which swaps them in on its own thread.
    if (config_.kubernetes) {
      k8s::ClientConfigResult client = k8s::load_client_config(*config_.kubernetes);
      if (!client.ok()) {
        spdlog::error("kubernetes: {}", client.error);
        access_log_->stop();
        return 1;
      }
      k8s::WatcherOptions options;
      options.client = std::move(*client.config);
      options.on_snapshot = [this](k8s::IdentitySnapshotPtr snapshot) {
        pods_.store(snapshot ? snapshot->pods() : 0, std::memory_order_relaxed);
        for (auto& w : workers_) w->publish_identities(snapshot);
      };
      try {
        watcher_ = std::make_unique<k8s::Watcher>(std::move(options));
      } catch (const std::exception& e) {
        spdlog::error("kubernetes: {}", e.what());
        access_log_->stop();
        return 1;
      }
      metrics_->set_kubernetes_source([this] { return kubernetes_status(); });
    }

    for (auto& w : workers_) {
      threads_.emplace_back([&io = w->io()] {
        auto guard = asio::make_work_guard(io);
        io.run();
      });
    }
    for (const auto& l : config_.listeners) {
      spdlog::info("listener {} ({}) on {}", l.name, mode_name(l.mode), l.address.to_string());
    }
    spdlog::info("admin on http://{} (/metrics /healthz /readyz)",
                 config_.admin.address.to_string());
    spdlog::info("egressd {} serving with {} worker{}, up to {} connections; access log: {}",
                 kVersion, worker_count, worker_count == 1 ? "" : "s", max_connections,
                 config_.access_log.path == "-" ? std::string("stdout") : config_.access_log.path);
    // Ready once every listener is bound — and, with identity selectors,
    // once the pod watch has synced or kubernetes.sync_timeout has passed.
    if (watcher_ && uses_identity_selectors(config_)) {
      asio::co_spawn(control_io_, await_identity_sync(config_.kubernetes->sync_timeout),
                     asio::detached);
    } else {
      admin_->set_ready(true);
    }

    asio::signal_set signals(control_io_, SIGTERM, SIGINT);
    asio::signal_set hup(control_io_, SIGHUP, SIGUSR1);
    wait_term(signals);
    wait_hup_usr1(hup);
    // The config file is watched (ConfigMap `..data` swaps, rename-over,
    // in-place writes); a change reloads like SIGHUP, after 200 ms of quiet.
    config_watcher_ =
        std::make_unique<ConfigWatcher>(control_io_, config_path_, std::chrono::milliseconds(200),
                                        [this] { request_reload("the config file changed"); });
    if (auto error = config_watcher_->start()) {
      spdlog::warn("not watching {} ({}); SIGHUP still reloads", config_path_, *error);
      config_watcher_.reset();
    }
    reloader_ = std::make_unique<Reloader>([this](std::uint64_t seq) { prepare_reload(seq); });
    control_io_.run();

    if (watcher_) watcher_->stop();
    for (auto& w : workers_) w->io().stop();
    for (auto& t : threads_) t.join();
    access_log_->stop();
    spdlog::info("drained; exiting");
    // Last: a reload being prepared cannot be interrupted (a large policy
    // compiles for seconds) and its result is not applied (the control
    // loop has stopped). Every record is on disk before this wait, so a
    // SIGKILL at the end of the grace period loses none.
    reloader_->stop();
    return 0;
  }

 private:
  static bool uses_identity_selectors(const config::ConfigSpec& cfg) {
    return std::any_of(cfg.policy.rules.begin(), cfg.policy.rules.end(),
                       [](const config::RuleSpec& r) { return !r.from_identities.empty(); });
  }

  // Readiness waits for the first list of pods and namespaces, at most
  // `timeout`; after that the gateway serves with identity selectors
  // matching nothing until the watch syncs (fail closed), and says so.
  asio::awaitable<void> await_identity_sync(std::chrono::milliseconds timeout) {
    asio::steady_timer tick(control_io_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!watcher_->synced() && std::chrono::steady_clock::now() < deadline &&
           !draining_.load(std::memory_order_relaxed)) {
      tick.expires_after(std::chrono::milliseconds(50));
      co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (draining_.load(std::memory_order_relaxed)) co_return;
    if (watcher_->synced()) {
      spdlog::info("kubernetes: pods and namespaces listed; ready");
    } else {
      spdlog::warn(
          "kubernetes: not synced after kubernetes.sync_timeout ({} ms); serving with identity "
          "selectors matching nothing until the watch syncs",
          timeout.count());
    }
    admin_->set_ready(true);
  }

  metrics::Registry::KubernetesStatus kubernetes_status() const {
    metrics::Registry::KubernetesStatus st;
    st.synced = watcher_->synced();
    st.pods = pods_.load(std::memory_order_relaxed);
    if (auto age = watcher_->data_age()) {
      st.data_age_seconds = static_cast<double>(age->count()) / 1000.0;
    }
    for (const k8s::Resource r : {k8s::Resource::pods, k8s::Resource::namespaces}) {
      for (std::size_t why = 0; why < k8s::kRestartReasonCount; ++why) {
        st.restarts[static_cast<std::size_t>(r)][why] =
            watcher_->restarts(r, static_cast<k8s::RestartReason>(why));
      }
    }
    return st;
  }

  // The first SIGTERM/SIGINT starts a drain; a second one during the drain
  // skips what is left of drain_delay and drain (Ctrl-C twice stops now).
  void wait_term(asio::signal_set& set) {
    set.async_wait([this, &set](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      const char* name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
      if (!draining_.load(std::memory_order_relaxed)) {
        spdlog::info("signal {}: draining", name);
        asio::co_spawn(control_io_, drain(), asio::detached);
      } else if (!hurry_) {
        spdlog::info("signal {} again: closing open flows now", name);
        hurry_ = true;
        if (drain_timer_ != nullptr) drain_timer_->cancel();
      }
      wait_term(set);
    });
  }

  void wait_hup_usr1(asio::signal_set& set) {
    set.async_wait([this, &set](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGUSR1) {
        spdlog::info("SIGUSR1: reopening the access log");
        access_log_->reopen();
      } else {
        request_reload("SIGHUP");
      }
      wait_hup_usr1(set);
    });
  }

  std::shared_ptr<const flow::Snapshot> make_snapshot(
      const config::ConfigSpec& cfg, std::shared_ptr<const policy::CompiledPolicy> policy,
      std::uint64_t generation) const {
    auto snap = std::make_shared<flow::Snapshot>();
    snap->policy = std::move(policy);
    snap->timeouts = cfg.timeouts;
    snap->tls = cfg.tls;
    snap->upstream_mark = cfg.upstream.mark;
    snap->generation = generation;
    return snap;
  }

  // Control thread: new flows on every worker see `snap` from their next
  // accept on.
  void publish(std::shared_ptr<const flow::Snapshot> snap) {
    snapshot_ = std::move(snap);
    for (auto& w : workers_) w->publish(snapshot_);
  }

  // Control thread: every worker accepts on its acceptor of `o` (after
  // what was posted to it before, such as a snapshot).
  void serve(OpenedListener o) {
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      workers_[i]->serve(o.info, std::move(o.acceptors[i]));
    }
    listeners_[o.info->name] = std::move(o.info);
  }

  // ---- reload -------------------------------------------------------------
  // SIGHUP and the config watcher only ask (control thread); the reload
  // thread reads, validates, runs the config's own tests and compiles
  // (prepare_reload); the control thread applies what it prepared
  // (apply_reload). See reloader.hpp for "newest wins".

  void request_reload(std::string_view why) {
    if (draining_.load(std::memory_order_relaxed)) {
      spdlog::info("{}: draining, no reload", why);
      return;
    }
    // The bytes this reload is for: the watcher skips later events that
    // leave the file as it is now (a SIGHUP right after a write, say).
    if (config_watcher_) {
      if (auto content = read_file(config_path_)) config_watcher_->loaded(*content);
    }
    const std::uint64_t seq = reloader_->request();
    spdlog::info("{}: reloading {} (request {})", why, config_path_, seq);
  }

  // What the reload thread hands the control thread.
  struct PreparedReload {
    std::uint64_t seq = 0;
    std::vector<config::Diagnostic> diagnostics;           // every one is logged
    std::optional<config::ConfigSpec> config;              // set when the file is accepted
    std::shared_ptr<const policy::CompiledPolicy> policy;  // compiled to serve
    std::chrono::milliseconds took{0};
  };

  // Reload thread. Touches only what is fixed after start-up (the path,
  // own_addresses_) and the reloader; the result goes to the control thread.
  void prepare_reload(std::uint64_t seq) {
    const auto t0 = std::chrono::steady_clock::now();
    auto p = std::make_shared<PreparedReload>();
    p->seq = seq;
    try {
      // One compile, with this host's own addresses (the guard): the
      // config's own tests judge the very policy that will serve.
      cli::ValidatedConfig v =
          cli::load_and_validate(config_path_, cli::utc_today(), true, own_addresses_);
      const bool accepted = v.ok();  // before the diagnostics move out
      p->diagnostics = std::move(v.diagnostics);
      if (accepted && !reloader_->superseded(seq)) {
        p->policy = std::move(v.policy);
        p->config = std::move(v.config);
      }
    } catch (const std::exception& e) {
      // Broken invariant or out of memory: rejected like any bad file.
      config::Diagnostic d;
      d.pos.file = config_path_;
      d.message = std::string("reload failed: ") + e.what();
      p->diagnostics.push_back(std::move(d));
      p->config.reset();
      p->policy.reset();
    }
    p->took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0);
    if (reloader_->superseded(seq)) {
      spdlog::info("reload request {} superseded by a newer one while prepared ({} ms); discarded",
                   seq, p->took.count());
      return;
    }
    asio::post(control_io_, [this, p] { apply_reload(*p); });
  }

  // Control thread. Nothing is changed until everything that can fail has
  // succeeded: the file was accepted, every new listener is bound and
  // listening on every worker. Then, in this order on every worker: the new
  // snapshot, the new listeners, the removed listeners closed.
  void apply_reload(PreparedReload& p) {
    if (draining_.load(std::memory_order_relaxed)) {
      spdlog::info("reload request {} not applied: draining", p.seq);
      return;
    }
    if (reloader_->superseded(p.seq)) {
      spdlog::info("reload request {} superseded by a newer one; discarded", p.seq);
      return;
    }
    for (const auto& d : p.diagnostics) {
      if (d.severity == config::Diagnostic::Severity::error) {
        spdlog::error("{}", d.to_string());
      } else {
        spdlog::warn("{}", d.to_string());
      }
    }
    if (!p.config || !p.policy) {
      reject("");
      return;
    }
    config::ConfigSpec& next = *p.config;

    const ListenerDiff diff = diff_listeners(config_.listeners, next.listeners);
    std::vector<OpenedListener> opened;
    try {
      opened = open_listeners(diff.added, workers_);
    } catch (const std::exception& e) {
      reject(e.what());
      return;
    }

    // Committed: nothing below fails.
    for (const std::string& phrase : restart_only_changes(config_, next)) {
      spdlog::warn("reload: {} takes a restart; until then the running value stays", phrase);
    }
    if (next.kubernetes.has_value() != (watcher_ != nullptr)) {
      spdlog::warn("reload: until a restart, identity selectors match {}",
                   watcher_ ? "as before" : "nothing");
    }
    for (OpenedListener& o : opened) {
      if (auto index = metrics_->add_listener(o.info->name)) {
        o.info->index = *index;
      } else {
        o.info->index = std::numeric_limits<std::size_t>::max();  // counted nowhere
        spdlog::warn(
            "listener {}: over {} listener names since start; its flows are not in the "
            "metrics until a restart",
            o.info->name, metrics::WorkerMetrics::kMaxListeners);
      }
    }
    publish(make_snapshot(next, std::move(p.policy), snapshot_->generation + 1));
    for (const std::string& name : diff.removed) {
      auto it = listeners_.find(name);
      if (it == listeners_.end()) continue;
      for (auto& w : workers_) w->stop_listener(it->second);
      listeners_.erase(it);
    }
    for (OpenedListener& o : opened) serve(std::move(o));
    if (next.policy.revoke_on_reload) {
      for (auto& w : workers_) w->revoke(snapshot_);
    }
    for (const std::string& name : diff.removed) {
      if (std::find(diff.changed.begin(), diff.changed.end(), name) == diff.changed.end()) {
        spdlog::info("listener {} stopped; its open flows go on", name);
      }
    }
    for (const config::ListenerSpec& l : diff.added) {
      const bool changed =
          std::find(diff.changed.begin(), diff.changed.end(), l.name) != diff.changed.end();
      spdlog::info("listener {} ({}) on {}{}", l.name, mode_name(l.mode), l.address.to_string(),
                   changed ? " (changed; its open flows go on)" : "");
    }
    config_ = in_force_after_reload(config_, std::move(next));
    metrics_->reload_succeeded(snapshot_->generation, std::chrono::system_clock::now());
    spdlog::info("reloaded {} (generation {}, prepared in {} ms)", config_path_,
                 snapshot_->generation, p.took.count());
  }

  void reject(const std::string& why) {
    if (why.empty()) {
      spdlog::error("reload of {} rejected; the previous config keeps serving", config_path_);
    } else {
      spdlog::error("reload of {} rejected: {}; the previous config keeps serving", config_path_,
                    why);
    }
    metrics_->reload_failed();
  }

  std::size_t active_flows() const {
    std::size_t n = 0;
    for (const auto& w : workers_) n += w->active_flows();
    return n;
  }

  // SIGTERM/SIGINT: readiness 503 at once; keep accepting for drain_delay
  // (load balancers need time to notice); close the listeners; give open
  // flows timeouts.drain; stop the rest as `drained`; flush; exit 0.
  asio::awaitable<void> drain() {
    admin_->set_draining();
    draining_.store(true, std::memory_order_relaxed);
    asio::steady_timer timer(control_io_);
    drain_timer_ = &timer;
    constexpr auto kMayBeCancelled = asio::as_tuple(asio::use_awaitable);
    timer.expires_after(config_.timeouts.drain_delay);
    co_await timer.async_wait(kMayBeCancelled);
    for (auto& w : workers_) w->close_listeners();
    spdlog::info("listeners closed; {} flow(s) open, waiting up to {} ms", active_flows(),
                 config_.timeouts.drain.count());
    const auto deadline = std::chrono::steady_clock::now() + config_.timeouts.drain;
    while (!hurry_ && active_flows() > 0 && std::chrono::steady_clock::now() < deadline) {
      timer.expires_after(std::chrono::milliseconds(50));
      co_await timer.async_wait(kMayBeCancelled);
    }
    drain_timer_ = nullptr;
    if (active_flows() > 0) {
      spdlog::info("closing {} flow(s) still open", active_flows());
      for (auto& w : workers_) w->stop_flows(relay::EndReason::drained);
      // Let them write their records.
      const auto hard = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      while (active_flows() > 0 && std::chrono::steady_clock::now() < hard) {
        timer.expires_after(std::chrono::milliseconds(10));
        co_await timer.async_wait(asio::use_awaitable);
      }
    }
    admin_->stop();
    control_io_.stop();
  }

  std::string config_path_;
  config::ConfigSpec config_;
  std::shared_ptr<const policy::CompiledPolicy> initial_policy_;  // until run() publishes it
  asio::io_context control_io_{1};
  dns::Cache cache_;
  dns::Resolver resolver_;
  flow::SourceLimiter source_limiter_;
  std::unique_ptr<flow::ConnectionLimit> connection_limit_;
  std::unique_ptr<log::AccessLog> access_log_;
  std::unique_ptr<metrics::Registry> metrics_;
  std::unique_ptr<admin::AdminServer> admin_;
  std::vector<IpAddress> own_addresses_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<k8s::Watcher> watcher_;  // with a kubernetes section
  std::unique_ptr<ConfigWatcher> config_watcher_;
  std::unique_ptr<Reloader> reloader_;  // the reload thread
  // The listeners served now, by name (control thread).
  std::map<std::string, std::shared_ptr<const flow::ListenerInfo>> listeners_;
  std::atomic<std::size_t> pods_{0};           // in the newest identity snapshot
  bool hurry_ = false;                         // a second signal came (control thread)
  asio::steady_timer* drain_timer_ = nullptr;  // the drain's timer while it waits
  std::shared_ptr<const flow::Snapshot> snapshot_;
  std::vector<std::unique_ptr<flow::Worker>> workers_;
  std::vector<std::thread> threads_;
};

}  // namespace

int run_gateway(const RunOptions& options, std::ostream& err) {
  // splice(2) and write(2) to a peer that has gone raise SIGPIPE; the error
  // value is what the relay and the access log handle.
  std::signal(SIGPIPE, SIG_IGN);
  auto logger = spdlog::stderr_color_mt("egressd");
  spdlog::set_default_logger(logger);
  spdlog::set_level(parse_level(options.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);

  // Compiled once, knowing this host's own addresses (the guard).
  std::vector<IpAddress> own_addresses = dns::own_host_addresses();
  auto validated =
      cli::load_and_validate(options.config_path, cli::utc_today(), true, own_addresses);
  for (const auto& d : validated.diagnostics) err << d.to_string() << '\n';
  if (!validated.ok()) {
    err << "egressd: " << options.config_path << " is not a valid config; nothing was started\n";
    return 1;
  }
  Gateway gateway(options.config_path, std::move(validated), std::move(own_addresses));
  return gateway.run();
}

}  // namespace egressd::server
