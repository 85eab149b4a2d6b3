// The life of one connection, top to bottom:
//
//   record -> who and where (source, original destination; from a trusted
//   peer's PROXY header on a proxy_protocol listener) -> limits
//   -> sniff under timeouts.sniff (skipped when no name can matter, rule 11)
//   -> decide (with a DNS lookup when destination integrity needs one)
//   -> deny: what the client sees (TLS alert, HTTP 403, close)
//   -> connect under timeouts.connect
//   -> decided at once: the client's first bytes, if it speaks first, are
//      classified as they pass (proto and name for the records, rule 11)
//   -> `open` record -> replay sniffed bytes -> relay -> `flow` record;
//      plaintext HTTP/1 whose name mattered goes to the l7 module instead,
//      which serves it request by request, each judged here.
//   h2c whose name matters skips the connection-level decision: the l7
//   module terminates it and each stream is judged here on its own.
//
// Every exit path goes through FlowScope's destructor, which writes the
// one `flow` record and the metrics, so nothing that crossed the gateway
// goes unrecorded.

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "egressd/core/hostname.hpp"
#include "egressd/flow/worker.hpp"
#include "egressd/l7/h2c.hpp"
#include "egressd/l7/http1.hpp"
#include "egressd/log/record.hpp"
#include "egressd/net/socket.hpp"
#include "flow_parts.hpp"
#include "proxy_listener.hpp"

