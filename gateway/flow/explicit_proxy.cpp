// The life of one connection on an explicit listener (`mode: explicit`),
// top to bottom:
//
//   record -> who (source) -> limits
//   -> each request: read its head (timeouts.sniff for the first,
//      timeouts.idle between requests; rule 12 checks) -> the target
//      (CONNECT authority or absolute-form URI; IP literals in every
//      spelling normalised by canonicalize_name) -> resolve the name with
//      the shared resolver -> decide for each answer in order, guard first
//      -> deny: 403 | connect to a checked address under timeouts.connect
//      (502 refused/unreachable, 504 timeout)
//   -> CONNECT: 200, rule 8 on the tunnel's first bytes, relay as bytes
//   -> forward: the request with hop-by-hop and Proxy-* fields removed,
//      body streamed; the response streamed back; then the next request
//   -> `flow` record (FlowScope, on every exit path).
//
// The gateway never re-resolves: the address a request connects to is one
// the policy judged for that request.

#include <array>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>

#include "egressd/core/hostname.hpp"
#include "egressd/l7/http1.hpp"
#include "egressd/net/socket.hpp"
#include "egressd/sniff/http1_head.hpp"
#include "flow_parts.hpp"

namespace egressd::flow {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

// "/path?query" of an absolute-form target ("http://host:port/path?query").
std::string origin_form(std::string_view absolute) {
  const std::size_t scheme_end = absolute.find("://");
  if (scheme_end == std::string_view::npos) return "/";
  const std::string_view rest = absolute.substr(scheme_end + 3);
  const std::size_t path = rest.find_first_of("/?");
  if (path == std::string_view::npos) return "/";
  std::string out(rest.substr(path));
  if (out.front() == '?') out.insert(out.begin(), '/');
  return out;
}

// The one request the flow is judging: its target and what the policy said.
struct Judged {
  std::string name;  // canonical name or literal text
  bool name_is_ip = false;
  Endpoint endpoint;  // the checked address the gateway connects to
  policy::Verdict verdict;
  std::vector<IpAddress> passing;  // every answer the policy let through, in order
  bool dns_failed = false;
  std::string dns_error;
};

// Resolves and judges one target. Every answer is decided on its own (the
// guard sees each one); the first that passes is where the gateway
// connects. When none passes, the first answer's verdict is the one kept.
awaitable<Judged> judge_target(Worker& worker, const Snapshot& snapshot,
                               const ListenerInfo& listener, const IpAddress& src,
                               const PodIdentity* source_pod, const sniff::Authority& target,
                               Proto proto, std::chrono::system_clock::time_point now) {
  Judged j;
  const std::uint16_t port = target.port.value_or(80);
  policy::FlowFacts facts;
  facts.listener = listener.name;
  facts.transparent = false;
  facts.src = src;
  facts.port = port;
  facts.proto = proto;
  facts.name = target.name;
  facts.today = std::chrono::floor<std::chrono::days>(now);
  facts.identity = source_pod;
  const policy::SelectorSet selectors = snapshot.policy->match_identity(source_pod);
  facts.selectors = &selectors;
  const policy::AssumeIntegrity no_lookup;  // explicit mode performs no integrity check

  auto canonical = canonicalize_name(target.name);
  if (!canonical.name) {
    // Rule 2 decides before any address is looked at.
    j.name = target.name;
    j.verdict = snapshot.policy->decide(facts, no_lookup).verdict;
    co_return j;
  }
  j.name = canonical.name->text;
  std::vector<IpAddress> answers;
  if (canonical.name->ip) {
    j.name_is_ip = true;
    answers.push_back(*canonical.name->ip);
  } else {
    // A name the policy denies whatever its address is never looked up:
    // the gateway's resolver must not carry data out for a denied client.
    if (auto v = snapshot.policy->decide_by_name(facts)) {
      j.verdict = std::move(*v);
      co_return j;
    }
    ResolvedName resolved = co_await resolve_name(worker, j.name);
    // Only the current answer: the verify window's history is for checking
    // a client's choice, not for choosing (a rebinding name's earlier
    // answer is not where it points now).
    const std::size_t current = std::min(resolved.answer.current, resolved.answer.addresses.size());
    if (!resolved.answer.ok() || current == 0) {
      j.dns_failed = true;
      j.dns_error = resolved.answer.ok() ? "no addresses" : resolved.answer.error;
      co_return j;
    }
    resolved.answer.addresses.resize(current);
    answers = std::move(resolved.answer.addresses);
  }
  std::optional<policy::Verdict> first;
  for (const IpAddress& a : answers) {
    facts.dst = a;
    policy::Verdict v = snapshot.policy->decide(facts, no_lookup).verdict;
    const bool passes = v.decision != policy::Decision::deny;
    if (passes) {
      if (j.passing.empty()) {
        j.endpoint = Endpoint{a, port};
        j.verdict = std::move(v);
      }
      j.passing.push_back(a);
    } else if (!first) {
      first = std::move(v);
      j.endpoint = Endpoint{a, port};
    }
  }
  if (j.passing.empty()) j.verdict = std::move(*first);
  co_return j;
}

// Rule 8 on a CONNECT tunnel: when the client's first bytes are a TLS
// ClientHello, its SNI must be the CONNECT target; a hello without SNI
// follows tls.require_sni (rule 9) when the target is a name. When the
// upstream speaks first (SSH, SMTP), nothing is held back: the tunnel is
// relayed at once.
awaitable<void> run_tunnel(Worker& worker, const Snapshot& snapshot, FlowScope& flow,
                           tcp::socket& client, tcp::socket& upstream, beast::flat_buffer& in,
                           const std::string& target_name, bool target_is_ip,
                           const policy::Verdict& verdict) {
  log::FlowRecord& rec = flow.record;
  static constexpr std::string_view kEstablished = "HTTP/1.1 200 Connection established\r\n\r\n";
  {
    auto [ec, n] = co_await asio::async_write(client, asio::buffer(kEstablished), kNoThrow);
    if (ec) {
      rec.close = log::CloseReason::reset;
      co_return;
    }
  }
  const auto data = in.data();
  std::vector<std::uint8_t> first(static_cast<const std::uint8_t*>(data.data()),
                                  static_cast<const std::uint8_t*>(data.data()) + data.size());
  in.consume(in.size());
  std::optional<Sniffed> sniffed;
  if (!first.empty()) sniffed = classify(first, first.size() >= kMaxSniffBytes);
  asio::steady_timer deadline(client.get_executor());
  deadline.expires_after(snapshot.timeouts.idle);
  while (!sniffed) {
    const std::size_t old = first.size();
    const std::size_t room = std::min(kSniffChunk * 8, kMaxSniffBytes - old);
    first.resize(old + room);
    auto r = co_await (client.async_read_some(asio::buffer(first.data() + old, room), kNoThrow) ||
                       upstream.async_wait(tcp::socket::wait_read, kNoThrow) ||
                       deadline.async_wait(kNoThrow));
    if (r.index() != 0) {
      first.resize(old);
      if (r.index() == 1) break;  // the server speaks first
      rec.close = log::CloseReason::idle_timeout;
      co_return;
    }
    auto [ec, n] = std::get<0>(r);
    first.resize(old + n);
    if (ec) {
      if (ec == asio::error::eof && !first.empty()) {
        sniffed = classify(first, /*full=*/true);
        break;
      }
      rec.close = flow.control.stop_reason ? to_close(*flow.control.stop_reason)
                  : ec == asio::error::eof ? log::CloseReason::eof
                                           : log::CloseReason::reset;
      co_return;
    }
    sniffed = classify(first, first.size() >= kMaxSniffBytes);
  }

  if (sniffed && sniffed->proto == Proto::tls) {
    rec.ech = sniffed->ech;
    if (!sniffed->alpn.empty()) rec.alpn = std::move(sniffed->alpn);
    std::string_view rule;
    std::string reason;
    log::CloseReason close = log::CloseReason::denied;
    const bool allowed_by_cidr = !verdict.matched_by_host && verdict.rule != "default" &&
                                 !verdict.rule.starts_with("builtin:");
    if (sniffed->end == Sniffed::End::malformed) {
      rule = "builtin:malformed";
      reason = "malformed TLS ClientHello in the tunnel: " + std::string(sniffed->problem);
      close = log::CloseReason::malformed;
    } else if (sniffed->name) {
      auto sni = canonicalize_name(*sniffed->name);
      if (!sni.name || sni.name->text != target_name) {
        rule = "builtin:sni-mismatch";
        reason = "the ClientHello's SNI " +
                 (sni.name ? sni.name->text : std::string("(an invalid name)")) +
                 " differs from the CONNECT target " + target_name;
      }
    } else if (!target_is_ip && snapshot.tls.require_sni && !allowed_by_cidr) {
      rule = "builtin:no-sni";
      reason =
          "TLS ClientHello without SNI in a tunnel to " + target_name + "; tls.require_sni is true";
    }
    if (!rule.empty()) {
      rec.decision = log::Decision::deny;
      rec.rule = std::string(rule);
      rec.reason = std::move(reason);
      rec.integrity.reset();
      rec.close = close;
      boost::system::error_code ignored;
      upstream.close(ignored);
      const std::string alert = tls_alert(sniffed->tls_record_version);
      co_await answer_and_close(client, alert);
      co_return;
    }
  }

  rec.close = co_await relay_flow(worker, flow, client, upstream, first, snapshot.timeouts.idle);
}

}  // namespace

