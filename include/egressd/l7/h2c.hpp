#pragma once
// h2c (HTTP/2 over cleartext with prior knowledge, RFC 9113 §3.3) stream
// by stream (contract: the deny table's h2c row, "checked per request").
//
// The client's connection is terminated by an nghttp2 *server* session and
// each allowed stream is re-originated by an nghttp2 *client* session on an
// upstream connection: one per distinct endpoint the judge returned
// (normally one, the original destination), opened lazily for the first
// stream that needs it. Every stream's :authority (or Host) goes to a judge
// supplied by the caller — who may go where is the flow module's business;
// this module knows HTTP/2 and sockets, not policy.
//
// Flow control is end to end: neither session updates its windows on its
// own (NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE); bytes received on one side are
// consumed (nghttp2_session_consume -> WINDOW_UPDATE) only once the other
// side's session has taken them into a frame. So a stream never holds more
// than its window (kH2cStreamWindow) in each direction, and a connection no
// more than its connection window, however slow either peer reads.
//
// H2cProxy is the sans-I/O core (bytes in, bytes out, judgements as
// events): the fuzz target and unit tests drive it on memory buffers;
// serve_h2c drives it on sockets.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "egressd/core/ip.hpp"
#include "egressd/relay/relay.hpp"

namespace egressd::l7 {

// Per-stream receive window we advertise on both sessions: the most one
// stream buffers in each direction.
inline constexpr std::int32_t kH2cStreamWindow = 64 * 1024;
// Connection-level receive window on both sessions: the most one
// connection buffers in each direction, over all its streams.
inline constexpr std::int32_t kH2cConnectionWindow = 1024 * 1024;
// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
inline constexpr std::uint32_t kH2cMaxStreams = 100;
// Header bytes (names + values) one stream may send in its request head
// and trailers together; more resets the stream.
inline constexpr std::size_t kH2cMaxHeaderBytes = 64 * 1024;

// A stream to judge: its request head is complete.
struct H2cRequest {
  std::int32_t stream_id = 0;
  // The name without port from :authority (or Host when there is no
  // :authority), raw as sent (no case folding); the whole text when it is
  // not host[:port], so the policy sees it and refuses it as an invalid
  // name. Empty when the request has neither.
  std::string name;
  // Set (static text) when the request is malformed as a whole: :authority
  // and Host disagree, several Host fields, neither present. The judge
  // should refuse it (400); nothing of it goes upstream either way.
  std::string_view problem;
  std::string method;
  std::string path;
};

// The core: an nghttp2 server session for the client and an nghttp2 client
// session per upstream, over memory. Not thread-safe; never throws for
// anything the peers send.
class H2cProxy {
 public:
  H2cProxy();
  ~H2cProxy();
  H2cProxy(const H2cProxy&) = delete;
  H2cProxy& operator=(const H2cProxy&) = delete;

  // Bytes from the client (the connection preface first). False when the
  // client broke HTTP/2 beyond a stream (bad preface, flood, a frame nghttp2
  // cannot take): stop reading; what take_client_output still gives (a
  // GOAWAY) is worth sending before closing.
  bool feed_client(std::span<const std::uint8_t> bytes);
  // Appends up to about `max` bytes for the client to `out`; 0 = nothing
  // to send now. May consume upstream windows (bytes taken from upstream
  // streams into frames): upstreams may have output afterwards.
  std::size_t take_client_output(std::string& out, std::size_t max);
  // The client session is over: it wants neither to read nor to write
  // (both sides sent GOAWAY or a fatal error, and no stream is active).
  [[nodiscard]] bool client_done() const;
  // The client broke the protocol (feed_client failed, or nghttp2 answered
  // a connection error with GOAWAY).
  [[nodiscard]] bool protocol_error() const noexcept;

  // Streams whose request head is complete since the last call, in order.
  std::vector<H2cRequest> take_requests();
  // Answers the stream itself: `status` with a text/plain `body`; the
  // request's body is discarded. Other streams go on. No-op for a stream
  // that is gone (the client reset it meanwhile).
  void refuse(std::int32_t stream_id, int status, std::string body);
  // Sends the stream to upstream `upstream` (an index from add_upstream):
  // submitted there at once when it is connected, else when it connects.
  void route(std::int32_t stream_id, std::size_t upstream);

