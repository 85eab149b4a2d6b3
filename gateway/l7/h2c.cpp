// serve_h2c: H2cProxy on sockets (see include/egressd/l7/h2c.hpp).
//
// One coroutine per job, all on the flow's executor (one thread, so no
// locks): the client's reader and writer, each upstream's reader and
// writer (started when its connection is up), one judge per stream and one
// connect per upstream, and a one-second tick (drain, idle). They share the
// proxy and wake each other with cancelled timers; serve_h2c itself waits
// until the connection is over and every job has returned, so nothing
// outlives the sockets and references it was given.
//
// Writers take at most kWriteChunk from the proxy per write and take the
// next only when the socket accepted it: a peer that does not read stops
// the frames for it from being packed, and so (flow control, no automatic
// WINDOW_UPDATE) the other side from sending more.

#include "egressd/l7/h2c.hpp"

#include <array>
#include <list>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace egressd::l7 {
namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;

namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kWriteChunk = 64 * 1024;
constexpr std::chrono::seconds kTick{1};
// After the client session is over, what is left to write gets this long,
// and then the client this long to close its side.
constexpr std::chrono::seconds kFlushGrace{5};
constexpr std::chrono::seconds kLinger{2};

bool is_stop(const boost::system::error_code& ec) {
  return ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor;
}

struct Upstream {
  Upstream(asio::any_io_executor ex, Endpoint to, std::size_t i)
      : endpoint(to), index(i), socket(ex), wake(ex) {}
  Endpoint endpoint;
  std::size_t index;
  tcp::socket socket;
  asio::steady_timer wake;
  bool connected = false;
  bool done = false;
};

class Connection {
 public:
  Connection(tcp::socket& client, const H2cHooks& hooks, relay::RelayControl& control,
             const H2cOptions& options)
      : client_(client),
        hooks_(hooks),
        control_(control),
        options_(options),
        ex_(client.get_executor()),
        client_wake_(ex_),
        main_wake_(ex_),
        tick_(ex_) {}

  awaitable<H2cOutcome> run(std::span<const std::uint8_t> first) {
    control_.last_activity = std::chrono::steady_clock::now();
    if (!proxy_.feed_client(first)) end_soon(H2cOutcome::End::protocol_error);
    spawn(client_reader());
    spawn(client_writer());
    spawn(ticker());
    for (;;) {
      for (H2cRequest& r : proxy_.take_requests()) spawn(judge(std::move(r)));
      if (!ending_ && proxy_.client_done()) {
        end_soon(proxy_.protocol_error() ? H2cOutcome::End::protocol_error : H2cOutcome::End::done);
      }
      if (ending_ && !closed_) {
        // Graceful: once the last frames are written, half-close and read
        // until the client closes too (closing with its WINDOW_UPDATEs
        // unread would reset the connection and destroy data it has not
        // read yet), for at most kLinger.
        if (client_flushed_ && !half_closed_) {
          half_closed_ = true;
          boost::system::error_code ignored;
          client_.shutdown(tcp::socket::shutdown_send, ignored);
          flush_deadline_ = std::chrono::steady_clock::now() + kLinger;
        }
        if (flush_expired()) close_all();
      }
      if (closed_ && live_ == 0) break;
      main_wake_.expires_at(asio::steady_timer::time_point::max());
      co_await main_wake_.async_wait(kNoThrow);
    }
    out_.streams = proxy_.streams_seen();
    out_.drained = drained_;
    if (control_.stop_reason && out_.end != H2cOutcome::End::idle) {
      out_.end = H2cOutcome::End::stopped;
    }
    co_return out_;
  }

 private:
  void spawn(awaitable<void> task) {
    ++live_;
    asio::co_spawn(ex_, std::move(task), [this](const std::exception_ptr& e) {
      --live_;
      // The data plane does not throw; if a hook did, the connection ends.
      if (e) end_now(H2cOutcome::End::reset);
      main_wake_.cancel();
    });
  }

  void kick() {
    client_wake_.cancel();
    for (Upstream& u : upstreams_) u.wake.cancel();
    main_wake_.cancel();
  }

