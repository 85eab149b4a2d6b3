// The life of one connection, top to bottom:
//
//   record -> who and where (source, original destination; from a trusted
//   peer's PROXY header on a proxy_protocol listener) -> limits
//   -> sniff under timeouts.sniff (skipped when no name can matter, rule 11)
//   -> decide (with a DNS lookup when destination integrity needs one)
//   -> deny: what the client sees (TLS alert, HTTP 403, close)
//   -> connect under timeouts.connect -> `open` record -> replay sniffed bytes
//   -> relay -> `flow` record.
//
// Every exit path goes through FlowScope's destructor, which writes the
// one `flow` record and the metrics, so nothing that crossed the gateway
// goes unrecorded.

#include <array>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "egressd/core/hostname.hpp"
#include "egressd/flow/worker.hpp"
#include "egressd/log/record.hpp"
#include "egressd/net/socket.hpp"
#include "egressd/sniff/client_hello.hpp"
#include "egressd/sniff/detect.hpp"
#include "egressd/sniff/h2c_preface.hpp"
#include "egressd/sniff/http1_head.hpp"
#include "flow_services.hpp"
#include "proxy_listener.hpp"

namespace egressd::flow {
namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kSniffChunk = 2048;
// A ClientHello may span several records up to the parser's cap; anything
// larger has already been judged too_large by the parser.
constexpr std::size_t kMaxSniffBytes = sniff::kMaxClientHelloWireBytes + 512;

// Writes the flow record and metrics on every exit path, and frees what
// the flow holds in the worker's books.
class FlowScope {
 public:
  FlowScope(Worker& worker, const ListenerInfo& listener)
      : worker_(worker), listener_(listener), it_(worker.register_flow()) {
    record.event = log::Event::flow;
    record.time = std::chrono::system_clock::now();
    record.listener = listener.name;
    started_ = std::chrono::steady_clock::now();
    note_flow_opened(worker_, listener_);
  }
  FlowScope(const FlowScope&) = delete;
  FlowScope& operator=(const FlowScope&) = delete;
  ~FlowScope() {
    record.bytes_up = control.bytes_up;
    record.bytes_down = control.bytes_down;
    record.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started_);
    if (source_held_) worker_.services().source_limiter->release(record.src.ip);
    if (connection_held_) worker_.services().connection_limit->release();
    const std::uint64_t reported_up = it_->reported_up;
    const std::uint64_t reported_down = it_->reported_down;
    worker_.unregister_flow(it_);
    note_flow_closed(worker_, listener_, record, reported_up, reported_down);
    submit_record(worker_, std::move(record));
  }

  ActiveFlow& active() { return *it_; }
  void hold_source() { source_held_ = true; }
  void hold_connection() { connection_held_ = true; }

  // A flow closed before any decision: deny with builtin:<close reason>.
  void close_undecided(log::CloseReason reason, std::string why) {
    record.decision = log::Decision::deny;
    record.rule = std::string("builtin:") + std::string(log::to_string(reason));
    record.reason = std::move(why);
    record.close = reason;
  }

  log::FlowRecord record;
  relay::RelayControl control;

 private:
  Worker& worker_;
  const ListenerInfo& listener_;
  std::list<ActiveFlow>::iterator it_;
  std::chrono::steady_clock::time_point started_;
  bool source_held_ = false;
  bool connection_held_ = false;
};

// What sniffing learnt.
struct Sniffed {
  enum class End : std::uint8_t { done, timeout, malformed, closed, reset, stopped };
  End end = End::done;
  Proto proto = Proto::tcp;
  std::optional<std::string> name;  // raw, as in the traffic
  bool tls_without_sni = false;
  bool ech = false;
  std::vector<std::string> alpn;
  std::uint16_t tls_record_version = 0x0303;
  bool http_malformed = false;  // answer 400 (rule 12)
  std::string_view problem;     // static text from the parser
};