  // A new upstream connection (not yet connected): its index.
  std::size_t add_upstream();
  // The upstream's TCP connection is up: its session starts (preface,
  // SETTINGS) and the streams routed to it are submitted.
  void upstream_connected(std::size_t upstream);
  // The upstream could not be reached: each stream routed to it is answered
  // `status` with `body`.
  void upstream_failed(std::size_t upstream, int status, const std::string& body);
  // Accepts new streams: connecting or connected, no GOAWAY, not closed.
  [[nodiscard]] bool upstream_usable(std::size_t upstream) const;
  // Bytes from the upstream. False when it broke HTTP/2: call
  // upstream_closed after sending what take_upstream_output gives.
  bool feed_upstream(std::size_t upstream, std::span<const std::uint8_t> bytes);
  // Appends up to about `max` bytes for the upstream to `out`. May consume
  // the client's windows.
  std::size_t take_upstream_output(std::size_t upstream, std::string& out, std::size_t max);
  // The upstream connection ended (EOF, reset, or we close it): streams
  // still waiting on it get 502 (no response yet) or RST_STREAM.
  void upstream_closed(std::size_t upstream);
  // The upstream session is over (GOAWAY both ways, no active stream).
  [[nodiscard]] bool upstream_done(std::size_t upstream) const;

  // Graceful shutdown (a drain): GOAWAY with the last stream id the client
  // session processed; streams up to it finish, later ones are refused by
  // nghttp2. Idempotent.
  void drain();
  [[nodiscard]] bool draining() const noexcept;

  // Streams whose head was complete (judged or being judged).
  [[nodiscard]] std::size_t streams_seen() const noexcept;
  // Streams the client session holds open.
  [[nodiscard]] std::size_t open_streams() const noexcept;
  // Bytes held in stream buffers now, both directions, every stream: at
  // most the connection windows (tests assert the bound).
  [[nodiscard]] std::size_t buffered_bytes() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The judge's answer for one stream.
struct StreamVerdict {
  // Where the stream goes (an endpoint the judge checked); unset = refused.
  std::optional<Endpoint> upstream;
  int status = 403;  // refused: the status and body the client gets
  std::string body;
};

struct H2cHooks {
  // Judges one stream against the policy in force now (records, metrics:
  // the caller's). May suspend (a DNS lookup for destination integrity).
  std::function<boost::asio::awaitable<StreamVerdict>(const H2cRequest&)> judge;
  // Connects `socket` to `to` (the caller's mark and connect timeout); an
  // error value on failure (timed_out on expiry). Called once per upstream
  // connection, when its first stream is routed.
  std::function<boost::asio::awaitable<boost::system::error_code>(boost::asio::ip::tcp::socket&,
                                                                  const Endpoint&)>
      connect;
};

struct H2cOptions {
  std::chrono::milliseconds idle{300'000};  // no byte either way: the connection ends
  // Set once a drain starts: GOAWAY is sent (see H2cProxy::drain) and the
  // connection ends when its streams are done. nullptr = never.
  const std::atomic<bool>* draining = nullptr;
};

struct H2cOutcome {
  enum class End : std::uint8_t {
    done,            // the client closed, or both sides finished (GOAWAY)
    protocol_error,  // the client broke HTTP/2 (GOAWAY sent when possible)
    idle,            // nothing moved for options.idle
    reset,           // the client's connection failed
    stopped,         // the gateway stopped the flow (control.stop_reason)
  };
  End end = End::done;
  std::size_t streams = 0;  // streams judged
  bool drained = false;     // GOAWAY was sent because of a drain
};

// Serves an h2c connection: `first` holds what the client sent so far
// (starting with the connection preface); it is fed to nghttp2 first. Ends
// when the client session is over, the client leaves, or the flow is
// stopped (control.stop_reason set and sockets closed by the worker); all
// sockets it opened are closed, and every task it started has finished,
// when it returns. Bytes written count in control.bytes_up (to upstreams)
// and control.bytes_down (to the client); control.last_activity follows
// every read and write.
boost::asio::awaitable<H2cOutcome> serve_h2c(boost::asio::ip::tcp::socket& client,
                                             std::span<const std::uint8_t> first,
                                             const H2cHooks& hooks, relay::RelayControl& control,
                                             const H2cOptions& options);

}  // namespace egressd::l7
