#include "egressd/l7/http1.hpp"

#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

namespace egressd::l7 {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kHeadReadChunk = 4096;
constexpr std::uint32_t kMaxResponseHead = 64 * 1024;

bool is_stop(const boost::system::error_code& ec) {
  return ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor;
}

// The comma-separated tokens of every `name` field, trimmed.
std::vector<std::string> tokens_of(const http::fields& fields, http::field name) {
  std::vector<std::string> out;
  for (auto it = fields.find(name); it != fields.end() && it->name() == name; ++it) {
    std::string_view v = it->value();
    while (!v.empty()) {
      const std::size_t comma = v.find(',');
      std::string_view token = v.substr(0, comma);
      while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
        token.remove_prefix(1);
      while (!token.empty() && (token.back() == ' ' || token.back() == '\t'))
        token.remove_suffix(1);
      if (!token.empty()) out.emplace_back(token);
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return out;
}

// The request's body forwarded to the upstream (its header is written).
awaitable<boost::system::error_code> send_request_body(
    tcp::socket& client, beast::flat_buffer& in, http::request_parser<http::buffer_body>& request,
    http::request_serializer<http::buffer_body>& sr, tcp::socket& upstream, std::span<char> chunk,
    relay::RelayControl& control) {
  co_return co_await relay_message(client, in, request, sr, upstream, chunk, control.bytes_up,
                                   control);
}

// What reading the responses to one request gave.
struct Responded {
  boost::system::error_code ec;
  bool sent_anything = false;  // part of a response reached the client
  bool keep_alive = false;     // both sides keep the connection
  bool upstream_keep_alive = false;
  bool switched = false;  // 101 to the upgrade the client asked for
  std::string_view problem;
};

// The responses to one request, 1xx included, forwarded to the client.
awaitable<Responded> forward_responses(tcp::socket& upstream, beast::flat_buffer& upstream_in,
                                       tcp::socket& client, bool head_request,
                                       bool client_keep_alive, bool upgrade_asked,
                                       std::span<char> chunk, relay::RelayControl& control,
                                       const std::atomic<bool>* draining) {
  Responded out;
  for (;;) {
    http::response_parser<http::buffer_body> response;
    response.header_limit(kMaxResponseHead);
    response.body_limit(boost::none);
    if (head_request) response.skip(true);
    auto [ec, n] = co_await http::async_read_header(upstream, upstream_in, response, kNoThrow);
    if (ec) {
      out.ec = ec;
      out.problem = "the upstream sent no valid response";
      co_return out;
    }
    auto& res = response.get();
    const unsigned status = res.result_int();
    const bool informational = status >= 100 && status < 200 && status != 101;
    out.switched = status == 101 && upgrade_asked;
    const bool drain = draining != nullptr && draining->load(std::memory_order_relaxed);
    out.upstream_keep_alive = res.keep_alive() && !response.need_eof();
    out.keep_alive = client_keep_alive && out.upstream_keep_alive && !out.switched && !drain;
    // Only a drain changes a response: it says the connection ends.
    if (drain && !informational && !out.switched && res.keep_alive()) res.keep_alive(false);
    http::response_serializer<http::buffer_body> sr{res};
    const auto wec = co_await relay_message(upstream, upstream_in, response, sr, client, chunk,
                                            control.bytes_down, control);
    out.sent_anything = true;
    if (wec) {
      out.ec = wec;
      co_return out;
    }
    if (!informational) co_return out;
  }
}

}  // namespace

awaitable<HeadRead> read_request_head(tcp::socket& client, beast::flat_buffer& in,
                                      std::chrono::milliseconds timeout,
                                      relay::RelayControl& control) {
  asio::steady_timer deadline(client.get_executor());
  deadline.expires_after(timeout);
  HeadRead out;
  for (;;) {
    if (in.size() > 0) {
      const auto data = in.data();
      auto r =
          sniff::parse_http1_head({static_cast<const std::uint8_t*>(data.data()), data.size()});
      if (r.status == sniff::Status::found) {
        out.head = std::move(r.head);
        co_return out;
      }
      if (r.status != sniff::Status::need_more) {
        out.end = HeadRead::End::malformed;
        out.problem = r.status == sniff::Status::too_large           ? "request head too large"
                      : r.status == sniff::Status::not_this_protocol ? "not an HTTP/1 request"
                                                                     : r.reason;
        co_return out;
      }
    }
    auto result = co_await (client.async_read_some(in.prepare(kHeadReadChunk), kNoThrow) ||
                            deadline.async_wait(kNoThrow));
    if (result.index() == 1) {
      out.end = HeadRead::End::timeout;
      co_return out;
    }
    auto [ec, n] = std::get<0>(result);
    in.commit(n);
    control.last_activity = std::chrono::steady_clock::now();
    if (ec == asio::error::eof) {
      out.end = in.size() == 0 ? HeadRead::End::closed : HeadRead::End::malformed;
      out.problem = "the request head ends before its blank line";
      co_return out;
    }
    if (ec) {
      out.end = is_stop(ec) ? HeadRead::End::stopped : HeadRead::End::reset;
      co_return out;
    }
  }
}

template <bool IsRequest>
awaitable<boost::system::error_code> relay_message(
    tcp::socket& from, beast::flat_buffer& from_buf, http::parser<IsRequest, http::buffer_body>& p,
    http::serializer<IsRequest, http::buffer_body>& sr, tcp::socket& to, std::span<char> chunk,
    std::uint64_t& moved, relay::RelayControl& control) {
  auto& body = p.get().body();
  if (p.is_done()) {
    // No body: a HEAD, 1xx, 204 or 304 answer, or a request without one.
    // The head is the whole message, even when it says chunked (the
    // serializer would add a last chunk the peer reads as the next
    // message).
    if (sr.is_header_done()) co_return boost::system::error_code{};
    body.data = nullptr;
    body.size = 0;
    body.more = false;
    auto [ec, n] = co_await http::async_write_header(to, sr, kNoThrow);
    moved += n;
    control.last_activity = std::chrono::steady_clock::now();
    co_return ec;
  }
  const bool chunked = p.chunked();
  // A chunked message's head goes first, before any body is read: Beast
  // adds the trailer fields to the message, and a head written later would
  // carry them as header fields. Any other head goes out with the first
  // piece of body, in one write.
  if (!sr.is_header_done() && chunked) {
    body.data = nullptr;
    body.size = 0;
    body.more = !p.is_done();
    auto [ec, n] = co_await http::async_write_header(to, sr, kNoThrow);
    moved += n;
    if (ec) co_return ec;
  }
  // A chunked body's last chunk and trailers are written here, not by the
  // serializer, which would end it without the trailers.
  const auto fields_in_head =
      static_cast<std::size_t>(std::distance(p.get().begin(), p.get().end()));
  while (!p.is_done()) {
    body.data = chunk.data();
    body.size = chunk.size();
    auto [ec, n] = co_await http::async_read(from, from_buf, p, kNoThrow);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return ec;
    body.size = chunk.size() - body.size;
    body.data = chunk.data();
    body.more = chunked || !p.is_done();
    if (body.size == 0 && body.more) continue;
    auto [wec, wn] = co_await http::async_write(to, sr, kNoThrow);
    moved += wn;
    control.last_activity = std::chrono::steady_clock::now();
    if (wec == http::error::need_buffer) wec = {};
    if (wec) co_return wec;
  }
  if (chunked) {
    std::string last = "0\r\n";
    std::size_t i = 0;
    for (const auto& f : p.get()) {
      if (i++ < fields_in_head) continue;
      last.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
    }
    last += "\r\n";
    auto [wec, wn] = co_await asio::async_write(to, asio::buffer(last), kNoThrow);
    moved += wn;
    if (wec) co_return wec;
  } else if (!sr.is_done()) {
    // The end of a body the last read completed: the serializer finishes.
    body.data = nullptr;
    body.size = 0;
    body.more = false;
    auto [wec, wn] = co_await http::async_write(to, sr, kNoThrow);
    moved += wn;
    if (wec == http::error::need_buffer) wec = {};
    if (wec) co_return wec;
  }
  control.last_activity = std::chrono::steady_clock::now();
  co_return boost::system::error_code{};
}

template awaitable<boost::system::error_code> relay_message<true>(
    tcp::socket&, beast::flat_buffer&, http::parser<true, http::buffer_body>&,
    http::serializer<true, http::buffer_body>&, tcp::socket&, std::span<char>, std::uint64_t&,
    relay::RelayControl&);
template awaitable<boost::system::error_code> relay_message<false>(
    tcp::socket&, beast::flat_buffer&, http::parser<false, http::buffer_body>&,
    http::serializer<false, http::buffer_body>&, tcp::socket&, std::span<char>, std::uint64_t&,
    relay::RelayControl&);

void remove_hop_by_hop(http::fields& fields, bool keep_upgrade) {
  for (const std::string& name : tokens_of(fields, http::field::connection)) {
    if (keep_upgrade && beast::iequals(name, "upgrade")) continue;
    fields.erase(name);
  }
  fields.erase(http::field::connection);
  fields.erase(http::field::keep_alive);
  fields.erase(http::field::proxy_connection);
  fields.erase(http::field::te);
  if (!keep_upgrade) fields.erase(http::field::upgrade);
  std::vector<std::string> proxy_fields;
  for (const auto& f : fields) {
    const std::string_view name = f.name_string();
    if (name.size() >= 6 && beast::iequals(name.substr(0, 6), "proxy-")) {
      proxy_fields.emplace_back(name);
    }
  }
  for (const std::string& name : proxy_fields) fields.erase(name);
}

bool strip_h2c_upgrade(http::fields& fields) {
  bool h2c = false;
  for (const std::string& token : tokens_of(fields, http::field::upgrade)) {
    if (beast::iequals(token, "h2c")) h2c = true;
  }
  if (!h2c) return false;
  fields.erase(http::field::upgrade);
  fields.erase("HTTP2-Settings");
  // Connection keeps its other tokens (close, keep-alive), in order.
  std::string kept;
  for (const std::string& token : tokens_of(fields, http::field::connection)) {
    if (beast::iequals(token, "upgrade") || beast::iequals(token, "http2-settings")) continue;
    if (!kept.empty()) kept += ", ";
    kept += token;
  }
  if (fields.count(http::field::connection) > 0) {
    fields.erase(http::field::connection);
    if (!kept.empty()) fields.set(http::field::connection, kept);
  }
  return true;
}

awaitable<Http1Outcome> serve_http1(tcp::socket& client, beast::flat_buffer& in,
                                    tcp::socket& first_upstream, const Http1Judge& judge,
                                    relay::RelayControl& control, const Http1Options& options) {
  Http1Outcome out;
  tcp::socket* upstream = &first_upstream;
  beast::flat_buffer upstream_in;  // response bytes not yet forwarded
  bool first = true;
  for (;;) {
    HeadRead read = co_await read_request_head(client, in, options.idle, control);
    if (control.stop_reason) read.end = HeadRead::End::stopped;
    switch (read.end) {
      case HeadRead::End::head:
        break;
      case HeadRead::End::closed:
        out.end = Http1Outcome::End::client_closed;
        co_return out;
      case HeadRead::End::timeout:
        out.end = Http1Outcome::End::idle;
        co_return out;
      case HeadRead::End::malformed:
        out.end = Http1Outcome::End::malformed;
        out.problem = read.problem;
        co_return out;
      case HeadRead::End::reset:
        out.end = Http1Outcome::End::reset;
        co_return out;
      case HeadRead::End::stopped:
        out.end = Http1Outcome::End::stopped;
        co_return out;
    }
    if (!first) {
      RequestVerdict verdict = co_await judge(read.head);
      if (control.stop_reason) {
        out.end = Http1Outcome::End::stopped;
        co_return out;
      }
      if (verdict.upstream == nullptr) {
        out.end = Http1Outcome::End::refused;
        out.refusal = std::move(verdict.refusal);
        co_return out;
      }
      if (verdict.upstream != upstream) upstream_in.consume(upstream_in.size());
      upstream = verdict.upstream;
    }
    first = false;

    // The head the sniffer checked is in `in`: Beast reads it again to
    // drive the body.
    http::request_parser<http::buffer_body> request;
    request.header_limit(static_cast<std::uint32_t>(sniff::kDefaultMaxHttp1Head));
    request.body_limit(boost::none);
    {
      auto [ec, n] = co_await http::async_read_header(client, in, request, kNoThrow);
      if (ec) {
        out.end = Http1Outcome::End::malformed;
        out.problem = "the request head does not parse";
        co_return out;
      }
    }
    auto& req = request.get();
    strip_h2c_upgrade(req);
    const bool upgrade_asked = req.count(http::field::upgrade) > 0;
    const bool head_request = req.method() == http::verb::head;

    // The head, then the body and the responses side by side: a client
    // that sent `Expect: 100-continue` waits for the 100 before its body.
    // A request without a body (most) is its head: no side by side.
    // Buffers come from the worker's pool for this request only.
    const bool has_body = !request.is_done();
    http::request_serializer<http::buffer_body> sr{req};
    req.body().data = nullptr;
    req.body().size = 0;
    req.body().more = has_body;
    {
      auto [ec, n] = co_await http::async_write_header(*upstream, sr, kNoThrow);
      control.bytes_up += n;
      if (ec) {
        out.end = control.stop_reason ? Http1Outcome::End::stopped : Http1Outcome::End::reset;
        co_return out;
      }
    }
    ++out.requests;
    const PooledBuffer down(*options.buffers);
    boost::system::error_code body_ec;
    Responded responded;
    if (has_body) {
      const PooledBuffer up(*options.buffers);
      std::tie(body_ec, responded) = co_await (
          send_request_body(client, in, request, sr, *upstream, up.span(), control) &&
          forward_responses(*upstream, upstream_in, client, head_request, read.head.keep_alive,
                            upgrade_asked, down.span(), control, options.draining));
    } else {
      responded = co_await forward_responses(*upstream, upstream_in, client, head_request,
                                             read.head.keep_alive, upgrade_asked, down.span(),
                                             control, options.draining);
    }
    if (control.stop_reason) {
      out.end = Http1Outcome::End::stopped;
      co_return out;
    }
    if (responded.ec) {
      out.end = responded.sent_anything || is_stop(responded.ec) ? Http1Outcome::End::reset
                                                                 : Http1Outcome::End::no_response;
      out.problem = responded.problem;
      co_return out;
    }
    if (responded.switched) {
      out.end = Http1Outcome::End::upgraded;
      out.upstream = upstream;
      const auto rest = upstream_in.data();
      out.upstream_leftover.assign(static_cast<const char*>(rest.data()), rest.size());
      co_return out;
    }
    if (body_ec || !responded.keep_alive) {
      // The response is complete; a request body cut short or a response
      // that ends the connection ends it here.
      out.end = body_ec ? Http1Outcome::End::reset : Http1Outcome::End::closed_after_response;
      co_return out;
    }
    if (!responded.upstream_keep_alive) {
      boost::system::error_code ignored;
      upstream->close(ignored);
    }
  }
}

}  // namespace egressd::l7
