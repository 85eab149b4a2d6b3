// l7::H2cProxy on memory: a real nghttp2 client (the pod) and a real
// nghttp2 server (the origin) on either side, bytes shuttled by hand.
#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include "egressd/l7/h2c.hpp"

namespace egressd::l7 {
namespace {

struct Answer {
  int status = 0;
  std::string body;
  std::uint32_t rst = 0;
  bool closed = false;
  std::vector<std::string> trailers;
};

std::string str(const std::uint8_t* p, std::size_t n) {
  return std::string(reinterpret_cast<const char*>(p), n);
}

// Header fields that outlive the nghttp2_nv array pointing into them
// (nghttp2 copies them when the frame is submitted).
struct Fields {
  std::vector<std::pair<std::string, std::string>> kv;
  std::vector<nghttp2_nv> nv() {
    std::vector<nghttp2_nv> out;
    for (auto& [name, value] : kv) {
      out.push_back({reinterpret_cast<std::uint8_t*>(name.data()),
                     reinterpret_cast<std::uint8_t*>(value.data()), name.size(), value.size(),
                     NGHTTP2_NV_FLAG_NONE});
    }
    return out;
  }
};

// The pod's HTTP/2 client.
struct Client {
  nghttp2_session* session = nullptr;
  std::map<std::int32_t, Answer> answers;
  std::optional<std::int32_t> goaway_last;
  bool consume = true;  // false: never opens its windows (a client that does not read)
  std::map<std::int32_t, std::string> uploads;

