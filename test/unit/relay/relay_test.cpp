// The relay over real loopback sockets: client <-> [relay] <-> server.
#include "egressd/relay/relay.hpp"

#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

namespace egressd::relay {
namespace {
namespace asio = boost::asio;
using asio::ip::tcp;
constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

// Two connected TCP sockets on loopback.
std::pair<tcp::socket, tcp::socket> socket_pair(asio::io_context& io) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket a(io);
  a.connect(acceptor.local_endpoint());
  tcp::socket b = acceptor.accept();
  return {std::move(a), std::move(b)};
}

struct World {
  asio::io_context io;
  tcp::socket client{io};          // the pod's end
  tcp::socket gateway_client{io};  // the gateway's accepted socket
  tcp::socket gateway_upstream{io};
  tcp::socket server{io};  // the upstream server's end
  PipePool pipes{8};
  BufferPool buffers{4096};
  RelayControl control;
  RelayOptions options;
  std::optional<EndReason> end;

  explicit World(bool splice) {
    std::tie(client, gateway_client) = socket_pair(io);
    std::tie(gateway_upstream, server) = socket_pair(io);
    options.pipes = splice ? &pipes : nullptr;
    options.buffers = &buffers;
  }
  void start() {
    asio::co_spawn(
        io,
        [this]() -> asio::awaitable<void> {
          end = co_await relay(gateway_client, gateway_upstream, options, control);
          boost::system::error_code ignored;
          gateway_client.close(ignored);
          gateway_upstream.close(ignored);
        },
        asio::detached);
  }
};

std::vector<char> random_bytes(std::size_t n) {
  std::vector<char> v(n);
  std::mt19937 rng(7);
  for (auto& c : v) c = static_cast<char>(rng());
  return v;
}

class RelayTest : public ::testing::TestWithParam<bool> {};

TEST_P(RelayTest, BulkBothWaysWithHalfClose) {
  World w(GetParam());
  const auto up = random_bytes(3 << 20);
  const auto down = random_bytes(5 << 20);
  std::vector<char> got_up;
  std::vector<char> got_down;
  w.start();
  // Client: send everything, half-close, then read the whole response.
  asio::co_spawn(
      w.io,
      [&]() -> asio::awaitable<void> {
        co_await asio::async_write(w.client, asio::buffer(up), kNoThrow);
        w.client.shutdown(tcp::socket::shutdown_send);
        co_await asio::async_read(w.client, asio::dynamic_buffer(got_down), kNoThrow);
      },
      asio::detached);
  // Server: read until the client's EOF arrives, then answer and close.
  asio::co_spawn(
      w.io,
      [&]() -> asio::awaitable<void> {
        co_await asio::async_read(w.server, asio::dynamic_buffer(got_up), kNoThrow);
        co_await asio::async_write(w.server, asio::buffer(down), kNoThrow);
        w.server.shutdown(tcp::socket::shutdown_send);
      },
      asio::detached);
  w.io.run_for(std::chrono::seconds(20));
  ASSERT_TRUE(w.end);
  EXPECT_EQ(*w.end, EndReason::eof);
  EXPECT_EQ(got_up, up);
  EXPECT_EQ(got_down, down);
  EXPECT_EQ(w.control.bytes_up, up.size());
  EXPECT_EQ(w.control.bytes_down, down.size());
  EXPECT_EQ(w.pipes.in_use(), 0U);  // pipes go back to the pool
}

TEST_P(RelayTest, IdleSweepEndsAnIdleFlowOnly) {
  World w(GetParam());
  w.start();
  // What a worker's once-a-second sweep does, run every 50 ms here.
  const auto idle = std::chrono::milliseconds(300);
  bool stopped_early = false;
  asio::steady_timer sweep(w.io);
  std::function<void()> tick = [&] {
    sweep.expires_after(std::chrono::milliseconds(50));
    sweep.async_wait([&](const boost::system::error_code& ec) {
      if (ec || w.end) return;
      const auto now = std::chrono::steady_clock::now();
      if (now - w.control.last_activity < idle) {
        EXPECT_FALSE(stop_if_idle(w.gateway_client, w.gateway_upstream, w.control, idle, now));
      } else if (stop_if_idle(w.gateway_client, w.gateway_upstream, w.control, idle, now)) {
        stopped_early = now - w.control.last_activity < idle;
      }
      tick();
    });
  };
  tick();
  // Traffic keeps the flow alive past the idle time...
  asio::co_spawn(
      w.io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer t(w.io);
        for (int i = 0; i < 6; ++i) {
          co_await asio::async_write(w.client, asio::buffer("x", 1), kNoThrow);
          std::array<char, 1> b{};
          co_await asio::async_read(w.server, asio::buffer(b), kNoThrow);
          t.expires_after(std::chrono::milliseconds(100));
          co_await t.async_wait(kNoThrow);
        }
      },
      asio::detached);
  const auto t0 = std::chrono::steady_clock::now();
  w.io.run_for(std::chrono::seconds(5));
  ASSERT_TRUE(w.end);
  EXPECT_EQ(*w.end, EndReason::idle_timeout);
  EXPECT_FALSE(stopped_early);
  // ...then ends it about `idle` after the last byte.
  EXPECT_GT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(800));
  EXPECT_EQ(w.control.bytes_up, 6U);
}

TEST_P(RelayTest, ResetOnOneSideEndsBoth) {
  World w(GetParam());
  w.start();
  asio::co_spawn(
      w.io,
      [&]() -> asio::awaitable<void> {
        co_await asio::async_write(w.client, asio::buffer("hello", 5), kNoThrow);
        // RST from the server: linger 0 then close.
        w.server.set_option(asio::socket_base::linger(true, 0));
        std::array<char, 5> buf{};
        co_await asio::async_read(w.server, asio::buffer(buf), kNoThrow);
        w.server.close();
      },
      asio::detached);
  w.io.run_for(std::chrono::seconds(5));
  ASSERT_TRUE(w.end);
  EXPECT_EQ(*w.end, EndReason::reset);
}

TEST_P(RelayTest, StopReasonWins) {
  World w(GetParam());
  w.start();
  asio::steady_timer t(w.io);
  t.expires_after(std::chrono::milliseconds(50));
  t.async_wait([&](auto) {
    w.control.stop_reason = EndReason::drained;
    w.gateway_client.close();
    w.gateway_upstream.close();
  });
  w.io.run_for(std::chrono::seconds(5));
  ASSERT_TRUE(w.end);
  EXPECT_EQ(*w.end, EndReason::drained);
}

INSTANTIATE_TEST_SUITE_P(SpliceAndCopy, RelayTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "splice" : "copy";
                         });

TEST(PipePool, BoundedAndReused) {
  PipePool pool(2);
  auto a = pool.acquire();
  auto b = pool.acquire();
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(pool.acquire());  // bound reached: callers fall back to copying
  pool.release(*a);
  auto c = pool.acquire();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->read_fd, a->read_fd);
  pool.destroy(*b);
  pool.release(*c);
  EXPECT_EQ(pool.in_use(), 0U);
}

}  // namespace
}  // namespace egressd::relay
