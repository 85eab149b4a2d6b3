#include "egressd/admin/admin_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

namespace egressd::admin {
namespace {

using namespace std::chrono_literals;

// ---- a deliberately small blocking HTTP/1.1 client -----------------------

class Client {
 public:
  explicit Client(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  [[nodiscard]] bool connected() const { return connected_; }

  bool send(std::string_view data) const {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  struct Response {
    int status = 0;
    std::map<std::string, std::string> headers;  // lowercase names
    std::string body;

    [[nodiscard]] std::string header(const std::string& lowercase_name) const {
      const auto it = headers.find(lowercase_name);
      return it == headers.end() ? std::string() : it->second;
    }
  };

  // One response; nullopt when the connection ended first.
  std::optional<Response> read_response(bool head_request = false) {
    std::size_t end;
    while ((end = pending_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return std::nullopt;
    }
    Response r;
    const std::string head = pending_.substr(0, end);
    pending_.erase(0, end + 4);
    std::size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    if (status_line.size() < 12) return std::nullopt;
    r.status = std::stoi(status_line.substr(9, 3));
    while (line_end != std::string::npos) {
      const std::size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      const std::string line = head.substr(start, line_end - start);
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
    }
    const std::size_t length =
        head_request || !r.headers.contains("content-length")
            ? 0
            : static_cast<std::size_t>(std::stoul(r.headers["content-length"]));
    while (pending_.size() < length) {
      if (!fill()) return std::nullopt;
    }
    r.body = pending_.substr(0, length);
    pending_.erase(0, length);
    return r;
  }

  // True when the server closed the connection (EOF or reset) before the
  // receive timeout; data still arriving first is skipped.
  bool closed_by_peer() {
    for (;;) {
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

 private:
  bool fill() {
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    pending_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string pending_;
};

std::string get(std::string_view path, std::string_view extra = "") {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: x\r\n" + std::string(extra) + "\r\n";
}

// ---- fixture: a server on 127.0.0.1:0 with the io_context on a thread -----

class AdminServerTest : public ::testing::Test {
 protected:
  void start(AdminLimits limits = {}) {
    server_.emplace(
        io_, *Endpoint::parse("127.0.0.1:0", true),
        [this] { return "egressd_test_total " + std::to_string(++scrapes_) + "\n"; }, limits);
    ASSERT_EQ(server_->start(), std::nullopt);
    port_ = server_->local_endpoint().port;
    ASSERT_NE(port_, 0);
    runner_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    if (server_) server_->stop();
    guard_.reset();
    // run() returning proves stop() ended every connection and the acceptor.
    if (runner_.joinable()) runner_.join();
  }

  std::optional<Client::Response> fetch(std::string_view request, bool head = false) {
    Client c(port_);
    if (!c.connected() || !c.send(request)) return std::nullopt;
    return c.read_response(head);
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      io_.get_executor()};
  std::optional<AdminServer> server_;
  std::atomic<int> scrapes_{0};
  std::uint16_t port_ = 0;
  std::thread runner_;
};

TEST_F(AdminServerTest, RoutesAndStatuses) {
  start();
  struct Case {
    std::string request;
    int status;
    std::string body;
  };
  const Case cases[] = {
      {get("/healthz"), 200, "ok"},
      {get("/healthz?verbose=1"), 200, "ok"},
      {get("/nope"), 404, "not found\n"},
      {get("/"), 404, "not found\n"},
      {get("/metricsx"), 404, "not found\n"},
      {"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405,
       "method not allowed\n"},
      {"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method not allowed\n"},
      {"GET /healthz HTTP/1.0\r\n\r\n", 200, "ok"},
      {"GARBAGE\r\n\r\n", 400, "Bad Request\n"},
  };
  for (const auto& c : cases) {
    const auto r = fetch(c.request);
    ASSERT_TRUE(r) << c.request;
    EXPECT_EQ(r->status, c.status) << c.request;
    EXPECT_EQ(r->body, c.body) << c.request;
    if (c.status == 405) {
      EXPECT_EQ(r->header("allow"), "GET, HEAD");
    }
  }
}

TEST_F(AdminServerTest, HeadHasNoBody) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + get("/healthz")));
  const auto head = c.read_response(true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-length"), "2");
  // The next response on the connection starts right after the head.
  const auto next = c.read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok");
}

TEST_F(AdminServerTest, ReadinessFollowsReadyAndDraining) {
  start();
  auto readyz = [&] {
    const auto r = fetch(get("/readyz"));
    return r ? r->status : 0;
  };
  EXPECT_EQ(readyz(), 503);
  server_->set_ready(true);
  EXPECT_EQ(readyz(), 200);
  EXPECT_TRUE(server_->ready());
  server_->set_draining();
  EXPECT_EQ(readyz(), 503);
  server_->set_ready(true);  // draining is for good
  EXPECT_EQ(readyz(), 503);
  EXPECT_FALSE(server_->ready());
  EXPECT_EQ(fetch(get("/readyz"))->body, "draining");
  EXPECT_EQ(fetch(get("/healthz"))->status, 200) << "liveness is not readiness";
}

TEST_F(AdminServerTest, MetricsContentTypeAndBody) {
  start();
  const auto r = fetch(get("/metrics"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r->body, "egressd_test_total 1\n");
}

TEST_F(AdminServerTest, KeepAliveServesSeveralRequests) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(get("/metrics")));
  const auto first = c.read_response();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->body, "egressd_test_total 1\n");
  // Pipelined: two more requests in one write, the last one closing.
  ASSERT_TRUE(c.send(get("/metrics") + get("/healthz", "Connection: close\r\n")));
  const auto second = c.read_response();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->body, "egressd_test_total 2\n");
  const auto third = c.read_response();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->body, "ok");
  EXPECT_EQ(third->header("connection"), "close");
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(AdminServerTest, OversizedHeaderIsRefusedAndClosed) {
  AdminLimits limits;
  limits.max_header_bytes = 1024;
  start(limits);
  Client c(port_);
  ASSERT_TRUE(
      c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n"));
  const auto r = c.read_response();
  if (r) {
    EXPECT_EQ(r->status, 431);  // the reply may be lost to a reset: closing is the point
  }
  EXPECT_TRUE(c.closed_by_peer());
  // The server still serves others.
  EXPECT_EQ(fetch(get("/healthz"))->status, 200);
}

TEST_F(AdminServerTest, SlowlorisIsCutOff) {
  AdminLimits limits;
  limits.read_timeout = 300ms;
  start(limits);
  Client c(port_);
  const auto begin = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.send("GET /healthz HTTP/1.1\r\n"));
  std::this_thread::sleep_for(100ms);
  c.send("X-A: 1\r\n");  // trickling bytes does not extend the deadline
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 3s);
}

TEST_F(AdminServerTest, ConnectionLimitClosesExtraConnections) {
  AdminLimits limits;
  limits.max_connections = 2;
  start(limits);
  Client a(port_);
  Client b(port_);
  // Make sure both are being served before the third arrives.
  ASSERT_TRUE(a.send(get("/healthz")));
  ASSERT_TRUE(a.read_response());
  ASSERT_TRUE(b.send(get("/healthz")));
  ASSERT_TRUE(b.read_response());
  Client extra(port_);
  ASSERT_TRUE(extra.connected());  // the kernel accepts; the server closes it
  EXPECT_TRUE(extra.closed_by_peer());
  ASSERT_TRUE(a.send(get("/healthz")));
  EXPECT_EQ(a.read_response()->status, 200);
}

TEST_F(AdminServerTest, ConcurrentScrapes) {
  start();
  constexpr int kThreads = 6;
  constexpr int kRequests = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      Client c(port_);
      for (int i = 0; i < kRequests; ++i) {
        if (!c.send(get("/metrics"))) return;
        const auto r = c.read_response();
        if (r && r->status == 200 && r->body.starts_with("egressd_test_total ")) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kRequests);
  EXPECT_EQ(scrapes_.load(), kThreads * kRequests);
}

TEST_F(AdminServerTest, StopClosesListenerAndConnections) {
  start();
  Client idle(port_);
  ASSERT_TRUE(idle.send(get("/healthz")));
  ASSERT_TRUE(idle.read_response());
  server_->stop();
  EXPECT_TRUE(idle.closed_by_peer());
  Client late(port_);
  EXPECT_FALSE(late.connected() && late.send(get("/healthz")) && late.read_response());
}

TEST(AdminServerStart, AddressInUseIsOneSentence) {
  boost::asio::io_context io;
  AdminServer first(io, *Endpoint::parse("127.0.0.1:0", true), [] { return std::string(); });
  ASSERT_EQ(first.start(), std::nullopt);
  const Endpoint taken = first.local_endpoint();
  AdminServer second(io, taken, [] { return std::string(); });
  const auto error = second.start();
  ASSERT_TRUE(error);
  EXPECT_EQ(*error, "cannot listen on " + taken.to_string() +
                        " for the admin server: Address already in use");
  first.stop();
  second.stop();
  io.run();
}

}  // namespace
}  // namespace egressd::admin
