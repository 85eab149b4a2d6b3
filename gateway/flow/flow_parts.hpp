#pragma once
// The steps every kind of flow shares (transparent, explicit proxy): the
// record kept on every exit path, sniffing the client's first bytes, what
// a denied client sees, and the upstream connect. Internal to `flow`.

#include <chrono>
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "egressd/flow/worker.hpp"
#include "egressd/log/record.hpp"
#include "egressd/policy/policy.hpp"
#include "egressd/sniff/client_hello.hpp"
#include "flow_services.hpp"

namespace egressd::flow {

inline constexpr auto kNoThrow = boost::asio::as_tuple(boost::asio::use_awaitable);
inline constexpr std::size_t kSniffChunk = 2048;
// A ClientHello may span several records up to the parser's cap; anything
// larger has already been judged too_large by the parser.
inline constexpr std::size_t kMaxSniffBytes = sniff::kMaxClientHelloWireBytes + 512;

// Writes the flow record and metrics on every exit path, and frees what
// the flow holds in the worker's books.
class FlowScope {
 public:
  // Registers the flow (with its client socket, so drain and revoke can
  // stop it) and starts its record.
  FlowScope(Worker& worker, const ListenerInfo& listener, boost::asio::ip::tcp::socket& client)
      : worker_(worker), listener_(listener), it_(worker.register_flow()) {
    record.event = log::Event::flow;
    record.time = std::chrono::system_clock::now();
    record.listener = listener.name;
    started_ = std::chrono::steady_clock::now();
    it_->record = &record;
    it_->transparent = listener.mode != config::ListenerMode::explicit_proxy;
    it_->client = &client;
    it_->control = &control;
    it_->listener_index = listener.index;
    boost::system::error_code ignored;
    client.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
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

  // Who is calling: the client's address, as accept() returned it, into
  // record.src. False (the flow recorded as reset) when it is unusable.
  bool identify_source(const boost::asio::ip::tcp::endpoint& peer);

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

// The relay step of every flow: `first` (bytes read before the decision)
// goes upstream and is freed — idle flows hold no sniff buffer — then both
// directions run, with `idle` enforced by the worker's sweep, until the
// flow ends. Returns the close reason.
boost::asio::awaitable<log::CloseReason> relay_flow(Worker& worker, FlowScope& flow,
                                                    boost::asio::ip::tcp::socket& client,
                                                    boost::asio::ip::tcp::socket& upstream,
                                                    std::vector<std::uint8_t>& first,
                                                    std::chrono::milliseconds idle);

// Rule 11's second half: a flow decided at once (no client bytes needed)
// still learns its proto and name when its client speaks first. Waits for
// whichever side speaks first, at most `window`: client bytes are sent
// upstream as soon as they are read (never held) and classified as they
// pass, up to kMaxSniffBytes. `first` (bytes read earlier, e.g. after a
// PROXY header) goes upstream first. The decision is not touched.
struct Observed {
  std::optional<Sniffed> sniffed;         // the client spoke first and was classified
  std::optional<log::CloseReason> ended;  // the flow ended while watching
};
boost::asio::awaitable<Observed> observe_first_bytes(FlowScope& flow,
                                                     boost::asio::ip::tcp::socket& client,
                                                     boost::asio::ip::tcp::socket& upstream,
                                                     std::vector<std::uint8_t>& first,
                                                     std::chrono::milliseconds window);

// limits.max_connections and limits.max_connections_per_source for the
// flow's source (record.src must be set). False when over either: the
// client is closed and the flow recorded as builtin:limit.
bool take_limits(Worker& worker, FlowScope& flow, boost::asio::ip::tcp::socket& client);

// The pod that holds `src` in this worker's identity snapshot, or nullptr
// (no kubernetes section, not synced, unknown or ambiguous IP).
PodIdentityPtr find_source_pod(const Worker& worker, const IpAddress& src);

// Classifies the first bytes of `bytes` (everything the client has sent).
// Returns nullopt while more bytes are needed; `full`: no more will come.
std::optional<Sniffed> classify(std::span<const std::uint8_t> bytes, bool full);

// Reads the client's first bytes until they classify the flow or the sniff
// deadline passes. Bytes read are kept in `buffer` for replay upstream.
boost::asio::awaitable<Sniffed> sniff_client(boost::asio::ip::tcp::socket& client,
                                             std::vector<std::uint8_t>& buffer,
                                             std::chrono::milliseconds timeout);

// Sends what a denied client sees, then closes gently (half-close, drain
// what the client still sends for a moment), so the last bytes arrive.
boost::asio::awaitable<void> answer_and_close(boost::asio::ip::tcp::socket& client,
                                              std::string_view bytes);

// A fatal TLS alert access_denied(49) in a record of `record_version`.
std::string tls_alert(std::uint16_t record_version);
// A complete HTTP/1.1 response with `Connection: close` and a text body.
std::string http_response(int status, std::string_view text, const std::string& body);

log::CloseReason to_close(relay::EndReason r);
log::Decision to_log(policy::Decision d);
// "refused", "timeout", "unreachable" or "other" (note_connect_failure).
std::string_view connect_failure_reason(const boost::system::error_code& ec);

// Connects under `timeout` with SO_MARK `mark`; an error value on failure
// (timed_out on expiry).
boost::asio::awaitable<boost::system::error_code> connect_upstream(
    boost::asio::ip::tcp::socket& upstream, const Endpoint& to, std::uint32_t mark,
    std::chrono::milliseconds timeout);

}  // namespace egressd::flow
