#include "egressd/admin/admin_server.hpp"

#include <atomic>
#include <mutex>
#include <unordered_set>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

namespace egressd::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Strand = asio::strand<asio::io_context::executor_type>;

namespace {

constexpr auto kUseAwaitable = asio::as_tuple(asio::use_awaitable);
// Requests we serve carry no body; allow a small one so that a POST with a
// body still gets its 405 instead of a parse error.
constexpr std::uint64_t kBodyLimit = 4096;

tcp::endpoint to_asio(const Endpoint& e) {
  const auto b = e.ip.bytes();
  if (e.ip.is_v4()) {
    asio::ip::address_v4::bytes_type v4{};
    std::copy(b.begin(), b.end(), v4.begin());
    return {asio::ip::address_v4(v4), e.port};
  }
  asio::ip::address_v6::bytes_type v6{};
  std::copy(b.begin(), b.end(), v6.begin());
  return {asio::ip::address_v6(v6), e.port};
}

Endpoint from_asio(const tcp::endpoint& e) {
  const auto a = e.address();
  if (a.is_v4()) return {IpAddress::from_v4(a.to_v4().to_bytes()), e.port()};
  return {IpAddress::from_v6(a.to_v6().to_bytes()), e.port()};
}

// The status to answer a failed read with, or none to close silently.
std::optional<http::status> error_status(const beast::error_code& ec) {
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
    return http::status::request_header_fields_too_large;
  }
  if (ec.category() != http::make_error_code(http::error::end_of_stream).category()) {
    return std::nullopt;  // transport: EOF, reset, timeout, operation_aborted
  }
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) {
    return std::nullopt;  // the peer went away
  }
  return http::status::bad_request;  // a parse error, or a body over the limit
}

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

}  // namespace

struct AdminServer::Impl : std::enable_shared_from_this<AdminServer::Impl> {
  Impl(asio::io_context& io, Endpoint ep, std::function<std::string()> render, AdminLimits lim)
      : strand(asio::make_strand(io)),
        acceptor(strand),
        endpoint(ep),
        render_metrics(std::move(render)),
        limits(lim) {}

  Strand strand;
  tcp::acceptor acceptor;  // strand only
  Endpoint endpoint;
  Endpoint bound;
  std::function<std::string()> render_metrics;
  AdminLimits limits;
  std::atomic<bool> ready{false};
  std::atomic<bool> draining{false};
  bool stopped = false;                            // strand only
  std::unordered_set<beast::tcp_stream*> streams;  // strand only: open connections