namespace egressd::flow {
namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::awaitable;
using asio::ip::tcp;

namespace {

// What the client's first bytes say, into the record: proto, TLS details,
// and the name as canonical text when valid (raw otherwise, escaped by the
// log, so operators see it).
void name_from_bytes(log::FlowRecord& rec, const Sniffed& sniffed) {
  rec.proto = sniffed.proto;
  if (sniffed.proto == Proto::tls) {
    rec.ech = sniffed.ech;
    if (!sniffed.alpn.empty()) rec.alpn = sniffed.alpn;
  }
  if (sniffed.name) {
    auto canonical = canonicalize_name(*sniffed.name);
    rec.add_host(canonical.name ? std::string_view(canonical.name->text)
                                : std::string_view(*sniffed.name));
  }
}

// One request on an inspected connection (an HTTP/1 request, an h2c
// stream), judged like a new flow: its name, the connection's source and
// original destination, destination integrity for that name, against the
// policy in force when it arrives. A pass without a checked address to
// connect to is builtin:integrity. Notes the verdict and the request.
struct RequestJudgement {
  log::Decision decision = log::Decision::deny;
  std::string rule;
  std::string reason;
  std::optional<config::Integrity> integrity;
  std::optional<Endpoint> upstream;  // when it passes: the checked address
};

awaitable<RequestJudgement> judge_request(Worker& worker, const ListenerInfo& listener,
                                          const log::FlowRecord& rec, const Endpoint& dst,
                                          Proto proto, std::string_view name) {
  const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
  const policy::CompiledPolicy& policy = *snapshot->policy;
  const policy::SelectorSet selectors = policy.match_identity(rec.source_pod.get());
  policy::FlowFacts facts;
  facts.listener = listener.name;
  facts.transparent = true;
  facts.src = rec.src.ip;
  facts.dst = dst.ip;
  facts.port = dst.port;
  facts.proto = proto;
  facts.name = name;
  facts.today = std::chrono::floor<std::chrono::days>(std::chrono::system_clock::now());
  facts.identity = rec.source_pod.get();
  facts.selectors = &selectors;
  const policy::Outcome outcome = co_await decide_resolving(worker, policy, facts);
  const policy::Verdict& verdict = outcome.verdict;
  note_verdict(worker, verdict);
  RequestJudgement out;
  out.decision = to_log(verdict.decision);
  out.rule = std::string(verdict.rule);
  out.reason = verdict.reason;
  out.integrity = verdict.integrity;
  if (out.decision != log::Decision::deny) {
    if (outcome.needs_lookup || !verdict.connect_to) {
      out.decision = log::Decision::deny;
      out.rule = "builtin:integrity";
      out.reason = "no address to connect to";
    } else {
      out.upstream = Endpoint{*verdict.connect_to, dst.port};  // never re-resolved
    }
  }
  note_http_request(worker, proto, out.decision);
  co_return out;
}

// A transparent HTTP/1 connection after its first request was judged and
// connected: the l7 module serves it request by request, and each later
// request is judged here like a new flow (its Host, the same source and
// original destination, destination integrity for the new name) against
// the policy in force when it arrives. A refused request gets the 403 and
// the connection ends; nothing after it reaches any upstream.
awaitable<void> serve_http1_flow(Worker& worker, FlowScope& flow, const ListenerInfo& listener,
                                 tcp::socket& client, tcp::socket& upstream,
                                 std::vector<std::uint8_t>& first) {
  log::FlowRecord& rec = flow.record;
  const Endpoint dst = *rec.dst;
  boost::system::error_code ignored;
  const auto stopped_reason = [&] {
    if (flow.control.stop_reason) return to_close(*flow.control.stop_reason);
    return flow.active().stop_reason == relay::EndReason::revoked ? log::CloseReason::revoked
                                                                  : log::CloseReason::drained;
  };

  const l7::Http1Judge judge = [&](const sniff::Http1Head& head) -> awaitable<l7::RequestVerdict> {
    auto canonical = canonicalize_name(head.host.name);
    const std::string shown = canonical.name ? canonical.name->text : head.host.name;
    rec.add_host(shown);
    RequestJudgement judged =
        co_await judge_request(worker, listener, rec, dst, Proto::http, head.host.name);
    rec.decision = judged.decision;
    rec.rule = std::move(judged.rule);
    rec.reason = std::move(judged.reason);
    rec.integrity = judged.integrity;
    l7::RequestVerdict out;
    if (!judged.upstream) {
      out.refusal = http_response(
          403, "Forbidden", "egressd: access to " + shown + " denied by rule " + rec.rule + "\n");
      co_return out;
    }
    // The same checked address: reuse the connection while it is open.
    const Endpoint want = *judged.upstream;
    if (upstream.is_open() && rec.upstream == want) {
      out.upstream = &upstream;
      co_return out;
    }
    const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
    upstream.close(ignored);
    upstream = tcp::socket(client.get_executor());
    const auto ec = co_await connect_upstream(upstream, want, snapshot->upstream_mark,
                                              snapshot->timeouts.connect);
    if (ec) {
      rec.reason += "; connect to " + want.to_string() + " failed: " + ec.message();
      note_connect_failure(worker, connect_failure_reason(ec));
      out.refusal =
          ec == asio::error::timed_out
              ? http_response(504, "Gateway Timeout",
                              "egressd: " + want.to_string() + " did not answer in time\n")
              : http_response(502, "Bad Gateway",
                              "egressd: cannot connect to " + want.to_string() + "\n");
      rec.close = log::CloseReason::upstream_connect_failed;
      co_return out;
    }
    rec.upstream = want;
    out.upstream = &upstream;
    co_return out;
  };

  beast::flat_buffer in;
  {
    auto room = in.prepare(first.size());
    std::memcpy(room.data(), first.data(), first.size());
    in.commit(first.size());
    std::vector<std::uint8_t>().swap(first);
  }
  const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
  flow.active().idle = snapshot->timeouts.idle;
  flow.control.last_activity = std::chrono::steady_clock::now();
  l7::Http1Options options;
  options.idle = snapshot->timeouts.idle;
  options.buffers = &worker.buffers();
  options.draining = worker.services().draining;
  l7::Http1Outcome served =
      co_await l7::serve_http1(client, in, upstream, judge, flow.control, options);

  using End = l7::Http1Outcome::End;
  switch (served.end) {
    case End::client_closed:
      rec.close = log::CloseReason::eof;
      break;
    case End::closed_after_response:
      rec.close = log::CloseReason::eof;
      client.shutdown(tcp::socket::shutdown_send, ignored);
      break;
    case End::refused:
      if (rec.close != log::CloseReason::upstream_connect_failed)
        rec.close = log::CloseReason::denied;
      co_await answer_and_close(client, served.refusal);
      break;
    case End::malformed: {
      flow.close_undecided(log::CloseReason::malformed,
                           "malformed request: " + std::string(served.problem));
      const std::string response = http_response(
          400, "Bad Request", "egressd: bad request: " + std::string(served.problem) + "\n");
      co_await answer_and_close(client, response);
      break;
    }
    case End::idle:
      rec.close = log::CloseReason::idle_timeout;
      break;
    case End::reset:
      rec.close = flow.control.stop_reason ? stopped_reason() : log::CloseReason::reset;
      break;
    case End::stopped:
      rec.close = stopped_reason();
      break;
    case End::no_response: {
      rec.close = log::CloseReason::reset;
      rec.reason += "; " + std::string(served.problem);
      const std::string response =
          http_response(502, "Bad Gateway", "egressd: " + std::string(served.problem) + "\n");
      co_await answer_and_close(client, response);
      break;
    }
    case End::upgraded: {
      // WebSocket and the like, after a 101 to a request that was allowed:
      // opaque bytes from here on.
      if (!served.upstream_leftover.empty()) {
        auto [ec, n] =
            co_await asio::async_write(client, asio::buffer(served.upstream_leftover), kNoThrow);
        flow.control.bytes_down += n;
        if (ec) {
          rec.close = log::CloseReason::reset;
          break;
        }
      }
      const auto data = in.data();
      std::vector<std::uint8_t> rest(static_cast<const std::uint8_t*>(data.data()),
                                     static_cast<const std::uint8_t*>(data.data()) + data.size());
      in.consume(in.size());
      rec.close = co_await relay_flow(worker, flow, client, *served.upstream, rest,
                                      snapshot->timeouts.idle);
      break;
    }
  }
}

// A transparent h2c connection on a port where names matter: no decision
// is taken for the connection (it has no name); the l7 module terminates
// HTTP/2 and each stream's :authority is judged here like a new flow (the
// same source and original destination, destination integrity for the
// name) against the policy in force when the stream arrives. A denied
// stream gets its 403 and a `request` record; the others go on. The record
// carries every name (`host`, `hosts`) and the last stream's decision; the
// `open` record is written when the first upstream connection is up. A
// connection that ends without a stream is recorded like any undecided
// flow: deny, builtin:<close reason>.
awaitable<void> serve_h2c_flow(Worker& worker, FlowScope& flow, const ListenerInfo& listener,
                               tcp::socket& client, std::vector<std::uint8_t>& first) {
  log::FlowRecord& rec = flow.record;
  const Endpoint dst = *rec.dst;
  bool opened = false;
  bool connect_failed = false;

  l7::H2cHooks hooks;
  // The record's decision is the last stream's (the highest stream id
  // judged so far), whatever order concurrent judgements end in.
  std::int32_t latest = 0;
  hooks.judge = [&](const l7::H2cRequest& request) -> awaitable<l7::StreamVerdict> {
    auto canonical = canonicalize_name(request.name);
    const std::string shown = canonical.name ? canonical.name->text : request.name;
    if (!shown.empty()) rec.add_host(shown);
    log::FlowRecord taken;  // this stream's decision, rule, reason, integrity
    l7::StreamVerdict out;
    if (!request.problem.empty()) {
      // Malformed as a request (two origins named): refused on its own.
      taken.decision = log::Decision::deny;
      taken.rule = "builtin:malformed";
      taken.reason = "malformed request: " + std::string(request.problem);
      out.status = 400;
      out.body = "egressd: bad request: " + std::string(request.problem) + "\n";
      note_http_request(worker, Proto::h2c, taken.decision);
    } else {
      RequestJudgement judged =
          co_await judge_request(worker, listener, rec, dst, Proto::h2c, request.name);
      taken.decision = judged.decision;
      taken.rule = std::move(judged.rule);
      taken.reason = std::move(judged.reason);
      taken.integrity = judged.integrity;
      out.upstream = judged.upstream;
      if (!out.upstream) {
        out.body = "egressd: access to " + (shown.empty() ? std::string("(none)") : shown) +
                   " denied by rule " + taken.rule + "\n";
      }
    }
    if (request.stream_id >= latest) {
      latest = request.stream_id;
      rec.decision = taken.decision;
      rec.rule = taken.rule;
      rec.reason = taken.reason;
      rec.integrity = taken.integrity;
    }
    if (!out.upstream) {
      // The `request` record: this stream's name and verdict.
      log::FlowRecord denied = rec;
      denied.event = log::Event::request;
      denied.host.reset();
      denied.hosts.clear();
      if (!shown.empty()) denied.add_host(shown);
      denied.decision = taken.decision;
      denied.rule = std::move(taken.rule);
      denied.reason = std::move(taken.reason);
      denied.integrity = taken.integrity;
      denied.upstream.reset();
      submit_record(worker, std::move(denied));
    }
    co_return out;
  };
  hooks.connect = [&](tcp::socket& upstream,
                      const Endpoint& to) -> awaitable<boost::system::error_code> {
    const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
    const auto ec = co_await connect_upstream(upstream, to, snapshot->upstream_mark,
                                              snapshot->timeouts.connect);
    if (ec) {
      if (!flow.control.stop_reason) {
        connect_failed = true;
        rec.reason += "; connect to " + to.to_string() + " failed: " + ec.message();
        note_connect_failure(worker, connect_failure_reason(ec));
      }
      co_return ec;
    }
    if (!opened) {
      // The `open` record: a long h2c connection still leaves a trace.
      opened = true;
      flow.active().admitted = true;  // policy.revoke_on_reload judges its names again
      rec.upstream = to;
      log::FlowRecord open = rec;
      open.event = log::Event::open;
      submit_record(worker, std::move(open));
    }
    co_return ec;
  };

  const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
  l7::H2cOptions options;
  options.idle = snapshot->timeouts.idle;
  options.draining = worker.services().draining;
  std::vector<std::uint8_t> preface;
  preface.swap(first);
  const l7::H2cOutcome served =
      co_await l7::serve_h2c(client, preface, hooks, flow.control, options);

  using End = l7::H2cOutcome::End;
  log::CloseReason close = log::CloseReason::eof;
  switch (served.end) {
    case End::done:
      close = opened || !connect_failed ? log::CloseReason::eof
                                        : log::CloseReason::upstream_connect_failed;
      break;
    case End::protocol_error:
      close = log::CloseReason::malformed;
      break;
    case End::idle:
      close = log::CloseReason::idle_timeout;
      break;
    case End::reset:
      close = log::CloseReason::reset;
      break;
    case End::stopped:
      close = flow.control.stop_reason ? to_close(*flow.control.stop_reason)
                                       : log::CloseReason::drained;
      break;
  }
  if (served.streams == 0) {
    flow.close_undecided(close, close == log::CloseReason::malformed
                                    ? "malformed h2c: the client broke HTTP/2 before a request"
                                    : "the h2c connection ended before any request");
    co_return;
  }
  rec.close = close;
}

}  // namespace

namespace {

// Where a flow goes once it is admitted (or that it is over).
struct Admission {
  enum class Next : std::uint8_t { done, relay, http1, h2c };
  Next next = Next::done;
  std::chrono::milliseconds idle{0};  // timeouts.idle in force at the decision (relay)
};

// Everything from accept to the `open` record: who and where, sniff,
// decide, connect. A coroutine of its own so that its many locals (the
// sniff result, the facts, the verdict, the `open` record's copy) are gone
// before the flow's long life in the relay: run_flow's frame is what an
// idle flow keeps.
awaitable<Admission> admit_flow(Worker& worker, FlowScope& flow, const ListenerInfo& listener_info,
                                tcp::socket& client, tcp::socket& upstream,
                                std::vector<std::uint8_t>& sniffed_bytes,
                                const tcp::endpoint& peer) {
  const ListenerInfo* listener = &listener_info;
  const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
  log::FlowRecord& rec = flow.record;
  boost::system::error_code ignored;

  // Who is calling, and where to.
  const int fd = client.native_handle();
  if (!flow.identify_source(peer)) co_return Admission{};
  std::optional<Endpoint> dst;
  if (listener->proxy_protocol) {
    // The peer is a node agent: the pod and the original destination come
    // from its PROXY header, and only trusted peers may send one.
    if (!trusted_peer(listener->trusted, rec.src.ip)) {
      rec.decision = log::Decision::deny;
      rec.rule = "builtin:untrusted-peer";
      rec.reason = "the peer is not in proxy_protocol.trusted";
      rec.close = log::CloseReason::denied;
      client.close(ignored);
      co_return Admission{};
    }
    const ProxyRead header =
        co_await read_proxy_header(client, sniffed_bytes, snapshot->timeouts.sniff);
    if (header.end != ProxyRead::End::ok) {
      flow.close_undecided(
          header.end == ProxyRead::End::stopped
              ? (flow.active().stop_reason == relay::EndReason::revoked ? log::CloseReason::revoked
                                                                        : log::CloseReason::drained)
              : log::CloseReason::malformed,
          std::string(header.problem));
      client.close(ignored);
      co_return Admission{};
    }
    rec.src = header.source;
    dst = header.destination;
  } else {
    dst = listener->mode == config::ListenerMode::redirect
              ? net::original_destination(fd, rec.src.ip.family())
              : net::local_endpoint(fd);
    // A connection made to the listener itself (not redirected) has no
    // original destination: its destination is the gateway, which the
    // guard refuses.
    if (!dst) dst = net::local_endpoint(fd);
  }
  if (!dst) {
    flow.close_undecided(log::CloseReason::reset, "the original destination is unknown");
    co_return Admission{};
  }
  rec.dst = *dst;

  if (!take_limits(worker, flow, client)) co_return Admission{};

  // Sniff, unless no name can change the decision (rule 11: server-first
  // protocols must not wait for client bytes).
  // Who the source is as a pod (kubernetes index; nullptr = a pod-less or
  // unknown IP, which no identity selector matches), and which identity
  // selectors of this policy it satisfies: once per flow.
  rec.source_pod = find_source_pod(worker, rec.src.ip);
  const policy::CompiledPolicy& policy = *snapshot->policy;
  const policy::SelectorSet selectors = policy.match_identity(rec.source_pod.get());
  Sniffed sniffed;
  const bool decided_at_once =
      !policy.name_can_matter(listener->name, rec.src.ip, dst->port, rec.source_pod.get());
  if (!decided_at_once) {
    sniffed = co_await sniff_client(client, sniffed_bytes, snapshot->timeouts.sniff);
  }
  rec.proto = sniffed.proto;
  switch (sniffed.end) {
    case Sniffed::End::done:
      break;
    case Sniffed::End::timeout:
      flow.close_undecided(log::CloseReason::sniff_timeout,
                           "the client sent too little to classify the flow within timeouts.sniff");
      client.close(ignored);
      co_return Admission{};
    case Sniffed::End::malformed:
      flow.close_undecided(log::CloseReason::malformed, std::string("malformed ") +
                                                            std::string(to_string(sniffed.proto)) +
                                                            ": " + std::string(sniffed.problem));
      if (sniffed.http_malformed) {
        // Named, not a temporary inside co_await: g++ 12 may destroy such
        // temporaries twice.
        const std::string response = http_response(
            400, "Bad Request", "egressd: bad request: " + std::string(sniffed.problem) + "\n");
        co_await answer_and_close(client, response);
      } else {
        client.close(ignored);
      }
      co_return Admission{};
    case Sniffed::End::closed:
      flow.close_undecided(log::CloseReason::eof, "the client closed before sending anything");
      co_return Admission{};
    case Sniffed::End::reset:
      flow.close_undecided(log::CloseReason::reset,
                           "the client reset the connection while sniffing");
      co_return Admission{};
    case Sniffed::End::stopped:
      flow.close_undecided(flow.active().stop_reason == relay::EndReason::revoked
                               ? log::CloseReason::revoked
                               : log::CloseReason::drained,
                           "the gateway stopped the flow while sniffing");
      co_return Admission{};
  }
  // h2c where names matter: judged stream by stream, not here.
  if (sniffed.proto == Proto::h2c && !decided_at_once) {
    co_return Admission{Admission::Next::h2c};
  }

  // Decide.
  policy::FlowFacts facts;
  facts.listener = listener->name;
  facts.transparent = listener->mode != config::ListenerMode::explicit_proxy;
  facts.src = rec.src.ip;
  facts.dst = dst->ip;
  facts.port = dst->port;
  facts.proto = sniffed.proto;
  if (sniffed.name) facts.name = *sniffed.name;
  facts.tls_without_sni = sniffed.tls_without_sni;
  facts.ech = sniffed.ech;
  facts.today = std::chrono::floor<std::chrono::days>(rec.time);
  facts.identity = rec.source_pod.get();
  facts.selectors = &selectors;
  name_from_bytes(rec, sniffed);

  const policy::Outcome outcome = co_await decide_resolving(worker, policy, facts);
  const policy::Verdict& verdict = outcome.verdict;
  note_verdict(worker, verdict);
  rec.decision = to_log(verdict.decision);
  rec.rule = std::string(verdict.rule);
  rec.reason = verdict.reason;
  rec.integrity = verdict.integrity;
  if (sniffed.proto == Proto::http) {
    note_http_request(worker, sniffed.proto, rec.decision);
  }

  if (verdict.decision == policy::Decision::deny || outcome.needs_lookup || !verdict.connect_to) {
    if (verdict.decision != policy::Decision::deny) {
      rec.decision = log::Decision::deny;
      rec.rule = "builtin:integrity";
      rec.reason = "no address to connect to";
    }
    rec.close = log::CloseReason::denied;
    switch (sniffed.proto) {
      case Proto::tls: {
        const std::string alert = tls_alert(sniffed.tls_record_version);
        co_await answer_and_close(client, alert);
        break;
      }
      case Proto::http: {
        const std::string host = rec.host ? *rec.host : std::string("(none)");
        const std::string response = http_response(
            403, "Forbidden", "egressd: access to " + host + " denied by rule " + rec.rule + "\n");
        co_await answer_and_close(client, response);
        break;
      }
      default:
        client.close(ignored);
    }
    co_return Admission{};
  }

  flow.active().admitted = true;  // what policy.revoke_on_reload judges again
  flow.active().decided_at_once = decided_at_once;

  // Connect to the address that was checked, never re-resolving.
  const Endpoint upstream_ep{*verdict.connect_to, dst->port};
  flow.active().upstream = &upstream;
  const auto ec = co_await connect_upstream(upstream, upstream_ep, snapshot->upstream_mark,
                                            snapshot->timeouts.connect);
  if (ec) {
    rec.close =
        flow.active().stop_requested
            ? (flow.active().stop_reason == relay::EndReason::revoked ? log::CloseReason::revoked
                                                                      : log::CloseReason::drained)
            : log::CloseReason::upstream_connect_failed;
    if (rec.close == log::CloseReason::upstream_connect_failed) {
      rec.reason += "; connect to " + upstream_ep.to_string() + " failed: " + ec.message();
      note_connect_failure(worker, connect_failure_reason(ec));
    }
    client.close(ignored);
    co_return Admission{};
  }
  rec.upstream = upstream_ep;

  // Decided at once: the client's first bytes, if it speaks first, still
  // name the flow in its records (rule 11); they pass on unheld.
  std::optional<log::CloseReason> ended;
  if (decided_at_once) {
    Observed observed = co_await observe_first_bytes(flow, client, upstream, sniffed_bytes,
                                                     snapshot->timeouts.sniff);
    if (observed.sniffed) name_from_bytes(rec, *observed.sniffed);
    ended = observed.ended;
  }

  // The `open` record: a long tunnel, or a killed process, still leaves a
  // trace.
  {
    log::FlowRecord open = rec;
    open.event = log::Event::open;
    submit_record(worker, std::move(open));
  }
  if (ended) {
    rec.close = *ended;
    co_return Admission{};
  }

  // Plaintext HTTP/1 whose name mattered: every later request is judged
  // too (contract rule 12, "checked per request").
  if (sniffed.proto == Proto::http && !decided_at_once) {
    co_return Admission{Admission::Next::http1};
  }
  co_return Admission{Admission::Next::relay, snapshot->timeouts.idle};
}

}  // namespace

awaitable<void> run_flow(Worker& worker, std::shared_ptr<const ListenerInfo> listener,
                         tcp::socket client, tcp::endpoint peer) {
  FlowScope flow(worker, *listener, client);
  tcp::socket upstream(client.get_executor());
  std::vector<std::uint8_t> first;  // read before the decision; replayed upstream
  const Admission admission =
      co_await admit_flow(worker, flow, *listener, client, upstream, first, peer);
  switch (admission.next) {
    case Admission::Next::done:
      co_return;
    case Admission::Next::h2c:
      co_await serve_h2c_flow(worker, flow, *listener, client, first);
      co_return;
    case Admission::Next::http1:
      co_await serve_http1_flow(worker, flow, *listener, client, upstream, first);
      co_return;
    case Admission::Next::relay:
      flow.record.close =
          co_await relay_flow(worker, flow, client, upstream, first, admission.idle);
      co_return;
  }
}

}  // namespace egressd::flow