  Client() {
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* n, std::size_t nl,
               const std::uint8_t* v, std::size_t vl, std::uint8_t, void* u) {
          auto* self = static_cast<Client*>(u);
          Answer& a = self->answers[f->hd.stream_id];
          if (str(n, nl) == ":status") {
            a.status = std::stoi(str(v, vl));
          } else if (a.status != 0 && f->headers.cat == NGHTTP2_HCAT_HEADERS) {
            a.trailers.push_back(str(n, nl) + ": " + str(v, vl));
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cb, [](nghttp2_session* s, std::uint8_t, std::int32_t id, const std::uint8_t* d,
               std::size_t n, void* u) {
          auto* self = static_cast<Client*>(u);
          self->answers[id].body += str(d, n);
          if (self->consume) nghttp2_session_consume(s, id, n);
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cb, [](nghttp2_session*, std::int32_t id, std::uint32_t error, void* u) {
          auto* self = static_cast<Client*>(u);
          self->answers[id].closed = true;
          self->answers[id].rst = error;
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, void* u) {
          if (f->hd.type == NGHTTP2_GOAWAY) {
            static_cast<Client*>(u)->goaway_last = f->goaway.last_stream_id;
          }
          return 0;
        });
    nghttp2_option* opt = nullptr;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_session_client_new2(&session, cb, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~Client() { nghttp2_session_del(session); }

  std::int32_t get(const std::string& authority, const std::string& path = "/",
                   const std::string& host = "") {
    Fields f{{{":method", "GET"}, {":scheme", "http"}, {":path", path}}};
    if (!authority.empty()) f.kv.emplace_back(":authority", authority);
    if (!host.empty()) f.kv.emplace_back("host", host);
    const auto h = f.nv();
    return nghttp2_submit_request(session, nullptr, h.data(), h.size(), nullptr, this);
  }
  std::map<std::int32_t, bool> with_trailers;
  std::int32_t post(const std::string& authority, std::string body, bool trailers = false) {
    Fields f{
        {{":method", "POST"}, {":scheme", "http"}, {":path", "/up"}, {":authority", authority}}};
    const auto h = f.nv();
    nghttp2_data_provider p{};
    p.read_callback = [](nghttp2_session* s, std::int32_t id, std::uint8_t* buf, std::size_t len,
                         std::uint32_t* flags, nghttp2_data_source*, void* u) -> ssize_t {
      std::string& left = static_cast<Client*>(u)->uploads[id];
      const std::size_t n = std::min(len, left.size());
      std::memcpy(buf, left.data(), n);
      left.erase(0, n);
      if (left.empty()) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (static_cast<Client*>(u)->with_trailers[id]) {
          *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          Fields t{{{"x-checksum", "abc"}}};
          const auto tv = t.nv();
          nghttp2_submit_trailer(s, id, tv.data(), tv.size());
        }
      }
      return static_cast<ssize_t>(n);
    };
    const std::int32_t id = nghttp2_submit_request(session, nullptr, h.data(), h.size(), &p, this);
    uploads[id] = std::move(body);
    with_trailers[id] = trailers;
    return id;
  }
};

// The origin: answers every request with the body configured for its
// path, and remembers what it saw.
struct Origin {
  nghttp2_session* session = nullptr;
  std::map<std::int32_t, std::string> authority;
  std::map<std::int32_t, std::size_t> received;  // request body bytes
  std::map<std::string, std::string> bodies;     // by path
  std::map<std::int32_t, std::string> path;
  std::map<std::int32_t, std::string> sending;
  std::map<std::int32_t, std::uint32_t> reset;
  std::map<std::int32_t, std::vector<std::string>> trailers;
  bool refuse = false;  // RST_STREAM(REFUSED_STREAM) every request

  Origin() {
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* n, std::size_t nl,
               const std::uint8_t* v, std::size_t vl, std::uint8_t, void* u) {
          auto* self = static_cast<Origin*>(u);
          if (str(n, nl) == ":authority") self->authority[f->hd.stream_id] = str(v, vl);
          if (str(n, nl) == ":path") self->path[f->hd.stream_id] = str(v, vl);
          if (f->headers.cat == NGHTTP2_HCAT_HEADERS) {
            self->trailers[f->hd.stream_id].push_back(str(n, nl) + ": " + str(v, vl));
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cb, [](nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t*, std::size_t n,
               void* u) {
          static_cast<Origin*>(u)->received[id] += n;
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cb, [](nghttp2_session*, std::int32_t id, std::uint32_t error, void* u) {
          static_cast<Origin*>(u)->reset[id] = error;
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, [](nghttp2_session* s,
                                                                const nghttp2_frame* f, void* u) {
      auto* self = static_cast<Origin*>(u);
      if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
          (f->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
        return 0;
      }
      const std::int32_t id = f->hd.stream_id;
      if (self->refuse) {
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        return 0;
      }
      self->sending[id] = self->bodies[self->path[id]];
      Fields head{{{":status", "200"}}};
      const auto h = head.nv();
      nghttp2_data_provider p{};
      p.read_callback = [](nghttp2_session*, std::int32_t sid, std::uint8_t* buf, std::size_t len,
                           std::uint32_t* flags, nghttp2_data_source*, void* user) -> ssize_t {
        std::string& left = static_cast<Origin*>(user)->sending[sid];
        const std::size_t n = std::min(len, left.size());
        std::memcpy(buf, left.data(), n);
        left.erase(0, n);
        if (left.empty()) *flags |= NGHTTP2_DATA_FLAG_EOF;
        return static_cast<ssize_t>(n);
      };
      nghttp2_submit_response(s, id, h.data(), h.size(), &p);
      return 0;
    });
    nghttp2_session_server_new(&session, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~Origin() { nghttp2_session_del(session); }
};

std::string drain_session(nghttp2_session* s) {
  std::string out;
  for (;;) {
    const std::uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(s, &data);
    if (n <= 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  return out;
}

std::span<const std::uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Moves bytes until nothing moves. `judge` answers each new stream.
struct Wire {
  H2cProxy proxy;
  Client client;
  Origin origin;
  std::optional<std::size_t> upstream;
  bool connect = true;
  std::vector<H2cRequest> judged;
  std::function<bool(const H2cRequest&)> allow = [](const H2cRequest& r) {
    return r.problem.empty() && r.name.find("denied") == std::string::npos;
  };

  void run() {
    for (int round = 0; round < 10'000; ++round) {
      bool moved = false;
      const std::string c = drain_session(client.session);
      if (!c.empty()) {
        moved = true;
        if (!proxy.feed_client(bytes(c))) ADD_FAILURE() << "feed_client failed";
      }
      for (H2cRequest& r : proxy.take_requests()) {
        moved = true;
        if (!allow(r)) {
          proxy.refuse(r.stream_id, r.problem.empty() ? 403 : 400, "egressd: no\n");
        } else {
          const bool first = !upstream;
          if (first) upstream = proxy.add_upstream();
          // As serve_h2c does: routed first, connected (or not) later.
          proxy.route(r.stream_id, *upstream);
          if (first && connect) proxy.upstream_connected(*upstream);
          if (first && !connect) proxy.upstream_failed(*upstream, 502, "egressd: cannot connect\n");
        }
        judged.push_back(std::move(r));
      }
      std::string to_client;
      proxy.take_client_output(to_client, 1 << 20);
      if (!to_client.empty()) {
        moved = true;
        nghttp2_session_mem_recv(client.session,
                                 reinterpret_cast<const std::uint8_t*>(to_client.data()),
                                 to_client.size());
      }
      if (upstream && connect) {
        std::string up;
        proxy.take_upstream_output(*upstream, up, 1 << 20);
        if (!up.empty()) {
          moved = true;
          nghttp2_session_mem_recv(origin.session, reinterpret_cast<const std::uint8_t*>(up.data()),
                                   up.size());
        }
        const std::string down = drain_session(origin.session);
        if (!down.empty()) {
          moved = true;
          proxy.feed_upstream(*upstream, bytes(down));
        }
      }
      max_buffered = std::max(max_buffered, proxy.buffered_bytes());
      if (!moved) return;
    }
    FAIL() << "the wire never settled";
  }
  std::size_t max_buffered = 0;
};

TEST(H2cProxy, ADeniedStreamIsAnsweredAloneAndTheOthersGoOn) {
  Wire w;
  w.origin.bodies["/"] = "hello\n";
  const auto a = w.client.get("allowed.test:8080");
  const auto d = w.client.get("denied.test");
  const auto p = w.client.post("b.allowed.test", std::string(300'000, 'x'));
  w.run();
  EXPECT_EQ(w.client.answers[a].status, 200);
  EXPECT_EQ(w.client.answers[a].body, "hello\n");
  EXPECT_EQ(w.client.answers[d].status, 403);
  EXPECT_EQ(w.client.answers[d].body, "egressd: no\n");
  EXPECT_EQ(w.client.answers[p].status, 200);
  ASSERT_EQ(w.judged.size(), 3U);
  EXPECT_EQ(w.judged[0].name, "allowed.test");
  EXPECT_EQ(w.judged[1].name, "denied.test");
  // The origin saw the allowed streams only, the upload whole.
  std::vector<std::string> seen;
  for (const auto& [id, authority] : w.origin.authority) seen.push_back(authority);
  EXPECT_EQ(seen, (std::vector<std::string>{"allowed.test:8080", "b.allowed.test"}));
  std::size_t uploaded = 0;
  for (const auto& [id, n] : w.origin.received) uploaded += n;
  EXPECT_EQ(uploaded, 300'000U);
  EXPECT_LE(w.max_buffered, 2 * static_cast<std::size_t>(kH2cConnectionWindow));
}

TEST(H2cProxy, RequestTrailersReachTheOrigin) {
  Wire w;
  const auto with_body = w.client.post("allowed.test", std::string(1000, 't'), true);
  const auto empty = w.client.post("allowed.test", "", true);
  w.run();
  EXPECT_EQ(w.client.answers[with_body].status, 200);
  EXPECT_EQ(w.client.answers[empty].status, 200);
  ASSERT_EQ(w.origin.trailers.size(), 2U);
  for (const auto& [id, fields] : w.origin.trailers) {
    EXPECT_EQ(fields, (std::vector<std::string>{"x-checksum: abc"}));
  }
  std::size_t uploaded = 0;
  for (const auto& [id, n] : w.origin.received) uploaded += n;
  EXPECT_EQ(uploaded, 1000U);
}

TEST(H2cProxy, AuthorityAndHostMustAgree) {
  Wire w;
  w.allow = [](const H2cRequest& r) { return r.problem.empty(); };
  const auto disagree = w.client.get("allowed.test", "/", "denied.test");
  const auto same = w.client.get("allowed.test", "/", "ALLOWED.test.:80");
  w.client.get("", "/", "host-only.test:8080");
  // Neither, or an :authority that is no authority at all: nghttp2's own
  // HTTP/2 checks reset these streams before any judge sees them.
  const auto neither = w.client.get("", "/", "");
  const auto bad = w.client.get("a b@c", "/");
  w.run();
  ASSERT_EQ(w.judged.size(), 3U);
  EXPECT_EQ(w.judged[0].problem, ":authority and Host disagree");
  EXPECT_EQ(w.judged[1].problem, "");
  EXPECT_EQ(w.judged[1].name, "allowed.test");
  EXPECT_EQ(w.judged[2].name, "host-only.test");
  EXPECT_EQ(w.client.answers[disagree].status, 400);
  EXPECT_EQ(w.client.answers[same].status, 200);
  EXPECT_EQ(w.client.answers[neither].rst, static_cast<std::uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_EQ(w.client.answers[bad].rst, static_cast<std::uint32_t>(NGHTTP2_PROTOCOL_ERROR));
}

TEST(H2cProxy, AClientThatDoesNotReadHoldsBackTheOrigin) {
  Wire w;
  const std::string big(4 * 1024 * 1024, 'b');
  w.origin.bodies["/big"] = big;
  w.client.consume = false;
  const auto id = w.client.get("allowed.test", "/big");
  w.run();
  // The client's window (65535) went out, and at most our stream window
  // waits in the proxy; the origin holds the rest.
  EXPECT_EQ(w.client.answers[id].body.size(), 65535U);
  EXPECT_LE(w.proxy.buffered_bytes(), static_cast<std::size_t>(kH2cStreamWindow));
  EXPECT_LE(w.max_buffered, static_cast<std::size_t>(kH2cStreamWindow));
  // Once it reads, everything arrives.
  w.client.consume = true;
  nghttp2_session_consume(w.client.session, id, w.client.answers[id].body.size());
  w.run();
  EXPECT_TRUE(w.client.answers[id].body == big);
  EXPECT_TRUE(w.client.answers[id].closed);
}

TEST(H2cProxy, DrainSendsGoawayAndOpenStreamsFinish) {
  Wire w;
  const std::string big(1024 * 1024, 'd');
  w.origin.bodies["/big"] = big;
  w.client.consume = false;
  const auto id = w.client.get("allowed.test", "/big");
  w.run();
  w.proxy.drain();
  w.run();
  ASSERT_TRUE(w.client.goaway_last);
  EXPECT_EQ(*w.client.goaway_last, id);
  EXPECT_FALSE(w.proxy.client_done());
  w.client.consume = true;
  nghttp2_session_consume(w.client.session, id, w.client.answers[id].body.size());
  w.run();
  EXPECT_TRUE(w.client.answers[id].body == big);
  EXPECT_TRUE(w.proxy.client_done());
}

TEST(H2cProxy, ResetsGoBothWays) {
  Wire w;
  w.origin.refuse = true;
  const auto refused = w.client.get("allowed.test");
  w.run();
  EXPECT_TRUE(w.client.answers[refused].closed);
  EXPECT_EQ(w.client.answers[refused].rst, static_cast<std::uint32_t>(NGHTTP2_REFUSED_STREAM));

  // The client resets a stream in flight: the origin's stream is cancelled.
  w.origin.refuse = false;
  w.origin.bodies["/big"] = std::string(1024 * 1024, 'r');
  w.client.consume = false;
  const auto id = w.client.get("allowed.test", "/big");
  w.run();
  nghttp2_submit_rst_stream(w.client.session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  w.run();
  ASSERT_FALSE(w.origin.reset.empty());
  EXPECT_EQ(w.origin.reset.rbegin()->second, static_cast<std::uint32_t>(NGHTTP2_CANCEL));
  EXPECT_EQ(w.proxy.open_streams(), 0U);
  EXPECT_EQ(w.proxy.buffered_bytes(), 0U);
}

TEST(H2cProxy, AnUpstreamThatCannotBeReachedAnswers502) {
  Wire w;
  w.connect = false;
  const auto id = w.client.get("allowed.test");
  w.run();
  EXPECT_EQ(w.client.answers[id].status, 502);
  EXPECT_EQ(w.client.answers[id].body, "egressd: cannot connect\n");
}

TEST(H2cProxy, GarbageInsteadOfThePrefaceIsAProtocolError) {
  H2cProxy proxy;
  const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_FALSE(proxy.feed_client(bytes(junk)));
  EXPECT_TRUE(proxy.protocol_error());
  EXPECT_EQ(proxy.streams_seen(), 0U);
}

}  // namespace
}  // namespace egressd::l7