// Classifies the first bytes of `buffer` (everything the client has sent).
// Returns nullopt while more bytes are needed.
std::optional<Sniffed> classify(std::span<const std::uint8_t> bytes, bool full) {
  Sniffed s;
  switch (sniff::detect_protocol(bytes)) {
    case sniff::Detected::need_more:
      if (!full) return std::nullopt;
      s.proto = Proto::tcp;
      return s;
    case sniff::Detected::other:
      s.proto = Proto::tcp;
      return s;
    case sniff::Detected::h2c:
      s.proto = Proto::h2c;
      return s;
    case sniff::Detected::tls: {
      auto r = sniff::parse_client_hello(bytes);
      if (r.status == sniff::Status::need_more) {
        if (!full) return std::nullopt;
        r.status = sniff::Status::too_large;
        r.reason = "ClientHello larger than the sniff buffer";
      }
      s.proto = Proto::tls;
      if (r.status != sniff::Status::found) {
        s.end = Sniffed::End::malformed;
        s.problem = r.reason;
        return s;
      }
      if (r.hello.has_sni) {
        s.name = std::move(r.hello.sni);
      } else {
        s.tls_without_sni = true;
      }
      s.ech = r.hello.ech;
      s.alpn = std::move(r.hello.alpn);
      s.tls_record_version = r.hello.record_version;
      return s;
    }
    case sniff::Detected::http1: {
      auto r = sniff::parse_http1_head(bytes);
      if (r.status == sniff::Status::need_more) {
        if (!full) return std::nullopt;
        r.status = sniff::Status::too_large;
      }
      s.proto = Proto::http;
      if (r.status == sniff::Status::not_this_protocol) {
        s.proto = Proto::tcp;
        return s;
      }
      if (r.status != sniff::Status::found) {
        s.end = Sniffed::End::malformed;
        s.http_malformed = true;
        s.problem = r.status == sniff::Status::too_large ? "request head too large" : r.reason;
        return s;
      }
      s.name = std::move(r.head.host.name);
      return s;
    }
  }
  return s;
}

// Reads the client's first bytes until they classify the flow or the sniff
// deadline passes. Bytes read are kept in `buffer` for replay upstream.
awaitable<Sniffed> sniff_client(tcp::socket& client, std::vector<std::uint8_t>& buffer,
                                std::chrono::milliseconds timeout) {
  asio::steady_timer deadline(client.get_executor());
  deadline.expires_after(timeout);
  buffer.reserve(kSniffChunk);
  // Bytes that arrived with a PROXY header may classify the flow already;
  // a client that then waits for the server must not wait for the deadline.
  if (!buffer.empty()) {
    if (auto c = classify(buffer, buffer.size() >= kMaxSniffBytes)) co_return *c;
  }
  for (;;) {
    const std::size_t old = buffer.size();
    const std::size_t room = std::min(kSniffChunk * 8, kMaxSniffBytes - old);
    buffer.resize(old + room);
    auto result =
        co_await (client.async_read_some(asio::buffer(buffer.data() + old, room), kNoThrow) ||
                  deadline.async_wait(kNoThrow));
    if (result.index() == 1) {
      buffer.resize(old);
      Sniffed s;
      s.end = Sniffed::End::timeout;
      co_return s;
    }
    auto [ec, n] = std::get<0>(result);
    buffer.resize(old + n);
    if (ec) {
      Sniffed s;
      if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) {
        s.end = Sniffed::End::stopped;
      } else if (ec == asio::error::eof) {
        // The client half-closed: classify what it sent, if anything.
        if (!buffer.empty()) {
          if (auto c = classify(buffer, /*full=*/true)) co_return *c;
        }
        s.end = Sniffed::End::closed;
      } else {
        s.end = Sniffed::End::reset;
      }
      co_return s;
    }
    if (auto c = classify(buffer, buffer.size() >= kMaxSniffBytes)) co_return *c;
  }
}

// Sends what a denied client sees, then closes gently: half-close first and
// read what the client still sends for a moment, so our last bytes are not
// destroyed by a reset caused by unread input.
awaitable<void> answer_and_close(tcp::socket& client, std::string_view bytes) {
  if (!bytes.empty()) co_await asio::async_write(client, asio::buffer(bytes), kNoThrow);
  boost::system::error_code ec;
  client.shutdown(tcp::socket::shutdown_send, ec);
  asio::steady_timer grace(client.get_executor());
  grace.expires_after(std::chrono::seconds(1));
  std::array<std::uint8_t, 1024> sink{};
  for (int i = 0; i < 64; ++i) {
    auto r = co_await (client.async_read_some(asio::buffer(sink), kNoThrow) ||
                       grace.async_wait(kNoThrow));
    if (r.index() == 1 || std::get<0>(std::get<0>(r))) break;
  }
  client.close(ec);
}

