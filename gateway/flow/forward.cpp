// A node agent's connection, top to bottom:
//
//   record -> who and where (the pod, the original destination) -> limits
//   -> replicas (a DNS lookup only when the answer's TTL ran out)
//   -> connect under timeouts.connect, the next replica when one refuses or
//      times out -> PROXY v2 header -> relay -> `flow` record.
//
// The agent keeps no policy: it neither sniffs nor decides; the central
// gateway does both on the pod's address and original destination, which
// the PROXY header carries. Records: one `flow` record per connection,
// `"decision":"forward"`, `"rule":"forward"`, no `open` record.

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>

#include <boost/asio/write.hpp>

#include "egressd/flow/replica_set.hpp"
#include "egressd/flow/worker.hpp"
#include "egressd/log/record.hpp"
#include "egressd/net/socket.hpp"
#include "egressd/sniff/proxy_header.hpp"
#include "flow_parts.hpp"

namespace egressd::flow {
namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;

namespace {

// The rule a forwarded connection's record names: the agent decides
// nothing, and `rule` is always written (log::FlowRecord).
constexpr std::string_view kForwardRule = "forward";

// The pod sees a reset at once, not a hang and not a clean end of stream
// that could pass for an empty answer.
void reset(tcp::socket& socket) {
  boost::system::error_code ignored;
  socket.set_option(asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

log::CloseReason stop_close(const ActiveFlow& active) {
  return active.stop_reason == relay::EndReason::revoked ? log::CloseReason::revoked
                                                         : log::CloseReason::drained;
}

}  // namespace

awaitable<void> run_forward_flow(Worker& worker, std::shared_ptr<const ListenerInfo> listener,
                                 tcp::socket client, tcp::endpoint peer) {
  const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
  FlowScope flow(worker, *listener, client);
  log::FlowRecord& rec = flow.record;
  rec.decision = log::Decision::forward;
  rec.rule = kForwardRule;
  rec.reason = "forwarded";
  boost::system::error_code ignored;

  // Who is calling, and where to.
  const int fd = client.native_handle();
  if (!flow.identify_source(peer)) co_return;
  const std::optional<Endpoint> dst = net::original_destination(fd, rec.src.ip.family());
  if (!dst) {
    // Not redirected (made to the agent's port itself): there is no
    // destination to forward, and forwarding the agent's own address
    // would let a permissive central policy loop back here.
    rec.decision = log::Decision::deny;
    rec.rule = "builtin:not-redirected";
    rec.reason = "a node agent forwards redirected connections only";
    rec.close = log::CloseReason::denied;
    client.close(ignored);
    co_return;
  }
  rec.dst = *dst;

  // Limits: the agent's own descriptors, and per pod.
  if (ConnectionLimit* limit = worker.services().connection_limit) {
    if (!limit->try_acquire()) {
      flow.close_undecided(log::CloseReason::limit, "limits.max_connections reached");
      reset(client);
      co_return;
    }
    flow.hold_connection();
  }
  SourceLimiter* limiter = worker.services().source_limiter;
  if (limiter != nullptr && limiter->enabled()) {
    if (!limiter->try_acquire(rec.src.ip)) {
      flow.close_undecided(log::CloseReason::limit,
                           "limits.max_connections_per_source reached for this source");
      reset(client);
      co_return;
    }
    flow.hold_source();
  }

  // The replicas: look the name up again only when its answer expired.
  ReplicaSet& replicas = *listener->forward;
  std::string dns_problem;
  if (replicas.claim_refresh(ReplicaSet::Clock::now())) {
    const ResolvedName resolved = co_await resolve_name(worker, replicas.name());
    const dns::Answer& a = resolved.answer;
    if (a.ok() && a.current > 0) {
      replicas.update(std::span<const IpAddress>(a.addresses.data(), a.current),
                      ReplicaSet::Clock::now(), a.expires);
    } else {
      replicas.resolve_failed(ReplicaSet::Clock::now());
      dns_problem = a.ok() ? std::string("no address") : a.error;
    }
  }

  // Connect within timeouts.connect, one replica after another: a refused
  // or timed-out replica is skipped by later connections, and this one
  // tries the next (nothing has been sent yet). Each attempt gets an equal
  // share of what is left of the deadline, so one black-holed replica
  // cannot use all of it.
  tcp::socket upstream(client.get_executor());
  flow.active().upstream = &upstream;
  ReplicaSet::Attempts attempts;
  std::optional<Endpoint> chosen;
  boost::system::error_code ec;
  const auto deadline = ReplicaSet::Clock::now() + snapshot->timeouts.connect;
  for (;;) {
    const auto now = ReplicaSet::Clock::now();
    const std::size_t left = replicas.attempts_left(attempts);
    if (now >= deadline || left == 0) break;
    const std::optional<Endpoint> replica = replicas.pick(now, attempts);
    if (!replica) break;
    attempts.add(*replica);
    const auto share = std::chrono::duration_cast<std::chrono::milliseconds>(
        (deadline - now) / static_cast<int>(left));
    upstream.close(ignored);
    ec = co_await connect_upstream(upstream, *replica, snapshot->upstream_mark,
                                   std::max(share, std::chrono::milliseconds(1)));
    if (!ec) {
      replicas.succeeded(*replica);
      chosen = replica;
      break;
    }
    if (flow.active().stop_requested) break;
    note_connect_failure(worker, connect_failure_reason(ec));
    // access_denied: SO_MARK failed here, which no other replica mends.
    if (ec == asio::error::access_denied) break;
    replicas.failed(*replica, ReplicaSet::Clock::now());
  }
  if (!chosen) {
    if (flow.active().stop_requested) {
      rec.close = stop_close(flow.active());
      client.close(ignored);
      co_return;
    }
    rec.close = log::CloseReason::upstream_connect_failed;
    rec.upstream = attempts.last();
    if (rec.upstream) {
      rec.reason =
          "no central replica answered; last " + rec.upstream->to_string() + ": " + ec.message();
    } else {
      rec.reason = "no central replica to forward to: " + replicas.name() + " did not resolve" +
                   (dns_problem.empty() ? std::string() : " (" + dns_problem + ")");
    }
    reset(client);
    co_return;
  }
  rec.upstream = *chosen;

  // The PROXY v2 header, then the pod's bytes as they come.
  const sniff::ProxyV2Bytes header = sniff::write_proxy_v2(rec.src, *dst);
  {
    auto [wec, n] = co_await asio::async_write(
        upstream, asio::buffer(header.data.data(), header.size), kNoThrow);
    if (wec) {
      rec.close =
          flow.active().stop_requested ? stop_close(flow.active()) : log::CloseReason::reset;
      reset(client);
      co_return;
    }
  }
  std::vector<std::uint8_t> nothing_sniffed;  // the agent reads no client bytes itself
  rec.close =
      co_await relay_flow(worker, flow, client, upstream, nothing_sniffed, snapshot->timeouts.idle);
}

}  // namespace egressd::flow
