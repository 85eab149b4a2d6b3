#include "flow_parts.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "egressd/net/socket.hpp"
#include "egressd/sniff/detect.hpp"
#include "egressd/sniff/h2c_preface.hpp"
#include "egressd/sniff/http1_head.hpp"

namespace egressd::flow {
namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

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

bool take_limits(Worker& worker, FlowScope& flow, tcp::socket& client) {
  boost::system::error_code ignored;
  if (ConnectionLimit* limit = worker.services().connection_limit) {
    if (!limit->try_acquire()) {
      flow.close_undecided(log::CloseReason::limit, "limits.max_connections reached");
      client.close(ignored);
      return false;
    }
    flow.hold_connection();
  }
  SourceLimiter* limiter = worker.services().source_limiter;
  if (limiter != nullptr && limiter->enabled()) {
    if (!limiter->try_acquire(flow.record.src.ip)) {
      flow.close_undecided(log::CloseReason::limit,
                           "limits.max_connections_per_source reached for this source");
      client.close(ignored);
      return false;
    }
    flow.hold_source();
  }

  return true;
}

bool FlowScope::identify_source(const tcp::endpoint& peer) {
  if (auto src = net::endpoint_from_sockaddr(peer.data(), static_cast<socklen_t>(peer.size()))) {
    record.src = *src;
    return true;
  }
  close_undecided(log::CloseReason::reset, "the client left before it could be identified");
  return false;
}

PodIdentityPtr find_source_pod(const Worker& worker, const IpAddress& src) {
  const k8s::IdentitySnapshotPtr& snapshot = worker.identities();
  return snapshot ? snapshot->find(src) : nullptr;
}

awaitable<Observed> observe_first_bytes(FlowScope& flow, tcp::socket& client, tcp::socket& upstream,
                                        std::vector<std::uint8_t>& first,
                                        std::chrono::milliseconds window) {
  Observed observed;
  const auto stopped = [&flow] {
    return flow.active().stop_reason == relay::EndReason::revoked ? log::CloseReason::revoked
                                                                  : log::CloseReason::drained;
  };
  std::vector<std::uint8_t> seen = std::move(first);
  std::size_t sent = 0;  // of `seen`, already upstream
  asio::steady_timer deadline(client.get_executor());
  deadline.expires_after(window);
  for (;;) {
    if (sent < seen.size()) {
      auto [ec, n] = co_await asio::async_write(
          upstream, asio::buffer(seen.data() + sent, seen.size() - sent), kNoThrow);
      flow.control.bytes_up += n;
      sent += n;
      if (ec) {
        observed.ended = flow.active().stop_requested ? stopped() : log::CloseReason::reset;
        break;
      }
      if (auto c = classify(seen, seen.size() >= kMaxSniffBytes)) {
        observed.sniffed = std::move(c);
        break;
      }
    }
    // Readiness only: nothing is read here that a cancelled wait could lose.
    auto ready = co_await (client.async_wait(tcp::socket::wait_read, kNoThrow) ||
                           upstream.async_wait(tcp::socket::wait_read, kNoThrow) ||
                           deadline.async_wait(kNoThrow));
    if (flow.active().stop_requested) {
      observed.ended = stopped();
      break;
    }
    if (ready.index() != 0) {
      // The server spoke first, or the window passed: a nameless `tcp`
      // flow, unless the client's bytes so far say more.
      if (!seen.empty()) observed.sniffed = classify(seen, /*full=*/true);
      break;
    }
    const std::size_t old = seen.size();
    seen.resize(kMaxSniffBytes);
    const ssize_t n =
        ::recv(client.native_handle(), seen.data() + old, kMaxSniffBytes - old, MSG_DONTWAIT);
    seen.resize(old + static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n <= 0) {
      // End of input: the relay reads it again and half-closes as it
      // always does. A reset is reported once, so it ends the flow here.
      if (n < 0) observed.ended = log::CloseReason::reset;
      if (!seen.empty()) observed.sniffed = classify(seen, /*full=*/true);
      break;
    }
  }
  if (observed.sniffed && observed.sniffed->end != Sniffed::End::done) {
    // Malformed bytes keep the proto they look like, without a name: the
    // flow was decided already, and the server will judge them.
    observed.sniffed->end = Sniffed::End::done;
    observed.sniffed->name.reset();
  }
  co_return observed;
}

awaitable<log::CloseReason> relay_flow(Worker& worker, FlowScope& flow, tcp::socket& client,
                                       tcp::socket& upstream, std::vector<std::uint8_t>& first,
                                       std::chrono::milliseconds idle) {
  if (!first.empty()) {
    auto [ec, n] = co_await asio::async_write(upstream, asio::buffer(first), kNoThrow);
    flow.control.bytes_up += n;
    if (ec) co_return log::CloseReason::reset;
    std::vector<std::uint8_t>().swap(first);
  }
  flow.active().idle = idle;
  relay::RelayOptions options;
  options.pipes = &worker.pipes();
  options.buffers = &worker.buffers();
  co_return to_close(co_await relay::relay(client, upstream, options, flow.control));
}

}  // namespace egressd::flow