std::string tls_alert(std::uint16_t record_version) {
  // TLSPlaintext { type=alert(21), version, length=2 } Alert { fatal(2), access_denied(49) }
  if (record_version < 0x0301 || record_version > 0x0304) record_version = 0x0303;
  return std::string{'\x15',
                     static_cast<char>(record_version >> 8),
                     static_cast<char>(record_version & 0xFF),
                     '\x00',
                     '\x02',
                     '\x02',
                     '\x31'};
}

std::string http_response(int status, std::string_view text, const std::string& body) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(text) +
                    "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  out += body;
  return out;
}

log::CloseReason to_close(relay::EndReason r) {
  switch (r) {
    case relay::EndReason::eof:
      return log::CloseReason::eof;
    case relay::EndReason::reset:
      return log::CloseReason::reset;
    case relay::EndReason::idle_timeout:
      return log::CloseReason::idle_timeout;
    case relay::EndReason::drained:
      return log::CloseReason::drained;
    case relay::EndReason::revoked:
      return log::CloseReason::revoked;
  }
  return log::CloseReason::eof;
}

log::Decision to_log(policy::Decision d) {
  switch (d) {
    case policy::Decision::allow:
      return log::Decision::allow;
    case policy::Decision::deny:
      return log::Decision::deny;
    case policy::Decision::audit_deny:
      return log::Decision::audit_deny;
  }
  return log::Decision::deny;
}

std::string_view connect_failure_reason(const boost::system::error_code& ec) {
  if (ec == asio::error::connection_refused) return "refused";
  if (ec == asio::error::timed_out) return "timeout";
  if (ec == asio::error::host_unreachable || ec == asio::error::network_unreachable)
    return "unreachable";
  return "other";
}

// Connects under `timeout`; an error value on failure (timed_out on expiry).
awaitable<boost::system::error_code> connect_upstream(tcp::socket& upstream, const Endpoint& to,
                                                      std::uint32_t mark,
                                                      std::chrono::milliseconds timeout) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(to.ip.to_string(), ec);
  if (ec) co_return ec;
  const tcp::endpoint target(address, to.port);
  upstream.open(target.protocol(), ec);
  if (ec) co_return ec;
  if (mark != 0) {
    if (auto err = net::set_mark(upstream.native_handle(), mark)) {
      co_return asio::error::access_denied;
    }
  }
  upstream.set_option(tcp::no_delay(true), ec);
  asio::steady_timer deadline(upstream.get_executor());
  deadline.expires_after(timeout);
  auto r = co_await (upstream.async_connect(target, kNoThrow) || deadline.async_wait(kNoThrow));
  if (r.index() == 1) co_return asio::error::timed_out;
  co_return std::get<0>(std::get<0>(r));
}

}  // namespace

