#pragma once
// One access-log record (contract "Access log") and its JSON line. Pure:
// no I/O, no clock reads; the flow fills a FlowRecord, the AccessLog writer
// thread formats it.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/config/spec.hpp"
#include "egressd/core/identity.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/core/protocol.hpp"

namespace egressd::log {

// `open`: a passing flow's upstream connection is established; `flow`: a
// connection ended (denied ones included); `request`: a denied request on an
// h2c connection that stays open.
enum class Event : std::uint8_t { open, flow, request };

// `forward` is a node agent's record; the others are policy outcomes.
enum class Decision : std::uint8_t { allow, deny, audit_deny, forward };

enum class CloseReason : std::uint8_t {
  eof,
  reset,
  idle_timeout,
  sniff_timeout,
  malformed,
  denied,
  upstream_connect_failed,
  drained,
  limit,
  revoked,
};

std::string_view to_string(Event e) noexcept;
std::string_view to_string(Decision d) noexcept;
std::string_view to_string(CloseReason c) noexcept;
std::string_view to_string(config::Integrity i) noexcept;

// Contract limit on the `hosts` list of one connection.
inline constexpr std::size_t kMaxHosts = 32;

struct FlowRecord {
  Event event = Event::flow;
  // When the connection was accepted: the same in a flow's open and flow
  // records. Written with millisecond precision, UTC.
  std::chrono::system_clock::time_point time;
  std::string listener;
  Endpoint src;
  // The source pod, when the kubernetes index maps src to one: written as
  // `namespace`, `pod` and `service_account` (each omitted when empty).
  PodIdentityPtr source_pod;
  std::optional<Endpoint> dst;  // unknown e.g. for an untrusted PROXY peer
  Proto proto = Proto::tcp;     // `tcp` when nothing more was recognised
  // The first name seen (without port), raw bytes from the traffic: the
  // formatter escapes them and replaces invalid UTF-8. Set via add_host().
  std::optional<std::string> host;
  // Each distinct name in order of first appearance, at most kMaxHosts.
  // Written only when the connection carried more than one name.
  std::vector<std::string> hosts;
  std::optional<std::vector<std::string>> alpn;
  std::optional<bool> ech;
  Decision decision = Decision::deny;
  std::string rule;  // a rule name, "default" or "builtin:..."
  std::optional<config::Integrity> integrity;
  std::string reason;
  std::optional<Endpoint> upstream;
  // Written for `flow` records only (see append_record_line).
  std::uint64_t bytes_up = 0;
  std::uint64_t bytes_down = 0;
  std::chrono::milliseconds duration{0};
  CloseReason close = CloseReason::eof;

  // Records a name the connection carried: the first becomes `host`; each
  // distinct one (exact byte comparison, the caller passes canonical names
  // when it has them) joins `hosts` until kMaxHosts are kept, later ones are
  // ignored. Cost O(kMaxHosts) per call.
  void add_host(std::string_view name);
};

// Appends the record as one JSON object and a '\n'. Field order is the
// contract's example: time, event, listener, src, (namespace, pod,
// service_account,) dst, proto, host, hosts,
// alpn, ech, decision, rule, integrity, reason, upstream, bytes_up,
// bytes_down, duration_ms, close. Optional fields are omitted when unset.
// `open` and `request` records omit bytes_up, bytes_down, duration_ms and
// close: the connection has not ended when they are written, so those
// values would be partial or meaningless. Every string is escaped, so any
// bytes in names give one valid JSON line.
void append_record_line(std::string& out, const FlowRecord& r);

// Appends "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, milliseconds truncated). Times
// before 1970 or after 9999 are clamped to that range.
void append_timestamp(std::string& out, std::chrono::system_clock::time_point t);

}  // namespace egressd::log
