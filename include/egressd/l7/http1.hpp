#pragma once
// HTTP/1.1 request by request (contract rule 12, "checked per request"):
// the mechanics of a plaintext HTTP/1 connection the gateway inspects —
// request heads read and checked, each request handed to a judge, bodies
// streamed through Beast's parsers and serializers with backpressure (never
// buffered whole), responses kept in request order, 1xx passed on, HEAD /
// 204 / 304 without bodies, upgrades, and `Connection: close` during a
// drain. Who may go where is the judge's business (the flow module's
// policy and records); this module knows HTTP and sockets, not policy.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>

#include "egressd/relay/relay.hpp"
#include "egressd/sniff/http1_head.hpp"

namespace egressd::l7 {

// What reading one request head gave.
struct HeadRead {
  enum class End : std::uint8_t { head, closed, timeout, malformed, reset, stopped };
  End end = End::head;
  sniff::Http1Head head;
  std::string_view problem;  // static text, when malformed
};

// Reads bytes into `in` until they hold a whole request head (checked
// against rule 12 by sniff::parse_http1_head), the client closes, or
// `timeout` passes. Bytes already in `in` are looked at first.
boost::asio::awaitable<HeadRead> read_request_head(boost::asio::ip::tcp::socket& client,
                                                   boost::beast::flat_buffer& in,
                                                   std::chrono::milliseconds timeout,
                                                   relay::RelayControl& control);

// A body buffer from a worker's pool for the length of one message (or
// one request and its response), given back on scope exit.
class PooledBuffer {
 public:
  explicit PooledBuffer(relay::BufferPool& pool) : pool_(pool), buffer_(pool.acquire()) {}
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  ~PooledBuffer() { pool_.release(std::move(buffer_)); }
  [[nodiscard]] std::span<char> span() const noexcept {
    return {reinterpret_cast<char*>(buffer_.get()), pool_.buffer_size()};
  }

 private:
  relay::BufferPool& pool_;
  std::unique_ptr<std::byte[]> buffer_;
};

// One HTTP message from `from` to `to`: the parser `p` (its header already
// read, or not) is driven to the message's end, the serializer `sr` (made
// from p.get(), its header possibly already written) sends it on, body in
// pieces of at most `chunk` (the caller's buffer, e.g. from the worker's
// pool: no per-message allocation); chunked framing is re-applied by the
// serializer. `moved` counts bytes written.
template <bool IsRequest>
boost::asio::awaitable<boost::system::error_code> relay_message(
    boost::asio::ip::tcp::socket& from, boost::beast::flat_buffer& from_buf,
    boost::beast::http::parser<IsRequest, boost::beast::http::buffer_body>& p,
    boost::beast::http::serializer<IsRequest, boost::beast::http::buffer_body>& sr,
    boost::asio::ip::tcp::socket& to, std::span<char> chunk, std::uint64_t& moved,
    relay::RelayControl& control);

// Proxy semantics (explicit listeners): the hop-by-hop fields of RFC 9110
// §7.6.1, those named in Connection, and every Proxy-* field are removed;
// Upgrade (and its Connection token) is kept when `keep_upgrade`.
void remove_hop_by_hop(boost::beast::http::fields& fields, bool keep_upgrade);

// Contract rule 12: an `Upgrade: h2c` request is served over HTTP/1.1 —
// Upgrade, HTTP2-Settings and their Connection tokens are removed, nothing
// else is touched. True when there was an h2c upgrade to remove.
bool strip_h2c_upgrade(boost::beast::http::fields& fields);

// The judge's answer for one request.
struct RequestVerdict {
  // Where the request goes (connected by the judge); nullptr = refused.
  boost::asio::ip::tcp::socket* upstream = nullptr;
  // When refused: a complete HTTP response; the connection ends after it.
  std::string refusal;
};

// Judges one request from its checked head; called for every request but
// the first (judged before serve_http1 starts). The upstream it returns
// may be the previous one (reused while open) or a new connection.
using Http1Judge =
    std::function<boost::asio::awaitable<RequestVerdict>(const sniff::Http1Head& head)>;

struct Http1Options {
  std::chrono::milliseconds idle{60'000};  // waiting for the next request head
  // Body buffers, taken for the length of one request and its response
  // (an idle kept-alive connection holds none). Required.
  relay::BufferPool* buffers = nullptr;
  // Set once a drain starts: the next response says `Connection: close`
  // and the connection ends after it. nullptr = never.
  const std::atomic<bool>* draining = nullptr;
};

struct Http1Outcome {
  enum class End : std::uint8_t {
    client_closed,          // the client ended between requests
    closed_after_response,  // a response without keep-alive (or a drain) ended it
    refused,                // the judge refused a request: send `refusal`, close
    malformed,              // a request head broke rule 12: answer 400, close
    idle,                   // no next request within options.idle
    reset,                  // either side failed mid-message
    stopped,                // the gateway stopped the flow (drain's end, revoke)
    upgraded,               // 101 to an upgrade the client asked for: relay bytes
    no_response,            // the upstream sent no valid response: answer 502
  };
  End end = End::client_closed;
  std::string refusal;       // refused
  std::string_view problem;  // malformed / no_response: static text
  std::size_t requests = 0;  // requests forwarded
  // upgraded: the upstream to relay with, and bytes either side sent past
  // the heads (client bytes stay in `in`; upstream bytes here).
  boost::asio::ip::tcp::socket* upstream = nullptr;
  std::string upstream_leftover;
};

// Serves a plaintext HTTP/1 connection request by request. `in` holds what
// the client sent so far, starting with the first request head, which is
// already judged: it goes to `first_upstream`. Each later request head is
// read (rule 12 checked on every one), judged, and forwarded unchanged but
// for an h2c upgrade (stripped) and, during a drain, the response's
// `Connection: close`. Pipelined requests wait in `in` until the previous
// response is complete, so responses stay in order and a refused request's
// successors never reach any upstream.
boost::asio::awaitable<Http1Outcome> serve_http1(boost::asio::ip::tcp::socket& client,
                                                 boost::beast::flat_buffer& in,
                                                 boost::asio::ip::tcp::socket& first_upstream,
                                                 const Http1Judge& judge,
                                                 relay::RelayControl& control,
                                                 const Http1Options& options);

}  // namespace egressd::l7