  // Ends after a last flush to the client (GOAWAY, final frames).
  void end_soon(H2cOutcome::End end) {
    if (ending_) return;
    ending_ = true;
    out_.end = end;
    flush_deadline_ = std::chrono::steady_clock::now() + kFlushGrace;
    kick();
  }
  // Ends at once: sockets closed, every job returns.
  void end_now(H2cOutcome::End end) {
    if (!ending_) {
      ending_ = true;
      out_.end = end;
    }
    close_all();
  }
  [[nodiscard]] bool flush_expired() const {
    return std::chrono::steady_clock::now() >= flush_deadline_;
  }

  void close_all() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    if (client_.is_open() && !control_.stop_reason)
      client_.shutdown(tcp::socket::shutdown_send, ignored);
    client_.close(ignored);
    for (Upstream& u : upstreams_) u.socket.close(ignored);
    tick_.cancel();
    kick();
  }

  awaitable<void> client_reader() {
    std::array<std::uint8_t, kReadChunk> buf{};
    for (;;) {
      auto [ec, n] = co_await client_.async_read_some(asio::buffer(buf), kNoThrow);
      // Once the connection is ending, what the client still sends is read
      // and dropped until it closes (see the graceful end in run).
      if (n > 0 && !ending_) {
        control_.last_activity = std::chrono::steady_clock::now();
        if (!proxy_.feed_client({buf.data(), n})) end_soon(H2cOutcome::End::protocol_error);
        kick();
      }
      if (ec) {
        if (ec == asio::error::eof) {
          end_now(H2cOutcome::End::done);
        } else if (ending_ && !closed_ && ec == asio::error::connection_reset) {
          close_all();  // the client's answer to our half-close: fine
        } else {
          end_now(is_stop(ec) || control_.stop_reason ? H2cOutcome::End::stopped
                                                      : H2cOutcome::End::reset);
        }
        break;
      }
    }
  }

  awaitable<void> client_writer() {
    std::string out;
    while (!closed_) {
      out.clear();
      proxy_.take_client_output(out, kWriteChunk);
      if (out.empty()) {
        if (ending_) {
          client_flushed_ = true;
          main_wake_.cancel();
        }
        if (closed_) break;
        client_wake_.expires_at(asio::steady_timer::time_point::max());
        co_await client_wake_.async_wait(kNoThrow);
        continue;
      }
      // Packing frames consumed upstream windows: their WINDOW_UPDATEs.
      kick();
      auto [ec, n] = co_await asio::async_write(client_, asio::buffer(out), kNoThrow);
      control_.bytes_down += n;
      control_.last_activity = std::chrono::steady_clock::now();
      if (ec) {
        end_now(is_stop(ec) || control_.stop_reason ? H2cOutcome::End::stopped
                                                    : H2cOutcome::End::reset);
        break;
      }
    }
  }

  awaitable<void> upstream_reader(Upstream& u) {
    std::array<std::uint8_t, kReadChunk> buf{};
    while (!closed_ && !u.done) {
      auto [ec, n] = co_await u.socket.async_read_some(asio::buffer(buf), kNoThrow);
      if (n > 0) {
        control_.last_activity = std::chrono::steady_clock::now();
        if (!proxy_.feed_upstream(u.index, {buf.data(), n})) ec = asio::error::connection_reset;
      }
      if (ec) break;
      kick();
    }
    finish_upstream(u);
  }

  awaitable<void> upstream_writer(Upstream& u) {
    std::string out;
    while (!closed_ && !u.done) {
      out.clear();
      proxy_.take_upstream_output(u.index, out, kWriteChunk);
      if (out.empty()) {
        if (proxy_.upstream_done(u.index)) break;
        u.wake.expires_at(asio::steady_timer::time_point::max());
        co_await u.wake.async_wait(kNoThrow);
        continue;
      }
      kick();  // packing request DATA consumed the client's windows
      auto [ec, n] = co_await asio::async_write(u.socket, asio::buffer(out), kNoThrow);
      control_.bytes_up += n;
      control_.last_activity = std::chrono::steady_clock::now();
      if (ec) break;
    }
    finish_upstream(u);
  }

  // The upstream connection is over (either of its jobs saw it end): its
  // streams are answered, its socket closed, and its other job wakes.
  void finish_upstream(Upstream& u) {
    if (u.done) return;
    u.done = true;
    proxy_.upstream_closed(u.index);
    boost::system::error_code ignored;
    u.socket.close(ignored);
    kick();
  }

  awaitable<void> judge(H2cRequest request) {
    const std::int32_t id = request.stream_id;
    StreamVerdict verdict = co_await hooks_.judge(request);
    if (closed_) co_return;
    if (!verdict.upstream) {
      proxy_.refuse(id, verdict.status, std::move(verdict.body));
      kick();
      co_return;
    }
    for (Upstream& u : upstreams_) {
      if (u.endpoint == *verdict.upstream && !u.done && proxy_.upstream_usable(u.index)) {
        proxy_.route(id, u.index);
        kick();
        co_return;
      }
    }
    // The first stream for this endpoint: its connection, lazily.
    Upstream& u = upstreams_.emplace_back(ex_, *verdict.upstream, proxy_.add_upstream());
    proxy_.route(id, u.index);
    spawn(connect(u));
  }

  awaitable<void> connect(Upstream& u) {
    const boost::system::error_code ec = co_await hooks_.connect(u.socket, u.endpoint);
    if (closed_) co_return;
    if (ec) {
      u.done = true;
      const bool timeout = ec == asio::error::timed_out;
      proxy_.upstream_failed(
          u.index, timeout ? 504 : 502,
          timeout ? "egressd: " + u.endpoint.to_string() + " did not answer in time\n"
                  : "egressd: cannot connect to " + u.endpoint.to_string() + "\n");
      kick();
      co_return;
    }
    u.connected = true;
    proxy_.upstream_connected(u.index);
    spawn(upstream_reader(u));
    spawn(upstream_writer(u));
    kick();
  }

  awaitable<void> ticker() {
    bool drain_seen = false;
    while (!closed_) {
      tick_.expires_after(kTick);
      co_await tick_.async_wait(kNoThrow);
      if (closed_) break;
      const auto now = std::chrono::steady_clock::now();
      if (control_.stop_reason) {
        end_now(H2cOutcome::End::stopped);
        break;
      }
      if (now - control_.last_activity >= options_.idle) {
        end_now(H2cOutcome::End::idle);
        break;
      }
      if (ending_ && flush_expired()) {
        main_wake_.cancel();
        continue;
      }
      // A drain: GOAWAY with the last stream processed. A connection that
      // has not carried a stream yet gets one tick for its first requests
      // (it was accepted while the listeners still took connections).
      if (options_.draining != nullptr && options_.draining->load(std::memory_order_relaxed) &&
          !proxy_.draining()) {
        if (proxy_.streams_seen() > 0 || drain_seen) {
          proxy_.drain();
          drained_ = true;
          kick();
        }
        drain_seen = true;
      }
    }
  }

  tcp::socket& client_;
  const H2cHooks& hooks_;
  relay::RelayControl& control_;
  const H2cOptions& options_;
  asio::any_io_executor ex_;
  H2cProxy proxy_;
  std::list<Upstream> upstreams_;  // stable addresses: jobs hold references
  asio::steady_timer client_wake_;
  asio::steady_timer main_wake_;
  asio::steady_timer tick_;
  std::size_t live_ = 0;
  bool ending_ = false;
  bool closed_ = false;
  bool client_flushed_ = false;
  bool half_closed_ = false;
  bool drained_ = false;
  std::chrono::steady_clock::time_point flush_deadline_{};
  H2cOutcome out_;
};

}  // namespace

awaitable<H2cOutcome> serve_h2c(tcp::socket& client, std::span<const std::uint8_t> first,
                                const H2cHooks& hooks, relay::RelayControl& control,
                                const H2cOptions& options) {
  Connection connection(client, hooks, control, options);
  co_return co_await connection.run(first);
}

}  // namespace egressd::l7
