#pragma once
// The admin HTTP server: GET /metrics (Prometheus text 0.0.4), /healthz and
// /readyz (contract "Metrics", kubelet probes). HTTP/1.1 with keep-alive.
//
// Hardened because it listens on the pod IP: a request head is limited in
// size (oversized -> 431 and close), each request must arrive within
// read_timeout (a slowloris is cut off; the same deadline bounds an idle
// keep-alive connection), and at most max_connections are served at once
// (further ones are closed on accept).
//
// Responses: GET or HEAD (HEAD = the GET head without a body)
//   /metrics  200 text/plain; version=0.0.4; charset=utf-8
//   /healthz  200 "ok" while the process serves
//   /readyz   200 "ok" after set_ready(true); 503 before that and from
//             set_draining() on, for good
//   other     404;   any other method: 405 with Allow: GET, HEAD
// A query string is ignored.
//
// Asio stays out of this header: the server runs its own coroutines on a
// strand of the io_context it is given, so that io_context may be run by
// one thread or several.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "egressd/core/ip.hpp"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace egressd::admin {

struct AdminLimits {
  std::size_t max_connections = 64;
  std::size_t max_header_bytes = 8 * 1024;
  std::chrono::milliseconds read_timeout{10'000};   // one whole request head
  std::chrono::milliseconds write_timeout{10'000};  // one whole response
};

class AdminServer {
 public:
  // `render_metrics` produces the /metrics body; it runs on the io_context's
  // thread for each scrape.
  AdminServer(boost::asio::io_context& io, Endpoint endpoint,
              std::function<std::string()> render_metrics, AdminLimits limits = {});
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  ~AdminServer();  // stop()

  // Binds and listens, then serves once the io_context runs. Call once,
  // before stop(). On failure
  // returns one sentence, e.g. "cannot listen on 0.0.0.0:9901 for the admin
  // server: Address already in use", and nothing is left open.
  [[nodiscard]] std::optional<std::string> start();

  // The bound address (the real port when the endpoint asked for port 0).
  // Valid after a successful start().
  [[nodiscard]] Endpoint local_endpoint() const;

  // Any thread.
  void set_ready(bool ready) noexcept;
  void set_draining() noexcept;
  [[nodiscard]] bool ready() const noexcept;

  // Closes the listener and every connection. Any thread; idempotent. Work
  // already queued on the io_context finishes with errors it ignores.
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace egressd::admin