  Response respond(const Request& req) const {
    Response res;
    res.version(req.version());
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    const bool head = req.method() == http::verb::head;
    if (req.method() != http::verb::get && !head) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "GET, HEAD");
      res.body() = "method not allowed\n";
    } else {
      std::string_view target = req.target();
      target = target.substr(0, target.find('?'));
      if (target == "/metrics") {
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        res.body() = render_metrics ? render_metrics() : std::string();
      } else if (target == "/healthz") {
        res.result(http::status::ok);
        res.body() = "ok";
      } else if (target == "/readyz") {
        if (draining.load(std::memory_order_acquire)) {
          res.result(http::status::service_unavailable);
          res.body() = "draining";
        } else if (!ready.load(std::memory_order_acquire)) {
          res.result(http::status::service_unavailable);
          res.body() = "not ready";
        } else {
          res.result(http::status::ok);
          res.body() = "ok";
        }
      } else {
        res.result(http::status::not_found);
        res.body() = "not found\n";
      }
    }
    res.keep_alive(req.keep_alive());
    res.prepare_payload();  // Content-Length of the GET body, also for HEAD
    if (head) res.body().clear();
    return res;
  }

  static asio::awaitable<void> session(std::shared_ptr<Impl> self, tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    self->streams.insert(&stream);
    struct Unregister {
      Impl& impl;
      beast::tcp_stream& s;
      ~Unregister() { impl.streams.erase(&s); }
    } unregister{*self, stream};

    beast::flat_buffer buffer(self->limits.max_header_bytes + kBodyLimit);
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(self->limits.max_header_bytes));
      parser.body_limit(kBodyLimit);
      stream.expires_after(self->limits.read_timeout);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, kUseAwaitable);
      (void)n;
      if (ec) {
        // A head too large gets 431 and a malformed request 400, both then
        // closed; a timeout, EOF, reset or stop() just ends the connection.
        if (const auto status = error_status(ec)) {
          Response res{*status, 11};
          res.set(http::field::content_type, "text/plain; charset=utf-8");
          res.body() = std::string(http::obsolete_reason(*status)) + "\n";
          res.keep_alive(false);
          res.prepare_payload();
          stream.expires_after(self->limits.write_timeout);
          co_await http::async_write(stream, res, kUseAwaitable);
        }
        break;
      }
      Response res = self->respond(parser.get());
      const bool keep_alive = res.keep_alive();
      stream.expires_after(self->limits.write_timeout);
      auto [wec, wn] = co_await http::async_write(stream, res, kUseAwaitable);
      (void)wn;
      if (wec || !keep_alive || self->stopped) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream.close();
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self) {
    asio::steady_timer backoff(self->strand);
    for (;;) {
      auto [ec, socket] = co_await self->acceptor.async_accept(kUseAwaitable);
      if (self->stopped || !self->acceptor.is_open()) co_return;
      if (ec) {
        // EMFILE and friends: pause instead of spinning on the error.
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(kUseAwaitable);
        continue;
      }
      if (self->streams.size() >= self->limits.max_connections) {
        beast::error_code ignored;
        socket.close(ignored);
        continue;
      }
      asio::co_spawn(self->strand, session(self, std::move(socket)), [](const std::exception_ptr&) {
        // Only allocation failure can get here; the
        // connection is gone with its coroutine.
      });
    }
  }

  void close_all() {
    stopped = true;
    beast::error_code ignored;
    acceptor.close(ignored);
    for (auto* s : streams) s->close();
  }
};

AdminServer::AdminServer(asio::io_context& io, Endpoint endpoint,
                         std::function<std::string()> render_metrics, AdminLimits limits)
    : impl_(std::make_shared<Impl>(io, endpoint, std::move(render_metrics), limits)) {}

AdminServer::~AdminServer() {
  stop();
}

std::optional<std::string> AdminServer::start() {
  const tcp::endpoint ep = to_asio(impl_->endpoint);
  auto& acceptor = impl_->acceptor;
  beast::error_code ec;
  const auto fail = [&](const char* step) {
    beast::error_code ignored;
    acceptor.close(ignored);
    return "cannot " + std::string(step) + " " + impl_->endpoint.to_string() +
           " for the admin server: " + ec.message();
  };
  acceptor.open(ep.protocol(), ec);
  if (ec) return fail("open a socket for");
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return fail("set SO_REUSEADDR on");
  acceptor.bind(ep, ec);
  if (ec) return fail("listen on");
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen on");
  impl_->bound = from_asio(acceptor.local_endpoint(ec));
  asio::co_spawn(impl_->strand, Impl::accept_loop(impl_), asio::detached);
  return std::nullopt;
}

Endpoint AdminServer::local_endpoint() const {
  return impl_->bound;
}

void AdminServer::set_ready(bool ready) noexcept {
  impl_->ready.store(ready, std::memory_order_release);
}

void AdminServer::set_draining() noexcept {
  impl_->draining.store(true, std::memory_order_release);
}

bool AdminServer::ready() const noexcept {
  return impl_->ready.load(std::memory_order_acquire) &&
         !impl_->draining.load(std::memory_order_acquire);
}

void AdminServer::stop() {
  if (!impl_) return;
  asio::dispatch(impl_->strand, [impl = impl_] { impl->close_all(); });
}

}  // namespace egressd::admin
