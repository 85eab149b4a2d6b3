#include "egressd/flow/worker.hpp"

#include <malloc.h>

#include <algorithm>
#include <functional>
#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "egressd/log/access_log.hpp"
#include "egressd/log/record.hpp"
#include "egressd/metrics/registry.hpp"
#include "flow_services.hpp"

namespace egressd::flow {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kTrimAfterFlows = 1024;
constexpr std::size_t kBuffersKeptAfterTrim = 4;

// Runs the flow of one accepted connection on `worker`, by the listener's kind.
void start_flow(Worker& worker, const std::shared_ptr<const ListenerInfo>& listener,
                tcp::socket socket, const tcp::endpoint& peer) {
  if (listener->mode == config::ListenerMode::explicit_proxy) {
    asio::co_spawn(worker.io(), run_explicit_flow(worker, listener, std::move(socket), peer),
                   asio::detached);
  } else if (listener->forward) {
    asio::co_spawn(worker.io(), run_forward_flow(worker, listener, std::move(socket), peer),
                   asio::detached);
  } else {
    asio::co_spawn(worker.io(), run_flow(worker, listener, std::move(socket), peer),
                   asio::detached);
  }
}

// Accepts until the acceptor is closed. Never spins: when the process is
// out of file descriptors, or the access log asks to stop taking new flows
// (on_full: block), it waits a little and tries again. A connection
// accepted just before a close still gets its flow.
asio::awaitable<void> accept_loop(Worker& worker, std::shared_ptr<const ListenerInfo> listener,
                                  std::shared_ptr<tcp::acceptor> owned) {
  tcp::acceptor& acceptor = *owned;
  asio::steady_timer pause(acceptor.get_executor());
  std::optional<std::chrono::steady_clock::time_point> last_warning;
  for (;;) {
    const log::AccessLog* access_log = worker.services().access_log;
    while (access_log != nullptr && access_log->accepting_paused() && acceptor.is_open()) {
      pause.expires_after(std::chrono::milliseconds(5));
      co_await pause.async_wait(kNoThrow);
    }
    // accept() hands back the peer's address: no getpeername per flow.
    tcp::endpoint peer;
    auto [ec, socket] = co_await acceptor.async_accept(peer, kNoThrow);
    if (!ec) start_flow(worker, listener, std::move(socket), peer);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // EMFILE/ENFILE/ENOBUFS: back off instead of spinning on the error.
      // Said at most every 10 s: the condition lasts while it lasts.
      const auto now = std::chrono::steady_clock::now();
      if (!last_warning || now - *last_warning >= std::chrono::seconds(10)) {
        last_warning = now;
        spdlog::warn("listener {}: accept failed: {}; connections wait in the backlog",
                     listener->name, ec.message());
      }
      pause.expires_after(std::chrono::milliseconds(50));
      co_await pause.async_wait(kNoThrow);
    }
  }
}

// Once a second: one pass over this worker's open flows, no lock, no
// syscall per flow.
asio::awaitable<void> sweep_loop(Worker& worker) {
  asio::steady_timer tick(worker.io());
  for (;;) {
    tick.expires_after(std::chrono::seconds(1));
    auto [ec] = co_await tick.async_wait(kNoThrow);
    if (ec) co_return;
    worker.sweep();
  }
}

}  // namespace

bool SourceLimiter::try_acquire(const IpAddress& src) {
  std::lock_guard lock(mu_);
  auto& n = counts_[src];
  if (n >= max_) {
    if (n == 0) counts_.erase(src);
    return false;
  }
  ++n;
  return true;
}

void SourceLimiter::release(const IpAddress& src) {
  std::lock_guard lock(mu_);
  auto it = counts_.find(src);
  if (it == counts_.end()) return;
  if (--it->second == 0) counts_.erase(it);
}

std::size_t SourceLimiter::Hash::operator()(const IpAddress& ip) const noexcept {
  std::size_t h = 1469598103934665603ULL;
  for (auto b : ip.bytes()) h = (h ^ b) * 1099511628211ULL;
  return h;
}

Worker::Worker(std::size_t index, const Services& services, std::size_t max_pipes)
    : index_(index), services_(services), pipes_(max_pipes) {
  asio::co_spawn(io_, sweep_loop(*this), asio::detached);
}

void Worker::sweep() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& f : flows_) {
    if (f.control == nullptr) continue;
    if (f.idle.count() > 0 && f.client != nullptr && f.upstream != nullptr) {
      relay::stop_if_idle(*f.client, *f.upstream, *f.control, f.idle, now);
    }
    if (services_.metrics == nullptr) continue;
    const std::uint64_t up = f.control->bytes_up - f.reported_up;
    const std::uint64_t down = f.control->bytes_down - f.reported_down;
    if (up == 0 && down == 0) continue;
    metrics().add_bytes(f.listener_index, up, down);
    f.reported_up = f.control->bytes_up;
    f.reported_down = f.control->bytes_down;
  }
}

Worker::~Worker() = default;

metrics::WorkerMetrics& Worker::metrics() {
  return services_.metrics->worker(static_cast<unsigned>(index_));
}

void Worker::publish(std::shared_ptr<const Snapshot> s) {
  asio::post(io_, [this, s = std::move(s)]() mutable { snapshot_ = std::move(s); });
}

void Worker::publish_identities(k8s::IdentitySnapshotPtr s) {
  asio::post(io_, [this, s = std::move(s)]() mutable { identities_ = std::move(s); });
}

