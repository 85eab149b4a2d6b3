#pragma once
// The first step of a flow on a `proxy_protocol` listener: the peer is a
// node agent (or a load balancer) and a PROXY header names the pod and the
// original destination (contract "Access log": builtin:untrusted-peer,
// close "malformed").

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "egressd/core/ip.hpp"

namespace egressd::flow {

// True when `peer` lies in one of `trusted` (proxy_protocol.trusted).
bool trusted_peer(std::span<const Cidr> trusted, const IpAddress& peer) noexcept;

struct ProxyRead {
  // ok: source and destination are set. malformed: no valid header (bad
  // bytes, none at all, too slow, LOCAL, no addresses). stopped: the
  // gateway closed the connection (drain, revoke).
  enum class End : std::uint8_t { ok, malformed, stopped };
  End end = End::malformed;
  Endpoint source;
  Endpoint destination;
  std::string_view problem;  // static text, when not ok
};

// Reads a PROXY v1 or v2 header from `client` within `timeout`. On ok,
// `buffer` holds the bytes that followed the header in the same reads (the
// start of the flow's payload, to be sniffed and replayed); never more than
// the header's maximum size. Never throws.
boost::asio::awaitable<ProxyRead> read_proxy_header(boost::asio::ip::tcp::socket& client,
                                                    std::vector<std::uint8_t>& buffer,
                                                    std::chrono::milliseconds timeout);

}  // namespace egressd::flow