awaitable<void> run_flow(Worker& worker, std::shared_ptr<const ListenerInfo> listener,
                         tcp::socket client) {
  const std::shared_ptr<const Snapshot> snapshot = worker.snapshot();
  FlowScope flow(worker, *listener);
  log::FlowRecord& rec = flow.record;
  flow.active().client = &client;
  flow.active().control = &flow.control;
  flow.active().listener_index = listener->index;
  boost::system::error_code ignored;
  client.set_option(tcp::no_delay(true), ignored);

  // Who is calling, and where to.
  const int fd = client.native_handle();
  if (auto peer = net::peer_endpoint(fd)) {
    rec.src = *peer;
  } else {
    flow.close_undecided(log::CloseReason::reset, "the client left before it could be identified");
    co_return;
  }
  std::vector<std::uint8_t> sniffed_bytes;  // what follows a PROXY header joins it
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
      co_return;
    }
    const ProxyRead header =
        co_await read_proxy_header(client, sniffed_bytes, snapshot->timeouts.sniff);
    if (header.end != ProxyRead::End::ok) {
      flow.close_undecided(header.end == ProxyRead::End::stopped
                               ? (flow.active().stop_reason == relay::EndReason::revoked
                                      ? log::CloseReason::revoked
                                      : log::CloseReason::drained)
                               : log::CloseReason::malformed,
                           std::string(header.problem));
      client.close(ignored);
      co_return;
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
    co_return;
  }
  rec.dst = *dst;

  // Limits.
  if (ConnectionLimit* limit = worker.services().connection_limit) {
    if (!limit->try_acquire()) {
      flow.close_undecided(log::CloseReason::limit, "limits.max_connections reached");
      client.close(ignored);
      co_return;
    }
    flow.hold_connection();
  }
  SourceLimiter* limiter = worker.services().source_limiter;
  if (limiter != nullptr && limiter->enabled()) {
    if (!limiter->try_acquire(rec.src.ip)) {
      flow.close_undecided(log::CloseReason::limit,
                           "limits.max_connections_per_source reached for this source");
      client.close(ignored);
      co_return;
    }
    flow.hold_source();
  }

  // Sniff, unless no name can change the decision (rule 11: server-first
  // protocols must not wait for client bytes).
  const policy::CompiledPolicy& policy = *snapshot->policy;
  Sniffed sniffed;
  if (policy.name_can_matter(listener->name, rec.src.ip, dst->port)) {
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
      co_return;
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
      co_return;
    case Sniffed::End::closed:
      flow.close_undecided(log::CloseReason::eof, "the client closed before sending anything");
      co_return;
    case Sniffed::End::reset:
      flow.close_undecided(log::CloseReason::reset,
                           "the client reset the connection while sniffing");
      co_return;
    case Sniffed::End::stopped:
      flow.close_undecided(flow.active().stop_reason == relay::EndReason::revoked
                               ? log::CloseReason::revoked
                               : log::CloseReason::drained,
                           "the gateway stopped the flow while sniffing");
      co_return;
  }
  if (sniffed.proto == Proto::tls) {
    rec.ech = sniffed.ech;
    if (!sniffed.alpn.empty()) rec.alpn = std::move(sniffed.alpn);
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
  if (sniffed.name) {
    // The record names the host as canonical text when it is valid; an
    // invalid name is kept raw (the log escapes it) so operators see it.
    auto canonical = canonicalize_name(*sniffed.name);
    rec.add_host(canonical.name ? std::string_view(canonical.name->text)
                                : std::string_view(*sniffed.name));
  }

  policy::Outcome outcome = decide(worker, policy, facts, nullptr);
  if (outcome.needs_lookup) {
    const ResolvedName resolved = co_await resolve_name(worker, std::move(outcome.lookup_name));
    outcome = decide(worker, policy, facts, &resolved);
  }
  const policy::Verdict& verdict = outcome.verdict;
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
    co_return;
  }

  // Connect to the address that was checked, never re-resolving.
  const Endpoint upstream_ep{*verdict.connect_to, dst->port};
  tcp::socket upstream(client.get_executor());
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
    co_return;
  }
  rec.upstream = upstream_ep;

  // The `open` record: a long tunnel, or a killed process, still leaves a
  // trace.
  {
    log::FlowRecord open = rec;
    open.event = log::Event::open;
    submit_record(worker, std::move(open));
  }

  // Replay what sniffing read, then relay.
  if (!sniffed_bytes.empty()) {
    auto [wec, n] = co_await asio::async_write(upstream, asio::buffer(sniffed_bytes), kNoThrow);
    flow.control.bytes_up += n;
    if (wec) {
      rec.close = log::CloseReason::reset;
      co_return;
    }
    std::vector<std::uint8_t>().swap(sniffed_bytes);  // idle flows hold no sniff buffer
  }
  relay::RelayOptions options;
  flow.active().idle = snapshot->timeouts.idle;
  options.pipes = &worker.pipes();
  options.buffers = &worker.buffers();
  const relay::EndReason end = co_await relay::relay(client, upstream, options, flow.control);
  rec.close = to_close(end);
}

}  // namespace egressd::flow