void Worker::serve(std::shared_ptr<const ListenerInfo> listener, tcp::acceptor acceptor) {
  auto a = std::make_shared<tcp::acceptor>(std::move(acceptor));
  asio::post(io_, [this, listener = std::move(listener), a = std::move(a)]() mutable {
    acceptors_.push_back(Acceptor{listener, a});
    asio::co_spawn(io_, accept_loop(*this, std::move(listener), std::move(a)), asio::detached);
  });
}

void Worker::stop_listener(std::shared_ptr<const ListenerInfo> listener) {
  asio::post(io_, [this, listener = std::move(listener)] {
    std::erase_if(acceptors_, [&](Acceptor& a) {
      if (a.listener != listener) return false;
      // Connections the kernel already queued on this socket would be reset
      // by the close: take them first, as flows of the listener they came
      // to (a changed listener's new sockets get everything after).
      boost::system::error_code ec;
      a.acceptor->non_blocking(true, ec);
      while (!ec) {
        tcp::socket socket(io_);
        tcp::endpoint peer;
        a.acceptor->accept(socket, peer, ec);
        if (!ec) start_flow(*this, a.listener, std::move(socket), peer);
      }
      a.acceptor->close(ec);
      return true;
    });
  });
}

void Worker::close_listeners() {
  asio::post(io_, [this] {
    for (auto& a : acceptors_) {
      boost::system::error_code ignored;
      a.acceptor->close(ignored);
    }
  });
}

void Worker::stop_flows(relay::EndReason reason) {
  asio::post(io_, [this, reason] {
    for (auto& f : flows_) {
      f.stop_requested = true;
      f.stop_reason = reason;
      boost::system::error_code ignored;
      if (f.control != nullptr) f.control->stop_reason = reason;
      if (f.client != nullptr) f.client->close(ignored);
      if (f.upstream != nullptr) f.upstream->close(ignored);
    }
  });
}

void Worker::revoke(std::shared_ptr<const Snapshot> s) {
  asio::post(io_, [this, s = std::move(s)] {
    const auto today = std::chrono::floor<std::chrono::days>(std::chrono::system_clock::now());
    std::size_t revoked = 0;
    for (auto& f : flows_) {
      if (!f.admitted || f.stop_requested || f.record == nullptr || !f.record->dst) continue;
      const log::FlowRecord& r = *f.record;
      policy::FlowFacts facts;
      facts.listener = r.listener;
      facts.transparent = f.transparent;
      facts.src = r.src.ip;
      facts.dst = r.dst->ip;
      facts.port = r.dst->port;
      // A flow decided at once is judged on its observed proto and name
      // only where the new policy would look at them for a new flow.
      const bool named =
          !f.decided_at_once ||
          s->policy->name_can_matter(r.listener, r.src.ip, r.dst->port, r.source_pod.get());
      facts.proto = named ? r.proto : Proto::tcp;
      facts.tls_without_sni = facts.proto == Proto::tls && !r.host;
      facts.ech = r.ech.value_or(false);
      facts.identity = r.source_pod.get();
      facts.today = today;
      // A kept-alive HTTP/1 or h2c connection carried every name in
      // `hosts`; any of them the new policy denies ends it (its requests
      // in flight may be for any of them).
      std::optional<policy::Outcome> denied;
      const auto judge = [&](std::optional<std::string_view> name) {
        facts.name = name;
        policy::Outcome o = decide(*this, *s->policy, facts, nullptr);
        if (!o.needs_lookup && o.verdict.decision == policy::Decision::deny) denied = std::move(o);
      };
      if (named && r.hosts.size() > 1) {
        for (const std::string& name : r.hosts) {
          judge(name);
          if (denied) break;
        }
      } else {
        judge(named && r.host ? std::optional<std::string_view>(*r.host) : std::nullopt);
      }
      if (!denied) continue;
      const policy::Outcome& o = *denied;
      f.record->decision = log::Decision::deny;
      f.record->rule = std::string(o.verdict.rule);
      f.record->reason = "revoked by a reload: " + o.verdict.reason;
      f.record->integrity.reset();
      f.stop_requested = true;
      f.stop_reason = relay::EndReason::revoked;
      if (f.control != nullptr) f.control->stop_reason = relay::EndReason::revoked;
      boost::system::error_code ignored;
      if (f.client != nullptr) f.client->close(ignored);
      if (f.upstream != nullptr) f.upstream->close(ignored);
      ++revoked;
    }
    if (revoked > 0) {
      spdlog::info("reload: revoked {} open flow(s) the new policy denies (worker {})", revoked,
                   index_);
    }
  });
}

std::list<ActiveFlow>::iterator Worker::register_flow() {
  active_count_.fetch_add(1, std::memory_order_relaxed);
  flows_.emplace_front();
  peak_flows_ = std::max(peak_flows_, flows_.size());
  return flows_.begin();
}

void Worker::unregister_flow(std::list<ActiveFlow>::iterator it) {
  flows_.erase(it);
  active_count_.fetch_sub(1, std::memory_order_relaxed);
  // Give freed flow memory back to the system as soon as a burst of flows
  // has mostly gone (glibc keeps freed frames in its arenas otherwise):
  // once per fall to a quarter of the peak, so a storm of closes trims a
  // few times, each cheaper, never once per flow.
  if (peak_flows_ >= kTrimAfterFlows && flows_.size() < peak_flows_ / 4) {
    peak_flows_ = flows_.size();
    asio::post(io_, [this] {
      buffers_.shrink(kBuffersKeptAfterTrim);
      ::malloc_trim(0);
    });
  }
}

}  // namespace egressd::flow