awaitable<void> run_explicit_flow(Worker& worker, std::shared_ptr<const ListenerInfo> listener,
                                  tcp::socket client, tcp::endpoint peer) {
  FlowScope flow(worker, *listener, client);
  log::FlowRecord& rec = flow.record;
  boost::system::error_code ignored;

  // Who is calling.
  if (!flow.identify_source(peer)) co_return;
  if (!take_limits(worker, flow, client)) co_return;
  rec.source_pod = find_source_pod(worker, rec.src.ip);

  beast::flat_buffer in;           // client bytes not yet consumed
  beast::flat_buffer upstream_in;  // upstream bytes not yet consumed
  tcp::socket upstream(client.get_executor());
  std::optional<Endpoint> upstream_ep;  // what `upstream` is connected to
  bool opened = false;                  // the `open` record is written
  bool first_request = true;
  // Why the gateway ended the flow: the idle sweep, a drain or a revoke.
  const auto stopped_reason = [&] {
    if (flow.control.stop_reason) return to_close(*flow.control.stop_reason);
    return flow.active().stop_reason == relay::EndReason::revoked ? log::CloseReason::revoked
                                                                  : log::CloseReason::drained;
  };

  for (;;) {
    // The policy in force when the request arrives (contract: keep-alive
    // requests are checked one by one).
    const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
    l7::HeadRead read = co_await l7::read_request_head(
        client, in, first_request ? snapshot->timeouts.sniff : snapshot->timeouts.idle,
        flow.control);
    if (flow.control.stop_reason) read.end = l7::HeadRead::End::stopped;
    // No request to judge: before the first one the flow closes undecided
    // (builtin:<reason>); later, it keeps the last request's decision.
    const auto end_without_request = [&](log::CloseReason reason, std::string why) {
      if (first_request) {
        flow.close_undecided(reason, std::move(why));
      } else {
        rec.close = reason;
      }
    };
    switch (read.end) {
      case l7::HeadRead::End::head:
        break;
      case l7::HeadRead::End::closed:
        end_without_request(log::CloseReason::eof, "the client closed before sending anything");
        co_return;
      case l7::HeadRead::End::timeout:
        end_without_request(
            first_request ? log::CloseReason::sniff_timeout : log::CloseReason::idle_timeout,
            "no complete request head within timeouts.sniff");
        client.close(ignored);
        co_return;
      case l7::HeadRead::End::malformed: {
        flow.close_undecided(log::CloseReason::malformed,
                             "malformed request: " + std::string(read.problem));
        if (!first_request) rec.proto = Proto::http;
        const std::string response = http_response(
            400, "Bad Request", "egressd: bad request: " + std::string(read.problem) + "\n");
        co_await answer_and_close(client, response);
        co_return;
      }
      case l7::HeadRead::End::reset:
        end_without_request(log::CloseReason::reset, "the client reset the connection");
        co_return;
      case l7::HeadRead::End::stopped:
        end_without_request(stopped_reason(), "the gateway stopped the flow");
        co_return;
    }
    const sniff::Http1Head& head = read.head;
    const bool is_connect = head.connect;
    rec.proto = is_connect ? Proto::connect : Proto::http;

    // The target: a CONNECT authority with a port, or an http:// URI.
    std::string_view bad_target;
    if (is_connect) {
      if (!head.target_authority || !head.target_authority->port) {
        bad_target = "a CONNECT target needs host:port";
      }
    } else if (!head.absolute_form || !head.target_authority) {
      bad_target = "a proxy request needs an absolute-form target (http://host/...)";
    } else if (head.target_scheme != "http") {
      bad_target = "only http:// targets are forwarded; use CONNECT for TLS";
    }
    if (!bad_target.empty()) {
      flow.close_undecided(log::CloseReason::malformed,
                           "malformed request: " + std::string(bad_target));
      const std::string response = http_response(
          400, "Bad Request", "egressd: bad request: " + std::string(bad_target) + "\n");
      co_await answer_and_close(client, response);
      co_return;
    }
    const sniff::Authority& target = *head.target_authority;

    // Resolve and decide.
    Judged judged = co_await judge_target(worker, *snapshot, *listener, rec.src.ip,
                                          rec.source_pod.get(), target, rec.proto, rec.time);
    rec.add_host(judged.name);
    note_verdict(worker, judged.verdict);
    if (judged.dns_failed) {
      // A name that does not resolve cannot be judged by address; it is
      // never an allow.
      rec.decision = log::Decision::deny;
      rec.rule = "builtin:integrity";
      rec.reason = "DNS lookup for " + judged.name + " failed: " + judged.dns_error;
      rec.close = log::CloseReason::upstream_connect_failed;
      rec.dst.reset();
      note_http_request(worker, rec.proto, rec.decision);
      note_connect_failure(worker, "resolve");
      const std::string response =
          http_response(502, "Bad Gateway", "egressd: cannot resolve " + judged.name + "\n");
      co_await answer_and_close(client, response);
      co_return;
    }
    const policy::Verdict& verdict = judged.verdict;
    rec.decision = to_log(verdict.decision);
    rec.rule = std::string(verdict.rule);
    rec.reason = verdict.reason;
    // No integrity check is made in explicit mode (the address is the
    // gateway's own resolution): the record names none.
    rec.integrity.reset();
    if (judged.endpoint.port != 0) {
      rec.dst = judged.endpoint;
    } else {
      rec.dst.reset();
    }
    note_http_request(worker, rec.proto, rec.decision);
    if (verdict.decision == policy::Decision::deny) {
      rec.close = log::CloseReason::denied;
      const std::string response =
          http_response(403, "Forbidden",
                        "egressd: access to " + judged.name + " denied by rule " + rec.rule + "\n");
      co_await answer_and_close(client, response);
      co_return;
    }

    // Connect, unless the upstream connection of the previous request
    // already goes to this very address.
    const Endpoint want = judged.endpoint;
    if (!upstream_ep || *upstream_ep != want || !upstream.is_open()) {
      upstream.close(ignored);
      upstream_in.consume(upstream_in.size());
      upstream_ep.reset();
      flow.active().upstream = &upstream;
      boost::system::error_code ec;
      Endpoint tried = want;
      for (const IpAddress& a : judged.passing) {
        tried = Endpoint{a, want.port};
        upstream = tcp::socket(client.get_executor());
        ec = co_await connect_upstream(upstream, tried, snapshot->upstream_mark,
                                       snapshot->timeouts.connect);
        if (!ec) break;
        if (flow.control.stop_reason) break;
      }
      if (ec) {
        if (flow.control.stop_reason || flow.active().stop_requested) {
          rec.close = stopped_reason();
          co_return;
        }
        rec.close = log::CloseReason::upstream_connect_failed;
        rec.reason += "; connect to " + tried.to_string() + " failed: " + ec.message();
        note_connect_failure(worker, connect_failure_reason(ec));
        const bool timed_out = ec == asio::error::timed_out;
        const std::string response =
            timed_out ? http_response(504, "Gateway Timeout",
                                      "egressd: " + tried.to_string() + " did not answer in time\n")
                      : http_response(502, "Bad Gateway",
                                      "egressd: cannot connect to " + tried.to_string() + "\n");
        co_await answer_and_close(client, response);
        co_return;
      }
      upstream_ep = tried;
      rec.dst = tried;
      rec.upstream = tried;
      flow.active().idle = snapshot->timeouts.idle;
      flow.control.last_activity = std::chrono::steady_clock::now();
      if (!opened) {
        opened = true;
        log::FlowRecord open = rec;
        open.event = log::Event::open;
        submit_record(worker, std::move(open));
      }
    }
    rec.upstream = upstream_ep;

    if (is_connect) {
      // A tunnel is one decision for its whole life: revoke_on_reload may
      // judge it again (forwarded requests are judged one by one anyway).
      flow.active().admitted = true;
      in.consume(head.head_length);
      co_await run_tunnel(worker, *snapshot, flow, client, upstream, in, judged.name,
                          judged.name_is_ip, verdict);
      co_return;
    }

    // Forward one request: Beast reads the head the sniffer has checked
    // (already in `in`), then streams the body.
    http::request_parser<http::buffer_body> request;
    request.header_limit(static_cast<std::uint32_t>(sniff::kDefaultMaxHttp1Head));
    request.body_limit(boost::none);
    {
      auto [ec, n] = co_await http::async_read_header(client, in, request, kNoThrow);
      if (ec) {
        flow.close_undecided(log::CloseReason::malformed, "malformed request: " + ec.message());
        const std::string response = http_response(400, "Bad Request", "egressd: bad request\n");
        co_await answer_and_close(client, response);
        co_return;
      }
    }
    auto& req = request.get();
    const bool client_keep_alive = head.keep_alive;
    const bool head_request = req.method() == http::verb::head;
    bool upgrade_h2c = false;
    for (const std::string& token : head.upgrade) {
      if (beast::iequals(token, "h2c")) upgrade_h2c = true;
    }
    // Contract rule 12: an h2c upgrade is served over HTTP/1.1; any other
    // upgrade (WebSocket) is passed on and, after a 101, relayed as bytes.
    const bool pass_upgrade = !head.upgrade.empty() && !upgrade_h2c;
    l7::remove_hop_by_hop(req, pass_upgrade);
    if (upgrade_h2c) req.erase("HTTP2-Settings");
    if (pass_upgrade) req.set(http::field::connection, "upgrade");
    req.target(origin_form(head.target));
    req.version(11);
    {
      http::request_serializer<http::buffer_body> sr{req};
      const l7::PooledBuffer chunk(worker.buffers());
      const auto ec = co_await l7::relay_message(client, in, request, sr, upstream, chunk.span(),
                                                 flow.control.bytes_up, flow.control);
      if (ec) {
        rec.close = flow.control.stop_reason ? stopped_reason() : log::CloseReason::reset;
        co_return;
      }
    }

    // The response, and any 1xx before it.
    bool switched = false;
    bool upstream_keep_alive = false;
    bool keep_alive = false;
    for (;;) {
      http::response_parser<http::buffer_body> response;
      response.header_limit(64 * 1024);
      response.body_limit(boost::none);
      if (head_request) response.skip(true);
      auto [ec, n] = co_await http::async_read_header(upstream, upstream_in, response, kNoThrow);
      if (ec) {
        if (flow.control.stop_reason) {
          rec.close = stopped_reason();
          co_return;
        }
        // Nothing of a response reached the client yet: say so.
        rec.close = log::CloseReason::reset;
        rec.reason += "; the upstream sent no valid response: " + ec.message();
        const std::string answer =
            http_response(502, "Bad Gateway", "egressd: the upstream sent no valid response\n");
        co_await answer_and_close(client, answer);
        co_return;
      }
      auto& res = response.get();
      const unsigned status = res.result_int();
      const bool informational = status >= 100 && status < 200 && status != 101;
      switched = status == 101 && pass_upgrade;
      upstream_keep_alive = res.keep_alive() && !response.need_eof();
      const std::atomic<bool>* draining = worker.services().draining;
      keep_alive = client_keep_alive && !switched && !informational && res.keep_alive() &&
                   !response.need_eof() &&
                   (draining == nullptr || !draining->load(std::memory_order_relaxed));
      l7::remove_hop_by_hop(res, switched);
      if (switched) res.set(http::field::connection, "upgrade");
      if (!informational && !switched) res.keep_alive(keep_alive);
      http::response_serializer<http::buffer_body> sr{res};
      const l7::PooledBuffer chunk(worker.buffers());
      const auto wec =
          co_await l7::relay_message(upstream, upstream_in, response, sr, client, chunk.span(),
                                     flow.control.bytes_down, flow.control);
      if (wec) {
        rec.close = flow.control.stop_reason ? stopped_reason() : log::CloseReason::reset;
        co_return;
      }
      if (!informational) break;
    }
    if (switched) {
      // WebSocket and the like: what either side sent past the heads goes
      // first, then the connection is relayed as opaque bytes.
      if (upstream_in.size() > 0) {
        auto [ec, n] = co_await asio::async_write(client, upstream_in.data(), kNoThrow);
        flow.control.bytes_down += n;
        upstream_in.consume(upstream_in.size());
        if (ec) {
          rec.close = log::CloseReason::reset;
          co_return;
        }
      }
      const auto data = in.data();
      std::vector<std::uint8_t> first(static_cast<const std::uint8_t*>(data.data()),
                                      static_cast<const std::uint8_t*>(data.data()) + data.size());
      in.consume(in.size());
      rec.close =
          co_await relay_flow(worker, flow, client, upstream, first, snapshot->timeouts.idle);
      co_return;
    }
    if (!keep_alive) {
      rec.close = log::CloseReason::eof;
      client.shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    if (!upstream_keep_alive) {
      upstream.close(ignored);
      upstream_ep.reset();
    }
    first_request = false;
  }
}

}  // namespace egressd::flow
