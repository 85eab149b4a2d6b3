#include "proxy_listener.hpp"

#include <algorithm>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "egressd/sniff/proxy_header.hpp"

namespace egressd::flow {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
// The longest valid header (v2 at its cap); v1 is at most 107 bytes. The
// parser gives a final verdict before the buffer is full, so reads never
// need more, and what follows the header stays far below the sniff cap.
constexpr std::size_t kMaxHeaderBytes = 16 + sniff::kMaxProxyV2Length;

ProxyRead failed(ProxyRead::End end, std::string_view problem) {
  ProxyRead r;
  r.end = end;
  r.problem = problem;
  return r;
}

}  // namespace

bool trusted_peer(std::span<const Cidr> trusted, const IpAddress& peer) noexcept {
  return std::any_of(trusted.begin(), trusted.end(),
                     [&](const Cidr& c) { return c.contains(peer); });
}

asio::awaitable<ProxyRead> read_proxy_header(asio::ip::tcp::socket& client,
                                             std::vector<std::uint8_t>& buffer,
                                             std::chrono::milliseconds timeout) {
  asio::steady_timer deadline(client.get_executor());
  deadline.expires_after(timeout);
  buffer.clear();
  for (;;) {
    const auto parsed = sniff::parse_proxy_header(buffer);
    switch (parsed.status) {
      case sniff::Status::need_more:
        break;
      case sniff::Status::found: {
        const sniff::ProxyHeader& h = parsed.header;
        // LOCAL is a sender's own health check: a gateway answers those
        // on its admin port, so here it is no flow at all.
        if (h.command == sniff::ProxyHeader::Command::local) {
          co_return failed(ProxyRead::End::malformed,
                           "PROXY LOCAL command (health checks belong on the admin port)");
        }
        if (!h.source || !h.destination) {
          co_return failed(ProxyRead::End::malformed,
                           "PROXY header without TCP addresses (UNKNOWN, UNSPEC or UNIX)");
        }
        ProxyRead r;
        r.end = ProxyRead::End::ok;
        r.source = *h.source;
        r.destination = *h.destination;
        buffer.erase(buffer.begin(),
                     buffer.begin() + static_cast<std::ptrdiff_t>(h.bytes_consumed));
        co_return r;
      }
      case sniff::Status::not_this_protocol:
        co_return failed(ProxyRead::End::malformed, "no PROXY header");
      default:
        co_return failed(ProxyRead::End::malformed, parsed.reason.empty()
                                                        ? std::string_view("malformed PROXY header")
                                                        : parsed.reason);
    }
    const std::size_t old = buffer.size();
    const std::size_t room = kMaxHeaderBytes - old;  // > 0: need_more below the cap
    buffer.resize(old + room);
    auto result =
        co_await (client.async_read_some(asio::buffer(buffer.data() + old, room), kNoThrow) ||
                  deadline.async_wait(kNoThrow));
    if (result.index() == 1) {
      buffer.resize(old);
      co_return failed(ProxyRead::End::malformed, "no complete PROXY header within timeouts.sniff");
    }
    auto [ec, n] = std::get<0>(result);
    buffer.resize(old + n);
    if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) {
      co_return failed(ProxyRead::End::stopped, "the gateway stopped the flow");
    }
    if (ec) {
      co_return failed(ProxyRead::End::malformed,
                       "the peer closed or reset before sending a complete PROXY header");
    }
  }
}

}  // namespace egressd::flow
